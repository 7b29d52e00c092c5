"""The response cache through real routers (issue 14): real ModelService servers over the
scripted engine (its ``started`` list shows every model call), real routers with
``controls.cache`` on, real API keys for tenants, a real ``redis-server`` shared by two
router replicas.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from rtutil import collect, ms_backend, shape, stub_for, text_of, user_request
from secutil import bearer, make_keys
from storeservers import own_redis, redis_process  # noqa: F401  (fixtures)

from hybrid_router_cli import render
from router.config import parse_config
from router.errors import ConfigError
from serving.engines.scripted import ScriptedEngine

TEXT = "alpha beta gamma delta"
T0 = tpb.SamplingParams(temperature=0.0)


@pytest.fixture
async def gpu(model_server):
    engine = ScriptedEngine(reply_tokens=12)
    address = await model_server(engine)
    backend = ms_backend(
        "gpu-1", "gpu", address,
        cost={"gpu_hourly_usd": 2.0, "gpu_throughput_tokens_per_s": 100, "source": "test"},
    )  # fmt: skip
    return engine, backend


def _cache(**over) -> dict:
    return {"cache": {"enabled": True, **over}}


async def _ask(stub, text: str = TEXT, md=(), **fields) -> list[rpb.GenerateEvent]:
    fields.setdefault("sampling", T0)
    fields.setdefault("max_output_tokens", 16)
    return await collect(stub.Generate(user_request(text, **fields), metadata=md))


def _decision(events) -> rpb.Decision:
    return events[0].decision


async def test_a_repeated_deterministic_request_is_a_hit(gpu, start_router, channel_to):
    engine, backend = gpu
    router = await start_router([backend], controls=_cache())
    stub = stub_for(channel_to(router))

    first = await _ask(stub)
    assert _decision(first).cache == "miss: first time"
    assert _decision(first).backend == "gpu-1" and len(engine.started) == 1
    answer = text_of(first)
    cost = first[-1].usage.cost_usd
    assert cost > 0

    second = await _ask(stub)
    assert len(engine.started) == 1, "a hit calls no model"
    assert shape(second) == ["decision", "delta+", "usage"]
    d, u = _decision(second), second[-1].usage
    assert (
        d.tier == tpb.TIER_CACHE and d.backend == "cache" and d.cache.startswith("hit: gpu-1 (gpu)")
    )
    assert "gpu-1 (gpu)" in d.explanation and d.estimate.cost_usd == 0
    assert [c.backend for c in d.candidates] == ["cache"] and d.candidates[0].tier == tpb.TIER_CACHE
    assert text_of(second) == answer
    assert u.backend == "cache" and u.tier == tpb.TIER_CACHE and u.cost_usd == 0 and u.complete
    assert u.output_tokens == first[-1].usage.output_tokens == 12
    assert u.request_id == d.request_id != _decision(first).request_id
    assert u.finish_reason == tpb.FINISH_REASON_STOP
    # What the CLI shows for it.
    assert render.tier_name(d.tier) == "cache" and render.tier_name(u.tier) == "cache"
    assert "cache (cache)" in render.usage_line(u).plain
    assert "→ cache (cache)" in render.decision_headline(d).plain


async def test_only_the_same_question_and_model_class_hits(gpu, start_router, channel_to):
    engine, backend = gpu
    router = await start_router([backend], controls=_cache())
    stub = stub_for(channel_to(router))
    await _ask(stub)
    variants = [
        {"text": TEXT + " epsilon"},
        {"max_output_tokens": 15},
        {"sampling": tpb.SamplingParams(temperature=0.0, stop=["gamma"])},
        {"sampling": tpb.SamplingParams(temperature=0.0, top_p=0.5)},
        {"pin_tiers": [tpb.TIER_GPU]},
        {"exclude_backends": ["other"]},
        {"model_family": "scripted"},
        {"capabilities": ["chat"]},
        {"objective": rpb.OBJECTIVE_FASTEST},
        {"data_class": tpb.DATA_CLASS_PUBLIC},
    ]
    for i, fields in enumerate(variants, start=2):
        events = await _ask(stub, **fields)
        assert _decision(events).cache == "miss: first time", fields
        assert len(engine.started) == i, fields
    # Each is a hit the second time.
    for fields in variants:
        assert _decision(await _ask(stub, **fields)).tier == tpb.TIER_CACHE, fields
    assert len(engine.started) == 1 + len(variants)


async def test_the_decision_says_why_a_request_is_not_cacheable(gpu, start_router, channel_to):
    engine, backend = gpu
    router = await start_router([backend], controls=_cache())
    stub = stub_for(channel_to(router))
    cases = [
        ({"sampling": tpb.SamplingParams(temperature=0.7)}, "temperature 0.7 and no seed"),
        ({"sampling": tpb.SamplingParams()}, "default temperature and no seed"),
        ({"session_id": "chat-1"}, "session"),
        ({"exclude_tiers": [tpb.TIER_CACHE]}, "the request excludes tier cache"),
        (
            {"data_class": tpb.DATA_CLASS_RESTRICTED},
            "data class restricted (controls.cache.data_classes)",
        ),
    ]
    for fields, why in cases:
        for _ in range(2):  # asked twice: never answered from the cache
            events = await _ask(stub, **fields)
            assert _decision(events).cache == f"not cacheable: {why}", fields
            assert _decision(events).backend == "gpu-1"
    assert len(engine.started) == 2 * len(cases)
    # A fixed seed makes a sampled answer repeatable: cacheable.
    seeded = {"sampling": tpb.SamplingParams(temperature=0.7, seed=42)}
    assert _decision(await _ask(stub, **seeded)).cache == "miss: first time"
    assert _decision(await _ask(stub, **seeded)).tier == tpb.TIER_CACHE
    # Excluding the cache skips it even when an answer is kept.
    skipped = await _ask(stub, exclude_tiers=[tpb.TIER_CACHE], **seeded)
    assert _decision(skipped).backend == "gpu-1"


async def test_pin_tiers_cannot_name_the_cache(gpu, start_router, channel_to):
    _, backend = gpu
    router = await start_router([backend], controls=_cache())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _ask(stub_for(channel_to(router)), pin_tiers=[tpb.TIER_CACHE])
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "pin_tiers[0]: must be TIER_HOSTED, TIER_GPU or TIER_EDGE"


def test_a_backend_cannot_be_in_tier_cache() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"backends": [ms_backend("c", "cache", "127.0.0.1:1")]}, source="router.yaml")
    assert (
        "must be one of 'hosted', 'gpu' or 'edge', got 'cache' ('cache' is the response cache's"
        in str(err.value)
    )


async def test_an_incomplete_answer_is_not_kept(gpu, start_router, channel_to):
    engine, backend = gpu
    engine.fail_after_tokens = 3
    router = await start_router([backend], controls=_cache())
    stub = stub_for(channel_to(router))
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError):
            await _ask(stub)
    assert len(engine.started) == 2
    engine.fail_after_tokens = None
    assert _decision(await _ask(stub)).cache == "miss: first time"
    assert _decision(await _ask(stub)).tier == tpb.TIER_CACHE


async def test_tenants_and_data_classes_never_share_answers(
    gpu, start_router, channel_to, tmp_path: Path
):
    engine, backend = gpu
    keys = make_keys(tmp_path / "keys.yaml", ["team-a", "team-b", "team-c"])
    router = await start_router(
        [backend],
        auth={"keys_file": str(tmp_path / "keys.yaml"),
              "tenants": [{"name": n, "data_classes": ["public", "internal", "restricted"]}
                          for n in ("team-a", "team-b", "team-c")]},
        controls=_cache(data_classes=["public", "internal", "restricted"],
                        tenants={"team-c": {"enabled": False}}),
    )  # fmt: skip
    stub = stub_for(channel_to(router))
    a, b, c = (bearer(keys[t]) for t in ("team-a", "team-b", "team-c"))

    assert _decision(await _ask(stub, md=a)).cache == "miss: first time"
    assert _decision(await _ask(stub, md=b)).cache == "miss: first time"
    assert len(engine.started) == 2
    assert _decision(await _ask(stub, md=a)).tier == tpb.TIER_CACHE
    assert _decision(await _ask(stub, md=b)).tier == tpb.TIER_CACHE
    for dc in (tpb.DATA_CLASS_PUBLIC, tpb.DATA_CLASS_RESTRICTED):
        assert _decision(await _ask(stub, md=a, data_class=dc)).cache == "miss: first time"
    assert len(engine.started) == 4
    # A tenant the cache is off for.
    for _ in range(2):
        assert _decision(await _ask(stub, md=c)).cache == "not cacheable: off for tenant team-c"
    assert len(engine.started) == 6


async def test_answers_expire_and_the_bounds_evict_the_least_recently_used(
    gpu, start_router, channel_to
):
    engine, backend = gpu
    router = await start_router([backend], controls=_cache(ttl_s=60, max_entries=2))
    cache = router.controls.cache
    now = [1_000_000.0]
    cache.clock = lambda: now[0]  # type: ignore[union-attr]
    stub = stub_for(channel_to(router))

    await _ask(stub, "one")
    now[0] += 59
    assert _decision(await _ask(stub, "one")).cache.startswith("hit: gpu-1 (gpu), kept 59s ago")
    now[0] += 1
    assert _decision(await _ask(stub, "one")).cache == "miss: expired"
    assert len(engine.started) == 2
    # "one" was kept again; "two" makes two entries; reading "one" makes "two" the oldest.
    await _ask(stub, "two")
    assert _decision(await _ask(stub, "one")).tier == tpb.TIER_CACHE
    await _ask(stub, "three")  # a third: the least recently used ("two") goes
    assert len(engine.started) == 4
    assert _decision(await _ask(stub, "one")).tier == tpb.TIER_CACHE
    assert _decision(await _ask(stub, "three")).tier == tpb.TIER_CACHE
    assert _decision(await _ask(stub, "two")).cache == "miss: first time"
    assert len(engine.started) == 5


async def test_sqlite_answers_survive_a_restart(gpu, start_router, channel_to, tmp_path: Path):
    engine, backend = gpu
    cfg = _cache(store="sqlite", sqlite={"path": str(tmp_path / "cache.sqlite3")})
    first = await start_router([backend], controls=cfg)
    await _ask(stub_for(channel_to(first)))
    await first.stop(0)
    second = await start_router([backend], controls=cfg)
    events = await _ask(stub_for(channel_to(second)))
    assert _decision(events).tier == tpb.TIER_CACHE and len(engine.started) == 1


async def test_replicas_share_answers_through_redis(
    gpu,
    start_router,
    channel_to,
    redis_process,  # noqa: F811
):
    engine, backend = gpu
    cfg = _cache(store="redis", redis={"url": redis_process.url, "key_prefix": "t-share:"})
    a = await start_router([backend], controls=cfg)
    b = await start_router([backend], controls=cfg)
    first = await _ask(stub_for(channel_to(a)))
    assert _decision(first).cache == "miss: first time"
    second = await _ask(stub_for(channel_to(b)))
    assert _decision(second).tier == tpb.TIER_CACHE
    assert text_of(second) == text_of(first) and len(engine.started) == 1


async def test_an_unreachable_redis_is_bypassed(
    gpu,
    start_router,
    channel_to,
    own_redis,  # noqa: F811
):
    engine, backend = gpu
    cfg = _cache(store="redis", redis={"url": own_redis.url, "timeout_s": 0.5})
    router = await start_router([backend], controls=cfg)
    stub = stub_for(channel_to(router))
    own_redis.stop()
    for _ in range(2):
        events = await _ask(stub)
        assert _decision(events).cache.startswith("bypassed: cache store redis redis://127.0.0.1:")
        assert events[-1].usage.complete and events[-1].usage.backend == "gpu-1"
    assert len(engine.started) == 2
    own_redis.start()
    assert _decision(await _ask(stub)).cache == "miss: first time"
    assert _decision(await _ask(stub)).tier == tpb.TIER_CACHE


async def test_the_cli_shows_a_hit_as_tier_cache(gpu, start_router, capsys):
    import asyncio

    from hybrid_router_cli.main import main

    engine, backend = gpu
    router = await start_router([backend], controls=_cache())
    argv = ["chat", "--address", f"127.0.0.1:{router.port}", "--temperature", "0",
            "--max-tokens", "5", "alpha beta"]  # fmt: skip
    assert await asyncio.to_thread(main, argv) == 0
    first = capsys.readouterr().out
    assert "→ gpu-1 (gpu)" in first and "cache miss: first time" in first
    assert await asyncio.to_thread(main, [*argv, "--explain"]) == 0
    second = capsys.readouterr().out
    assert "→ cache (cache)" in second and "· cache (cache) · tokens in" in second
    assert "alpha beta alpha beta alpha" in second and "cost $0" in second
    assert len(engine.started) == 1
    assert await asyncio.to_thread(main, [*argv, "--exclude-tier", "cache"]) == 0
    assert "→ gpu-1 (gpu)" in capsys.readouterr().out and len(engine.started) == 2


async def test_preflight_checks_tenants_and_probes_the_store(
    tmp_path: Path,
    redis_process,  # noqa: F811
):
    from router.controls.cache import preflight
    from router.preflight import Options

    keys = tmp_path / "keys.yaml"
    make_keys(keys, ["team-a"])
    config = parse_config(
        {"auth": {"keys_file": str(keys), "tenants": [{"name": "team-a"}]},
         "controls": _cache(store="redis", redis={"url": redis_process.url},
                            tenants={"team-a": {"enabled": False}, "team-z": {}})},
        source="router.yaml",
    )  # fmt: skip
    found = await preflight(config, {}, Options(probe=True))
    levels = {(f.key, f.level) for f in found}
    assert ("controls.cache", "ok") in levels and ("controls.cache.redis", "ok") in levels
    (bad,) = [f for f in found if f.level == "fail"]
    assert bad.key == "controls.cache.tenants" and "'team-z' not in auth.tenants" in bad.message
    assert "off for team-a" in found[0].message
    # The router refuses to start with it.
    with pytest.raises(ConfigError, match="'team-z' not in auth.tenants"):
        from router.controls import build

        build(config, {})
    down = parse_config(
        {"controls": _cache(store="redis", redis={"url": "redis://127.0.0.1:1/0"})},
        source="router.yaml",
    )
    (_, probe) = await preflight(down, {}, Options(probe=True, probe_timeout_s=1))
    assert probe.level == "warn" and "cache store redis redis://127.0.0.1:1/0" in probe.message


async def test_an_answer_from_a_backend_the_tenant_lost_is_not_replayed(
    gpu, start_router, channel_to, tmp_path: Path
):
    engine, backend = gpu
    edge = ms_backend("edge-1", "edge", backend["endpoint"])
    keys = make_keys(tmp_path / "keys.yaml", ["team-a"])
    cache = _cache(store="sqlite", sqlite={"path": str(tmp_path / "cache.sqlite3")})
    auth = {"keys_file": str(tmp_path / "keys.yaml"), "tenants": [{"name": "team-a"}]}
    a = bearer(keys["team-a"])
    before = await start_router([backend], auth=auth, controls=cache)
    assert _decision(await _ask(stub_for(channel_to(before)), md=a)).backend == "gpu-1"
    # A replica sharing the file whose config no longer lets team-a use the gpu tier.
    auth_after = {**auth, "tenants": [{"name": "team-a", "tiers": ["edge"]}]}
    after = await start_router([backend, edge], auth=auth_after, controls=cache)
    stub = stub_for(channel_to(after))
    events = await _ask(stub, md=a)
    d = _decision(events)
    assert d.backend == "edge-1"
    assert d.cache == "miss: kept from gpu-1, which the tenant may no longer use"
    assert _decision(await _ask(stub, md=a)).cache.startswith("hit: edge-1 (edge)")
    with pytest.raises(grpc.aio.AioRpcError) as err:  # pinning the gpu is refused, as ever
        await _ask(stub, md=a, pin_backends=["gpu-1"])
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert len(engine.started) == 2
