"""Callers who cancel their streams, against a real router and model server: the router's
backend calls end without a task being cancelled inside grpc.aio's send or read.

grpc.aio frees a batch's native memory only when the task awaiting it sees it complete; a
task cancelled inside one leaks 100-300 bytes (grpc/grpc#43360). The soak bench saw it as
RSS growing about 39 bytes a request at 5% cancelled streams (bench/bench_soak.py). The
router's own writes to the caller are covered in tests/unit/test_stream_stop.py (a
Cython context cannot be watched from here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from grpc.aio import _call as aio_call  # the private methods watched below
from hybrid_router.v1 import model_service_pb2
from rtutil import ms_backend, stub_for, user_request
from testkit import wait_until

from serving.engines.scripted import ScriptedEngine

STREAMS = 24


def _task_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@pytest.fixture
def interrupted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The router's ModelService sends and reads that ended because their task was
    cancelled (not because their call was): each one a leaked batch."""
    seen: list[str] = []
    read = aio_call._StreamResponseMixin._read
    send = aio_call.UnaryStreamCall._send_unary_request

    def ours(call: object) -> bool:
        return isinstance(getattr(call, "_request", None), model_service_pb2.ModelGenerateRequest)

    def watched(operation, name: str):  # type: ignore[no-untyped-def]
        async def run(self):  # type: ignore[no-untyped-def]
            try:
                return await operation(self)
            except asyncio.CancelledError:
                if ours(self) and _task_cancelled():
                    seen.append(name)
                raise

        return run

    monkeypatch.setattr(aio_call._StreamResponseMixin, "_read", watched(read, "read"))
    monkeypatch.setattr(aio_call.UnaryStreamCall, "_send_unary_request", watched(send, "send"))
    yield seen


async def test_cancelled_streams_end_their_backend_calls_cleanly(
    model_server, start_router, channel_to, interrupted
):
    engine = ScriptedEngine(ttft_ms=20, tokens_per_s=100, max_concurrency=STREAMS)
    endpoint = await model_server(engine)
    router = await start_router([ms_backend("a", "gpu", endpoint, max_concurrency=STREAMS)])
    stub = stub_for(channel_to(router))

    async def one(i: int) -> None:
        # Half cancel at once after the Decision (the backend call is being set up or
        # waits for its first token), half after two deltas (mid-answer).
        call = stub.Generate(user_request(max_output_tokens=500, request_id=f"c{i}"))
        deltas = 0
        async for ev in call:
            deltas += ev.WhichOneof("event") == "delta"
            if i % 2 == 0 or deltas == 2:
                call.cancel()
                break

    await asyncio.gather(*(one(i) for i in range(STREAMS)))
    await wait_until(
        lambda: router.registry.get("a").stats.in_flight == 0, "the router to free the backend"
    )
    assert interrupted == [], f"{len(interrupted)} gRPC batches interrupted: {interrupted}"
    # A call cancelled before the server had it never starts; every one that started was
    # cancelled there (500 tokens at 100/s: none could have finished), and the engine
    # holds nothing.
    await wait_until(
        lambda: sorted(engine.cancelled) == sorted(engine.started) and engine.load().in_flight == 0,
        "the engine to see every started stream cancelled",
    )
    assert engine.started, "no call reached the engine"


async def test_a_stream_that_runs_to_its_end_is_untouched(
    model_server, start_router, channel_to, interrupted
):
    engine = ScriptedEngine()
    router = await start_router([ms_backend("a", "gpu", await model_server(engine))])
    events = [ev async for ev in stub_for(channel_to(router)).Generate(user_request())]
    assert events[-1].WhichOneof("event") == "usage"
    assert engine.cancelled == [] and interrupted == []


async def test_a_deadline_mid_stream_ends_the_backend_call_cleanly(
    model_server, start_router, channel_to, interrupted
):
    engine = ScriptedEngine(tokens_per_s=20)
    router = await start_router([ms_backend("a", "gpu", await model_server(engine))])
    call = stub_for(channel_to(router)).Generate(
        user_request(max_output_tokens=1000, request_id="late"), timeout=0.5
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_until(lambda: "late" in engine.cancelled, "the engine to see the deadline")
    await wait_until(
        lambda: router.registry.get("a").stats.in_flight == 0, "the router to free the backend"
    )
    assert interrupted == []


async def test_a_first_token_timeout_ends_the_backend_call_cleanly(
    model_server, start_router, channel_to, interrupted
):
    """A backend that does not answer within ``policy.ttft_timeout_ms``: its call is
    cancelled (not the read waiting on it) and the next candidate answers."""
    slow = ScriptedEngine(ttft_ms=5_000, max_concurrency=STREAMS)
    fast = ScriptedEngine(reply_tokens=2, max_concurrency=STREAMS)
    router = await start_router(
        [
            ms_backend("a-slow", "edge", await model_server(slow), max_concurrency=STREAMS),
            ms_backend(
                "b-fast",
                "gpu",
                await model_server(fast),
                max_concurrency=STREAMS,
                cost={"gpu_hourly_usd": 4, "gpu_throughput_tokens_per_s": 1000},
            ),
        ],
        policy={"ttft_timeout_ms": 1000},
    )
    stub = stub_for(channel_to(router))

    async def one(i: int) -> object:
        events = [ev async for ev in stub.Generate(user_request(request_id=f"t{i}"))]
        assert events[1].WhichOneof("event") == "failover", events[:2]
        assert "no first token within 1000 ms" in events[1].failover.reason
        return events[-1].usage

    usages = await asyncio.gather(*(one(i) for i in range(STREAMS)))
    assert {(u.backend, u.complete) for u in usages} == {("b-fast", True)}
    # On a busy host the 1 s can pass before the model server has a call: that call
    # never reaches the engine. Every one that did was cancelled there, none finished.
    await wait_until(
        lambda: sorted(slow.cancelled) == sorted(slow.started) and slow.load().in_flight == 0,
        "the slow engine to see every attempt that reached it cancelled",
    )
    assert slow.started, "no attempt reached the slow engine"
    assert interrupted == [], f"{len(interrupted)} gRPC batches interrupted: {interrupted}"
