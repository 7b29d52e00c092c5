"""Objectives: order the accepted candidates (details and examples in docs/policy.md).

Latency means the estimated total latency, or the estimated TTFT when the request gives
only a TTFT budget. A candidate meets the budget when it meets every budget the request
gives (``ttft_budget_ms`` against the estimated TTFT, ``total_budget_ms`` against the
estimated total); with no budget every candidate meets it.

    cheapest  budget-meeting candidates by (cost, latency), then the others by
              (latency, cost). The primary misses the budget only when nobody meets it.
    fastest   by (latency, cost).
    weighted  by score = w_cost * cost / min_cost + w_latency * latency / min_latency,
              each minimum taken over the candidates' non-zero values (a free backend's
              cost term is 0; when every cost is 0 the cost term vanishes).

Ties then go to the tier that keeps data closest (edge < gpu < hosted), then the name, so
the order is total and deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

from router.config import WeightsConfig
from router.types import BackendSpec, Estimate, InferenceRequest, Objective, Tier

#: Tie-break order of tiers (lower first).
TIER_ORDER: dict[Tier, int] = {Tier.EDGE: 0, Tier.GPU: 1, Tier.HOSTED: 2}

_CHEAPEST = Objective.CHEAPEST
_FASTEST = Objective.FASTEST


def uses_ttft(request: InferenceRequest) -> bool:
    """Whether latency is compared by TTFT (only a TTFT budget given) instead of total."""
    return request.ttft_budget_ms is not None and request.total_budget_ms is None


def meets_budget(est: Estimate, request: InferenceRequest) -> bool:
    ttft_b = request.ttft_budget_ms
    total_b = request.total_budget_ms
    return (ttft_b is None or est.ttft_ms <= ttft_b) and (
        total_b is None or est.total_ms <= total_b
    )


def rank(
    objective: Objective,
    specs: Sequence[BackendSpec],
    estimates: Sequence[Estimate],
    request: InferenceRequest,
    weights: WeightsConfig,
) -> tuple[list[int], list[float], list[bool]]:
    """Order candidates ``specs[i]`` / ``estimates[i]`` best first.

    Returns ``(order, scores, meets)``: indices best first, each candidate's score (cost in
    USD for cheapest, latency in ms for fastest, the weighted score for weighted) and
    whether it meets the request's budget.
    """
    ttft_b = request.ttft_budget_ms
    total_b = request.total_budget_ms
    by_ttft = ttft_b is not None and total_b is None
    tiers = TIER_ORDER
    n = len(specs)
    keys: list[tuple] = [()] * n
    scores: list[float] = [0.0] * n
    meets: list[bool] = [True] * n

    if objective is _CHEAPEST or objective is _FASTEST:
        cheapest = objective is _CHEAPEST
        for i in range(n):
            e = estimates[i]
            s = specs[i]
            lat = e.ttft_ms if by_ttft else e.total_ms
            ok = (ttft_b is None or e.ttft_ms <= ttft_b) and (
                total_b is None or e.total_ms <= total_b
            )
            meets[i] = ok
            if cheapest:
                scores[i] = e.cost_usd
                if ok:
                    keys[i] = (0, e.cost_usd, lat, tiers[s.tier], s.name)
                else:
                    keys[i] = (1, lat, e.cost_usd, tiers[s.tier], s.name)
            else:
                scores[i] = lat
                keys[i] = (lat, e.cost_usd, tiers[s.tier], s.name)
    else:
        lats = [e.ttft_ms if by_ttft else e.total_ms for e in estimates]
        ref_cost = min((e.cost_usd for e in estimates if e.cost_usd > 0.0), default=1.0)
        ref_lat = min((t for t in lats if t > 0.0), default=1.0)
        w_cost = weights.cost / ref_cost
        w_lat = weights.latency / ref_lat
        for i in range(n):
            e = estimates[i]
            s = specs[i]
            score = w_cost * e.cost_usd + w_lat * lats[i]
            scores[i] = score
            meets[i] = (ttft_b is None or e.ttft_ms <= ttft_b) and (
                total_b is None or e.total_ms <= total_b
            )
            keys[i] = (score, tiers[s.tier], s.name)

    order = sorted(range(n), key=keys.__getitem__)
    return order, scores, meets
