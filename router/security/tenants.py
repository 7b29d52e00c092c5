"""Tenants: what the holders of a tenant's keys may use, and how a request is held to it.

Pure (no I/O): dispatch calls :meth:`TenantAccess.check_request` and
:meth:`TenantAccess.plan` with the same inputs it gives ``router.policy.plan``.

- A request that *names* something the tenant may not use gets PERMISSION_DENIED at once:
  a data class, a pinned tier, a pinned backend.
- The policy only ever sees the backends the tenant may use (the Decision lists no other).
- When nothing the tenant may use can take the request but a backend it may not use
  could (a bigger context window, a model family, a data class only another tier
  accepts), the answer is PERMISSION_DENIED naming that tier and backend, with the
  policy's own reason. When one of the tenant's backends was only turned away for
  health or capacity, the policy's error stands (UNAVAILABLE: it may pass on a retry).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from router import policy
from router.config import TenantConfig
from router.errors import InvalidRequest, PermissionDenied, RouterError
from router.policy.filters import CAPACITY, HEALTH
from router.policy.reachability import probe_request, reachability
from router.policy.records import PolicyParams
from router.preflight import OK, WARN, Finding, Options, captured_warnings
from router.types import (
    BackendSnapshot,
    BackendSpec,
    DataClass,
    Features,
    InferenceRequest,
    Plan,
    Tier,
)

if TYPE_CHECKING:
    from router.config import RouterConfig

Pairs = Sequence[tuple[BackendSpec, BackendSnapshot]]
_TRANSIENT = frozenset({HEALTH, CAPACITY})


def _names(items: frozenset[str] | frozenset[Tier] | frozenset[DataClass]) -> str:
    return ", ".join(sorted(items)) or "none"


@dataclass(frozen=True, slots=True)
class TenantAccess:
    name: str
    tiers: frozenset[Tier]
    #: Backend names allowed; empty: any backend of an allowed tier.
    backends: frozenset[str]
    data_classes: frozenset[DataClass]
    #: Open Generate streams allowed (0: unlimited).
    max_streams: int = 0
    #: How its session histories are fitted ("" = sessions.strategy).
    context_strategy: str = ""
    #: Continue its answers on the next candidate after a failure mid-answer.
    continue_on_failure: bool = False

    @classmethod
    def from_config(cls, cfg: TenantConfig, default_max_streams: int = 0) -> TenantAccess:
        return cls(
            name=cfg.name,
            tiers=frozenset(cfg.tiers),
            backends=frozenset(cfg.backends),
            data_classes=frozenset(cfg.data_classes),
            max_streams=default_max_streams if cfg.max_streams is None else cfg.max_streams,
            context_strategy=cfg.context_strategy,
            continue_on_failure=cfg.continue_on_failure,
        )

    def allows(self, spec: BackendSpec) -> bool:
        return spec.tier in self.tiers and (not self.backends or spec.name in self.backends)

    def _denied(self, what: str) -> PermissionDenied:
        return PermissionDenied(f"tenant {self.name!r} may not use {what}")

    def check_request(self, request: InferenceRequest) -> None:
        """PERMISSION_DENIED when the request names a data class or tier not allowed."""
        if request.data_class not in self.data_classes:
            raise self._denied(
                f"data class {request.data_class.value!r} "
                f"(allowed: {_names(self.data_classes)}); ask an operator to add it to "
                f"auth.tenants[{self.name}].data_classes"
            )
        bad_tiers = request.pin_tiers - self.tiers
        if bad_tiers:
            raise self._denied(
                f"tier {_names(bad_tiers)} named in pin_tiers (allowed tiers: {_names(self.tiers)})"
            )
        if self.backends:
            bad = request.pin_backends - self.backends
            if bad:
                raise self._denied(
                    f"backend {_names(bad)} named in pin_backends (allowed backends: "
                    f"{_names(self.backends)})"
                )

    def scope(self, pairs: Pairs) -> list[tuple[BackendSpec, BackendSnapshot]]:
        """The (spec, snapshot) pairs of the backends this tenant may use."""
        return [p for p in pairs if self.allows(p[0])]

    def plan(self, features: Features, pairs: Pairs, cfg: PolicyParams, now: float) -> Plan:
        """``router.policy.plan`` over the tenant's backends only (see the module doc)."""
        allowed = self.scope(pairs)
        if len(allowed) == len(pairs):
            return policy.plan(features, pairs, cfg, now)
        req = features.request
        for spec, _ in pairs:
            if spec.name in req.pin_backends and not self.allows(spec):
                raise self._denied(
                    f"backend {spec.name!r} ({spec.tier.value}) named in pin_backends "
                    f"(allowed tiers: {_names(self.tiers)})"
                )
        if not allowed:
            raise self._denied(
                f"any backend this router has (allowed tiers: {_names(self.tiers)}; "
                f"backends: {_names(self.backends) if self.backends else 'any'})"
            )
        try:
            return policy.plan(features, allowed, cfg, now)
        except InvalidRequest:
            raise
        except RouterError as exc:
            raise self._explain(exc, features, pairs, allowed, cfg, now) from None

    def _explain(
        self,
        exc: RouterError,
        features: Features,
        pairs: Pairs,
        allowed: Pairs,
        cfg: PolicyParams,
        now: float,
    ) -> RouterError:
        try:
            full = policy.plan(features, pairs, cfg, now)
        except RouterError:
            return exc  # no backend at all could take it: the policy's answer stands
        mine = {spec.name for spec, _ in allowed}
        if any(c.backend in mine and c.rejected_by in _TRANSIENT for c in full.candidates):
            return exc
        needed = full.report(full.primary)
        assert needed is not None
        return self._denied(
            f"{needed.tier.value} backend {needed.backend!r}, which this request needs "
            f"(allowed tiers: {_names(self.tiers)}); among its own backends: {exc.message}"
        )


# --- start-up check (router/preflight.py) -----------------------------------------------------


def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``routable NAME``: whether any caller can ever be routed to each static backend
    (:func:`router.policy.reachability.reachability` over ``auth.tenants``; anyone when
    auth is off): some tenant may use it, may send some data class it accepts, and a
    one-word prompt with ``policy.default_max_output_tokens`` fits its window."""
    from router.tokenizers import Tokenizers, features

    policy_cfg = config.policy
    max_out = policy_cfg.default_max_output_tokens
    tenants = (
        [TenantAccess.from_config(t) for t in config.auth.tenants]
        if config.auth.configured
        else None
    )
    counter = opts.tokens if opts.tokens is not None else Tokenizers(policy_cfg.token_estimate)
    ids = {b.tokenizer.id for b in config.backends}
    # A vocabulary that does not load is the tokenizer check's finding: counted as estimated.
    with captured_warnings("router.tokenizers", "llama_cpp"):
        probe = features(probe_request(max_out), counter, ids)
    by_name = {t.name: t for t in tenants or ()}
    specs = [b.to_spec() for b in config.backends]
    findings = []
    for spec, reach in zip(specs, reachability(specs, tenants, probe, max_out), strict=True):
        component = f"routable {spec.name}"
        key = f"backends[{spec.name}]"
        if not reach.usable:
            findings.append(
                Finding(
                    WARN,
                    component,
                    key,
                    f"no tenant in auth.tenants may use it ({spec.tier.value} tier): add the "
                    "tier (or the backend's name) to a tenant's tiers (backends), or remove "
                    "the backend",
                )
            )
        elif reach.window is not None:
            findings.append(
                Finding(
                    WARN,
                    component,
                    f"{key}.context_window",
                    f"{key}.context_window: a one-word prompt with the default max output "
                    f"(policy.default_max_output_tokens {max_out}) {reach.window}: requests "
                    "that do not set a smaller max_output_tokens never go there",
                    "raise context_window or lower policy.default_max_output_tokens",
                )
            )
        elif not reach.reached:
            allowed = "; ".join(
                f"{name}: {_names(by_name[name].data_classes)}" for name in reach.callers or ()
            )
            findings.append(
                Finding(
                    WARN,
                    component,
                    f"{key}.data_classes",
                    f"{key}.data_classes ({', '.join(sorted(spec.data_classes))}) shares no "
                    f"data class with the tenants that may use it ({allowed}): no request can "
                    "go there",
                    f"widen {key}.data_classes or a tenant's auth.tenants[].data_classes",
                )
            )
        else:
            who = "; ".join(
                f"{dc.value} from {', '.join(sorted(names))}"
                for dc, names in sorted(reach.reached.items())
            )
            findings.append(Finding(OK, component, key, who))
    return findings
