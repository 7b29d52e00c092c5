"""Sessions through a real router (issue 13): real ModelService servers over the scripted
engine (which refuses a prompt larger than its window, and reports the prompt tokens it
was sent), a real router with its SQLite store in tmp_path, real gRPC clients.

The three tiers have windows of 400 (edge), 1,000 (gpu) and 8,192 (hosted) tokens and
the edge is cheapest: a growing conversation must stay on the edge, fitted, rather than
move to a bigger (dearer) window.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import sessions_pb2 as spb
from hybrid_router.v1 import sessions_pb2_grpc
from rtutil import collect, ms_backend, stub_for, text_of, user_request
from secutil import bearer, make_keys
from storeservers import own_redis  # noqa: F401,F811  (a fixture)

from serving.engines.scripted import ScriptedEngine

WORDS = " ".join(f"w{i}" for i in range(40))  # ~40 tokens a turn


def _backends(edge: str, gpu: str, hosted: str) -> list[dict]:
    return [
        ms_backend("edge-1", "edge", edge, context_window=400,
                   cost={"edge_per_mtok_usd": 0.01, "source": "test"}),
        ms_backend("gpu-1", "gpu", gpu, context_window=1000,
                   cost={"gpu_hourly_usd": 1.0, "gpu_throughput_tokens_per_s": 100,
                         "source": "test"}),
        ms_backend("hosted-1", "hosted", hosted, context_window=8192,
                   cost={"input_per_mtok_usd": 10, "output_per_mtok_usd": 30, "source": "test"}),
    ]  # fmt: skip


@pytest.fixture
async def three_tiers(model_server):
    engines = {
        "edge": ScriptedEngine(context_window=400, reply_tokens=20),
        "gpu": ScriptedEngine(context_window=1000, reply_tokens=20),
        "hosted": ScriptedEngine(context_window=8192, reply_tokens=20),
    }
    addresses = {tier: await model_server(engine) for tier, engine in engines.items()}
    return engines, addresses


async def _turn(stub, session_id: str, text: str = WORDS, md=(), **fields) -> list:
    request = user_request(text, session_id=session_id, max_output_tokens=20, **fields)
    return await collect(stub.Generate(request, metadata=md))


def _decision(events) -> rpb.Decision:
    return events[0].decision


def _fit(decision: rpb.Decision, backend: str) -> spb.ContextFit:
    (c,) = [c for c in decision.candidates if c.backend == backend]
    return c.context


async def test_a_growing_conversation_stays_on_the_edge_fitted(
    three_tiers, start_router, channel_to
):
    engines, addr = three_tiers
    router = await start_router(_backends(addr["edge"], addr["gpu"], addr["hosted"]))
    stub = stub_for(channel_to(router))
    last = None
    for i in range(12):
        events = await _turn(stub, "chat-1")
        decision = _decision(events)
        usage = events[-1].usage
        assert usage.complete, usage.error
        assert decision.backend == "edge-1", decision.explanation
        assert decision.session_id == "chat-1" and decision.session_turns == 2 * i
        # What the edge model was sent (its own count) fits its window.
        assert usage.input_tokens + 20 <= 400
        last = decision
    edge, gpu, hosted = (_fit(last, b) for b in ("edge-1", "gpu-1", "hosted-1"))
    # 22 stored turns of ~40 tokens: the edge keeps the newest few, the gpu more, hosted all.
    assert 0 < edge.turns_kept < gpu.turns_kept < hosted.turns_kept == 22
    assert edge.turns_dropped == 22 - edge.turns_kept and edge.tokens_dropped > 0
    assert edge.note.startswith("sliding: the newest")
    assert hosted.note == "the whole history fits"
    assert last.context_strategy == spb.CONTEXT_STRATEGY_SLIDING
    assert len(engines["hosted"].started) == 0 and len(engines["gpu"].started) == 0


async def test_strict_moves_to_a_bigger_window_then_refuses(three_tiers, start_router, channel_to):
    _, addr = three_tiers
    router = await start_router(_backends(addr["edge"], addr["gpu"], addr["hosted"]))
    stub = stub_for(channel_to(router))
    backends = []
    for _ in range(8):
        events = await _turn(stub, "strict-1", context_strategy=spb.CONTEXT_STRATEGY_STRICT)
        backends.append(_decision(events).backend)
    assert backends[0] == "edge-1" and backends[-1] == "gpu-1"
    edge = _fit(_decision(events), "edge-1")
    assert edge.note.startswith("strict: the history needs")
    # Pinned to the edge, a history it cannot hold whole is refused, not cut.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _turn(
            stub, "strict-1", context_strategy=spb.CONTEXT_STRATEGY_STRICT, pin_backends=["edge-1"]
        )
    # Waiting cannot make it fit: OUT_OF_RANGE, never the retryable RESOURCE_EXHAUSTED.
    assert err.value.code() is grpc.StatusCode.OUT_OF_RANGE


async def test_the_history_is_sent_and_stored(three_tiers, start_router, channel_to):
    _, addr = three_tiers
    router = await start_router(_backends(addr["edge"], addr["gpu"], addr["hosted"]))
    channel = channel_to(router)
    stub, sessions = stub_for(channel), sessions_pb2_grpc.SessionServiceStub(channel)
    first = await _turn(stub, "s-1", "alpha beta")
    second = await _turn(stub, "s-1", "gamma delta")
    # The second prompt carried the first turn and its answer (the engine counts them).
    assert second[-1].usage.input_tokens > first[-1].usage.input_tokens + 20
    got = await sessions.GetSession(spb.GetSessionRequest(session_id="s-1"))
    assert [t.content for t in got.turns][0::2] == ["alpha beta", "gamma delta"]
    assert got.turns[1].content == text_of(first)
    assert got.turns[1].backend == "edge-1" and got.turns[1].role == 3  # ROLE_ASSISTANT
    assert got.turn_count == 4 and got.history_tokens == sum(t.tokens for t in got.turns)


async def test_route_explains_without_storing(three_tiers, start_router, channel_to):
    _, addr = three_tiers
    router = await start_router(_backends(addr["edge"], addr["gpu"], addr["hosted"]))
    channel = channel_to(router)
    stub, sessions = stub_for(channel), sessions_pb2_grpc.SessionServiceStub(channel)
    decision = await stub.Route(user_request("hello", session_id="dry-1"))
    assert decision.session_id == "dry-1" and decision.session_turns == 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sessions.GetSession(spb.GetSessionRequest(session_id="dry-1"))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


async def test_concurrent_turns_on_one_session_lose_none(three_tiers, start_router, channel_to):
    _, addr = three_tiers
    router = await start_router(_backends(addr["edge"], addr["gpu"], addr["hosted"]))
    channel = channel_to(router)
    stub, sessions = stub_for(channel), sessions_pb2_grpc.SessionServiceStub(channel)
    await sessions.CreateSession(spb.CreateSessionRequest(session_id="busy"))
    texts = [f"turn{i} x" for i in range(50)]
    results = await asyncio.gather(*(_turn(stub, "busy", t) for t in texts))
    assert all(r[-1].usage.complete for r in results)
    got = await sessions.GetSession(spb.GetSessionRequest(session_id="busy"))
    assert got.turn_count == 100
    users = [t.content for t in got.turns if t.role == 2]
    assert sorted(users) == sorted(texts)
    # Each answer follows its own question.
    for q, a in zip(got.turns[0::2], got.turns[1::2], strict=True):
        assert q.role == 2 and a.role == 3
        assert a.content.startswith(q.content.split()[0])


async def test_sessions_are_scoped_by_tenant(three_tiers, start_router, channel_to, tmp_path):
    _, addr = three_tiers
    keys = make_keys(tmp_path / "keys.yaml", ["team-a", "team-b"])
    router = await start_router(
        _backends(addr["edge"], addr["gpu"], addr["hosted"]),
        auth={"keys_file": str(tmp_path / "keys.yaml"),
              "tenants": [{"name": "team-a"}, {"name": "team-b"}]},
    )  # fmt: skip
    channel = channel_to(router)
    stub, sessions = stub_for(channel), sessions_pb2_grpc.SessionServiceStub(channel)
    a, b = bearer(keys["team-a"]), bearer(keys["team-b"])
    await _turn(stub, "shared-name", "secret plans of a", md=a)
    for call in (
        sessions.GetSession(spb.GetSessionRequest(session_id="shared-name"), metadata=b),
        sessions.DeleteSession(spb.DeleteSessionRequest(session_id="shared-name"), metadata=b),
    ):
        try:
            result = await call
        except grpc.aio.AioRpcError as exc:
            assert exc.code() is grpc.StatusCode.NOT_FOUND
        else:
            assert result == spb.DeleteSessionResponse(deleted=False)
    listed = await sessions.ListSessions(spb.ListSessionsRequest(), metadata=b)
    assert list(listed.sessions) == []
    # b's turn with the same id is b's own session: a's history stays a's.
    events = await _turn(stub, "shared-name", "hello from b", md=b)
    assert _decision(events).session_turns == 0
    got_a = await sessions.GetSession(spb.GetSessionRequest(session_id="shared-name"), metadata=a)
    assert [t.content for t in got_a.turns][0] == "secret plans of a" and got_a.turn_count == 2


async def test_session_service_crud_and_paging(three_tiers, start_router, channel_to):
    _, addr = three_tiers
    router = await start_router(_backends(addr["edge"], addr["gpu"], addr["hosted"]))
    sessions = sessions_pb2_grpc.SessionServiceStub(channel_to(router))
    made = await sessions.CreateSession(
        spb.CreateSessionRequest(system="Answer briefly.", ttl_s=120,
                                 strategy=spb.CONTEXT_STRATEGY_SUMMARIZE)
    )  # fmt: skip
    assert made.session_id.startswith("s_") and made.ttl_s == 120
    assert made.expires_unix_ms - made.created_unix_ms == 120_000
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sessions.CreateSession(spb.CreateSessionRequest(session_id=made.session_id))
    assert err.value.code() is grpc.StatusCode.ALREADY_EXISTS
    for i in range(5):
        await sessions.CreateSession(spb.CreateSessionRequest(session_id=f"p{i}"))
    seen, token = [], ""
    while True:
        page = await sessions.ListSessions(spb.ListSessionsRequest(page_size=2, page_token=token))
        seen += [s.session_id for s in page.sessions]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted([made.session_id, *(f"p{i}" for i in range(5))])
    assert (await sessions.DeleteSession(spb.DeleteSessionRequest(session_id="p0"))).deleted
    for bad in (spb.CreateSessionRequest(session_id="bad id"), spb.CreateSessionRequest(ttl_s=5)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await sessions.CreateSession(bad)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_summary_is_made_by_an_allowed_tier_and_then_used(
    three_tiers, start_router, channel_to
):
    engines, addr = three_tiers
    backends = _backends(addr["edge"], addr["gpu"], addr["hosted"])
    backends[2]["data_classes"] = ["public", "internal"]  # restricted never goes hosted
    router = await start_router(backends)
    channel = channel_to(router)
    stub, sessions = stub_for(channel), sessions_pb2_grpc.SessionServiceStub(channel)
    await sessions.CreateSession(
        spb.CreateSessionRequest(session_id="sum-1", strategy=spb.CONTEXT_STRATEGY_SUMMARIZE)
    )
    notes = []
    for _ in range(10):
        events = await _turn(stub, "sum-1", data_class=3)  # DATA_CLASS_RESTRICTED
        notes.append(_fit(_decision(events), "edge-1").note)
        await router.summarizer.wait()
    assert any(n.startswith("no summary ready: sliding") for n in notes)
    assert router.summarizer.made >= 1 and router.summarizer.failed == 0
    got = await sessions.GetSession(spb.GetSessionRequest(session_id="sum-1"))
    assert got.summary_turns > 0
    summary = await router.sessions.store.get_summary("anonymous", "sum-1")
    assert summary is not None and summary.backend in ("edge-1", "gpu-1")
    assert len(engines["hosted"].started) == 0
    events = await _turn(stub, "sum-1", data_class=3)
    fit = _fit(_decision(events), "edge-1")
    assert fit.summary_used and fit.turns_summarized > 0


async def test_a_store_outage_mid_conversation_loses_no_turn(
    three_tiers,
    start_router,
    channel_to,
    own_redis,  # noqa: F811
):
    """Redis stops answering mid-conversation: the next turn is UNAVAILABLE naming the
    store before any model is called; once Redis is back, every stored turn is there."""
    engines, addr = three_tiers
    router = await start_router(
        _backends(addr["edge"], addr["gpu"], addr["hosted"]),
        sessions={"store": "redis", "redis": {"url": own_redis.url, "timeout_s": 0.5}},
    )
    channel = channel_to(router)
    stub, sessions = stub_for(channel), sessions_pb2_grpc.SessionServiceStub(channel)
    for text in ("first turn", "second turn"):
        await _turn(stub, "out-1", text)
    served = len(engines["edge"].started)
    own_redis.pause()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _turn(stub, "out-1", "third turn")
    finally:
        own_redis.resume()
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "sessions store redis redis://127.0.0.1:" in (err.value.details() or "")
    assert len(engines["edge"].started) == served  # no model was called
    got = await sessions.GetSession(spb.GetSessionRequest(session_id="out-1"))
    assert [t.content for t in got.turns][0::2] == ["first turn", "second turn"]
    await _turn(stub, "out-1", "third turn")
    got = await sessions.GetSession(spb.GetSessionRequest(session_id="out-1"))
    assert got.turn_count == 6
