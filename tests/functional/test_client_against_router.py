"""hybrid_router.client against a real router on 127.0.0.1 (port 0) over scripted model
servers: the async and the sync client stream the same answer, learn the request id from
the router's headers, map an error status to RouterCallError with the request id, and
cancel the backend when the caller stops reading; both make, read, page through and
delete sessions, and a session turn carries its history."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from hybrid_router.client import (
    AsyncRouterClient,
    RouterCallError,
    RouterClient,
    make_request,
)
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import sessions_pb2 as spb
from rtutil import ms_backend, shape, text_of

from serving.engines.scripted import ScriptedEngine


@pytest.fixture
async def router(model_server, start_router) -> Any:  # type: ignore[no-untyped-def]
    """One scripted GPU backend cleared for public and internal data only."""
    engine = ScriptedEngine(reply_tokens=4)
    addr = await model_server(engine)
    server = await start_router(
        [ms_backend("gpu-a", "gpu", addr, data_classes=["public", "internal"])]
    )
    return engine, f"127.0.0.1:{server.port}"


def sync_stream(address: str, **kw: Any) -> tuple[list[rpb.GenerateEvent], str]:
    with RouterClient(address) as client:
        with client.generate(make_request(prompt="one two", **kw), timeout_s=20) as stream:
            events = list(stream)
        return events, stream.request_id


async def test_async_and_sync_clients_stream_the_same_answer(router) -> None:  # type: ignore[no-untyped-def]
    engine, address = router
    async with AsyncRouterClient(address, timeout_s=20) as client:
        async with client.generate(make_request(prompt="one two")) as stream:
            events = [ev async for ev in stream]
        a_rid = stream.request_id
        done = await client.complete(make_request(prompt="red", request_id="c-1"))
        decision = await client.route(make_request(prompt="x"))
        listed = await client.list_backends()
    s_events, s_rid = await asyncio.to_thread(sync_stream, address)

    for evs, rid in ((events, a_rid), (s_events, s_rid)):
        assert shape(evs) == ["decision", "delta+", "usage"]
        assert text_of(evs) == "one two one two"
        assert evs[-1].usage.complete and evs[-1].usage.backend == "gpu-a"
        # The router made the id and sent it in its headers.
        assert rid and rid == evs[0].decision.request_id
    assert a_rid != s_rid and {a_rid, s_rid} <= set(engine.started)
    assert done.text == "red red red red" and done.request_id == "c-1"
    assert decision.backend == "gpu-a" and [b.name for b in listed.backends] == ["gpu-a"]


async def test_an_error_status_is_one_error_type_with_the_request_id(router) -> None:  # type: ignore[no-untyped-def]
    """Restricted data where no backend may take it: FAILED_PRECONDITION before any event,
    from both clients, with the caller's request id and the router's message."""
    _, address = router
    req = make_request(prompt="secret", data_class="restricted", request_id="err-1")
    async with AsyncRouterClient(address, timeout_s=20) as client:
        with pytest.raises(RouterCallError) as a_err:
            async with client.generate(req) as stream:
                [ev async for ev in stream]
        with pytest.raises(RouterCallError) as r_err:
            await client.route(req)

    def sync_call() -> RouterCallError:
        with RouterClient(address) as c, pytest.raises(RouterCallError) as err:
            c.complete(req, timeout_s=20)
        return err.value

    s_err = await asyncio.to_thread(sync_call)
    for err in (a_err.value, r_err.value, s_err):
        assert err.code == "FAILED_PRECONDITION", err
        assert err.request_id == "err-1" and err.events == 0 and err.attempts == 1
        assert "restricted" in err.message


async def test_a_failure_after_the_first_token_carries_the_routers_id(
    model_server, start_router
) -> None:  # type: ignore[no-untyped-def]
    engine = ScriptedEngine(reply_tokens=10, fail_after_tokens=2)
    server = await start_router([ms_backend("gpu-a", "gpu", await model_server(engine))])
    async with AsyncRouterClient(f"127.0.0.1:{server.port}", timeout_s=20) as client:
        with pytest.raises(RouterCallError) as err:
            await client.complete(make_request(prompt="a b"))
    e = err.value
    assert e.code == "UNAVAILABLE" and e.attempts == 1 and e.events >= 2  # never retried
    assert e.request_id and e.request_id == engine.started[0]
    assert e.partial is not None and e.partial.text == "a b"
    assert e.partial.usage is not None and not e.partial.usage.complete


async def test_leaving_the_async_stream_cancels_the_backend(model_server, start_router) -> None:  # type: ignore[no-untyped-def]
    engine = ScriptedEngine(tokens_per_s=20, reply_tokens=400)
    server = await start_router([ms_backend("gpu-a", "gpu", await model_server(engine))])
    async with AsyncRouterClient(f"127.0.0.1:{server.port}", timeout_s=30) as client:
        async with client.generate(make_request(prompt="z", request_id="cx-2")) as stream:
            await anext(stream)
            await anext(stream)
    end = asyncio.get_running_loop().time() + 15
    while "cx-2" not in engine.cancelled:
        assert asyncio.get_running_loop().time() < end
        await asyncio.sleep(0.05)


async def test_unreachable_router_retries_then_fails() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    async with AsyncRouterClient(f"127.0.0.1:{port}", timeout_s=10, sleep=sleep) as client:
        with pytest.raises(RouterCallError) as err:
            async with client.generate(make_request(prompt="x")) as stream:
                [ev async for ev in stream]
        assert err.value.code == "UNAVAILABLE" and err.value.attempts == 3
        assert slept == [0.05, 0.1]
        with pytest.raises(RouterCallError) as err2:
            await client.list_backends()
        assert err2.value.attempts == 3


async def test_session_calls_from_the_async_client(router) -> None:  # type: ignore[no-untyped-def]
    _, address = router
    async with AsyncRouterClient(address, timeout_s=20) as client:
        made = await client.create_session(system="Be brief.", ttl_s=120, strategy="summarize")
        assert made.session_id.startswith("s_") and made.ttl_s == 120
        assert made.strategy == spb.CONTEXT_STRATEGY_SUMMARIZE and made.system == "Be brief."
        sid = made.session_id
        first = await client.complete(make_request(prompt="one two", session_id=sid))
        second = await client.complete(
            make_request(prompt="three", session_id=sid, context_strategy="sliding")
        )
        assert first.decision is not None and first.decision.session_turns == 0
        assert second.decision is not None and second.decision.session_id == sid
        assert second.decision.session_turns == 2
        assert second.decision.context_strategy == spb.CONTEXT_STRATEGY_SLIDING
        (fit,) = [c.context for c in second.decision.candidates if c.backend == "gpu-a"]
        assert fit.turns_kept == 2 and fit.note == "the whole history fits"
        got = await client.get_session(sid)
        assert got.turn_count == 4 and [t.content for t in got.turns][0::2] == ["one two", "three"]
        assert got.turns[1].content == first.text and got.turns[1].backend == "gpu-a"
        assert got.history_tokens == sum(t.tokens for t in got.turns)

        for i in range(4):
            await client.create_session(f"a-{i}")
        page = await client.list_sessions(page_size=2)
        assert len(page.sessions) == 2 and page.next_page_token
        assert not page.sessions[0].turns  # a list carries no history
        ids = [s.session_id async for s in client.iter_sessions(page_size=2)]
        assert sorted(ids) == sorted([sid, "a-0", "a-1", "a-2", "a-3"])

        assert await client.delete_session("a-0") is True
        assert await client.delete_session("a-0") is False
        with pytest.raises(RouterCallError) as missing:
            await client.get_session("a-0")
        with pytest.raises(RouterCallError) as taken:
            await client.create_session("a-1")
        with pytest.raises(RouterCallError) as short:
            await client.create_session(ttl_s=5)
    assert missing.value.code == "NOT_FOUND" and "'a-0'" in missing.value.message
    assert taken.value.code == "ALREADY_EXISTS" and taken.value.attempts == 1
    assert short.value.code == "INVALID_ARGUMENT" and "ttl_s" in short.value.message


def sync_session_calls(address: str) -> dict[str, Any]:
    with RouterClient(address, timeout_s=20) as client:
        made = client.create_session("sync-1", strategy="strict")
        turn = client.complete(make_request(prompt="red", session_id="sync-1"))
        got = client.get_session("sync-1")
        ids = [s.session_id for s in client.iter_sessions(page_size=1)]
        deleted = client.delete_session("sync-1")
        with pytest.raises(RouterCallError) as missing:
            client.get_session("sync-1")
        return {"made": made, "turn": turn, "got": got, "ids": ids, "deleted": deleted,
                "missing": missing.value}  # fmt: skip


async def test_session_calls_from_the_sync_client(router) -> None:  # type: ignore[no-untyped-def]
    _, address = router
    async with AsyncRouterClient(address, timeout_s=20) as client:
        await client.create_session("other")
    r = await asyncio.to_thread(sync_session_calls, address)
    assert r["made"].session_id == "sync-1" and r["made"].strategy == spb.CONTEXT_STRATEGY_STRICT
    decision = r["turn"].decision
    assert decision.session_id == "sync-1"
    assert decision.context_strategy == spb.CONTEXT_STRATEGY_STRICT
    assert [t.content for t in r["got"].turns] == ["red", r["turn"].text]
    assert sorted(r["ids"]) == ["other", "sync-1"] and r["deleted"] is True
    assert r["missing"].code == "NOT_FOUND"


async def test_a_create_is_never_retried_the_other_session_calls_are() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def sleep(s: float) -> None:
        pass

    async with AsyncRouterClient(f"127.0.0.1:{port}", timeout_s=10, sleep=sleep) as client:
        with pytest.raises(RouterCallError) as create:
            await client.create_session("x")
        with pytest.raises(RouterCallError) as get:
            await client.get_session("x")
        with pytest.raises(RouterCallError) as delete:
            await client.delete_session("x")
    assert create.value.code == "UNAVAILABLE" and create.value.attempts == 1
    assert get.value.attempts == 3 and delete.value.attempts == 3

    def sync() -> tuple[int, int]:
        with RouterClient(f"127.0.0.1:{port}", timeout_s=10, sleep=lambda s: None) as c:
            with pytest.raises(RouterCallError) as create:
                c.create_session()
            with pytest.raises(RouterCallError) as listing:
                c.list_sessions()
        return create.value.attempts, listing.value.attempts

    assert await asyncio.to_thread(sync) == (1, 3)
