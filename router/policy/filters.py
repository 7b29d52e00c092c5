"""Hard filters: may this backend take this request at all?

The filters run in a fixed order and the first one that rejects a backend names the
rejection (``CandidateReport.rejected_by``). Static filters (what the request needs vs.
what the backend is) come first, live ones (health, capacity, cost) last, so a backend
that can never serve the request is reported for that reason rather than for being busy:

    pin -> capability -> data_class -> context_window -> payload -> edge_affinity
        -> health -> capacity -> cost

``RequestFilter`` is built once per request; ``check`` decides and names the rejection of
one backend. The planner screens every backend with the same predicates inline (the hot
path) and calls ``check`` only for those the screen flags, so a change to a filter's
predicate belongs in both places (tests/unit/test_plan_equivalence.py catches a mismatch).
Reason strings are only formatted for rejections. ``cost`` needs the estimate, so the
planner applies :func:`cost_rejection` after estimating the backends that passed
everything else.
"""

from __future__ import annotations

from collections.abc import Iterable

from router.types import BackendSnapshot, BackendSpec, CircuitState, Features, Tier, TokenCount

PIN = "pin"
CAPABILITY = "capability"
DATA_CLASS = "data_class"
CONTEXT_WINDOW = "context_window"
PAYLOAD = "payload"
EDGE_AFFINITY = "edge_affinity"
HEALTH = "health"
CAPACITY = "capacity"
COST = "cost"

#: Every filter, in the order it runs.
FILTERS: tuple[str, ...] = (
    PIN,
    CAPABILITY,
    DATA_CLASS,
    CONTEXT_WINDOW,
    PAYLOAD,
    EDGE_AFFINITY,
    HEALTH,
    CAPACITY,
    COST,
)

_NO_TOKENS = TokenCount(0, False)
_OPEN = CircuitState.OPEN
_EDGE = Tier.EDGE


def _names(items: Iterable[str]) -> str:
    """Sorted, comma-separated (StrEnum members join as their values)."""
    return ", ".join(sorted(items)) or "none"


def prompt_tokens_for(features: Features, tokenizer_id: str) -> TokenCount:
    """The prompt token count for a backend's tokenizer.

    Falls back to the ``estimate`` count, then to the largest count known, when the
    features were computed before the backend (and its tokenizer) appeared.
    """
    counts = features.prompt_tokens
    tc = counts.get(tokenizer_id)
    if tc is not None:
        return tc
    tc = counts.get("estimate")
    if tc is not None:
        return tc
    if counts:
        return max(counts.values(), key=lambda c: c.tokens)
    return _NO_TOKENS


def prompt_count(features: Features, spec: BackendSpec) -> TokenCount:
    """The prompt token count for ``spec``: its fitted session prompt, else its
    tokenizer's count (:func:`prompt_tokens_for`)."""
    fitted = features.fitted
    if fitted is not None and spec.name in fitted:
        return fitted[spec.name].tokens
    return prompt_tokens_for(features, spec.tokenizer_id)


class RequestFilter:
    """The hard filters for one request (built once, then ``check`` per backend)."""

    __slots__ = (
        "features",
        "now",
        "max_output_tokens",
        "_pins",
        "_pin_tiers",
        "_pin_backends",
        "_exclude_tiers",
        "_exclude_backends",
        "_family",
        "_capabilities",
        "_data_class",
        "_payload",
        "_site",
        "_device",
    )

    def __init__(self, features: Features, max_output_tokens: int, now: float) -> None:
        req = features.request
        self.features = features
        self.now = now
        self.max_output_tokens = max_output_tokens
        self._pin_tiers = req.pin_tiers
        self._pin_backends = req.pin_backends
        self._exclude_tiers = req.exclude_tiers
        self._exclude_backends = req.exclude_backends
        self._pins = bool(
            req.pin_tiers or req.pin_backends or req.exclude_tiers or req.exclude_backends
        )
        self._family = req.model_family.casefold()
        self._capabilities = req.capabilities
        self._data_class = req.data_class
        self._payload = features.payload_bytes
        self._site = req.site
        self._device = req.device_id

    def prompt_tokens(self, spec: BackendSpec) -> TokenCount:
        """The prompt token count for ``spec`` (:func:`prompt_count`)."""
        return prompt_count(self.features, spec)

    def payload_bytes(self, spec: BackendSpec) -> int:
        fitted = self.features.fitted
        if fitted is not None and spec.name in fitted:
            return fitted[spec.name].payload_bytes
        return self._payload

    def check(
        self, spec: BackendSpec, snap: BackendSnapshot, prompt: TokenCount
    ) -> tuple[str, str] | None:
        """``(filter, reason)`` of the first filter that rejects the backend, else None.

        ``prompt`` is :meth:`prompt_tokens` of ``spec``. Covers every filter but ``cost``
        (see :func:`cost_rejection`).
        """
        # pin: pins narrow (tier AND backend pins must both allow), exclusions remove.
        if self._pins:
            reason = self._pin_reason(spec)
            if reason:
                return PIN, reason
        # capability: model family (case-insensitive) and every requested capability.
        family = self._family
        if family and spec.model_family != family and spec.model_family.casefold() != family:
            return CAPABILITY, (
                f"model family {self._family!r} requested; serves "
                f"{spec.model_family or 'unknown'!r} ({spec.model})"
            )
        caps = self._capabilities
        if caps and not caps <= spec.capabilities:
            missing = caps - spec.capabilities
            return CAPABILITY, (
                f"missing {'capability' if len(missing) == 1 else 'capabilities'} "
                f"{_names(missing)} "
                f"(offers {_names(spec.capabilities)})"
            )
        # data_class: the request's classification must be allowed on this backend.
        if self._data_class not in spec.data_classes:
            return DATA_CLASS, (
                f"data class '{self._data_class}' not allowed on this {spec.tier} "
                f"backend (allows {_names(spec.data_classes)})"
            )
        # context_window: prompt tokens (this backend's tokenizer) + max output must fit.
        needed = prompt.tokens + self.max_output_tokens
        if needed > spec.context_window:
            return CONTEXT_WINDOW, (
                f"needs {needed} tokens ({prompt.tokens} prompt, "
                f"{'exact' if prompt.exact else 'estimated'}, "
                f"+ {self.max_output_tokens} max output) > context window {spec.context_window}"
            )
        # payload: request bytes within the backend's limit.
        payload = self.payload_bytes(spec)
        if payload > spec.max_payload_bytes:
            return PAYLOAD, f"payload {payload} bytes > limit {spec.max_payload_bytes} bytes"
        # edge_affinity: only for edge devices, only for what the request names.
        if spec.tier is _EDGE and (self._site or self._device):
            if self._site and spec.site != self._site:
                return EDGE_AFFINITY, (
                    f"site {self._site!r} requested; device is at {spec.site or 'no site'!r}"
                )
            if self._device and spec.device_id != self._device:
                return EDGE_AFFINITY, (
                    f"device {self._device!r} requested; this is {spec.device_id or 'unnamed'!r}"
                )
        # health: healthy, circuit not open (half-open admits a probe), no Retry-After.
        if not snap.healthy:
            return HEALTH, f"unhealthy: {snap.detail}" if snap.detail else "unhealthy"
        if snap.circuit is _OPEN:
            return HEALTH, (
                f"circuit open (error rate {snap.error_rate:.0%}, "
                f"{snap.failures} failures in {snap.requests} requests)"
            )
        if snap.retry_after_until is not None and snap.retry_after_until > self.now:
            return HEALTH, (
                f"backend asked to retry after {snap.retry_after_until - self.now:.1f} s"
            )
        # capacity: load (ours or reported, whichever is larger) vs. slots + queue.
        load = snap.in_flight
        if snap.reported_load is not None and snap.reported_load > load:
            load = snap.reported_load
        limit = spec.max_concurrency + spec.max_queue
        if load >= limit:
            return CAPACITY, (
                f"load {load} >= capacity {limit} "
                f"({spec.max_concurrency} concurrent + {spec.max_queue} queued)"
            )
        return None

    def _pin_reason(self, spec: BackendSpec) -> str:
        if self._pin_tiers and spec.tier not in self._pin_tiers:
            return f"tier {spec.tier} not in pin_tiers ({_names(self._pin_tiers)})"
        if self._pin_backends and spec.name not in self._pin_backends:
            return f"not in pin_backends ({_names(self._pin_backends)})"
        if spec.tier in self._exclude_tiers:
            return f"tier {spec.tier} in exclude_tiers"
        if spec.name in self._exclude_backends:
            return "in exclude_backends"
        return ""


def cost_rejection(cost_usd: float, max_cost_usd: float | None) -> str | None:
    """The ``cost`` filter: reason when the estimated cost exceeds the request's cap."""
    if max_cost_usd is not None and cost_usd > max_cost_usd:
        return f"estimated cost ${cost_usd:.6f} > max_cost_usd ${max_cost_usd:.6f}"
    return None
