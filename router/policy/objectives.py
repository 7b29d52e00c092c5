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
_WEIGHTED = Objective.WEIGHTED


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
    # Sort (key..., tier, name, index) tuples; names are unique, so the index never
    # decides. The leading key is a float, which keeps Python's sort on its fast path.
    first: list[tuple] = []  # cheapest: the budget-meeting group; otherwise everything
    rest: list[tuple] = []  # cheapest: the others
    scores: list[float] = []
    meets: list[bool] = []

    if objective is _WEIGHTED:
        lats = [e.ttft_ms if by_ttft else e.total_ms for e in estimates]
        ref_cost = min((e.cost_usd for e in estimates if e.cost_usd > 0.0), default=1.0)
        ref_lat = min((t for t in lats if t > 0.0), default=1.0)
        w_cost = weights.cost / ref_cost
        w_lat = weights.latency / ref_lat
        for i, (s, e) in enumerate(zip(specs, estimates, strict=True)):
            score = w_cost * e.cost_usd + w_lat * lats[i]
            scores.append(score)
            meets.append(
                (ttft_b is None or e.ttft_ms <= ttft_b)
                and (total_b is None or e.total_ms <= total_b)
            )
            first.append((score, tiers[s.tier], s.name, i))
    elif objective is _CHEAPEST:
        for i, (s, e) in enumerate(zip(specs, estimates, strict=True)):
            lat = e.ttft_ms if by_ttft else e.total_ms
            cost = e.cost_usd
            scores.append(cost)
            if (ttft_b is None or e.ttft_ms <= ttft_b) and (
                total_b is None or e.total_ms <= total_b
            ):
                meets.append(True)
                first.append((cost, lat, tiers[s.tier], s.name, i))
            else:
                meets.append(False)
                rest.append((lat, cost, tiers[s.tier], s.name, i))
    else:  # fastest
        for i, (s, e) in enumerate(zip(specs, estimates, strict=True)):
            lat = e.ttft_ms if by_ttft else e.total_ms
            scores.append(lat)
            meets.append(
                (ttft_b is None or e.ttft_ms <= ttft_b)
                and (total_b is None or e.total_ms <= total_b)
            )
            first.append((lat, e.cost_usd, tiers[s.tier], s.name, i))

    first.sort()
    order = [d[-1] for d in first]
    if rest:
        rest.sort()
        order += [d[-1] for d in rest]
    return order, scores, meets
