"""Rate limits through real routers (issue 14): real ModelService servers over the scripted
engine, real routers with API keys on 127.0.0.1, a real ``redis-server`` shared by two
router replicas, and the client library.

Refusals that waiting cures are RESOURCE_EXHAUSTED with ``google.rpc.RetryInfo`` and a
``retry-after`` trailer; those it does not cure (a prompt no window holds, a cost cap,
one request above a limit's burst) are OUT_OF_RANGE / FAILED_PRECONDITION with an
``ErrorInfo`` reason, and the client library never retries them.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from hybrid_router.client import AsyncRouterClient, RouterCallError, make_request
from prometheus_client.parser import text_string_to_metric_families
from rtutil import collect, ms_backend, stub_for, user_request
from secutil import bearer, make_keys
from storeservers import own_redis, redis_process  # noqa: F401  (fixtures)

from hybrid_router_cli.main import main
from router.controls.gcra import Rate, admit_all
from router.controls.limits import Cell
from router.controls.limits_redis import RedisLimitStore
from router.server.status_details import read_details
from serving.engines.scripted import ScriptedEngine

TENANTS = [{"name": "acme"}, {"name": "beta"}]


def _auth(tmp_path: Path) -> dict[str, Any]:
    return {"keys_file": str(tmp_path / "keys.yaml"), "tenants": TENANTS, "refresh_s": 0.1}


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    return make_keys(tmp_path / "keys.yaml", ["acme", "beta"])


async def _refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(call)
    return err.value


def _retry_after(err: grpc.aio.AioRpcError) -> float:
    (value,) = [v for k, v in err.trailing_metadata() or () if k == "retry-after"]
    return float(value)


# --- refusals that waiting cures --------------------------------------------------------------


async def test_a_request_limit_refuses_with_retry_info_and_retry_after(
    tmp_path, keys, model_server, start_router, channel_to
):
    engine = ScriptedEngine(reply_tokens=3)
    router = await start_router(
        [ms_backend("gpu-a", "gpu", await model_server(engine))],
        auth=_auth(tmp_path),
        controls={
            "rate_limits": {"tenants": {"acme": {"requests_per_min": 6, "burst_requests": 2}}}
        },
        telemetry={"metrics": {"address": "127.0.0.1:0"}},
    )
    stub = stub_for(channel_to(router))
    acme = bearer(keys["acme"])
    for _ in range(2):
        events = await collect(stub.Generate(user_request(), metadata=acme))
        assert events[-1].usage.complete
    err = await _refusal(stub.Generate(user_request(request_id="third"), metadata=acme))
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "tenant 'acme' may use 6 requests a minute" in (err.details() or "")
    assert "controls.rate_limits.tenants[acme].requests_per_min" in (err.details() or "")
    # One request every 10 s, a burst of 2 spent: the next has room in just under 10 s.
    wait = _retry_after(err)
    assert 8.0 < wait <= 10.0
    info, retry = read_details(err.trailing_metadata())
    assert info is not None and info.reason == "RATE_LIMITED" and info.domain == "hybrid-router"
    assert info.metadata["limit"] == "controls.rate_limits.tenants[acme].requests_per_min"
    assert retry is not None
    assert retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9 == pytest.approx(
        wait, abs=1e-3
    )
    # No model was called for the refusal; another tenant is not held by acme's limit.
    assert len(engine.started) == 2 and "third" not in engine.started
    events = await collect(stub.Generate(user_request(), metadata=bearer(keys["beta"])))
    assert events[-1].usage.complete

    # The client library reports the wait and does not retry on its own.
    async with AsyncRouterClient(f"127.0.0.1:{router.port}", api_key=keys["acme"]) as client:
        with pytest.raises(RouterCallError) as caught:
            await client.complete(make_request("hello"))
    e = caught.value
    assert e.code == "RESOURCE_EXHAUSTED" and e.attempts == 1 and e.events == 0
    assert e.retry_after is not None and 8.0 < e.retry_after <= 10.0

    # The control's events, by tenant.
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{router.guard.metrics_port}/metrics")).text
    counted = {
        (s.labels["outcome"], s.labels["tenant"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "hybrid_router_control_events_total" and s.labels["control"] == "rate_limit"
    }
    assert counted == {("allowed", "acme"): 2, ("refused", "acme"): 2}


async def test_tokens_are_charged_before_the_answer_and_corrected_after(
    model_server, start_router, channel_to
):
    """600 tokens a minute; each request is charged its estimate (a short prompt plus
    max_output_tokens 200) but uses about 15: the correction lets a long run of
    sequential requests through, while concurrent ones are held by their estimates."""
    fast = ScriptedEngine(reply_tokens=5)
    slow = ScriptedEngine(reply_tokens=5, ttft_ms=1500)
    router = await start_router(
        [
            ms_backend("fast", "gpu", await model_server(fast)),
            ms_backend("slow", "gpu", await model_server(slow)),
        ],
        controls={"rate_limits": {"default": {"tokens_per_min": 600}}},
    )
    stub = stub_for(channel_to(router))
    for _ in range(8):
        events = await collect(
            stub.Generate(user_request("alpha beta", max_output_tokens=200, pin_backends=["fast"]))
        )
        usage = events[-1].usage
        assert usage.complete and usage.input_tokens + usage.output_tokens < 20
    # Refill: 10 tokens a second; the 8 corrected answers left the bucket nearly full.
    await asyncio.sleep(1.0)
    first = asyncio.ensure_future(
        collect(stub.Generate(user_request("one", max_output_tokens=200, pin_backends=["slow"])))
    )
    second = asyncio.ensure_future(
        collect(stub.Generate(user_request("two", max_output_tokens=200, pin_backends=["slow"])))
    )
    while len(slow.started) < 2:
        await asyncio.sleep(0.01)
    # Two answers are still to come: their estimates hold the bucket, so a third long
    # request is refused before any of them has a Usage.
    err = await _refusal(
        stub.Generate(user_request("three", max_output_tokens=200, pin_backends=["fast"]))
    )
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "prompt estimate" in (err.details() or "") and "max_output_tokens 200" in (
        err.details() or ""
    )
    assert _retry_after(err) > 1.0
    assert not first.done() and not second.done()
    await asyncio.gather(first, second)
    # Their Usage gave the unused estimate back: the same request passes at once.
    events = await collect(
        stub.Generate(user_request("three", max_output_tokens=200, pin_backends=["fast"]))
    )
    assert events[-1].usage.complete


# --- refusals that waiting does not cure ------------------------------------------------------


async def test_refusals_that_cannot_pass_are_not_retryable(model_server, start_router, channel_to):
    engine = ScriptedEngine(reply_tokens=3, context_window=1024)
    router = await start_router(
        [
            ms_backend(
                "gpu-a",
                "gpu",
                await model_server(engine),
                context_window=1024,
                cost={"gpu_hourly_usd": 1.0, "gpu_throughput_tokens_per_s": 100, "source": "t"},
            )
        ],
        # Each window and cost-cap refusal is charged up to ~1,900 tokens (the limiter acts before
        # the decision, and nothing is used: the correction gives them back).
        controls={"rate_limits": {"default": {"tokens_per_min": 4000}}},
    )
    stub = stub_for(channel_to(router))
    cases = [
        (user_request("wordy " * 800, max_output_tokens=16), "OUT_OF_RANGE", "PROMPT_TOO_LARGE"),
        (user_request(max_cost_usd=1e-9), "FAILED_PRECONDITION", "COST_CAP"),
        (user_request(max_output_tokens=5000), "OUT_OF_RANGE", "REQUEST_OVER_RATE_LIMIT"),
    ]
    for request, code, reason in cases:
        err = await _refusal(stub.Generate(request))
        assert err.code().name == code, err.details()
        info, retry = read_details(err.trailing_metadata())
        assert info is not None and info.reason == reason and retry is None
        assert not [k for k, _ in err.trailing_metadata() or () if k == "retry-after"]
    assert engine.started == []
    # The client library tries once (a retry could not pass), reporting no wait.
    async with AsyncRouterClient(f"127.0.0.1:{router.port}") as client:
        for request, code, _ in cases:
            with pytest.raises(RouterCallError) as caught:
                await client.complete(request)
            assert (caught.value.code, caught.value.attempts) == (code, 1)
            assert caught.value.retry_after is None


# --- a fleet: one limit in Redis --------------------------------------------------------------


def _redis_limits(url: str, prefix: str, **limits: Any) -> dict[str, Any]:
    return {
        "rate_limits": {
            "store": "redis",
            "redis": {"url": url, "key_prefix": prefix},
            **limits,
        }
    }


async def test_two_replicas_share_one_limit_in_redis(
    tmp_path,
    keys,
    model_server,
    start_router,
    channel_to,
    redis_process,  # noqa: F811
):
    engine = ScriptedEngine(reply_tokens=2)
    backends = [ms_backend("gpu-a", "gpu", await model_server(engine))]
    controls = _redis_limits(
        redis_process.url,
        f"t-{uuid.uuid4().hex[:8]}:",
        tenants={"acme": {"requests_per_min": 3, "burst_requests": 3}},
    )
    replicas = [
        await start_router(backends, auth=_auth(tmp_path), controls=controls) for _ in range(2)
    ]
    stubs = [stub_for(channel_to(r)) for r in replicas]
    acme = bearer(keys["acme"])
    outcomes = []
    for i in range(6):  # alternating replicas
        try:
            await collect(stubs[i % 2].Generate(user_request(), metadata=acme))
            outcomes.append("ok")
        except grpc.aio.AioRpcError as exc:
            outcomes.append(exc.code().name)
            assert _retry_after(exc) > 15.0  # one request every 20 s
    assert outcomes == ["ok"] * 3 + ["RESOURCE_EXHAUSTED"] * 3
    assert len(engine.started) == 3
    # beta has no limit, on either replica.
    for stub in stubs:
        await collect(stub.Generate(user_request(), metadata=bearer(keys["beta"])))


async def test_concurrent_estimates_on_two_replicas_hold_one_token_bucket(
    model_server,
    start_router,
    channel_to,
    redis_process,  # noqa: F811
):
    slow = ScriptedEngine(reply_tokens=5, ttft_ms=1500)
    backends = [ms_backend("slow", "gpu", await model_server(slow))]
    controls = _redis_limits(
        redis_process.url, f"t-{uuid.uuid4().hex[:8]}:", default={"tokens_per_min": 600}
    )
    one, two = [await start_router(backends, controls=controls) for _ in range(2)]
    s1, s2 = stub_for(channel_to(one)), stub_for(channel_to(two))

    def long(text: str) -> Any:
        return user_request(text, max_output_tokens=200)

    running = [
        asyncio.ensure_future(collect(s.Generate(long(t)))) for s, t in ((s1, "a"), (s2, "b"))
    ]
    while len(slow.started) < 2:
        await asyncio.sleep(0.01)
    for stub in (s1, s2):
        err = await _refusal(stub.Generate(long("c")))
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    await asyncio.gather(*running)
    # Each replica's correction rides with its next charge (or goes alone within 5 ms):
    # either replica has room again.
    await collect(s2.Generate(long("d")))
    await collect(s1.Generate(long("e")))


async def test_the_lua_script_does_the_same_arithmetic_as_the_pure_function(
    redis_process,  # noqa: F811
):
    """Random charges against Redis (its clock replaced by ours) and against
    ``gcra.admit_all``: the same verdicts and waits."""
    store = RedisLimitStore(
        redis_process.url, key_prefix=f"eq-{uuid.uuid4().hex[:8]}:", timeout_s=2.0
    )
    rng = random.Random(7)
    cells = [
        Cell(f"{{t}}/c{i}", rate, 0.0, "tokens", "s", "l", "")
        for i, rate in enumerate((Rate.per_minute(600, 50), Rate.per_minute(120, 5)))
    ]
    tats = {c.key: 0.0 for c in cells}
    now = 1_000_000.0  # seconds
    try:
        for _ in range(300):
            now += rng.expovariate(4.0)
            charges = [(cells[0], float(rng.randint(1, 30))), (cells[1], 1.0)]
            expected = admit_all([(tats[c.key], cost, c.rate) for c, cost in charges], now)
            store.now_ms = now * 1000.0
            got = await store.admit(charges)
            assert got.admitted == expected.admitted
            assert got.refused_by == expected.refused_by
            assert got.wait == pytest.approx(expected.wait, abs=2e-6)
            if expected.admitted:
                for (cell, _), tat in zip(charges, expected.tats, strict=True):
                    tats[cell.key] = tat
            for cell in cells:
                stored = await store.tat_ms(cell)
                if tats[cell.key] > now:
                    assert stored == pytest.approx(tats[cell.key] * 1000.0, abs=1e-3)
    finally:
        await store.close()


async def test_corrections_ride_with_the_next_charge_or_go_alone_soon(
    redis_process,  # noqa: F811
):
    store = RedisLimitStore(
        redis_process.url, key_prefix=f"ride-{uuid.uuid4().hex[:8]}:", timeout_s=2.0
    )
    cell = Cell("{t}/t/tok", Rate.per_minute(6000, 1000), 6000, "tokens", "s", "l", "")
    try:
        assert (await store.admit([(cell, 300.0)])).admitted
        charged = await store.tat_ms(cell)
        assert charged is not None
        # Used 100 of the 300: the refund is queued, not yet written...
        await store.adjust([(cell, -200.0)])
        assert await store.tat_ms(cell) == charged
        # ...and goes with the next charge, ahead of it: one round trip for both.
        trips = store.round_trips
        assert (await store.admit([(cell, 300.0)])).admitted
        assert store.round_trips == trips + 1
        after = await store.tat_ms(cell)
        assert after is not None
        # 300 charged, 200 back, 300 charged: 400 units of 10 ms each, less the time spent.
        assert 3000.0 < after - (charged - 3000.0) <= 4000.0
        # With no charge to ride with, it goes alone within the window.
        await store.adjust([(cell, -300.0)])
        await asyncio.sleep(0.05)
        alone = await store.tat_ms(cell)
        assert alone is not None and alone < after - 2900.0
    finally:
        await store.close()


async def test_an_unreachable_store_refuses_naming_it_unless_fail_open(
    model_server,
    start_router,
    channel_to,
    own_redis,  # noqa: F811
):
    engine = ScriptedEngine(reply_tokens=2)
    backends = [ms_backend("gpu-a", "gpu", await model_server(engine))]
    limits = {"default": {"requests_per_min": 600}}
    closed = await start_router(
        backends, controls=_redis_limits(own_redis.url, "closed:", **limits)
    )
    controls = _redis_limits(own_redis.url, "open:", **limits)
    controls["rate_limits"]["fail_open"] = True
    opened = await start_router(backends, controls=controls)
    await collect(stub_for(channel_to(closed)).Generate(user_request()))
    own_redis.stop()
    err = await _refusal(stub_for(channel_to(closed)).Generate(user_request()))
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert "rate limit store redis redis://127.0.0.1" in (err.details() or "")
    events = await collect(stub_for(channel_to(opened)).Generate(user_request()))
    assert events[-1].usage.complete


# --- hybrid-router check ----------------------------------------------------------------------


def test_check_shows_the_limits_and_warns_on_unknown_tenants(tmp_path, keys, capsys):
    config = {
        "server": {"address": "127.0.0.1:0"},
        "backends": [ms_backend("gpu-1", "gpu", "127.0.0.1:1")],
        "auth": _auth(tmp_path),
        "controls": {
            "rate_limits": {
                "default": {"requests_per_min": 600, "tokens_per_min": 200000},
                "tenants": {"acme": {"tokens_per_min": 50000}, "acne": {"requests_per_min": 1}},
                "store": "redis",
                "redis": {"url": "env:LIMITS_REDIS_URL"},
            }
        },
    }
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(config))
    rc = main(["check", "--config", str(path), "--json"])
    report = json.loads(capsys.readouterr().out)
    found = {(c["check"], c["result"]): c for c in report["checks"]}
    shown = found[("controls.rate_limits", "ok")]["detail"]
    assert "store redis (shared)" in shown
    assert "each tenant: 600 req/min, 200000 tokens/min" in shown
    assert "tenant acme: 600 req/min, 50000 tokens/min" in shown
    assert "acne" in found[("controls.rate_limits", "warn")]["detail"]
    # The URL's variable is unset: serve would stop, so check fails naming the key.
    assert rc == 1
    assert "LIMITS_REDIS_URL" in found[("controls.rate_limits.redis.url", "fail")]["detail"]
