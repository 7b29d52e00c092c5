"""Objectives: order the accepted candidates (details and examples in docs/policy.md).

Latency means the estimated total latency, or the estimated TTFT when the request gives
only a TTFT budget. A candidate meets the budget when it meets every budget the request
gives (``ttft_budget_ms`` against the estimated TTFT, ``total_budget_ms`` against the
estimated total); with no budget every candidate meets it.

Every objective orders the budget-meeting candidates first, by its own score, then the
others by how far they miss (the largest of estimated TTFT / TTFT budget and estimated
total / total budget; latency when the request gives no budget), then by score: the
primary misses the budget only when nobody meets it.

    cheapest  score = cost; ties by latency.
    fastest   score = latency; ties by cost.
    weighted  score = w_cost * cost / min_cost + w_latency * latency / min_latency,
              each minimum taken over the candidates' non-zero values (a free backend's
              cost term is 0; when every cost is 0 the cost term vanishes); ties by
              latency.
    balanced  cheapest when the request gives no latency budget (:func:`effective`); when
              it gives one, the budget-meeting candidates *with room*, whose estimates
              stay within ``headroom`` (policy.headroom, 0.5) of every budget given, come
              first, then the others that meet it, each group by (cost, latency): a
              margin under the budget is bought with cost whatever the prices are.

Ties then go to the tier that keeps data closest (edge < gpu < hosted), then the name, so
the order is total and deterministic.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from operator import itemgetter

from router.policy.records import DEFAULT_HEADROOM, Weights
from router.types import BackendSpec, Estimate, InferenceRequest, Objective, Tier

#: Tie-break order of tiers (lower first). CACHE is never a backend's tier (it is listed so
#: that every Tier has a place).
TIER_ORDER: dict[Tier, int] = {Tier.CACHE: -1, Tier.EDGE: 0, Tier.GPU: 1, Tier.HOSTED: 2}

_CHEAPEST = Objective.CHEAPEST
_WEIGHTED = Objective.WEIGHTED
_BALANCED = Objective.BALANCED
_COST = itemgetter(2)
_LATENCY = itemgetter(3)


def effective(
    objective: Objective, ttft_budget_ms: float | None, total_budget_ms: float | None
) -> Objective:
    """The objective that orders the candidates: ``balanced`` is ``cheapest`` for a request
    without a latency budget (and itself, the headroom rule, for one with a budget); the
    others are themselves."""
    if objective is _BALANCED and ttft_budget_ms is None and total_budget_ms is None:
        return _CHEAPEST
    return objective


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
    weights: Weights,
    headroom: float = DEFAULT_HEADROOM,
) -> tuple[list[int], list[float], list[bool]]:
    """Order candidates ``specs[i]`` / ``estimates[i]`` best first.

    Returns ``(order, scores, meets)``: indices best first, each candidate's score (cost in
    USD for cheapest and balanced, latency in ms for fastest, the weighted score for
    weighted) and whether it meets the request's
    budget. ``headroom``: the balanced objective's share of the budget (policy.headroom).
    """
    ttft_b = request.ttft_budget_ms
    total_b = request.total_budget_ms
    objective = effective(objective, ttft_b, total_b)
    by_ttft = ttft_b is not None and total_b is None
    rows: list[Candidate] = [
        (
            s,
            e,
            e.cost_usd,
            e.ttft_ms if by_ttft else e.total_ms,
            (ttft_b is None or e.ttft_ms <= ttft_b) and (total_b is None or e.total_ms <= total_b),
        )
        for s, e in zip(specs, estimates, strict=True)
    ]
    order, scores = order_candidates(objective, rows, weights, (ttft_b, total_b), headroom)
    return order, scores, [r[4] for r in rows]


#: One accepted candidate: (spec, estimate, cost in USD, the latency the objective
#: compares in ms, whether it meets the request's budget).
Candidate = tuple[BackendSpec, Estimate, float, float, bool]


def order_candidates(
    objective: Objective,
    rows: Sequence[Candidate],
    weights: Weights,
    budgets: tuple[float | None, float | None] = (None, None),
    headroom: float = DEFAULT_HEADROOM,
) -> tuple[list[int], list[float]]:
    """The core of :func:`rank` over precomputed :data:`Candidate` rows; ``budgets``: the
    request's (TTFT, total) budgets in ms; ``headroom``: the balanced objective's share of
    them (``balanced`` as :func:`effective` leaves it: a request with a budget).

    Returns ``(order, scores)``: indices into ``rows`` best first, and each row's score.
    The planner calls this directly with the rows it builds while it estimates.
    """
    tiers = TIER_ORDER
    # Sort (key..., tier, name, index) tuples; names are unique, so the index never
    # decides. The leading key is a float, which keeps Python's sort on its fast path.
    scores: list[float]
    fastest = weighted = roomy = False
    w_cost = w_lat = 0.0
    if objective is _WEIGHTED:
        # Normalised by the smallest non-zero cost and latency (min() over a map runs in
        # C; a zero, a free backend, sends it to the filtered minimum): the default
        # objective, balanced, scores every request with a budget this way. The scores
        # themselves are computed in the loop below (one pass, no list comprehension).
        ref_cost = min(map(_COST, rows), default=1.0)
        if ref_cost <= 0.0:
            ref_cost = min([r[2] for r in rows if r[2] > 0.0], default=1.0)
        ref_lat = min(map(_LATENCY, rows), default=1.0)
        if ref_lat <= 0.0:
            ref_lat = min([r[3] for r in rows if r[3] > 0.0], default=1.0)
        w_cost = weights.cost / ref_cost
        w_lat = weights.latency / ref_lat
        weighted = True
        scores = []
    elif objective is _CHEAPEST:
        scores = list(map(_COST, rows))
    elif objective is _BALANCED:  # with a budget: the ones with room first, by cost
        scores = list(map(_COST, rows))
        roomy = True
    else:  # fastest
        scores = list(map(_LATENCY, rows))
        fastest = True
    keep = scores.append
    # The budget-meeting group by (score, then latency for cheapest and weighted, cost for
    # fastest; balanced: those with room, then those without, each by cost and latency),
    # then the others by how far they miss: the larger of estimated TTFT / TTFT
    # budget and estimated total / total budget (no budget passed: the latency), then
    # score.
    good: list[tuple[float, float, int, str, int]] = []
    rest: list[tuple[float, float, int, str, int]] = []
    tight: list[tuple[float, float, int, str, int]] = []
    add_good, add_rest, add_tight = good.append, rest.append, tight.append
    ttft_b, total_b = budgets
    budgeted = ttft_b is not None or total_b is not None
    room_ttft = headroom * ttft_b if ttft_b is not None else math.inf
    room_total = headroom * total_b if total_b is not None else math.inf
    for i, (s, est, cost, lat, meets) in enumerate(rows):
        if weighted:
            score = w_cost * cost + w_lat * lat
            keep(score)
        else:
            score = scores[i]
        if meets:
            if roomy and (est.ttft_ms > room_ttft or est.total_ms > room_total):
                add_tight((score, lat, tiers[s.tier], s.name, i))  # meets it without room
            else:
                add_good((score, cost if fastest else lat, tiers[s.tier], s.name, i))
            continue
        miss = lat
        if budgeted:  # max() of the two ratios, without the call
            miss = est.ttft_ms / ttft_b if ttft_b else 0.0
            if total_b:
                over = est.total_ms / total_b
                if over > miss:
                    miss = over
        add_rest((miss, score, tiers[s.tier], s.name, i))
    good.sort()
    order = [k[-1] for k in good]
    if tight:
        tight.sort()
        order += [k[-1] for k in tight]
    if rest:
        rest.sort()
        order += [k[-1] for k in rest]
    return order, scores


def spread(
    order: list[int],
    rows: Sequence[Candidate],
    loads: Sequence[float],
    mode: str,
    request_id: str,
    tolerance: float,
) -> list[int]:
    """Load spreading among the candidates *equivalent* to the first of ``order``: the
    run of candidates from the top of its tier (the tie-break between tiers stays: data
    closest) that meet the budget as it does, cost the same, and whose compared latency
    is within ``tolerance`` (relative) of its own (replicas of one model, typically).
    Without it, equivalent candidates are told apart by a sliver of latency or their
    name, so one takes everything until it queues.

    ``loads[i]``: candidate i's load per slot (max(in flight, reported) / max_concurrency).

    - ``power_of_two``: two of the equivalent candidates, picked by the CRC-32 of
      ``request_id`` (deterministic per request, spread across requests), the less loaded
      first. More robust than ``least_loaded`` when dozens of router replicas decide on
      stale loads.
    - ``least_loaded``: the least loaded of them first; among equally loaded ones, the
      first from a point picked by the CRC-32 of ``request_id`` (so router replicas that
      see the same idle replicas do not all pick the same one).
    - ``off``: the order as it is.

    The chosen candidate moves to the front; the others keep their order.
    """
    if mode == "off" or len(order) < 2:
        return order
    first = rows[order[0]]
    tier0, cost0, lat0, meets0 = first[0].tier, first[2], first[3], first[4]
    cost_tol = 1e-9 * max(abs(cost0), 1e-12)  # the same cost, to rounding
    lat_tol = tolerance * max(lat0, 1e-9)
    n = 1
    for i in order[1:]:
        s, _, cost, lat, meets = rows[i]
        if (
            meets is not meets0
            or abs(cost - cost0) > cost_tol
            or abs(lat - lat0) > lat_tol
            or s.tier is not tier0
        ):
            break
        n += 1
    if n < 2:
        return order
    key = zlib.crc32(request_id.encode())  # only now: most plans have no equivalents
    if mode == "least_loaded":
        # The first least loaded at or after ``start``, else before it: ties go round from
        # a point the request picks, so router replicas deciding alike do not herd.
        window = [loads[i] for i in order[:n]]
        low = min(window)
        start = key % n
        try:
            pick = window.index(low, start)
        except ValueError:
            pick = window.index(low)
    else:
        a = key % n  # the first drawn wins a tie, so equal loads spread evenly
        b = (a + 1 + (key // n) % (n - 1)) % n
        pick = b if loads[order[b]] < loads[order[a]] else a
    if pick == 0:
        return order
    chosen = order[pick]
    return [chosen, *order[:pick], *order[pick + 1 :]]
