"""Spend budgets and the cost ledger through real routers (issue 14): real ModelService
servers over the scripted engine, real routers with API keys on 127.0.0.1, the ledger in
an SQLite file under tmp_path or a real ``redis-server``.

A refusal comes before any model is called: the scripted engines' ``started`` lists do
not grow. Prices are chosen so that a token costs a round sum: hosted $0.001 a token,
gpu a tenth of that.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from rtutil import collect, ms_backend, stub_for, user_request
from secutil import bearer, make_keys
from storeservers import RedisProcess, own_redis  # noqa: F401  (fixtures)

from router.controls.ledger_sqlite import SqliteLedgerStore
from serving.engines.scripted import ScriptedEngine

TENANTS = [{"name": "acme"}, {"name": "beta"}]
HOSTED_PRICE = {"input_per_mtok_usd": 1000, "output_per_mtok_usd": 1000, "source": "test"}
GPU_PRICE = {"gpu_hourly_usd": 0.36, "gpu_throughput_tokens_per_s": 1000, "source": "test"}


def _auth(tmp_path: Path) -> dict[str, Any]:
    return {"keys_file": str(tmp_path / "keys.yaml"), "tenants": TENANTS, "refresh_s": 0.1}


async def _ask(stub, key: str, text: str = "alpha beta gamma", **fields: Any) -> list:
    request = user_request(text, max_output_tokens=20, **fields)
    return await collect(stub.Generate(request, metadata=bearer(key)))


async def test_an_exhausted_budget_refuses_before_any_model_is_called(
    model_server, start_router, channel_to, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "keys.yaml", ["acme", "beta"])
    engine = ScriptedEngine(reply_tokens=20)
    address = await model_server(engine)
    ledger_path = tmp_path / "ledger.sqlite3"
    router = await start_router(
        [ms_backend("hosted-1", "hosted", address, cost=HOSTED_PRICE)],
        auth=_auth(tmp_path),
        controls={
            "budgets": {"tenants": {"acme": {"usd_per_day": 0.05}}},
            "ledger": {"enabled": True, "sqlite": {"path": str(ledger_path)}},
        },
    )
    stub = stub_for(channel_to(router))

    # 10 prompt tokens + 20 answer tokens at $0.001: $0.03 of acme's $0.05 a day.
    first = await _ask(stub, keys["acme"])
    assert first[-1].usage.complete and first[-1].usage.cost_usd == pytest.approx(0.03)
    assert len(engine.started) == 1

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _ask(stub, keys["acme"])
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    details = err.value.details() or ""
    assert details.startswith("budget tenant acme, UTC day ")
    assert "is exhausted: $0.0200 of $0.0500 left" in details and "it resets at " in details
    trailers = dict(err.value.trailing_metadata() or ())
    assert float(trailers["retry-after"]) > 0
    assert len(engine.started) == 1  # no model was called for the refused request

    # beta has no budget; the other requests go on.
    await _ask(stub, keys["beta"])
    await _ask(stub, keys["beta"])
    assert len(engine.started) == 3

    # The ledger holds the answered requests, not the refused one.
    assert await router.controls.ledger.flush(10)
    store = SqliteLedgerStore(ledger_path, create=False)
    records = [r async for r in store.read(0, 2**62)]
    await store.close()
    assert sorted(r.tenant for r in records) == ["acme", "beta", "beta"]
    acme = next(r for r in records if r.tenant == "acme")
    assert acme.backend == "hosted-1" and acme.tier == "hosted" and acme.complete
    assert (acme.input_tokens, acme.output_tokens) == (10, 20)
    assert acme.cost_usd == pytest.approx(0.03) and acme.key_id and not acme.cached


async def test_failover_to_a_dearer_fallback_the_budget_cannot_hold_is_refused(
    model_server, start_router, channel_to, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "keys.yaml", ["acme", "beta"])
    gpu = ScriptedEngine(reply_tokens=20, fail_before_first_token="unavailable")
    hosted = ScriptedEngine(reply_tokens=20)
    router = await start_router(
        [
            ms_backend("gpu-1", "gpu", await model_server(gpu), cost=GPU_PRICE),
            ms_backend("hosted-1", "hosted", await model_server(hosted), cost=HOSTED_PRICE),
        ],
        policy={"objective": "cheapest"},
        auth=_auth(tmp_path),
        controls={"budgets": {"default": {"usd_per_day": 0.01}}},
    )
    stub = stub_for(channel_to(router))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _ask(stub, keys["acme"])
    # hosted-1 may cost $0.031, above the whole $0.01 a day: no wait would let it pass.
    assert err.value.code() is grpc.StatusCode.OUT_OF_RANGE
    assert "may cost up to $0.0310 (failing over to hosted-1, its estimate)" in (
        err.value.details() or ""
    )
    assert len(gpu.started) == 1 and len(hosted.started) == 0
    # Its reservation was released: the cheap tier still takes a request that fits.
    gpu.fail_before_first_token = None
    events = await _ask(stub, keys["acme"])
    assert events[-1].usage.backend == "gpu-1"


async def test_a_ledger_store_outage_refuses_new_requests_then_catches_up(
    model_server,
    start_router,
    channel_to,
    tmp_path: Path,
    own_redis: RedisProcess,  # noqa: F811
) -> None:
    keys = make_keys(tmp_path / "keys.yaml", ["acme", "beta"])
    engine = ScriptedEngine(reply_tokens=5)
    router = await start_router(
        [ms_backend("gpu-1", "gpu", await model_server(engine), cost=GPU_PRICE)],
        auth=_auth(tmp_path),
        controls={
            "ledger": {
                "enabled": True,
                "store": "redis",
                "redis": {"url": own_redis.url, "timeout_s": 0.3},
                "buffer_records": 2,
            }
        },
    )
    stub = stub_for(channel_to(router))
    ledger = router.controls.ledger
    await _ask(stub, keys["acme"])
    assert await ledger.flush(5)

    own_redis.pause()
    try:
        await _ask(stub, keys["acme"])
        await _ask(stub, keys["beta"])
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _ask(stub, keys["acme"])
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        assert (err.value.details() or "").startswith(
            f"ledger store redis {own_redis.url} is unavailable: 2 usage records are waiting"
        )
        assert len(engine.started) == 3
    finally:
        own_redis.resume()
    assert await ledger.flush(10)
    await _ask(stub, keys["acme"])
    assert await ledger.flush(10)
    assert ledger.written == 4


async def test_concurrent_requests_through_a_router_spend_at_most_the_budget(
    model_server, start_router, channel_to, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "keys.yaml", ["acme", "beta"])
    engine = ScriptedEngine(reply_tokens=20, max_concurrency=64, tokens_per_s=400)
    router = await start_router(
        [
            ms_backend(
                "hosted-1",
                "hosted",
                await model_server(engine),
                cost=HOSTED_PRICE,
                max_concurrency=64,
            )
        ],  # fmt: skip
        auth=_auth(tmp_path),
        controls={"budgets": {"tenants": {"acme": {"usd_per_day": 0.3}}}},
    )
    stub = stub_for(channel_to(router))

    async def one() -> float:
        try:
            events = await _ask(stub, keys["acme"])
        except grpc.aio.AioRpcError as exc:
            assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
            return 0.0
        return float(events[-1].usage.cost_usd)

    costs = await asyncio.gather(*(one() for _ in range(40)))
    assert sum(costs) <= 0.3 + 1e-9
    assert len([c for c in costs if c]) == len(engine.started) >= 9


async def test_a_request_cancelled_mid_answer_spends_its_estimate(
    model_server, start_router, channel_to, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "keys.yaml", ["acme", "beta"])
    engine = ScriptedEngine(reply_tokens=20, tokens_per_s=20)
    router = await start_router(
        [ms_backend("hosted-1", "hosted", await model_server(engine), cost=HOSTED_PRICE)],
        auth=_auth(tmp_path),
        controls={"budgets": {"tenants": {"acme": {"usd_per_day": 1.0}}}},
    )
    stub = stub_for(channel_to(router))
    call = stub.Generate(
        user_request("alpha beta gamma", max_output_tokens=20), metadata=bearer(keys["acme"])
    )
    async for ev in call:
        if ev.HasField("delta"):
            break  # the caller goes away mid-answer: dispatch sends no Usage
    call.cancel()
    budgets = router.controls.budgets
    for _ in range(100):
        ((_, held),) = await budgets.usage("acme", "")
        if held.reserved == 0:
            break
        await asyncio.sleep(0.02)
    # No Usage came, so the estimate ($0.031: 11 prompt + 20 answer tokens) is spent.
    assert (held.spent, held.reserved) == (31_000_000, 0)


async def test_a_request_cancelled_mid_answer_has_its_ledger_record(
    model_server, start_router, channel_to, tmp_path: Path
) -> None:
    """Dispatch sends no Usage for a stream the caller cancels; the ledger still records
    it: not complete, finish cancelled, the estimated prompt and cost, the tokens that came."""
    keys = make_keys(tmp_path / "keys.yaml", ["acme", "beta"])
    engine = ScriptedEngine(reply_tokens=20, tokens_per_s=20)
    ledger_path = tmp_path / "ledger.sqlite3"
    router = await start_router(
        [ms_backend("hosted-1", "hosted", await model_server(engine), cost=HOSTED_PRICE)],
        auth=_auth(tmp_path),
        controls={"ledger": {"enabled": True, "sqlite": {"path": str(ledger_path)}}},
    )
    stub = stub_for(channel_to(router))
    call = stub.Generate(
        user_request("alpha beta gamma", max_output_tokens=20), metadata=bearer(keys["acme"])
    )
    async for ev in call:
        if ev.HasField("delta"):
            break
    call.cancel()
    store = SqliteLedgerStore(ledger_path)
    try:
        records: list = []
        for _ in range(200):
            records = [r async for r in store.read(0, 2**62)]
            if records:
                break
            await asyncio.sleep(0.05)
    finally:
        await store.close()
    (record,) = records
    assert (record.tenant, record.backend, record.complete, record.cached) == (
        "acme", "hosted-1", False, False)  # fmt: skip
    assert record.input_tokens > 0 and record.output_tokens >= 1
    assert record.cost_usd == pytest.approx((record.input_tokens + 20) * 0.001)
