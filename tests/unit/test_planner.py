"""plan(): the ordered Plan, its reports and explanation, and the error precedence."""

from __future__ import annotations

import dataclasses

import pytest
from testkit import FakeClock

from router.config import PolicyConfig
from router.errors import (
    CostCapTooLow,
    InvalidRequest,
    NoCandidate,
    NoTierAllowed,
    NoWindowFits,
)
from router.policy import plan
from router.records import policy_params
from router.stats import BackendStats
from router.types import (
    BackendSnapshot,
    BackendSpec,
    DataClass,
    Features,
    InferenceRequest,
    Message,
    Objective,
    Plan,
    Prices,
    Priors,
    Role,
    Tier,
    TokenCount,
)

NOW = 500.0
CFG = PolicyConfig()


def make_spec(name: str, tier: Tier, **kw: object) -> BackendSpec:
    fields: dict[str, object] = {
        "name": name,
        "tier": tier,
        "kind": "openai" if tier is Tier.HOSTED else "model_service",
        "endpoint": "127.0.0.1:9000",
        "model": "m",
        "context_window": 8192,
        "max_payload_bytes": 100_000,
        "max_concurrency": 2,
        "max_queue": 4,
        "data_classes": frozenset({DataClass.PUBLIC, DataClass.INTERNAL}),
        "priors": Priors(ttft_ms=100.0, decode_tokens_per_s=50.0),
    }
    fields.update(kw)
    return BackendSpec(**fields)  # type: ignore[arg-type]


# hosted: big window, fast, per-token price; gpu: amortised; edge: small, slow, free
HOSTED = make_spec(
    "hosted-a",
    Tier.HOSTED,
    context_window=128_000,
    priors=Priors(300.0, 100.0),
    prices=Prices(input_per_mtok_usd=1.0, output_per_mtok_usd=4.0),
)
GPU = make_spec(
    "gpu-a",
    Tier.GPU,
    context_window=16_384,
    priors=Priors(150.0, 60.0),
    prices=Prices(gpu_hourly_usd=4.0, gpu_throughput_tokens_per_s=2000.0),
)
EDGE = make_spec(
    "edge-a",
    Tier.EDGE,
    context_window=2048,
    priors=Priors(50.0, 20.0),
    data_classes=frozenset(DataClass),
)
SPECS = (HOSTED, GPU, EDGE)


def make_request(**kw: object) -> InferenceRequest:
    fields: dict[str, object] = {
        "messages": (Message(Role.USER, "hello"),),
        "max_output_tokens": 100,
        "request_id": "req-1",
    }
    fields.update(kw)
    return InferenceRequest(**fields)  # type: ignore[arg-type]


def features(request: InferenceRequest, tokens: int = 500, payload: int = 100) -> Features:
    return Features(request, payload, {"estimate": TokenCount(tokens, False)})


def pairs(
    *specs: BackendSpec, **snaps: BackendSnapshot
) -> list[tuple[BackendSpec, BackendSnapshot]]:
    return [(s, snaps.get(s.name.replace("-", "_"), BackendSnapshot(s.name))) for s in specs]


def run(
    request: InferenceRequest,
    *specs: BackendSpec,
    cfg: PolicyConfig = CFG,
    tokens: int = 500,
    snaps: dict[str, BackendSnapshot] | None = None,
) -> Plan:
    """plan() over ``specs`` (default: hosted, gpu, edge); ``snaps`` by name with _ for -."""
    backends = pairs(*(specs or SPECS), **(snaps or {}))
    return plan(features(request, tokens), backends, policy_params(cfg), NOW)


# --- the plan -------------------------------------------------------------------------


def test_cheapest_without_budget_picks_the_free_edge_device() -> None:
    p = run(make_request())  # the default objective, balanced: cheapest without a budget
    assert p.order == ("edge-a", "gpu-a", "hosted-a")
    assert p.primary == "edge-a" and p.fallbacks == ("gpu-a", "hosted-a")
    assert p.objective is Objective.BALANCED
    assert run(make_request(objective=Objective.CHEAPEST)).order == p.order
    assert not p.budget_unmet
    assert p.request_id == "req-1" and p.decision_us == 0.0
    assert p.explanation == ("edge-a: cheapest ($0.000000), no latency budget given; 2 fallbacks")
    assert [c.rank for c in p.candidates] == [1, 2, 3]
    assert all(c.accepted and c.estimate is not None and c.meets_budget for c in p.candidates)


def test_a_latency_budget_moves_the_choice_to_a_faster_tier() -> None:
    # No samples: each TTFT is its prior p90 (twice the prior median).
    # edge: 100 + 100/20*1000 = 5100 ms; gpu: 300 + 1667 = 1967 ms; hosted: 600 + 1000
    p = run(make_request(total_budget_ms=2_000, objective=Objective.CHEAPEST))
    assert p.order == ("gpu-a", "hosted-a", "edge-a")
    assert [c.meets_budget for c in p.candidates] == [True, True, False]
    assert p.explanation.startswith("gpu-a: cheapest ($0.000")
    assert "meeting total<=2000ms; 2 fallbacks" in p.explanation


def test_no_candidate_meeting_the_budget_sets_budget_unmet() -> None:
    p = run(make_request(ttft_budget_ms=10, objective=Objective.CHEAPEST))
    assert p.budget_unmet
    assert p.primary == "edge-a"  # fastest TTFT (prior p90: 2 x 50 ms)
    assert p.explanation == (
        "edge-a: fastest (est ttft 100 ms); no candidate meets ttft<=10ms (budget unmet); "
        "2 fallbacks"
    )


def test_balanced_takes_the_cheapest_with_room_under_the_budget() -> None:
    # gpu: total 1967 ms, $0.000139; hosted: 1600 ms, $0.0009; edge: 5100 ms, free.
    def order(budget: float, headroom: float = 0.5) -> Plan:
        return run(make_request(total_budget_ms=budget), cfg=PolicyConfig(headroom=headroom))

    # 3.3 s: only hosted stays within 50% (1.65 s), so it goes first, dearer as it is.
    roomy = order(3_300)
    assert roomy.objective is Objective.BALANCED
    assert roomy.order == ("hosted-a", "gpu-a", "edge-a")
    assert roomy.explanation == (
        "hosted-a: cheapest ($0.000900) meeting total<=3300ms with room (within 50% of it); "
        "2 fallbacks"
    )
    assert [c.score for c in roomy.candidates] == [0.0009, pytest.approx(0.000138889), 0.0]
    # 4 s: both within 2 s, the cheaper first; 2 s: neither, the cheaper that meets it.
    assert order(4_000).order == ("gpu-a", "hosted-a", "edge-a")
    tight = order(2_000)
    assert tight.order == ("gpu-a", "hosted-a", "edge-a")
    assert tight.explanation.startswith(
        "gpu-a: cheapest ($0.000139) meeting total<=2000ms without room (not within 50% of it)"
    )
    # headroom 1 is cheapest; 0.45 leaves hosted without room at 3.3 s.
    cheapest = run(make_request(total_budget_ms=3_300, objective=Objective.CHEAPEST))
    assert order(3_300, headroom=1.0).order == cheapest.order == ("gpu-a", "hosted-a", "edge-a")
    assert order(3_300, headroom=0.45).order == ("gpu-a", "hosted-a", "edge-a")
    # A TTFT budget alone is judged by the estimated TTFT: the free edge device's (100 ms)
    # is within 50% of 5 s.
    assert run(make_request(ttft_budget_ms=5_000)).primary == "edge-a"
    # Without a budget it is cheapest: the free edge device first, scores are costs.
    plain = run(make_request())
    cheapest = run(make_request(objective=Objective.CHEAPEST))
    assert plain.order == cheapest.order == ("edge-a", "gpu-a", "hosted-a")
    assert [c.score for c in plain.candidates] == [c.score for c in cheapest.candidates]
    assert run(make_request(objective=Objective.WEIGHTED)).order != plain.order


def test_fallbacks_are_bounded_and_the_rest_keep_rank_zero() -> None:
    cfg = PolicyConfig(max_fallbacks=1)
    p = run(make_request(), cfg=cfg)
    assert p.order == ("edge-a", "gpu-a")
    assert [(c.backend, c.rank) for c in p.candidates] == [
        ("edge-a", 1),
        ("gpu-a", 2),
        ("hosted-a", 0),
    ]
    assert p.explanation.endswith("; 1 fallback")
    assert run(make_request(), cfg=PolicyConfig(max_fallbacks=0)).order == ("edge-a",)


def test_rejected_backends_are_reported_after_the_ranked_ones() -> None:
    # 3000 prompt tokens + 100 do not fit the edge device's 2048 window
    p = run(make_request(), tokens=3000)
    assert [c.backend for c in p.candidates] == ["gpu-a", "hosted-a", "edge-a"]
    edge = p.report("edge-a")
    assert edge is not None and not edge.accepted and edge.rank == 0
    assert edge.rejected_by == "context_window"
    assert edge.reason == (
        "needs 3100 tokens (3000 prompt, estimated, + 100 max output) > context window 2048"
    )
    assert p.explanation.endswith("; 1 rejected")


def test_request_objective_overrides_the_config() -> None:
    assert run(make_request(objective=Objective.FASTEST)).primary == "hosted-a"
    fastest_cfg = PolicyConfig(objective=Objective.FASTEST)
    p = run(make_request(), cfg=fastest_cfg)
    assert p.objective is Objective.FASTEST and p.primary == "hosted-a"
    assert p.explanation.startswith("hosted-a: fastest (est total 1600 ms)")
    p = run(make_request(objective=Objective.CHEAPEST), cfg=fastest_cfg)
    assert p.objective is Objective.CHEAPEST and p.primary == "edge-a"


def test_weighted_explanation_gives_the_score() -> None:
    p = run(make_request(objective=Objective.WEIGHTED))
    primary = p.report(p.primary)
    assert primary is not None
    assert p.explanation.startswith(f"{p.primary}: best weighted score {primary.score:.3f}")


def test_fastest_explanation_says_when_the_budget_is_missed() -> None:
    p = run(make_request(objective=Objective.FASTEST, total_budget_ms=100))
    assert p.budget_unmet
    assert "fastest (est total 1600 ms); misses total<=100ms (budget unmet)" in p.explanation


def test_cost_cap_rejects_with_the_estimate_attached() -> None:
    # hosted: 500 * 1/1e6 + 100 * 4/1e6 = $0.0009
    p = run(make_request(max_cost_usd=0.0005, objective=Objective.FASTEST))
    hosted = p.report("hosted-a")
    assert hosted is not None and not hosted.accepted
    assert hosted.rejected_by == "cost"
    assert hosted.reason == "estimated cost $0.000900 > max_cost_usd $0.000500"
    assert hosted.estimate is not None and hosted.estimate.cost_usd == pytest.approx(0.0009)
    assert p.primary == "gpu-a"


def test_zero_max_output_tokens_uses_the_configured_default() -> None:
    cfg = PolicyConfig(default_max_output_tokens=300)
    p = run(make_request(max_output_tokens=0), HOSTED, cfg=cfg)
    report = p.report("hosted-a")
    assert report is not None and report.estimate is not None
    assert report.estimate.total_ms == pytest.approx(2 * 300.0 + 300 / 100.0 * 1000)


def test_live_queue_moves_the_next_request_elsewhere() -> None:
    # a burst queues up on the edge device: 6 in flight on 2 slots
    busy = BackendSnapshot("edge-a", in_flight=5)
    quiet = run(make_request(ttft_budget_ms=1_000))
    assert quiet.primary == "edge-a"
    p = run(make_request(ttft_budget_ms=1_000), snaps={"edge_a": busy})
    edge = p.report("edge-a")
    assert edge is not None and edge.estimate is not None
    assert edge.estimate.queue_wait_ms > 1_000 and not edge.meets_budget
    assert p.primary == "gpu-a"


def test_priors_switch_to_live_stats_after_min_samples() -> None:
    clock = FakeClock(NOW)
    cfg = PolicyConfig(min_samples=3)
    stats = BackendStats("edge-a", cfg, clock)
    request = make_request(ttft_budget_ms=200)

    def decide() -> str:
        return plan(
            features(request),
            [(EDGE, stats.snapshot()), (GPU, BackendSnapshot("gpu-a"))],
            policy_params(cfg),
            NOW,
        ).primary

    # edge's prior TTFT is 50 ms: it meets the budget and is free
    assert decide() == "edge-a"
    for done in range(3):
        stats.begin()
        stats.record_first_token(900.0)  # the device is really much slower
        stats.record_success(5_000.0, 100, 4_100.0)
        stats.end()
        if done < 2:
            assert decide() == "edge-a"  # still on priors
    snap = stats.snapshot()
    assert snap.ttft_p50_ms == 900.0
    p = plan(
        features(request), [(EDGE, snap), (GPU, BackendSnapshot("gpu-a"))], policy_params(cfg), NOW
    )
    assert p.primary == "gpu-a"
    edge = p.report("edge-a")
    assert edge is not None and edge.estimate is not None and not edge.estimate.from_priors


# --- errors ---------------------------------------------------------------------------


def test_unknown_pinned_backend_is_invalid_even_if_others_match() -> None:
    with pytest.raises(InvalidRequest) as info:
        run(make_request(pin_backends=frozenset({"gpu-a", "gpu-zz"})))
    assert info.value.field == "pin_backends"
    assert info.value.grpc_code == "INVALID_ARGUMENT"
    assert "unknown backend 'gpu-zz' (known: edge-a, gpu-a, hosted-a)" in str(info.value)


def test_unknown_excluded_backend_is_ignored() -> None:
    p = run(make_request(exclude_backends=frozenset({"nope", "edge-a"})))
    assert p.primary == "gpu-a"


def test_data_class_allowed_nowhere_is_no_tier_allowed() -> None:
    request = make_request(data_class=DataClass.RESTRICTED)
    with pytest.raises(NoTierAllowed) as info:
        run(request, HOSTED, GPU)
    assert info.value.grpc_code == "FAILED_PRECONDITION"
    assert str(info.value) == (
        "data class 'restricted' may not go to hosted-a (hosted), gpu-a (gpu); "
        "no configured backend allows it"
    )


def test_data_class_allowed_only_on_pinned_out_tiers_names_them() -> None:
    request = make_request(data_class=DataClass.RESTRICTED, pin_tiers=frozenset({Tier.GPU}))
    with pytest.raises(NoTierAllowed) as info:
        run(request)
    assert "may not go to gpu-a (gpu); tiers that allow it: edge" in str(info.value)


def test_restricted_data_goes_to_the_tier_that_allows_it() -> None:
    assert run(make_request(data_class=DataClass.RESTRICTED)).order == ("edge-a",)


def test_nothing_big_enough_names_the_largest_window() -> None:
    with pytest.raises(NoWindowFits) as info:
        run(make_request(max_output_tokens=1_000), tokens=200_000)
    err = info.value
    assert err.grpc_code == "OUT_OF_RANGE" and err.error_reason == "PROMPT_TOO_LARGE"
    assert (err.needed_tokens, err.largest_window) == (201_000, 128_000)
    assert "this request may use is 128000 tokens (hosted-a)" in str(err)


def test_window_error_only_counts_backends_that_reached_the_window_filter() -> None:
    # hosted is pinned out; the largest window left is gpu's
    request = make_request(exclude_tiers=frozenset({Tier.HOSTED}))
    with pytest.raises(NoWindowFits) as info:
        run(request, tokens=20_000)
    assert info.value.largest_window == 16_384
    assert "(gpu-a)" in str(info.value)


def test_window_and_health_failures_mix_into_no_candidate() -> None:
    # gpu's window would fit but it is down: retrying later may work -> UNAVAILABLE
    down = BackendSnapshot("gpu-a", healthy=False, detail="connection refused")
    with pytest.raises(NoCandidate) as info:
        run(make_request(), GPU, EDGE, tokens=5_000, snaps={"gpu_a": down})
    assert info.value.grpc_code == "UNAVAILABLE"
    assert str(info.value) == (
        "no backend can take this request: gpu-a: health (unhealthy: connection refused); "
        "edge-a: context_window (needs 5100 tokens (5000 prompt, estimated, + 100 max output) "
        "> context window 2048)"
    )


def test_payload_over_every_limit_is_invalid() -> None:
    small = dataclasses.replace(GPU, max_payload_bytes=50)
    request = make_request()
    with pytest.raises(InvalidRequest) as info:
        plan(features(request, payload=200), pairs(small), policy_params(CFG), NOW)
    assert info.value.field == "messages"
    assert "payload of 200 bytes exceeds every candidate backend's limit" in str(info.value)
    assert "(largest: 50 bytes, gpu-a)" in str(info.value)


def test_pins_matching_nothing_is_no_candidate() -> None:
    with pytest.raises(NoCandidate) as info:
        run(make_request(pin_tiers=frozenset({Tier.EDGE})), HOSTED, GPU)
    assert "hosted-a: pin (tier hosted not in pin_tiers (edge))" in str(info.value)


def test_no_backends_is_no_candidate() -> None:
    with pytest.raises(NoCandidate, match="no backends are configured"):
        plan(features(make_request()), [], policy_params(CFG), NOW)


def test_no_candidate_summary_is_bounded() -> None:
    specs = [make_spec(f"gpu-{i:02d}", Tier.GPU) for i in range(12)]
    down = {s.name.replace("-", "_"): BackendSnapshot(s.name, healthy=False) for s in specs}
    with pytest.raises(NoCandidate) as info:
        run(make_request(), *specs, snaps=down)
    message = str(info.value)
    assert "gpu-07: health (unhealthy)" in message
    assert "gpu-08" not in message
    assert message.endswith("... and 4 more")


def test_every_backend_busy_or_throttled_is_no_candidate() -> None:
    snaps = {
        "gpu_a": BackendSnapshot("gpu-a", in_flight=6),
        "hosted_a": BackendSnapshot("hosted-a", retry_after_until=NOW + 3.0),
    }
    with pytest.raises(NoCandidate) as info:
        run(make_request(), HOSTED, GPU, snaps=snaps)
    message = str(info.value)
    assert "hosted-a: health (backend asked to retry after 3.0 s)" in message
    assert "gpu-a: capacity (load 6 >= capacity 6 (2 concurrent + 4 queued))" in message


def test_every_candidate_over_the_cost_cap_is_a_failed_precondition() -> None:
    # gpu: (100 + 500 * 0.1) * 4 / 3600 / (2000 * 0.6) = $0.000139; hosted $0.0009
    # The caller's cap does not change by waiting: not RESOURCE_EXHAUSTED (retryable).
    with pytest.raises(CostCapTooLow) as info:
        run(make_request(max_cost_usd=0.0001), HOSTED, GPU)
    assert info.value.grpc_code == "FAILED_PRECONDITION"
    assert info.value.error_reason == "COST_CAP"
    assert str(info.value) == (
        "max_cost_usd $0.000100 is below every candidate's estimated cost "
        "(cheapest: $0.000139, gpu-a); raise max_cost_usd or lower max_output_tokens"
    )


def test_over_the_cost_cap_while_a_cheap_backend_is_down_is_no_candidate() -> None:
    # the free edge device would do, once it is back: UNAVAILABLE, not a budget error
    down = BackendSnapshot("edge-a", healthy=False)
    with pytest.raises(NoCandidate) as info:
        run(make_request(max_cost_usd=0.0001), HOSTED, EDGE, snaps={"edge_a": down})
    assert "edge-a: health (unhealthy)" in str(info.value)
    assert "hosted-a: cost (estimated cost $0.000900 > max_cost_usd $0.000100)" in str(info.value)
