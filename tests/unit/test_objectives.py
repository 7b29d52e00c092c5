"""Objectives: cheapest-within-budget, fastest, weighted, and deterministic tie-breaks."""

from __future__ import annotations

import pytest

from router.config import WeightsConfig
from router.policy.objectives import TIER_ORDER, meets_budget, rank, uses_ttft
from router.types import (
    BACKEND_TIERS,
    BackendSpec,
    DataClass,
    Estimate,
    InferenceRequest,
    Message,
    Objective,
    Priors,
    Role,
    Tier,
)


def make_spec(name: str, tier: Tier = Tier.GPU) -> BackendSpec:
    return BackendSpec(
        name=name,
        tier=tier,
        kind="model_service",
        endpoint="127.0.0.1:9000",
        model="m",
        context_window=8192,
        max_payload_bytes=1_000_000,
        max_concurrency=4,
        max_queue=4,
        data_classes=frozenset({DataClass.INTERNAL}),
        priors=Priors(100.0, 50.0),
    )


def est(ttft: float, total: float, cost: float) -> Estimate:
    return Estimate(
        ttft_ms=ttft,
        total_ms=total,
        cost_usd=cost,
        queue_wait_ms=0.0,
        from_priors=False,
        prompt_tokens=10,
        tokens_exact=False,
    )


def make_request(**kw: object) -> InferenceRequest:
    return InferenceRequest(
        messages=(Message(Role.USER, "hi"),), max_output_tokens=10, request_id="r", **kw
    )  # type: ignore[arg-type]


DEFAULT_WEIGHTS = WeightsConfig()


def ranked(
    objective: Objective,
    candidates: list[tuple[BackendSpec, Estimate]],
    weights: WeightsConfig = DEFAULT_WEIGHTS,
    headroom: float = 0.5,
    **req: object,
) -> tuple[list[str], list[float], list[bool]]:
    specs = [s for s, _ in candidates]
    ests = [e for _, e in candidates]
    order, scores, meets = rank(objective, specs, ests, make_request(**req), weights, headroom)
    return [specs[i].name for i in order], scores, meets


# hosted: fast and pricey; gpu: medium; edge: slow and nearly free
HOSTED = (make_spec("hosted-a", Tier.HOSTED), est(300, 1_000, 0.0100))
GPU = (make_spec("gpu-a", Tier.GPU), est(150, 3_000, 0.0010))
EDGE = (make_spec("edge-a", Tier.EDGE), est(60, 9_000, 0.0000))
ALL = [HOSTED, GPU, EDGE]


def test_budget_checks_every_budget_given() -> None:
    e = est(100, 5_000, 0.0)
    assert meets_budget(e, make_request())
    assert meets_budget(e, make_request(ttft_budget_ms=100))
    assert not meets_budget(e, make_request(ttft_budget_ms=99))
    assert not meets_budget(e, make_request(ttft_budget_ms=100, total_budget_ms=4_999))
    assert meets_budget(e, make_request(ttft_budget_ms=100, total_budget_ms=5_000))


def test_latency_is_ttft_only_when_only_a_ttft_budget_is_given() -> None:
    assert uses_ttft(make_request(ttft_budget_ms=1))
    assert not uses_ttft(make_request())
    assert not uses_ttft(make_request(total_budget_ms=1))
    assert not uses_ttft(make_request(ttft_budget_ms=1, total_budget_ms=1))


# --- cheapest -------------------------------------------------------------------------


def test_cheapest_without_budget_orders_by_cost() -> None:
    names, scores, meets = ranked(Objective.CHEAPEST, ALL)
    assert names == ["edge-a", "gpu-a", "hosted-a"]
    assert scores == [0.01, 0.001, 0.0]  # input order: the cost of each candidate
    assert meets == [True, True, True]


def test_cheapest_meeting_the_budget_then_the_rest_by_latency() -> None:
    # total <= 5000 ms: hosted and gpu meet it, edge (9000 ms) does not
    names, _, meets = ranked(Objective.CHEAPEST, ALL, total_budget_ms=5_000)
    assert names == ["gpu-a", "hosted-a", "edge-a"]
    assert meets == [True, True, False]


def test_non_meeting_candidates_follow_by_latency() -> None:
    slow_cheap = (make_spec("edge-b", Tier.EDGE), est(60, 20_000, 0.0))
    names, _, _ = ranked(Objective.CHEAPEST, [slow_cheap, *ALL], total_budget_ms=2_000)
    assert names == ["hosted-a", "gpu-a", "edge-a", "edge-b"]


def test_cheapest_with_no_candidate_meeting_falls_back_to_fastest() -> None:
    names, _, meets = ranked(Objective.CHEAPEST, ALL, total_budget_ms=500)
    assert names == ["hosted-a", "gpu-a", "edge-a"]
    assert meets == [False, False, False]


def test_cheapest_with_only_a_ttft_budget_compares_ttft() -> None:
    # ttft <= 200: gpu (150) and edge (60) meet; edge is cheapest
    names, _, meets = ranked(Objective.CHEAPEST, ALL, ttft_budget_ms=200)
    assert names == ["edge-a", "gpu-a", "hosted-a"]
    assert meets == [False, True, True]
    # nobody meets 50 ms: fastest by ttft first
    names, _, _ = ranked(Objective.CHEAPEST, ALL, ttft_budget_ms=50)
    assert names == ["edge-a", "gpu-a", "hosted-a"]


def test_cheapest_with_both_budgets_needs_both() -> None:
    # ttft <= 200 rules out hosted; total <= 5000 rules out edge
    names, _, meets = ranked(Objective.CHEAPEST, ALL, ttft_budget_ms=200, total_budget_ms=5_000)
    assert names[0] == "gpu-a"
    assert meets == [False, True, False]


def test_cheapest_breaks_cost_ties_by_latency() -> None:
    a = (make_spec("edge-a", Tier.EDGE), est(60, 9_000, 0.0))
    b = (make_spec("edge-b", Tier.EDGE), est(60, 4_000, 0.0))
    names, _, _ = ranked(Objective.CHEAPEST, [a, b])
    assert names == ["edge-b", "edge-a"]


# --- fastest --------------------------------------------------------------------------


def test_fastest_orders_by_total_latency() -> None:
    names, scores, meets = ranked(Objective.FASTEST, ALL)
    assert names == ["hosted-a", "gpu-a", "edge-a"]
    assert scores == [1_000, 3_000, 9_000]
    assert meets == [True, True, True]


def test_fastest_orders_by_ttft_when_only_a_ttft_budget_is_given() -> None:
    names, scores, meets = ranked(Objective.FASTEST, ALL, ttft_budget_ms=100)
    assert names == ["edge-a", "gpu-a", "hosted-a"]
    assert scores == [300, 150, 60]
    assert meets == [False, False, True]


# --- weighted -------------------------------------------------------------------------


EVEN = WeightsConfig(cost=1.0, latency=1.0)


def test_weighted_score_normalises_by_the_smallest_non_zero_values() -> None:
    _, scores, _ = ranked(Objective.WEIGHTED, ALL, EVEN)
    # min non-zero cost 0.001, min total 1000 ms
    assert scores[0] == pytest.approx(0.01 / 0.001 + 1_000 / 1_000)  # hosted 11
    assert scores[1] == pytest.approx(0.001 / 0.001 + 3_000 / 1_000)  # gpu 4
    assert scores[2] == pytest.approx(0.0 + 9_000 / 1_000)  # edge: free, 9


def test_default_weights_count_latency_ten_times_cost() -> None:
    assert (DEFAULT_WEIGHTS.cost, DEFAULT_WEIGHTS.latency) == (1.0, 10.0)
    _, scores, _ = ranked(Objective.WEIGHTED, ALL)
    assert scores == [
        pytest.approx(10 + 10 * 1),  # hosted 20
        pytest.approx(1 + 10 * 3),  # gpu 31
        pytest.approx(0 + 10 * 9),  # edge 90
    ]


def test_weighted_order_follows_the_weights() -> None:
    names, _, _ = ranked(Objective.WEIGHTED, ALL, EVEN)
    assert names == ["gpu-a", "edge-a", "hosted-a"]
    assert ranked(Objective.WEIGHTED, ALL)[0] == ["hosted-a", "gpu-a", "edge-a"]
    latency_only = WeightsConfig(cost=0.0, latency=1.0)
    assert ranked(Objective.WEIGHTED, ALL, latency_only)[0] == ["hosted-a", "gpu-a", "edge-a"]
    cost_only = WeightsConfig(cost=1.0, latency=0.0)
    assert ranked(Objective.WEIGHTED, ALL, cost_only)[0] == ["edge-a", "gpu-a", "hosted-a"]


def test_weighted_with_every_cost_zero_uses_latency_alone() -> None:
    a = (make_spec("edge-a", Tier.EDGE), est(60, 9_000, 0.0))
    b = (make_spec("gpu-a", Tier.GPU), est(60, 3_000, 0.0))
    names, scores, _ = ranked(Objective.WEIGHTED, [a, b], EVEN)
    assert names == ["gpu-a", "edge-a"]
    assert scores == [pytest.approx(3.0), pytest.approx(1.0)]


def test_weighted_reports_whether_the_budget_is_met() -> None:
    _, _, meets = ranked(Objective.WEIGHTED, ALL, total_budget_ms=3_000)
    assert meets == [True, True, False]


@pytest.mark.parametrize("objective", [Objective.WEIGHTED, Objective.FASTEST])
def test_every_objective_puts_the_budget_meeting_candidates_first(objective: Objective) -> None:
    # hosted: the best score for both (fast), but over its 500 ms TTFT budget; gpu and
    # edge meet it: they go first, by the objective's score, then hosted.
    hosted = (make_spec("hosted-a", Tier.HOSTED), est(900, 1_000, 0.0100))
    names, _, meets = ranked(
        objective, [hosted, GPU, EDGE], EVEN, ttft_budget_ms=500, total_budget_ms=10_000
    )
    assert meets == [False, True, True]
    assert names == ["gpu-a", "edge-a", "hosted-a"]


def test_weighted_orders_the_candidates_that_miss_by_how_far() -> None:
    # Nobody meets 800 ms: gpu misses by 3_000 / 800, hosted by 1_000 / 800 (its score is
    # the worse one with cost counted as much as latency): the closest goes first.
    names, _, meets = ranked(Objective.WEIGHTED, ALL, EVEN, total_budget_ms=800)
    assert meets == [False, False, False]
    assert names == ["hosted-a", "gpu-a", "edge-a"]


# --- tie-breaks -----------------------------------------------------------------------


def test_tier_order_prefers_edge_then_gpu_then_hosted() -> None:
    assert sorted(BACKEND_TIERS, key=TIER_ORDER.__getitem__) == [Tier.EDGE, Tier.GPU, Tier.HOSTED]
    assert set(TIER_ORDER) == set(Tier)  # the cache's tier too, though no backend has it


@pytest.mark.parametrize("objective", list(Objective))
def test_exact_ties_go_to_the_tier_order_then_the_name(objective: Objective) -> None:
    same = est(100, 1_000, 0.001)
    candidates = [
        (make_spec("h-1", Tier.HOSTED), same),
        (make_spec("g-2", Tier.GPU), same),
        (make_spec("e-2", Tier.EDGE), same),
        (make_spec("g-1", Tier.GPU), same),
        (make_spec("e-1", Tier.EDGE), same),
    ]
    expected = ["e-1", "e-2", "g-1", "g-2", "h-1"]
    assert ranked(objective, candidates)[0] == expected
    assert ranked(objective, candidates[::-1])[0] == expected


# --- the rule as written, against the fused loop --------------------------------------


def _reference_order(
    objective: Objective,
    candidates: list[tuple[BackendSpec, Estimate]],
    weights: WeightsConfig,
    ttft_b: float | None,
    total_b: float | None,
    headroom: float,
) -> tuple[list[str], list[float]]:
    """The module doc's rule, written the plain way (no fused loop, max() as max())."""
    by_ttft = ttft_b is not None and total_b is None
    lat = [e.ttft_ms if by_ttft else e.total_ms for _, e in candidates]
    cost = [e.cost_usd for _, e in candidates]
    room = False
    if objective is Objective.BALANCED:
        no_budget = ttft_b is None and total_b is None
        objective = Objective.CHEAPEST
        room = not no_budget
    if objective is Objective.WEIGHTED:
        ref_c = min([c for c in cost if c > 0], default=1.0)
        ref_l = min([v for v in lat if v > 0], default=1.0)
        scores = [
            weights.cost / ref_c * c + weights.latency / ref_l * v
            for c, v in zip(cost, lat, strict=True)
        ]
    elif objective is Objective.CHEAPEST:
        scores = cost
    else:
        scores = lat

    def key(i: int) -> tuple[object, ...]:
        s, e = candidates[i]
        meets = (ttft_b is None or e.ttft_ms <= ttft_b) and (
            total_b is None or e.total_ms <= total_b
        )
        tail = (TIER_ORDER[s.tier], s.name)
        if meets:
            second = cost[i] if objective is Objective.FASTEST else lat[i]
            # balanced with a budget: within headroom x every budget given first
            tight = room and not (
                (ttft_b is None or e.ttft_ms <= headroom * ttft_b)
                and (total_b is None or e.total_ms <= headroom * total_b)
            )
            return (0, tight, scores[i], second, *tail)
        if ttft_b is None and total_b is None:
            miss = lat[i]
        else:
            miss = max(
                e.ttft_ms / ttft_b if ttft_b else 0.0, e.total_ms / total_b if total_b else 0.0
            )
        return (1, miss, scores[i], 0.0, *tail)

    order = sorted(range(len(candidates)), key=key)
    return [candidates[i][0].name for i in order], scores


@pytest.mark.parametrize("objective", list(Objective))
def test_the_order_follows_the_rule_as_written_on_random_candidates(objective: Objective) -> None:
    import random

    rng = random.Random(17)
    tiers = [Tier.EDGE, Tier.GPU, Tier.HOSTED]
    for _ in range(1_500):
        n = rng.randint(1, 9)
        candidates = []
        for k in range(n):
            ttft = rng.choice([0.0, 100.0, rng.uniform(10, 2_000)])
            total = ttft + rng.choice([0.0, 1_000.0, rng.uniform(0, 20_000)])
            cost = rng.choice([0.0, 0.001, rng.uniform(0, 0.01)])
            candidates.append((make_spec(f"b{k}", rng.choice(tiers)), est(ttft, total, cost)))
        ttft_b = rng.choice([None, 300.0, 1_000.0])
        total_b = rng.choice([None, 2_000.0, 5_000.0])
        weights = WeightsConfig(cost=rng.choice([1.0, 2.5]), latency=rng.choice([8.0, 1.0, 0.0]))
        headroom = rng.choice([0.5, 0.3, 1.0])
        budgets = {"ttft_budget_ms": ttft_b, "total_budget_ms": total_b}
        names, scores, _ = ranked(objective, candidates, weights, headroom, **budgets)
        want_names, want_scores = _reference_order(
            objective, candidates, weights, ttft_b, total_b, headroom
        )
        assert names == want_names
        assert scores == pytest.approx(want_scores, rel=1e-12, abs=0)
