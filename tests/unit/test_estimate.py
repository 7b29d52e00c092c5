"""Latency and cost estimates: priors vs. live data, queueing, per-tier cost."""

from __future__ import annotations

import dataclasses
import math

import pytest

from router.config import BackendConfig, parse_config
from router.errors import ConfigError
from router.policy.estimate import (
    QUEUE_WAIT_TAIL,
    cost_usd,
    estimate,
    gpu_cost_per_output_token,
    prefill_ms,
    prefill_rate,
    ttft_sample_ms,
)
from router.policy.planner import _inline_twin
from router.types import (
    BACKEND_TIERS,
    PRIOR_TTFT_P90_FACTOR,
    BackendSnapshot,
    BackendSpec,
    CandidateReport,
    DataClass,
    Estimate,
    Plan,
    Prices,
    Priors,
    Tier,
    TokenCount,
    frozen_factory,
    unfrozen_twin,
)

#: The queue wait's tail factor: the p90 of an exponential wait over its mean.
TAIL = math.log(10.0)

PROMPT = TokenCount(1000, False)


NO_PRICES = Prices()


def make_spec(tier: Tier = Tier.GPU, prices: Prices = NO_PRICES, **kw: object) -> BackendSpec:
    fields: dict[str, object] = {
        "name": f"{tier.value}-a",
        "tier": tier,
        "kind": "model_service",
        "endpoint": "127.0.0.1:9000",
        "model": "m",
        "context_window": 8192,
        "max_payload_bytes": 1_000_000,
        "max_concurrency": 4,
        "max_queue": 8,
        "data_classes": frozenset({DataClass.INTERNAL}),
        "priors": Priors(ttft_ms=200.0, decode_tokens_per_s=50.0),
        "prices": prices,
    }
    fields.update(kw)
    return BackendSpec(**fields)  # type: ignore[arg-type]


LIVE = BackendSnapshot(
    "gpu-a",
    requests=5,
    ttft_p50_ms=80.0,
    ttft_p90_ms=300.0,
    decode_tokens_per_s=100.0,
    mean_service_ms=2000.0,
)


PREFILL = Priors(ttft_ms=200.0, decode_tokens_per_s=50.0, prefill_tokens_per_s=2000.0)


def test_prefill_adds_the_prompt_at_the_priors_rate_to_ttft_and_total() -> None:
    spec = make_spec(priors=PREFILL)
    without = estimate(make_spec(), BackendSnapshot("gpu-a"), PROMPT, 100, min_samples=3)
    est = estimate(spec, BackendSnapshot("gpu-a"), PROMPT, 100, min_samples=3)
    # 1,000 prompt tokens at 2,000/s: half a second more to the first token (and total)
    assert est.ttft_ms == pytest.approx(without.ttft_ms + 500.0)
    assert est.total_ms == pytest.approx(without.total_ms + 500.0)
    assert est.cost_usd == without.cost_usd and est.queue_wait_ms == without.queue_wait_ms
    # on live samples (kept without their own prefill) as on priors; a longer prompt more
    live = estimate(spec, LIVE, TokenCount(4000, False), 100, min_samples=3)
    assert live.ttft_ms == pytest.approx(80.0 + 2000.0)
    assert prefill_ms(2000.0, 4000) == pytest.approx(2000.0)


def test_a_reported_prefill_rate_wins_over_the_priors() -> None:
    spec = make_spec(priors=PREFILL)  # priors: 2,000 prompt tokens/s
    reported = dataclasses.replace(LIVE, prefill_tokens_per_s=500.0)
    assert prefill_rate(spec.priors, reported) == 500.0
    assert prefill_rate(spec.priors, LIVE) == 2000.0
    est = estimate(spec, reported, PROMPT, 100, min_samples=3)
    assert est.ttft_ms == pytest.approx(80.0 + 2000.0)  # 1,000 tokens at 500/s
    # a backend without priors for it is modelled once it reports a rate
    plain = estimate(make_spec(), reported, PROMPT, 100, min_samples=3)
    assert plain.ttft_ms == pytest.approx(80.0 + 2000.0)
    assert prefill_rate(make_spec().priors, LIVE) == 0.0


def test_without_a_prefill_rate_the_prompt_adds_nothing() -> None:
    assert prefill_ms(0.0, 50_000) == 0.0
    assert ttft_sample_ms(0.0, 50_000, 812.5) == 812.5


def test_a_ttft_sample_is_kept_without_its_own_prefill_and_never_below_zero() -> None:
    assert ttft_sample_ms(2000.0, 1000, 900.0) == pytest.approx(400.0)
    assert ttft_sample_ms(2000.0, 10_000, 900.0) == 0.0  # faster than the rate says


def test_priors_prefill_rate_is_configured_and_validated() -> None:
    backend = {"name": "g", "tier": "gpu", "kind": "model_service", "endpoint": "h:1"}
    backend |= {"model": "m", "context_window": 8192}

    def spec_of(priors: dict[str, float]) -> BackendSpec:
        config = parse_config({"backends": [{**backend, "priors": priors}]}, source="r.yaml")
        return config.backends[0].to_spec()

    assert spec_of({"prefill_tokens_per_s": 8000}).priors.prefill_tokens_per_s == 8000.0
    assert spec_of({}).priors.prefill_tokens_per_s == 0.0  # not modelled
    with pytest.raises(ConfigError) as err:
        spec_of({"prefill_tokens_per_s": 0})
    assert "backends[0](g).priors.prefill_tokens_per_s: must be > 0" in str(err.value)


def test_priors_are_used_without_live_data() -> None:
    est = estimate(make_spec(), BackendSnapshot("gpu-a"), PROMPT, 100, min_samples=3)
    assert est.from_priors
    assert est.queue_wait_ms == 0.0
    assert est.ttft_ms == pytest.approx(200.0)
    # total = ttft + max_out / decode rate: 200 + 100 / 50 * 1000
    assert est.total_ms == pytest.approx(2200.0)
    assert (est.prompt_tokens, est.tokens_exact) == (1000, False)


def test_judged_by_its_p90_a_backend_without_samples_is_judged_by_its_prior_p90() -> None:
    # Its median against the others' observed p90 would make it look the fastest.
    cold = BackendSnapshot("gpu-a")
    est = estimate(make_spec(), cold, PROMPT, 100, min_samples=3, ttft_p90=True)
    assert PRIOR_TTFT_P90_FACTOR == 2.0
    assert est.from_priors and est.ttft_ms == pytest.approx(400.0)  # 2 x priors.ttft_ms
    given = make_spec(priors=Priors(ttft_ms=200.0, decode_tokens_per_s=50.0, ttft_p90_ms=700))
    est = estimate(given, cold, PROMPT, 100, min_samples=3, ttft_p90=True)
    assert est.ttft_ms == pytest.approx(700.0)
    assert est.total_ms == pytest.approx(700.0 + 2000.0)
    # The median stays the estimate of the p50 policy; live samples replace both.
    assert estimate(given, cold, PROMPT, 100, min_samples=3).ttft_ms == pytest.approx(200.0)
    live = estimate(given, LIVE, PROMPT, 100, min_samples=3, ttft_p90=True)
    assert live.ttft_ms == pytest.approx(300.0)


def test_a_prior_weight_pulls_a_few_samples_quantile_toward_the_prior() -> None:
    # policy.ttft_prior_weight w: (n x observed + w x prior) / (n + w).
    spec = make_spec(priors=Priors(ttft_ms=200.0, decode_tokens_per_s=50.0, ttft_p90_ms=700))
    few = dataclasses.replace(LIVE, ttft_samples=4)  # observed p50 80, p90 300
    p90 = estimate(spec, few, PROMPT, 100, min_samples=3, ttft_p90=True, prior_weight=4.0)
    assert p90.ttft_ms == pytest.approx((4 * 300.0 + 4 * 700.0) / 8)  # 500
    assert not p90.from_priors
    p50 = estimate(spec, few, PROMPT, 100, min_samples=3, prior_weight=4.0)
    assert p50.ttft_ms == pytest.approx((4 * 80.0 + 4 * 200.0) / 8)  # the prior median
    # Many samples outweigh it; weight 0 is the observed quantile alone.
    many = dataclasses.replace(LIVE, ttft_samples=252)
    est = estimate(spec, many, PROMPT, 100, min_samples=3, ttft_p90=True, prior_weight=4.0)
    assert est.ttft_ms == pytest.approx((252 * 300.0 + 4 * 700.0) / 256)
    plain = estimate(spec, few, PROMPT, 100, min_samples=3, ttft_p90=True)
    assert plain.ttft_ms == pytest.approx(300.0)
    # The rest of the estimate is the live one.
    assert p90.total_ms - p90.ttft_ms == pytest.approx(plain.total_ms - plain.ttft_ms)


def test_the_decode_estimate_reads_the_mean_or_a_slow_quantile() -> None:
    spec = make_spec()
    snap = dataclasses.replace(LIVE, decode_p25_tokens_per_s=50.0, decode_p10_tokens_per_s=25.0)
    totals = {
        mode: estimate(spec, snap, PROMPT, 100, min_samples=3, decode=mode).total_ms
        - estimate(spec, snap, PROMPT, 100, min_samples=3, decode=mode).ttft_ms
        for mode in ("mean", "p25", "p10")
    }
    # 100 tokens at 100 (the mean), 50 and 25 tokens/s.
    assert totals == pytest.approx({"mean": 1000.0, "p25": 2000.0, "p10": 4000.0})
    # Without samples of the quantile, the prior rate (50 tokens/s).
    cold = dataclasses.replace(LIVE, decode_p10_tokens_per_s=None)
    est = estimate(spec, cold, PROMPT, 100, min_samples=3, decode="p10")
    assert est.from_priors and est.total_ms - est.ttft_ms == pytest.approx(2000.0)


def test_a_prior_p90_below_the_median_is_refused_with_the_fix() -> None:
    fields = {
        "name": "gpu-a",
        "tier": "gpu",
        "kind": "model_service",
        "endpoint": "127.0.0.1:1",
        "model": "m",
        "context_window": 8192,
    }
    spec = BackendConfig(**fields, priors={"ttft_ms": 300, "ttft_p90_ms": 900}).to_spec()
    assert spec.priors == Priors(300.0, 30.0, 900.0)
    assert BackendConfig(**fields).to_spec().priors.ttft_p90_ms == 0.0  # 2 x ttft_ms
    with pytest.raises((ConfigError, ValueError), match="ttft_p90_ms \\(200\\) is below ttft_ms"):
        BackendConfig(**fields, priors={"ttft_ms": 300, "ttft_p90_ms": 200})


def test_live_data_replaces_priors_once_enough_requests_completed() -> None:
    est = estimate(make_spec(), LIVE, TokenCount(10, True), 100, min_samples=3)
    assert not est.from_priors
    # ttft uses the live p50 (not the p90), total the live decode rate
    assert est.ttft_ms == pytest.approx(80.0)
    assert est.total_ms == pytest.approx(80.0 + 100 / 100.0 * 1000)
    assert (est.prompt_tokens, est.tokens_exact) == (10, True)


def test_live_data_below_min_samples_is_ignored() -> None:
    few = dataclasses.replace(LIVE, requests=2)
    est = estimate(make_spec(), few, PROMPT, 100, min_samples=3)
    assert est.from_priors
    assert est.ttft_ms == pytest.approx(200.0)
    assert est.total_ms == pytest.approx(2200.0)


def test_partly_live_data_is_flagged_from_priors() -> None:
    no_decode = dataclasses.replace(LIVE, decode_tokens_per_s=None)
    est = estimate(make_spec(), no_decode, PROMPT, 100, min_samples=3)
    assert est.from_priors
    assert est.ttft_ms == pytest.approx(80.0)  # live
    assert est.total_ms == pytest.approx(80.0 + 100 / 50.0 * 1000)  # prior decode rate
    zero_rate = dataclasses.replace(LIVE, decode_tokens_per_s=0.0)
    assert estimate(make_spec(), zero_rate, PROMPT, 100, min_samples=3).from_priors


def test_no_queue_wait_while_a_slot_is_free() -> None:
    snap = dataclasses.replace(LIVE, in_flight=3)  # 3 of 4 slots busy
    est = estimate(make_spec(), snap, PROMPT, 100, min_samples=3)
    assert est.queue_wait_ms == 0.0


def test_queue_wait_from_live_mean_service_time() -> None:
    # load 6 on 4 slots: 3 requests ahead of ours, 4 served in parallel
    snap = dataclasses.replace(LIVE, in_flight=6)
    est = estimate(make_spec(), snap, PROMPT, 100, min_samples=3)
    assert est.queue_wait_ms == pytest.approx(3 * 2000.0 / 4 * TAIL)
    assert est.ttft_ms == pytest.approx(1500.0 * TAIL + 80.0)
    assert est.total_ms == pytest.approx(1500.0 * TAIL + 80.0 + 1000.0)


def test_queue_wait_uses_reported_load_when_larger() -> None:
    snap = dataclasses.replace(LIVE, in_flight=1, reported_load=4)
    est = estimate(make_spec(), snap, PROMPT, 100, min_samples=3)
    assert est.queue_wait_ms == pytest.approx(1 * 2000.0 / 4 * TAIL)


def test_queue_wait_from_priors_without_live_service_time() -> None:
    # service = prior ttft + max_out / prior rate = 200 + 2000 ms
    snap = BackendSnapshot("gpu-a", in_flight=4)
    est = estimate(make_spec(), snap, PROMPT, 100, min_samples=3)
    assert est.queue_wait_ms == pytest.approx(1 * 2200.0 / 4 * TAIL)
    assert est.ttft_ms == pytest.approx(550.0 * TAIL + 200.0)


# --- cost -----------------------------------------------------------------------------


def test_hosted_cost_is_tokens_times_prices() -> None:
    spec = make_spec(Tier.HOSTED, Prices(input_per_mtok_usd=3.0, output_per_mtok_usd=15.0))
    # 1000 * 3 / 1e6 + 200 * 15 / 1e6
    assert cost_usd(spec, 1000, 200) == pytest.approx(0.003 + 0.003)
    est = estimate(spec, BackendSnapshot(spec.name), PROMPT, 200, min_samples=3)
    assert est.cost_usd == pytest.approx(0.006)


def test_gpu_cost_is_amortised_node_time() -> None:
    # The worked example of docs/policy.md: $4/h, 2000 tok/s at 50% utilisation
    # -> $4 / 3600 s / 1000 tok/s = $1.111e-6 per output token; prompt tokens at 10%.
    prices = Prices(
        gpu_hourly_usd=4.0,
        gpu_throughput_tokens_per_s=2000.0,
        gpu_utilization=0.5,
        gpu_prefill_ratio=0.1,
    )
    assert gpu_cost_per_output_token(prices) == pytest.approx(4.0 / 3600 / 1000)
    spec = make_spec(Tier.GPU, prices)
    assert cost_usd(spec, 1000, 200) == pytest.approx((200 + 100) * 4.0 / 3600 / 1000)
    assert cost_usd(spec, 1000, 200) == pytest.approx(3.3333e-4, rel=1e-4)


def test_unconfigured_gpu_cost_is_zero() -> None:
    assert gpu_cost_per_output_token(Prices()) == 0.0
    assert gpu_cost_per_output_token(Prices(gpu_hourly_usd=4.0)) == 0.0
    assert cost_usd(make_spec(Tier.GPU), 1000, 200) == 0.0


def test_edge_cost_is_marginal_per_output_token() -> None:
    spec = make_spec(Tier.EDGE, Prices(edge_per_mtok_usd=0.5, input_per_mtok_usd=99.0))
    assert cost_usd(spec, 1000, 200) == pytest.approx(200 * 0.5 / 1e6)


@pytest.mark.parametrize("tier", BACKEND_TIERS)
def test_estimate_cost_matches_cost_usd(tier: Tier) -> None:
    prices = Prices(
        input_per_mtok_usd=1.0,
        output_per_mtok_usd=2.0,
        gpu_hourly_usd=3.0,
        gpu_throughput_tokens_per_s=500.0,
        edge_per_mtok_usd=0.25,
    )
    spec = make_spec(tier, prices)
    est = estimate(spec, BackendSnapshot(spec.name), TokenCount(777, True), 333, 3)
    assert est.cost_usd == pytest.approx(cost_usd(spec, 777, 333))
    assert est.cost_usd > 0


# --- the fast constructor -------------------------------------------------------------


def test_frozen_factory_builds_ordinary_frozen_instances() -> None:
    make = frozen_factory(Estimate)
    fast = make(1.0, 2.0, 3.0, 0.5, True, 10, False)
    slow = Estimate(1.0, 2.0, 3.0, 0.5, True, 10, False)
    assert type(fast) is Estimate
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.ttft_ms = 9.0  # type: ignore[misc]
    assert dataclasses.replace(fast, ttft_ms=9.0).ttft_ms == 9.0


def test_frozen_factory_keeps_defaults_and_keywords() -> None:
    make = frozen_factory(CandidateReport)
    fast = make(backend="a", tier=Tier.GPU, accepted=False, rejected_by="pin", reason="x")
    assert fast == CandidateReport("a", Tier.GPU, False, "pin", "x")
    assert (fast.rank, fast.meets_budget, fast.score, fast.estimate) == (0, False, 0.0, None)
    plan = frozen_factory(Plan)(
        request_id="r",
        objective="cheapest",
        order=("a",),
        candidates=(fast,),
        budget_unmet=False,
        explanation="e",
    )
    assert type(plan) is Plan and plan.primary == "a" and plan.decision_us == 0.0


def test_frozen_factory_falls_back_to_the_class_when_it_cannot_apply() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class WithPost:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class WithFactory:
        a: list[int] = dataclasses.field(default_factory=list)

    assert frozen_factory(WithPost) is WithPost
    assert frozen_factory(WithFactory) is WithFactory


def test_unfrozen_twin_instances_become_the_frozen_class() -> None:
    twin = unfrozen_twin(Estimate)
    assert twin is not None and twin is not Estimate
    est = object.__new__(twin)
    est.ttft_ms, est.total_ms, est.cost_usd, est.queue_wait_ms = 1.0, 2.0, 3.0, 0.5
    est.from_priors, est.prompt_tokens, est.tokens_exact = True, 10, False
    est.__class__ = Estimate
    assert type(est) is Estimate
    assert est == Estimate(1.0, 2.0, 3.0, 0.5, True, 10, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.ttft_ms = 9.0  # type: ignore[misc]


def test_unfrozen_twin_is_none_where_it_cannot_apply() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Reserved:
        _ff_o: int

    assert unfrozen_twin(NoSlots) is None
    assert unfrozen_twin(Reserved) is None
    assert frozen_factory(Reserved) is Reserved


def test_planner_refuses_records_whose_fields_it_does_not_know() -> None:
    with pytest.raises(TypeError, match="Estimate's fields changed"):
        _inline_twin(Estimate, ("ttft_ms", "total_ms"))

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    with pytest.raises(TypeError, match="frozen, slotted dataclass"):
        _inline_twin(NoSlots, ("a",))


def test_the_queue_wait_tail_is_the_p90_of_an_exponential_wait() -> None:
    # P(wait > TAIL * mean) = exp(-TAIL) = 0.1 for an exponential wait
    assert math.exp(-QUEUE_WAIT_TAIL) == pytest.approx(0.1)
