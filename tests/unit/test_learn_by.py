"""policy.learn_by: model: backends serving one model share their latency windows; load,
errors and the circuit breaker stay their own."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

from testkit import FakeClock

from router.backends.base import Backend, BackendCall
from router.config import CircuitConfig, PolicyConfig
from router.errors import ErrorClass
from router.registry import BackendRegistry
from router.simulation.engine import Simulation
from router.simulation.scenarios import build
from router.stats import BackendStats, Samples, samples_key
from router.types import BackendSpec, Chunk, CircuitState, DataClass, Priors, Tier

CFG = PolicyConfig(
    min_samples=3,
    circuit=CircuitConfig(consecutive_failures=2, error_rate=0.5, window=10, min_requests=6),
)


def spec(name: str, model: str = "llama", tier: Tier = Tier.GPU) -> BackendSpec:
    return BackendSpec(
        name=name, tier=tier, kind="ray_serve", endpoint="x:1", model=model,
        context_window=4096, max_payload_bytes=1 << 20, max_concurrency=4, max_queue=8,
        data_classes=frozenset({DataClass.INTERNAL}), priors=Priors(200.0, 40.0),
    )  # fmt: skip


def answer(stats: BackendStats, ttft: float, decode_ms: float, tokens: int = 100) -> None:
    stats.begin()
    stats.record_first_token(ttft)
    stats.record_success(ttft + decode_ms, tokens, decode_ms)
    stats.end()


def test_shared_windows_feed_every_sibling_and_nothing_else_is_shared() -> None:
    clock = FakeClock()
    shared = Samples()
    a = BackendStats("gpu-1", CFG, clock, shared)
    b = BackendStats("gpu-2", CFG, clock, shared)
    assert b.snapshot().ttft_p50_ms is None  # cached now, before any sample
    for ttft in (100.0, 200.0, 300.0):
        answer(a, ttft, 1000.0)
    snap = b.snapshot()  # b made no call: a's answers changed its cached snapshot
    assert (snap.ttft_p50_ms, snap.ttft_p90_ms, snap.ttft_samples) == (200.0, 300.0, 3)
    assert snap.decode_tokens_per_s == 100.0 and snap.mean_service_ms == 1200.0
    assert (snap.requests, snap.in_flight) == (0, 0)
    # Load, errors and the breaker are each backend's own.
    b.begin()
    a.record_failure(ErrorClass.RETRYABLE, message="boom")
    a.record_failure(ErrorClass.RETRYABLE, message="boom")
    assert a.circuit is CircuitState.OPEN and b.circuit is CircuitState.CLOSED
    assert (a.snapshot().in_flight, b.snapshot().in_flight) == (0, 1)
    assert b.snapshot().last_error == "" and a.snapshot().last_error == "boom"
    # Samples expire for every sibling, whichever one's poller drops them.
    clock.advance(CFG.sample_max_age_s + 1)
    b.expire()
    assert a.snapshot().ttft_p50_ms is None and a.snapshot().decode_tokens_per_s is None


def test_own_windows_need_own_calls_before_they_count() -> None:
    clock = FakeClock()
    own = BackendStats("gpu-1", CFG, clock)
    for ttft in (100.0, 200.0):
        answer(own, ttft, 1000.0)
    assert own.snapshot().ttft_p50_ms is None  # 2 calls < min_samples 3
    answer(own, 300.0, 1000.0)
    assert own.snapshot().ttft_p50_ms == 200.0


def test_the_key_is_tier_kind_and_model() -> None:
    assert samples_key(spec("gpu-1")) == samples_key(spec("gpu-2"))
    assert samples_key(spec("gpu-1")) != samples_key(spec("gpu-3", model="mistral"))
    assert samples_key(spec("gpu-1")) != samples_key(spec("edge-1", tier=Tier.EDGE))


class _Static(Backend):
    async def stream(self, call: BackendCall) -> AsyncIterator[Chunk]:  # type: ignore[override]
        yield Chunk(done=True)


async def test_the_registry_shares_windows_by_model_and_keeps_them_for_a_new_replica() -> None:
    clock = FakeClock()
    registry = BackendRegistry(CFG.model_copy(update={"learn_by": "model"}), clock)
    one = await registry.add(_Static(spec("gpu-1")))
    two = await registry.add(_Static(spec("gpu-2")))
    other = await registry.add(_Static(spec("gpu-3", model="mistral")))
    for ttft in (100.0, 200.0, 300.0):
        answer(one.stats, ttft, 1000.0)
    assert two.stats.snapshot().ttft_p90_ms == 300.0
    assert other.stats.snapshot().ttft_p90_ms is None
    await registry.remove("gpu-1")
    await registry.remove("gpu-2")
    again = await registry.add(_Static(spec("gpu-4")))  # a replica replacing them
    assert again.stats.snapshot().ttft_p90_ms == 300.0
    # The default: each backend learns from its own answers.
    plain = BackendRegistry(CFG, clock)
    x = await plain.add(_Static(spec("gpu-1")))
    y = await plain.add(_Static(spec("gpu-2")))
    for ttft in (100.0, 200.0, 300.0):
        answer(x.stats, ttft, 1000.0)
    assert y.stats.snapshot().ttft_p90_ms is None


def test_simulated_replicas_share_by_model_within_a_router_replica_only() -> None:
    fleet, _ = build("gpu-pool", 10, seed=1)
    policy = fleet.config.policy.model_copy(update={"learn_by": "model"})
    config = fleet.config.model_copy(update={"policy": policy})
    sim = Simulation(dataclasses.replace(fleet, config=config), 1, replicas=2)
    gpus = [i for i, s in enumerate(fleet.specs) if s.tier is Tier.GPU]
    first, second = sim.views
    assert len({id(first[i]._s) for i in gpus}) == 1  # one set for the eight replicas
    assert first[gpus[0]]._s is not second[gpus[0]]._s  # each router replica its own
    hosted = [i for i, s in enumerate(fleet.specs) if s.tier is Tier.HOSTED]
    assert first[hosted[0]]._s is not first[hosted[1]]._s  # two models: two sets
