"""Routing strategies under simulation: the router's own policy, and the baselines.

``router`` calls :func:`router.policy.plan` (the function ``hybrid-router serve`` calls,
imported, not copied) on the snapshots of the simulation's :class:`~router.stats.BackendStats`,
and admits a backend through its circuit breaker, as dispatch does.

Every baseline sees only the backends the request may use at all: the policy's own static
filters (:func:`eligible`: data class, context window, payload, the tenant's backends), so
no strategy breaks a data-class rule; what they ignore is what the router adds on top
(latency budgets, live estimates, cost caps). Each keeps ``1 + policy.max_fallbacks``
backends in its order, as the router does.

    always-hosted    the hosted backends only, cheapest first
    always-cheapest  by estimated cost
    round-robin      rotates over the eligible backends
    least-loaded     fewest requests in flight per slot (the router's own count: with
                     several replicas, the replica's)
    litellm-simple-shuffle   LiteLLM's default: a uniform random order (no rpm/tpm weights)
    litellm-latency-based    lowest mean TTFT over the last 10 answers (none yet: 0, so
                             new deployments are tried first)
    litellm-usage-based      lowest tokens used this minute (usage-based-routing-v2)
    litellm-cost-based       lowest price per token (input + output)

The LiteLLM strategies also keep LiteLLM's cooldowns: a deployment with more than 3
failures in a minute, or a 429, is skipped for 5 s (``cooldown_time``; a Retry-After
longer than that wins).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from router.config import OutputEstimateConfig
from router.errors import RouterError
from router.output_lengths import OutputLengths
from router.policy import TIER_ORDER, PolicyParams, cost_usd, plan
from router.policy.filters import RequestFilter
from router.simulation.trace import TraceRequest
from router.types import (
    BackendSnapshot,
    BackendSpec,
    Features,
    InferenceRequest,
    Tier,
    TokenCount,
    frozen_factory,
)

if TYPE_CHECKING:
    from router.simulation.engine import Observation, Simulation
    from router.simulation.fleet import Fleet

#: Bytes per prompt token when a trace gives counts (the estimate's ~2.6 chars, rounded up).
BYTES_PER_TOKEN = 3


_new_request = frozen_factory(InferenceRequest)
_new_features = frozen_factory(Features)


def request_of(index: int, tr: TraceRequest) -> InferenceRequest:
    """The router's view of a trace request (no text: counts are given)."""
    return _new_request(
        messages=(),
        max_output_tokens=tr.planned_output_tokens,
        request_id=f"sim-{index}",
        ttft_budget_ms=tr.ttft_budget_ms,
        total_budget_ms=tr.total_budget_ms,
        max_cost_usd=tr.max_cost_usd,
        data_class=tr.data_class,
        tenant=tr.tenant,
        objective=tr.objective,
        session_id=tr.session,
    )


def features_of(
    index: int, tr: TraceRequest, tokenizer_ids: Sequence[str], expected: int | None = None
) -> Features:
    count = TokenCount(tr.prompt_tokens, False)
    return _new_features(
        request_of(index, tr),
        tr.prompt_tokens * BYTES_PER_TOKEN,
        {tid: count for tid in tokenizer_ids},
        None,
        expected,
    )


def tenant_specs(fleet: Fleet, tenant: str) -> tuple[BackendSpec, ...]:
    allowed = fleet.tenant_backends.get(tenant)
    if allowed is None:
        return fleet.specs
    return tuple(s for s in fleet.specs if s.name in allowed)


def eligible(fleet: Fleet, index: int, tr: TraceRequest) -> list[BackendSpec]:
    """The backends the request may use at all: the policy's static filters on an idle,
    healthy snapshot (live state and cost caps left out), within the tenant's backends."""
    tids = sorted({s.tokenizer_id for s in fleet.specs} | {"estimate"})
    feats = features_of(index, tr, tids)
    flt = RequestFilter(feats, tr.planned_output_tokens, 0.0)
    count = TokenCount(tr.prompt_tokens, False)
    return [
        s
        for s in tenant_specs(fleet, tr.tenant)
        if flt.check(s, BackendSnapshot(s.name), count) is None
    ]


class RouterStrategy:
    """The router's policy: ``plan()`` on live snapshots; the circuit breaker admits;
    expected answer lengths learnt as dispatch learns them (router/output_lengths.py).

    ``params`` / ``output_estimate`` replace the fleet configuration's (to compare
    settings side by side)."""

    def __init__(
        self,
        params: PolicyParams | None = None,
        name: str = "router",
        output_estimate: OutputEstimateConfig | None = None,
    ) -> None:
        self.name = name
        self._params = params
        self._output_estimate = output_estimate

    def bind(self, sim: Simulation) -> None:
        self.sim = sim
        fleet = sim.fleet
        self.params = self._params or fleet.params
        estimates = self._output_estimate or fleet.config.policy.output_estimate
        #: Each router replica learns the answer lengths of the requests it served.
        self.replica_outputs = [OutputLengths(estimates) for _ in range(sim.replicas)]
        self.tids = sorted({s.tokenizer_id for s in fleet.specs} | {"estimate"})
        self._pairs: dict[tuple[int, str], list[tuple[BackendSpec, object]]] = {}

    def _backends(self, tenant: str) -> list[tuple[BackendSpec, object]]:
        """The tenant's backends with the current replica's stats of each."""
        key = (self.sim.replica, tenant)
        pairs = self._pairs.get(key)
        if pairs is None:
            specs = tenant_specs(self.sim.fleet, tenant)
            pairs = self._pairs[key] = [(s, self.sim.stats(s.name)) for s in specs]
        return pairs

    def expected_output(self, request: TraceRequest) -> int | None:
        """The answer length the plan counts (None: ``max_output_tokens``): the replica's
        learnt estimate, as dispatch reads it."""
        planned = request.planned_output_tokens
        expected = self.replica_outputs[self.sim.replica].expected(request.tenant, planned)
        return expected if expected != planned else None

    def order(self, index: int, request: TraceRequest, now: float) -> list[str] | str:
        feats = features_of(index, request, self.tids, self.expected_output(request))
        snaps = [(spec, st.snapshot()) for spec, st in self._backends(request.tenant)]  # type: ignore[attr-defined]
        try:
            return list(plan(feats, snaps, self.params, now, detail=False).order)
        except RouterError as exc:
            return f"{type(exc).__name__}: {exc.message}"

    def admit(self, backend: str, now: float) -> bool:
        return self.sim.stats(backend).allow()

    def completed(self, request: TraceRequest) -> None:
        """A complete answer (dispatch records it for the tenant, in the replica that
        served it)."""
        self.replica_outputs[self.sim.replica].record(
            request.tenant, request.planned_output_tokens, request.output_tokens
        )

    def observe(self, seen: Observation) -> None:
        pass  # the simulation feeds the router's BackendStats itself, as dispatch does


class Eligibility:
    """:func:`eligible`, remembered per combination of the fields it depends on."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._found: dict[tuple[object, ...], list[BackendSpec]] = {}

    def __call__(self, index: int, tr: TraceRequest) -> list[BackendSpec]:
        key = (tr.tenant, tr.data_class, tr.prompt_tokens, tr.planned_output_tokens)
        found = self._found.get(key)
        if found is None:
            if len(self._found) > 100_000:
                self._found.clear()
            found = self._found[key] = eligible(self.fleet, index, tr)
        return found


class _Baseline:
    """Eligible backends, ranked by ``_rank``; no breaker."""

    name = ""

    def bind(self, sim: Simulation) -> None:
        self.sim = sim
        self.keep = 1 + sim.fleet.params.max_fallbacks
        self._candidates = Eligibility(sim.fleet)

    def order(self, index: int, request: TraceRequest, now: float) -> list[str] | str:
        specs = self._candidates(index, request)
        if not specs:
            return "no eligible backend (data class, window or tenant)"
        ranked = self._rank(specs, request, now)
        return [s.name for s in ranked[: self.keep]]

    def _rank(self, specs: list[BackendSpec], tr: TraceRequest, now: float) -> list[BackendSpec]:
        raise NotImplementedError

    def admit(self, backend: str, now: float) -> bool:
        return True

    def observe(self, seen: Observation) -> None:
        pass


def _by_cost(specs: list[BackendSpec], tr: TraceRequest) -> list[BackendSpec]:
    out = tr.planned_output_tokens
    return sorted(
        specs, key=lambda s: (cost_usd(s, tr.prompt_tokens, out), TIER_ORDER[s.tier], s.name)
    )


class AlwaysHosted(_Baseline):
    name = "always-hosted"

    def _rank(self, specs: list[BackendSpec], tr: TraceRequest, now: float) -> list[BackendSpec]:
        return _by_cost([s for s in specs if s.tier is Tier.HOSTED], tr)

    def order(self, index: int, request: TraceRequest, now: float) -> list[str] | str:
        chosen = super().order(index, request, now)
        return chosen or "no hosted backend may take this request"


class AlwaysCheapest(_Baseline):
    name = "always-cheapest"

    def _rank(self, specs: list[BackendSpec], tr: TraceRequest, now: float) -> list[BackendSpec]:
        return _by_cost(specs, tr)


class RoundRobin(_Baseline):
    name = "round-robin"
    _turn = 0

    def _rank(self, specs: list[BackendSpec], tr: TraceRequest, now: float) -> list[BackendSpec]:
        k = self._turn % len(specs)
        self._turn += 1
        return specs[k:] + specs[:k]


class LeastLoaded(_Baseline):
    name = "least-loaded"

    def _rank(self, specs: list[BackendSpec], tr: TraceRequest, now: float) -> list[BackendSpec]:
        stats = self.sim.stats
        return sorted(
            specs, key=lambda s: (stats(s.name).in_flight / max(1, s.max_concurrency), s.name)
        )


class _LiteLLM(_Baseline):
    """LiteLLM's cooldowns: more than ``ALLOWED_FAILS`` failures in a minute, or a 429,
    skip the deployment for ``COOLDOWN_S`` (a longer Retry-After wins)."""

    ALLOWED_FAILS = 3
    COOLDOWN_S = 5.0

    def bind(self, sim: Simulation) -> None:
        super().bind(sim)
        self._until: dict[str, float] = {}
        self._fails: dict[str, deque[float]] = {}

    def admit(self, backend: str, now: float) -> bool:
        return now >= self._until.get(backend, 0.0)

    def observe(self, seen: Observation) -> None:
        if seen.ok:
            return
        now, backend = seen.now, seen.backend
        if seen.retry_after_s is not None:
            self._until[backend] = now + max(self.COOLDOWN_S, seen.retry_after_s)
            return
        fails = self._fails.setdefault(backend, deque())
        fails.append(now)
        while fails and fails[0] < now - 60.0:
            fails.popleft()
        if len(fails) > self.ALLOWED_FAILS:
            self._until[backend] = now + self.COOLDOWN_S
            fails.clear()

    def order(self, index: int, request: TraceRequest, now: float) -> list[str] | str:
        specs = [s for s in self._candidates(index, request) if now >= self._until.get(s.name, 0.0)]
        if not specs:  # all cooling down: LiteLLM answers "no deployments available"
            return "every deployment is cooling down"
        return [s.name for s in self._rank(specs, request, now)[: self.keep]]


class SimpleShuffle(_LiteLLM):
    name = "litellm-simple-shuffle"

    def bind(self, sim: Simulation) -> None:
        super().bind(sim)
        self._rng = random.Random(sim.seed)

    def _rank(self, specs: list[BackendSpec], tr: TraceRequest, now: float) -> list[BackendSpec]:
        return self._rng.sample(specs, len(specs))


class LatencyBased(_LiteLLM):
    name = "litellm-latency-based"

    def bind(self, sim: Simulation) -> None:
        super().bind(sim)
        self._ttft: dict[str, deque[float]] = {}

    def observe(self, seen: Observation) -> None:
        super().observe(seen)
        if seen.ok and seen.ttft_ms is not None:
            self._ttft.setdefault(seen.backend, deque(maxlen=10)).append(seen.ttft_ms)

    def _rank(self, specs: list[BackendSpec], tr: TraceRequest, now: float) -> list[BackendSpec]:
        def mean(s: BackendSpec) -> float:
            window = self._ttft.get(s.name)
            return sum(window) / len(window) if window else 0.0

        return sorted(specs, key=lambda s: (mean(s), s.name))


class UsageBased(_LiteLLM):
    name = "litellm-usage-based"

    def bind(self, sim: Simulation) -> None:
        super().bind(sim)
        self._minute = -1
        self._tpm: dict[str, int] = {}

    def _roll(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self._minute:
            self._minute = minute
            self._tpm.clear()

    def observe(self, seen: Observation) -> None:
        super().observe(seen)
        if seen.ok:
            self._roll(seen.now)
            self._tpm[seen.backend] = self._tpm.get(seen.backend, 0) + seen.tokens

    def _rank(self, specs: list[BackendSpec], tr: TraceRequest, now: float) -> list[BackendSpec]:
        self._roll(now)
        return sorted(specs, key=lambda s: (self._tpm.get(s.name, 0), s.name))


class CostBased(_LiteLLM):
    name = "litellm-cost-based"

    def _rank(self, specs: list[BackendSpec], tr: TraceRequest, now: float) -> list[BackendSpec]:
        return sorted(specs, key=lambda s: (cost_usd(s, 1, 1), s.name))


#: Every strategy by name (the router's first), as ``hybrid-router simulate --strategies``
#: takes them.
STRATEGIES: dict[str, Callable[[], object]] = {
    "router": RouterStrategy,
    "always-hosted": AlwaysHosted,
    "always-cheapest": AlwaysCheapest,
    "round-robin": RoundRobin,
    "least-loaded": LeastLoaded,
    "litellm-simple-shuffle": SimpleShuffle,
    "litellm-latency-based": LatencyBased,
    "litellm-usage-based": UsageBased,
    "litellm-cost-based": CostBased,
}
