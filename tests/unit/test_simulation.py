"""The routing simulator (router/simulation/): a hand-computed trace reproduced exactly,
the bound never beaten (a property over random fleets and traces), the router's own
policy code, inputs that fail with the file, line and field."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

import router.policy
import router.simulation.strategies as strategies_module
from router.config import PolicyConfig
from router.errors import ConfigError
from router.policy import cost_usd
from router.simulation import (
    STRATEGIES,
    Oracle,
    RouterStrategy,
    Simulation,
    compare,
    from_request_log,
    parse_fleet,
    read_trace,
    run_bound,
    write_trace,
)
from router.simulation.report import dominance, meets, summarize
from router.simulation.scenarios import SCENARIOS, build
from router.simulation.trace import TraceRequest
from router.stats import TTFT_WINDOW, BackendStats
from router.types import DataClass


def _backend(name: str, tier: str, **extra: Any) -> dict[str, Any]:
    kinds = {"gpu": "model_service", "edge": "model_service", "hosted": "openai"}
    b: dict[str, Any] = {
        "name": name,
        "tier": tier,
        "kind": kinds[tier],
        "endpoint": "127.0.0.1:1" if tier != "hosted" else "http://127.0.0.1:1/v1",
        "model": "m",
        "context_window": 8192,
        "max_concurrency": 1,
        "data_classes": ["public", "internal", "restricted"]
        if tier != "hosted"
        else ["public", "internal"],
    }
    b.update(extra)
    return b


def _two_backend_fleet(gpu: dict[str, Any] | None = None):
    """gpu: TTFT 100 ms, 10 tok/s, one slot, $0.000001/token; hosted: TTFT 500 ms,
    50 tok/s, $10/Mtok out. No spread: every draw is the median. ``gpu``: more of the
    GPU's behaviour (outages...)."""
    router_cfg = {
        "policy": {"objective": "cheapest"},
        "backends": [
            _backend(
                "gpu",
                "gpu",
                max_queue=8,
                priors={"ttft_ms": 100, "decode_tokens_per_s": 10},
                cost={
                    "gpu_hourly_usd": 3.6,
                    "gpu_throughput_tokens_per_s": 1000,
                    "gpu_utilization": 1.0,
                    "gpu_prefill_ratio": 0.0,
                },
            ),
            _backend(
                "hosted",
                "hosted",
                max_concurrency=64,
                priors={"ttft_ms": 500, "decode_tokens_per_s": 50},
                cost={"output_per_mtok_usd": 10.0},
            ),
        ],
    }
    exact = {"decode_spread": 0.0}  # the decode rate: the priors
    return parse_fleet(
        {
            "router": router_cfg,
            "backends": {
                "gpu": {**exact, "ttft_ms": 100, "ttft_p90_ms": 100, **(gpu or {})},
                "hosted": {**exact, "ttft_ms": 500, "ttft_p90_ms": 500},
            },
        },
        source="test fleet",
    )


TRACE = [
    TraceRequest(at_s=0.0, prompt_tokens=100, output_tokens=10, ttft_budget_ms=1000.0),
    TraceRequest(at_s=0.5, prompt_tokens=100, output_tokens=10, ttft_budget_ms=1000.0),
    TraceRequest(at_s=0.6, prompt_tokens=100, output_tokens=10),
]


def test_a_hand_computed_trace_is_reproduced_exactly() -> None:
    fleet = _two_backend_fleet()
    gpu, hosted = fleet.specs
    gpu_cost = cost_usd(gpu, 100, 10)
    assert gpu_cost == pytest.approx(10 * 1e-6)  # 3.6 $/h over 1000 tok/s: $1e-6 a token
    hosted_cost = cost_usd(hosted, 100, 10)
    assert hosted_cost == pytest.approx(10 * 10.0 / 1e6)

    # always-cheapest: everything to the one-slot GPU, FIFO.
    # r0 starts at 0: first token 0.1 s, done 0.1 + 10/10 = 1.1 s.
    # r1 (0.5 s) waits until 1.1: first 1.2 (TTFT 700 ms), done 2.2 (total 1700 ms).
    # r2 (0.6 s) waits until 2.2: first 2.3 (TTFT 1700 ms), done 3.3 (total 2700 ms).
    out = Simulation(fleet, seed=7).run(TRACE, STRATEGIES["always-cheapest"]())
    assert [(o.status, o.backend) for o in out] == [("ok", "gpu")] * 3
    assert [o.ttft_ms for o in out] == pytest.approx([100.0, 700.0, 1700.0])
    assert [o.total_ms for o in out] == pytest.approx([1100.0, 1700.0, 2700.0])
    assert [o.cost_usd for o in out] == pytest.approx([gpu_cost] * 3)

    # The router (no live samples yet: priors). r0: GPU est. TTFT 100 ms, cheapest.
    # r1: the GPU holds one request (load 1, one slot): queue wait = 1 * (100 + 10/10 s)
    # = 1,100 ms, est. TTFT 1,200 ms > the 1,000 ms budget; hosted est. 500 ms meets it:
    # hosted, TTFT 500, total 500 + 10/50 s = 700 ms.
    # r2 (0.6 s): no budget, so the cheapest: the GPU, behind r0 until 1.1 s: first token
    # 1.2 s (TTFT 600 ms), done 2.2 s (total 1,600 ms).
    out = Simulation(fleet, seed=7).run(TRACE, RouterStrategy())
    assert [(o.status, o.backend) for o in out] == [("ok", "gpu"), ("ok", "hosted"), ("ok", "gpu")]
    assert [o.ttft_ms for o in out] == pytest.approx([100.0, 500.0, 600.0])
    assert [o.total_ms for o in out] == pytest.approx([1100.0, 700.0, 1600.0])
    assert sum(o.cost_usd for o in out) == pytest.approx(2 * gpu_cost + hosted_cost)

    # The oracle knows r1 would really wait only 600 ms for the GPU (TTFT 700 <= 1,000):
    # the GPU, cheaper. r2 then queues behind r1 (start 2.2 s).
    out = Simulation(fleet, seed=7).run(TRACE, Oracle())
    assert [o.backend for o in out] == ["gpu", "gpu", "gpu"]
    assert [o.ttft_ms for o in out] == pytest.approx([100.0, 700.0, 1700.0])

    # The bound: each request alone on the fleet.
    out = run_bound(fleet, TRACE, seed=7)
    assert [o.ttft_ms for o in out] == pytest.approx([100.0, 100.0, 100.0])
    assert [o.total_ms for o in out] == pytest.approx([1100.0, 1100.0, 1100.0])

    summary = summarize("router", TRACE, Simulation(fleet, seed=7).run(TRACE, RouterStrategy()))
    assert (summary.met, summary.requests, summary.ttft_attainment) == (3, 3, 1.0)
    assert summary.tier_share == {
        "edge": 0.0,
        "gpu": pytest.approx(2 / 3),
        "hosted": pytest.approx(1 / 3),
    }


def _prefill_fleet(router_knows: bool):
    """The two-backend fleet whose GPU reads 1,000 prompt tokens a second and the hosted
    model 20,000; with ``router_knows`` the router's priors give those rates."""
    fleet = _two_backend_fleet()
    doc = fleet.document
    assert doc is not None
    router_cfg = json.loads(json.dumps(doc["router"]))
    behaviour = json.loads(json.dumps(doc["backends"]))
    for backend in router_cfg["backends"]:
        rate = 1000.0 if backend["name"] == "gpu" else 20_000.0
        behaviour[backend["name"]]["prefill_tokens_per_s"] = rate
        if router_knows:
            backend["priors"]["prefill_tokens_per_s"] = rate
    return parse_fleet({"router": router_cfg, "backends": behaviour}, source="test fleet")


PROMPTS = [
    # 2,000 prompt tokens: 2 s of prefill on the GPU, 0.1 s on the hosted model
    TraceRequest(at_s=0.0, prompt_tokens=2000, output_tokens=10, ttft_budget_ms=1000.0),
    # 100 prompt tokens (after r0 is done): 0.1 s on the GPU
    TraceRequest(at_s=10.0, prompt_tokens=100, output_tokens=10, ttft_budget_ms=1000.0),
]


def test_a_prompts_prefill_is_hand_computed_into_its_ttft_and_the_routers_estimate() -> None:
    fleet = _prefill_fleet(router_knows=True)
    # The truth: TTFT = draw (no spread: the median) + prompt / rate.
    out = Simulation(fleet, seed=7).run(PROMPTS, STRATEGIES["always-cheapest"]())
    assert [o.backend for o in out] == ["gpu", "gpu"]
    assert [o.ttft_ms for o in out] == pytest.approx([100.0 + 2000.0, 100.0 + 100.0])
    assert [o.total_ms for o in out] == pytest.approx([2100.0 + 1000.0, 200.0 + 1000.0])
    # The router's estimate adds the prompt's prefill: r0 on the GPU is 2,100 ms > 1,000,
    # the hosted model 500 + 100 = 600 ms: hosted. r1 on the GPU: 100 + 100 = 200 ms.
    sim = Simulation(fleet, seed=7)
    out = sim.run(PROMPTS, RouterStrategy())
    assert [o.backend for o in out] == ["hosted", "gpu"]
    assert [o.ttft_ms for o in out] == pytest.approx([600.0, 200.0])
    # Each TTFT sample is kept without its own prompt's prefill (as dispatch keeps it).
    gpu_stats, hosted_stats = sim.views[0]
    assert gpu_stats.ttft_quantile(0.5) == pytest.approx(100.0)
    assert hosted_stats.ttft_quantile(0.5) == pytest.approx(500.0)
    # The oracle and the bound read the same truth.
    assert [o.ttft_ms for o in run_bound(fleet, PROMPTS, seed=7)] == pytest.approx([600.0, 200.0])


def test_a_model_server_reports_its_prefill_rate_with_its_load() -> None:
    # No rate in the router's priors: the GPU (a model server) reports its own at the
    # load poll, so r0 still goes where it meets its budget; the hosted API reports none.
    fleet = _prefill_fleet(router_knows=False)
    sim = Simulation(fleet, seed=7)
    out = sim.run(PROMPTS, RouterStrategy())
    assert [o.backend for o in out] == ["hosted", "gpu"]
    gpu_stats, hosted_stats = sim.views[0]
    assert (gpu_stats.reported_prefill, hosted_stats.reported_prefill) == (1000.0, None)


def test_a_router_without_the_prefill_rates_sends_a_long_prompt_where_it_misses() -> None:
    fleet = _prefill_fleet(router_knows=False)
    out = Simulation(fleet, seed=7, prefill_reports=False).run(PROMPTS, RouterStrategy())
    # Judged by its 100 ms prior alone, the GPU takes r0: its true TTFT is 2,100 ms.
    assert [o.backend for o in out] == ["gpu", "gpu"]
    assert [o.ttft_ms for o in out] == pytest.approx([2100.0, 200.0])
    assert [meets(r, o) for r, o in zip(PROMPTS, out, strict=True)] == [False, True]


def _interfering_fleet(timeout_ms: float = 30_000.0, slots: int = 3):
    """The two-backend fleet whose GPU serves three at once, reads 1,000 prompt tokens a
    second, and whose other requests go at half pace while it reads one."""
    fleet = _two_backend_fleet(
        {"slots": slots, "prefill_tokens_per_s": 1000.0, "prefill_interference": 0.5}
    )
    doc = fleet.document
    assert doc is not None
    router_cfg = json.loads(json.dumps(doc["router"]))
    router_cfg["policy"]["ttft_timeout_ms"] = timeout_ms
    return parse_fleet({"router": router_cfg, "backends": doc["backends"]}, source="test fleet")


def test_a_prompts_reading_slows_the_other_requests_on_the_backend_hand_computed() -> None:
    trace = [
        # r0: first token at 0.1 + 0.1 s (100 tokens read), done 5 s later (50 at 10/s)
        TraceRequest(at_s=0.0, prompt_tokens=100, output_tokens=50),
        # r1: 2 s of reading: r0, far from its end, loses half of those 2 s: done at 6.2 s
        TraceRequest(at_s=1.0, prompt_tokens=2000, output_tokens=10),
        # r2: 1 s of reading: r0 loses 0.5 s more (6.7 s); r1's first token, 0.1 s away,
        # comes 0.1 s later (at half pace 0.1 s of work takes 0.2 s: 3.2 s) and its end,
        # 1.1 s away, 0.5 s later (4.6 s)
        TraceRequest(at_s=3.0, prompt_tokens=1000, output_tokens=10),
    ]
    out = Simulation(_interfering_fleet(), seed=7).run(trace, STRATEGIES["always-cheapest"]())
    assert [o.backend for o in out] == ["gpu", "gpu", "gpu"]
    assert [o.ttft_ms for o in out] == pytest.approx([200.0, 2200.0, 1100.0])
    assert [o.total_ms for o in out] == pytest.approx([6700.0, 3600.0, 2100.0])
    # Alone (the bound), nobody slows anybody.
    alone = run_bound(_interfering_fleet(), trace, seed=7)
    assert [o.total_ms for o in alone] == pytest.approx([5200.0, 3100.0, 2100.0])


def test_a_first_token_pushed_past_the_ttft_timeout_by_another_prompt_fails_over() -> None:
    trace = [
        # r0: first token due 1.1 s after dispatch, within the 1.5 s timeout
        TraceRequest(at_s=0.0, prompt_tokens=1000, output_tokens=10),
        # r1 at 0.5 s: 1.3 s of reading (its own first token within the timeout); r0's,
        # 0.6 s of work away, takes 1.2 s at half pace: due 1.7 s after dispatch, so r0
        # times out at 1.5 s and goes to the hosted model (TTFT 500 ms + the 1.5 s lost)
        TraceRequest(at_s=0.5, prompt_tokens=1300, output_tokens=10),
    ]
    out = Simulation(_interfering_fleet(1500.0), seed=7).run(trace, STRATEGIES["always-cheapest"]())
    assert [o.backend for o in out] == ["hosted", "gpu"]
    assert out[0].attempts == 2
    assert out[0].ttft_ms == pytest.approx(1500.0 + 500.0)
    assert out[1].ttft_ms == pytest.approx(1400.0)


def test_the_oracle_counts_the_budgets_a_prompts_reading_would_make_others_miss() -> None:
    trace = [
        # r0 on the GPU (the cheapest that meets 5.5 s): done at 5.2 s
        TraceRequest(at_s=0.0, prompt_tokens=100, output_tokens=50, total_budget_ms=5500.0),
        # r1: the GPU meets its own budget (3.1 s) but its 2 s of reading would push r0 to
        # 6.2 s; the hosted model meets it (0.7 s) and harms nobody
        TraceRequest(at_s=1.0, prompt_tokens=2000, output_tokens=10, total_budget_ms=10_000.0),
    ]
    out = Simulation(_interfering_fleet(), seed=7).run(trace, Oracle())
    assert [o.backend for o in out] == ["gpu", "hosted"]
    assert [o.total_ms for o in out] == pytest.approx([5200.0, 700.0])
    # The cheapest strategy takes the GPU for both: r0 misses.
    out = Simulation(_interfering_fleet(), seed=7).run(trace, STRATEGIES["always-cheapest"]())
    assert [o.backend for o in out] == ["gpu", "gpu"]
    assert [meets(r, o) for r, o in zip(trace, out, strict=True)] == [False, True]


def test_the_oracles_placement_counts_the_reading_of_the_prompts_queued_ahead() -> None:
    trace = [
        TraceRequest(at_s=0.0, prompt_tokens=100, output_tokens=100),  # done at 10.2 s
        # r1 (0.1 s of reading: r0 ends at 10.25 s) ends at 1.3 s
        TraceRequest(at_s=0.1, prompt_tokens=100, output_tokens=10),
        # r2 waits for r1's slot; its 3 s of reading from 1.3 s pushes r0 to 11.75 s
        TraceRequest(at_s=0.2, prompt_tokens=3000, output_tokens=100),
        # r3 waits behind r2 for the next slot: r0's, at 11.75 s (not 10.25)
        TraceRequest(at_s=0.5, prompt_tokens=100, output_tokens=10),
    ]
    cheapest = STRATEGIES["always-cheapest"]()
    foreseen: list[float] = []

    class Foresee:
        name = "foresee"

        def bind(self, sim: Simulation) -> None:
            self.sim = sim
            cheapest.bind(sim)

        def order(self, index: int, request: TraceRequest, now: float) -> list[str] | str:
            foreseen.append(self.sim.placement("gpu")[0])
            return cheapest.order(index, request, now)

        def admit(self, backend: str, now: float) -> bool:
            return True

        def observe(self, seen: Any) -> None:
            pass

    out = Simulation(_interfering_fleet(slots=2), seed=7).run(trace, Foresee())
    assert foreseen == pytest.approx([0.0, 0.1, 1.3, 11.75])
    assert [o.backend for o in out] == ["gpu"] * 4
    # r3 really starts at 11.75 s: its first token 0.1 + 0.1 s later
    assert out[3].ttft_ms == pytest.approx((11.75 + 0.2 - 0.5) * 1000.0)


def test_misses_are_grouped_by_budgets_backend_how_and_the_oracles_choice() -> None:
    from router.simulation.engine import Outcome
    from router.simulation.misses import MissGroup, miss_report

    chat = TraceRequest(
        at_s=0, prompt_tokens=1, output_tokens=1, ttft_budget_ms=600.0, total_budget_ms=3000.0
    )
    batch = TraceRequest(at_s=0, prompt_tokens=1, output_tokens=1, total_budget_ms=30000.0)
    free = TraceRequest(at_s=0, prompt_tokens=1, output_tokens=1)

    def ok(backend: str, ttft: float, total: float) -> Outcome:
        return Outcome(0, "ok", backend, None, ttft, total)

    trace = [chat, chat, chat, batch, free, chat]
    router_out = [
        ok("hosted", 900, 1000),  # over its TTFT budget
        ok("hosted", 700, 1000),  # the same group
        ok("gpu", 100, 3500),  # over its total budget
        Outcome(0, "cut", "gpu", None, 50, 80),  # a cut answer
        Outcome(0, "refused"),  # no backend
        ok("gpu", 100, 200),  # met, and the oracle missed it
    ]
    oracle_out = [
        ok("gpu", 100, 200),
        ok("gpu", 100, 200),
        ok("hosted", 500, 900),
        ok("hosted", 500, 900),
        ok("edge", 100, 900),
        ok("gpu", 100, 4000),
    ]
    report = miss_report("router", trace, router_out, oracle_out)
    assert (report.missed, report.met_only_by_strategy) == (5, 1)
    assert report.groups == [
        MissGroup("ttft<=600ms total<=3000ms", "hosted", "ttft", "gpu", 2),
        MissGroup("none", "-", "refused", "edge", 1),
        MissGroup("total<=30000ms", "gpu", "cut", "hosted", 1),
        MissGroup("ttft<=600ms total<=3000ms", "gpu", "total", "hosted", 1),
    ]
    assert report.to_json()["groups"][0] == {
        "budgets": "ttft<=600ms total<=3000ms",
        "backend": "hosted",
        "missed": "ttft",
        "oracle_backend": "gpu",
        "requests": 2,
    }


def test_an_outage_fails_over_before_the_first_token_and_cuts_streams_after_it() -> None:
    fleet = _two_backend_fleet(gpu={"outages": [[0.5, 2.0]], "fail_after_ms": 5})
    trace = [
        TraceRequest(at_s=0.0, prompt_tokens=10, output_tokens=10),  # on the GPU when it goes down
        TraceRequest(at_s=1.0, prompt_tokens=10, output_tokens=10),  # GPU down: fails over
    ]
    out = Simulation(fleet, seed=1).run(trace, STRATEGIES["always-cheapest"]())
    assert out[0].status == "cut" and out[0].backend == "gpu"
    assert out[0].total_ms == pytest.approx(500.0)
    # 5 ms to fail on the GPU, then the hosted answer: 5 + 500 ms TTFT, + 200 ms decode.
    assert (out[1].status, out[1].backend, out[1].attempts) == ("ok", "hosted", 2)
    assert out[1].ttft_ms == pytest.approx(505.0)
    assert out[1].total_ms == pytest.approx(705.0)
    # The bound holds r1 until the GPU is back at 2.0 s (1 s later: TTFT 1,100 ms).
    bound = run_bound(fleet, trace, seed=1)
    assert bound[1].backend == "gpu"
    assert bound[1].ttft_ms == pytest.approx(1100.0)


def _random_fleet(rng: random.Random):
    backends = []
    behaviour = {}
    for i in range(rng.randint(2, 4)):
        tier = rng.choice(["gpu", "edge", "hosted"])
        name = f"{tier}-{i}"
        ttft = rng.uniform(50, 800)
        rate = rng.uniform(5, 100)
        cost: dict[str, Any] = (
            {"output_per_mtok_usd": rng.uniform(0.1, 20), "input_per_mtok_usd": rng.uniform(0, 5)}
            if tier == "hosted"
            else {"edge_per_mtok_usd": rng.uniform(0, 1)}
            if tier == "edge"
            else {"gpu_hourly_usd": rng.uniform(0.5, 5), "gpu_throughput_tokens_per_s": 1000}
        )
        backends.append(
            _backend(
                name,
                tier,
                max_concurrency=rng.randint(1, 4),
                context_window=rng.choice([2048, 8192]),
                priors={
                    "ttft_ms": ttft * rng.uniform(0.5, 2),
                    "decode_tokens_per_s": rate * rng.uniform(0.5, 2),
                },
                cost=cost,
            )
        )
        b: dict[str, Any] = {
            "ttft_ms": ttft,
            "ttft_p90_ms": ttft * rng.uniform(1, 3),
            "decode_tokens_per_s": rate,
            "decode_spread": rng.uniform(0, 0.5),
            "slots": rng.randint(0, 3),
            "batch_slowdown": rng.uniform(0, 0.6),
            "error_rate": rng.choice([0.0, 0.05, 0.3]),
        }
        if rng.random() < 0.5:
            s = rng.uniform(0, 20)
            b["outages"] = [[s, s + rng.uniform(0.5, 10)]]
        if rng.random() < 0.3:
            s = rng.uniform(0, 20)
            b["throttle"] = [
                {"from_s": s, "to_s": s + rng.uniform(1, 10), "retry_after_s": rng.choice([0, 3])}
            ]
        if b["slots"] and rng.random() < 0.3:  # prompts read at a rate, slowing the others
            b["prefill_tokens_per_s"] = rng.choice([500.0, 5000.0])
            b["prefill_interference"] = rng.choice([0.0, 0.5, 1.0])
        behaviour[name] = b
    policy = {
        "objective": rng.choice(["cheapest", "fastest", "weighted"]),
        "ttft_timeout_ms": rng.choice([500, 2000, 10000]),
        "max_fallbacks": rng.randint(0, 2),
    }
    return parse_fleet(
        {"router": {"policy": policy, "backends": backends}, "backends": behaviour}, source="random"
    )


def _random_trace(rng: random.Random, n: int) -> list[TraceRequest]:
    t = 0.0
    out = []
    for _ in range(n):
        t += rng.expovariate(rng.choice([2.0, 10.0]))
        answer = rng.randint(1, 200)
        out.append(
            TraceRequest(
                at_s=t,
                prompt_tokens=rng.randint(1, 3000),
                output_tokens=answer,
                max_output_tokens=rng.choice([0, answer * 2]),
                data_class=rng.choice([DataClass.INTERNAL, DataClass.RESTRICTED]),
                ttft_budget_ms=rng.choice([None, 300.0, 1000.0]),
                total_budget_ms=rng.choice([None, 2000.0, 10000.0]),
            )
        )
    return out


@pytest.mark.parametrize("seed", range(40))
def test_no_strategy_beats_the_bound(seed: int) -> None:
    """On every request, no strategy (the router, the oracle, each baseline) meets an SLO
    the bound misses, or meets one the bound meets for less; with 1, 2 or 3 router
    replicas."""
    rng = random.Random(seed)
    fleet = _random_fleet(rng)
    trace = _random_trace(rng, 120)
    bound = run_bound(fleet, trace, seed)
    for strategy in [Oracle(), *(make() for make in STRATEGIES.values())]:
        sim = Simulation(fleet, seed, replicas=1 + seed % 3)
        out = sim.run(trace, strategy)  # type: ignore[arg-type]
        assert dominance(trace, out, bound) == [], strategy.name  # type: ignore[attr-defined]
        met = sum(meets(tr, o) for tr, o in zip(trace, out, strict=True))
        assert met <= sum(meets(tr, o) for tr, o in zip(trace, bound, strict=True))


def test_with_unlimited_slots_and_no_faults_the_oracle_is_the_bound() -> None:
    rng = random.Random(3)
    fleet = _random_fleet(rng)
    router_cfg = fleet.config.model_dump(
        mode="json", exclude_none=True, include={"policy", "backends"}
    )
    router_cfg["policy"]["ttft_timeout_ms"] = 600_000  # the bound never times out either
    unlimited = parse_fleet(
        {
            "router": router_cfg,
            "backends": {
                s.name: {
                    "ttft_ms": m.ttft_ms,
                    "ttft_p90_ms": m.ttft_p90_ms,
                    "decode_tokens_per_s": m.decode_tokens_per_s,
                    "decode_spread": m.decode_spread,
                    "slots": 0,
                }
                for s in fleet.specs
                for m in [fleet.models[s.name]]
            },
        },
        source="unlimited",
    )
    trace = _random_trace(rng, 150)
    oracle = Simulation(unlimited, 5).run(trace, Oracle())
    bound = run_bound(unlimited, trace, 5)
    assert [o.backend for o in oracle] == [o.backend for o in bound]
    assert [o.total_ms for o in oracle] == pytest.approx([o.total_ms for o in bound])


def test_the_router_strategy_runs_the_routers_own_plan() -> None:
    # The very function the router's dispatch calls: imported, not a copy.
    assert strategies_module.plan is router.policy.plan
    assert router.policy.plan.__module__ == "router.policy.planner"
    # And it decides: the objective changes where requests go.
    fleet, trace = build("steady", 400, seed=2)
    cheapest = Simulation(fleet, 2).run(trace, RouterStrategy())
    fastest = Simulation(fleet, 2).run(
        trace, RouterStrategy(params=type(fleet.params)(objective=router.types.Objective.FASTEST))
    )
    assert [o.backend for o in fastest] != [o.backend for o in cheapest]


def test_runs_are_deterministic_for_a_seed_and_differ_across_seeds() -> None:
    fleet, trace = build("gpu-spike", 600, seed=4)
    a = compare(fleet, trace, ["router", "litellm-simple-shuffle"], seed=9).summaries
    b = compare(fleet, trace, ["router", "litellm-simple-shuffle"], seed=9).summaries
    c = compare(fleet, trace, ["router", "litellm-simple-shuffle"], seed=10).summaries
    strip = lambda s: {k: v for k, v in s.to_json().items() if k != "seconds"}  # noqa: E731
    assert {k: strip(v) for k, v in a.items()} == {k: strip(v) for k, v in b.items()}
    assert strip(a["router"]) != strip(c["router"])


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_builds_and_runs(name: str) -> None:
    fleet, trace = build(name, 300, seed=1)
    assert len(trace) == 300
    assert all(a.at_s <= b.at_s for a, b in zip(trace, trace[1:], strict=False))
    result = compare(fleet, trace, ["router"], seed=1)
    assert set(result.summaries) == {"bound", "oracle", "router"}
    assert 0.0 < result.summaries["router"].attainment <= 1.0


def test_a_trace_round_trips_and_bad_lines_name_the_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with path.open("w") as f:
        write_trace(TRACE, f)
    assert read_trace(path) == TRACE
    path.write_text('{"at_s": 1, "prompt": "hello there", "output": "hi"}\n')
    (r,) = read_trace(path)
    assert (r.prompt_tokens, r.output_tokens) == (
        9,
        5,
    )  # ceil(11 / 3 * 1.15) + 4, ceil(2 / 3 * 1.15) + 4
    cases = {
        '{"at_s": 1, "prompt_tokens": 5}': "output_tokens: missing",
        '{"at_s": -1, "prompt_tokens": 5, "output_tokens": 3}': "at_s: must be a number >= 0",
        '{"at_s": 1, "prompt_tokens": 5, "output_tokens": 3, "data_class": "secret"}': (
            "data_class: must be one of"
        ),
        '{"at_s": 1, "prompt_tokens": 5, "output_tokens": 3, "tenat": "x"}': "tenat: unknown field",
        "[1, 2]": "must be a JSON object",
        "{not json": "not JSON",
    }
    for line, expected in cases.items():
        path.write_text('{"at_s": 0, "prompt_tokens": 1, "output_tokens": 1}\n' + line + "\n")
        with pytest.raises(ConfigError) as info:
            read_trace(path)
        assert f"{path}:2: " in info.value.message and expected in info.value.message, (
            info.value.message
        )


#: A fleet's backends: section -> the error it gets (a pattern).
FLEET_ERRORS: list[tuple[dict[str, Any], str]] = [
    (
        {"gpu-z": {}},
        r"backends.gpu-z: not a backend of the router configuration \(its backends: gpu, hosted\)",
    ),
    ({"gpu": {"outages": [[5, 1]]}}, r"backends.gpu: outages: each is \[start_s, end_s\]"),
    ({"gpu": {"prefill_tokens_per_s": 0}}, r"backends.gpu.prefill_tokens_per_s: must be > 0"),
    (
        {"gpu": {"prefill_interference": 0.5}},
        r"f.yaml: backends.gpu.prefill_interference: needs a prompt reading rate: set "
        r"prefill_tokens_per_s beside it",
    ),
    (
        {"hosted": {"prefill_tokens_per_s": 1e4, "prefill_interference": 0.5}},
        r"backends.hosted.prefill_interference: needs a backend with slots",
    ),
    (
        {"gpu": {"prefill_tokens_per_s": 1e3, "prefill_interference": 2}},
        r"backends.gpu.prefill_interference: must be <= 1, got 2",
    ),
]


def test_fleet_errors_name_the_key() -> None:
    fleet = _two_backend_fleet()
    router_cfg = fleet.config.model_dump(
        mode="json", exclude_none=True, include={"policy", "backends"}
    )
    for backends, error in FLEET_ERRORS:
        with pytest.raises(ConfigError, match=error):
            parse_fleet({"router": router_cfg, "backends": backends}, source="f.yaml")
    with pytest.raises(ConfigError, match="give exactly one of config"):
        parse_fleet({"backends": {}}, source="f.yaml")


def test_a_request_log_becomes_a_trace() -> None:
    lines = [
        json.dumps(
            {
                "time": "2026-12-01 10:00:01,500",
                "logger": "router.requests",
                "message": "request",
                "method": "Generate",
                "code": "OK",
                "tenant": "acme",
                "duration_ms": 500.0,
                "prompt_chars": 40,
                "max_output_tokens": 200,
                "data_class": "restricted",
                "ttft_budget_ms": 800.0,
                "decision": {"objective": "fastest"},
                "input_tokens": 17,
                "output_tokens": 64,
            }
        ),
        json.dumps(
            {
                "time": "2026-12-01 10:00:03,000",
                "logger": "router.requests",
                "message": "request",
                "method": "Generate",
                "code": "UNAVAILABLE",
                "tenant": "",
                "duration_ms": 2.0,
                "prompt_chars": 30,
                "max_output_tokens": 50,
                "data_class": "internal",
            }
        ),
        json.dumps(
            {"time": "2026-12-01 10:00:04,000", "logger": "router.requests", "method": "Route"}
        ),
        json.dumps(
            {"time": "2026-12-01 10:00:04,000", "logger": "router.server", "message": "READY"}
        ),
        "not json",
    ]
    trace, skipped = from_request_log(lines)
    assert skipped == {"method Route": 1, "not a request line": 1, "not JSON": 1}
    first, second = trace
    assert first == TraceRequest(
        at_s=0.0,
        prompt_tokens=17,
        output_tokens=64,
        max_output_tokens=200,
        tenant="acme",
        data_class=DataClass.RESTRICTED,
        ttft_budget_ms=800.0,
    )
    assert second.at_s == pytest.approx(1.998)
    assert (second.prompt_tokens, second.output_tokens) == (16, 50)


def test_the_ttft_window_stays_sorted_as_samples_slide_out() -> None:
    stats = BackendStats("b", PolicyConfig())
    rng = random.Random(1)
    seen: list[float] = []
    for _ in range(TTFT_WINDOW * 3):
        x = rng.choice([rng.uniform(0, 1000), 5.0])  # repeats too
        stats.record_first_token(x)
        seen.append(x)
        window = sorted(seen[-TTFT_WINDOW:])
        n = len(window)
        assert stats.ttft_quantile(0.5) == window[math.ceil(0.5 * n) - 1]
        assert stats.ttft_quantile(0.9) == window[math.ceil(0.9 * n) - 1]
    assert len(stats._s.ttft_sorted) == TTFT_WINDOW


def test_a_load_figure_that_arrives_after_a_stream_ended_brings_no_phantom_back() -> None:
    # The GPU reports its load, polled every 0.5 s; a poll's figure (as it went out)
    # reaches the router 700 ms later. r0 holds the GPU's one slot from 0 to 1.1 s. The
    # poll sent at 0.5 s (figure 1: r0) lands at 1.2 s, after r0 ended; the next figure
    # lands at 1.7 s. r1 arrives at 1.3 s.
    fleet = _two_backend_fleet({"poll_ms": 700})
    assert fleet.config.policy.load_poll_interval_s == 0.5
    trace = [
        TraceRequest(at_s=0.0, prompt_tokens=100, output_tokens=10),
        TraceRequest(at_s=1.3, prompt_tokens=100, output_tokens=10, ttft_budget_ms=1500.0),
    ]
    # Taken as it came, the figure puts r0 back: the GPU looks full (est. queue wait
    # 2.3 x 1.2 s) and r1 goes to hosted.
    out = Simulation(fleet, seed=7, load_marks=False).run(trace, RouterStrategy())
    assert [o.backend for o in out] == ["gpu", "hosted"]
    # With the router's mark, r0's end (after the poll went out) is taken off: the GPU.
    out = Simulation(fleet, seed=7).run(trace, RouterStrategy())
    assert [o.backend for o in out] == ["gpu", "gpu"]
    assert [o.ttft_ms for o in out] == pytest.approx([100.0, 100.0])


def _seed_with_replicas(n: int, wanted: list[int]) -> int:
    """A seed whose requests 0, 1, ... go to the replicas ``wanted`` (the assignment is a
    hash of the seed and the index)."""
    fleet = _two_backend_fleet()
    for seed in range(1000):
        sim = Simulation(fleet, seed, replicas=n)
        if [sim.replica_of(i) for i in range(len(wanted))] == wanted:
            return seed
    raise AssertionError("no seed found")


@pytest.mark.parametrize(("at", "backend", "ttft"), [(0.2, "gpu", 1000.0), (0.3, "hosted", 500.0)])
def test_a_replica_sees_another_replicas_stream_only_through_a_poll(
    at: float, backend: str, ttft: float
) -> None:
    # Two replicas; r0 goes to replica 0, r1 to replica 1. Replica 0 polls the GPU's load
    # at 0, 0.5 s...; replica 1 at 0.25, 0.75 s... (staggered). r0 (no budget) takes the
    # GPU's one slot from 0 to 1.1 s. r1 has a 900 ms TTFT budget.
    seed = _seed_with_replicas(2, [0, 1])
    fleet = _two_backend_fleet()
    trace = [
        TraceRequest(at_s=0.0, prompt_tokens=100, output_tokens=10),
        TraceRequest(at_s=at, prompt_tokens=100, output_tokens=10, ttft_budget_ms=900.0),
    ]
    # One router sees its own stream: the GPU is busy (est. TTFT > 900 ms), hosted.
    out = Simulation(fleet, seed).run(trace, RouterStrategy())
    assert [o.backend for o in out] == ["gpu", "hosted"]
    # At 0.2 s replica 1 has neither opened a stream nor polled: the GPU looks idle, r1
    # queues behind r0 (first token 1.2 s: TTFT 1,000 ms, over its budget). At 0.3 s its
    # poll of 0.25 s has counted r0: hosted.
    sim = Simulation(fleet, seed, replicas=2)
    out = sim.run(trace, RouterStrategy())
    assert [o.backend for o in out] == ["gpu", backend]
    assert out[1].ttft_ms == pytest.approx(ttft)
    # Each replica's stats hold only its own requests.
    assert [[st.requests for st in view] for view in sim.views] == (
        [[1, 0], [1, 0]] if backend == "gpu" else [[1, 0], [0, 1]]
    )


def test_replicas_share_the_traffic_and_each_learns_only_its_own() -> None:
    fleet, trace = build("steady", 900, seed=3)
    sim = Simulation(fleet, 3, replicas=3)
    out = sim.run(trace, RouterStrategy())
    served = [sum(st.requests for st in view) for view in sim.views]
    assert sum(served) == sum(o.attempts for o in out)
    assert all(250 <= n <= 350 for n in served), served  # about a third each
    again = Simulation(fleet, 3, replicas=3).run(trace, RouterStrategy())
    assert [(o.backend, o.total_ms) for o in again] == [(o.backend, o.total_ms) for o in out]


def test_replicas_must_be_at_least_one() -> None:
    with pytest.raises(ConfigError) as info:
        Simulation(_two_backend_fleet(), replicas=0)
    assert info.value.key == "--replicas" and "1 or more" in info.value.message


def test_the_gpu_pool_scenario_is_steady_traffic_on_eight_equivalent_gpu_replicas() -> None:
    fleet, trace = build("gpu-pool", 2000, seed=1)
    steady, steady_trace = build("steady", 2000, seed=1)
    assert trace == steady_trace
    gpus = [s for s in fleet.specs if s.tier is router.types.Tier.GPU]
    assert [s.name for s in gpus] == [f"gpu-{i}" for i in range(1, 9)]
    assert {s.max_concurrency for s in gpus} == {4}
    assert {fleet.models[s.name].slots for s in gpus} == {4}
    # The same GPU capacity as the reference fleet's two replicas of 16.
    assert sum(fleet.models[s.name].slots for s in gpus) == sum(
        steady.models[s.name].slots for s in steady.specs if s.tier is router.types.Tier.GPU
    )
    assert {s.name for s in fleet.specs if s.tier is not router.types.Tier.GPU} == {
        s.name for s in steady.specs if s.tier is not router.types.Tier.GPU
    }
    # Spreading among equivalents reaches every replica.
    out = Simulation(fleet, 1).run(trace, RouterStrategy())
    used = {o.backend for o in out if o.tier is router.types.Tier.GPU}
    assert used == {s.name for s in gpus}


def test_the_gpu_fleet_scenario_is_four_times_the_pool_for_four_times_the_traffic() -> None:
    fleet, trace = build("gpu-fleet", 4000, seed=1)
    steady, steady_trace = build("steady", 4000, seed=1)
    gpus = [s for s in fleet.specs if s.tier is router.types.Tier.GPU]
    assert [s.name for s in gpus] == [f"gpu-{i}" for i in range(1, 33)]
    assert {s.max_concurrency for s in gpus} == {4}
    assert sum(fleet.models[s.name].slots for s in gpus) == 4 * sum(
        steady.models[s.name].slots for s in steady.specs if s.tier is router.types.Tier.GPU
    )
    assert {s.name for s in fleet.specs if s.tier is not router.types.Tier.GPU} == {
        s.name for s in steady.specs if s.tier is not router.types.Tier.GPU
    }
    # Four times the arrival rate (4,000 Poisson arrivals: within a few percent), the same mix.
    ratio = steady_trace[-1].at_s / trace[-1].at_s
    assert 3.8 < ratio < 4.2
    share = sum(1 for r in trace if r.total_budget_ms == 3000.0) / len(trace)
    assert share == pytest.approx(0.25, abs=0.03)
