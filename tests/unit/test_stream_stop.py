"""A caller who goes away stops the stream without a task being cancelled inside a gRPC
batch (router.server.servicer._detached, router.types.StreamStop).

grpc.aio frees a batch's native memory (its grpc_op array and message buffers) only when
the task awaiting it sees it complete: a task cancelled inside a write to the caller, or
inside a read from (or the send of) a ModelService backend call, leaks 100-300 bytes
(grpc/grpc#43360). The soak bench (bench/bench_soak.py) saw it as RSS growing with every
cancelled stream. Here a stand-in context and backend record whether their pending
operations completed or were cancelled; the functional side is
tests/functional/test_router_cancel.py.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import pytest
from hybrid_router.v1 import router_pb2 as rpb
from testkit import wait_until

from router.dispatch import _first_chunk, _FirstTokenTimeout
from router.server import servicer
from router.server.servicer import _detached, _relay_coalesced, _Stop
from router.types import Chunk, DeltaEvent, Event, StreamStop

WAIT_S = 30.0
until = functools.partial(wait_until, timeout_s=WAIT_S, every_s=0.005)


class GatedContext:
    """A ServicerContext whose writes stay pending until the test (gRPC core) ends them."""

    def __init__(self) -> None:
        self.written: list[rpb.GenerateEvent] = []
        self.pending: list[asyncio.Future[None]] = []

    async def send_initial_metadata(self, md: tuple[tuple[str, str], ...]) -> None:
        pass

    async def write(self, msg: rpb.GenerateEvent) -> None:
        gate = asyncio.get_running_loop().create_future()
        self.pending.append(gate)
        await gate
        self.written.append(msg)


class FakeCall:
    """A backend call as the ModelService adapter holds it: ``read`` pends until the
    backend sends or the call is cancelled (then it raises CancelledError, as grpc.aio's
    read of a locally cancelled call does)."""

    def __init__(self) -> None:
        self.read_fut: asyncio.Future[str] | None = None
        self.cancelled = False

    async def read(self) -> str:
        self.read_fut = asyncio.get_running_loop().create_future()
        return await self.read_fut

    def cancel(self) -> bool:
        if self.cancelled:
            return False
        self.cancelled = True
        if self.read_fut is not None and not self.read_fut.done():
            self.read_fut.set_exception(asyncio.CancelledError())
        return True


async def backend_events(
    call: FakeCall, stop: StreamStop, closed: list[str]
) -> AsyncIterator[Event]:
    """Dispatch over a ModelService adapter, reduced: the call watches the stop."""
    stop.watch(call.cancel)
    try:
        while True:
            yield DeltaEvent(await call.read())
    finally:
        stop.unwatch(call.cancel)
        closed.append("closed")


async def start(body: object, stop: _Stop) -> asyncio.Task[None]:
    return asyncio.create_task(_detached(body, stop))  # type: ignore[arg-type]


async def cancel_mid_read(handler: asyncio.Task[None], call: FakeCall) -> asyncio.Future[str]:
    """Cancel ``handler`` (as grpc.aio does when the caller goes away) while ``call``'s
    read is pending; its read, once the handler has ended (CANCELLED)."""
    await until(lambda: call.read_fut is not None, "the backend read pending")
    read = call.read_fut
    assert read is not None
    handler.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(handler, WAIT_S)
    return read


async def test_a_caller_cancel_never_lands_inside_a_pending_write() -> None:
    ctx, stop = GatedContext(), _Stop()

    async def events() -> AsyncIterator[Event]:
        yield DeltaEvent("a")
        yield DeltaEvent("b")
        await asyncio.Event().wait()  # a backend that has nothing more yet
        yield DeltaEvent("never")  # pragma: no cover

    handler = await start(_relay_coalesced(events(), ctx, stop=stop), stop)
    await until(lambda: len(ctx.pending) == 1, "a write pending")
    handler.cancel()  # what grpc.aio does when the caller cancels
    await asyncio.sleep(0.05)
    gate = ctx.pending[0]
    assert not gate.cancelled(), "the pending write was cancelled: grpc.aio leaks its batch"
    assert not handler.done(), "the handler returned while its write was pending"
    gate.set_result(None)  # gRPC core ends the write
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(handler, WAIT_S)
    assert len(ctx.pending) == 1, "wrote on after the caller went away"


async def test_a_caller_cancel_cancels_the_backend_call_rather_than_its_read() -> None:
    ctx, stop, call = GatedContext(), _Stop(), FakeCall()
    closed: list[str] = []
    handler = await start(
        _relay_coalesced(backend_events(call, stop, closed), ctx, stop=stop), stop
    )
    read = await cancel_mid_read(handler, call)
    assert call.cancelled, "the backend call was not cancelled"
    # The read ended because its call was cancelled (what frees grpc.aio's batch), not
    # because its task was: a cancelled future carries no exception.
    assert read.done() and not read.cancelled()
    assert isinstance(read.exception(), asyncio.CancelledError)
    assert closed == ["closed"]


async def test_the_same_without_coalescing() -> None:
    """A body that reads the events itself (the relay with server.coalesce_deltas: false)
    stops the same way."""
    stop, call = _Stop(), FakeCall()
    closed: list[str] = []
    events = backend_events(call, stop, closed)

    async def plain() -> None:
        async for _ in events:
            if stop.on:
                break

    read = await cancel_mid_read(await start(plain(), stop), call)
    assert call.cancelled and read.done() and not read.cancelled()


async def test_a_stream_in_no_grpc_wait_is_cancelled_at_once() -> None:
    """Deciding, or reading an HTTP backend: nothing to wait for, cancelled as before."""
    ctx, stop = GatedContext(), _Stop()
    waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def events() -> AsyncIterator[Event]:
        await waiting  # e.g. an HTTP response's next line
        yield DeltaEvent("never")  # pragma: no cover

    handler = await start(_relay_coalesced(events(), ctx, stop=stop), stop)
    await asyncio.sleep(0.01)
    handler.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(handler, 1.0)  # far below STOP_GRACE_S... unless it waited
    assert waiting.cancelled()


async def test_a_stopped_stream_that_does_not_end_is_cancelled_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(servicer, "STOP_GRACE_S", 0.05)
    ctx, stop = GatedContext(), _Stop()
    stuck: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def events() -> AsyncIterator[Event]:
        stop.watch(lambda: True)  # a call that says it was cancelled, but its read never ends
        await stuck
        yield DeltaEvent("never")  # pragma: no cover

    handler = await start(_relay_coalesced(events(), ctx, stop=stop), stop)
    await asyncio.sleep(0.01)
    handler.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(handler, WAIT_S)
    assert stuck.cancelled()


async def test_a_stream_that_ends_normally_is_not_stopped() -> None:
    ctx, stop = GatedContext(), _Stop()

    async def events() -> AsyncIterator[Event]:
        yield DeltaEvent("a")

    handler = await start(_relay_coalesced(events(), ctx, stop=stop), stop)
    await until(lambda: len(ctx.pending) == 1, "the write")
    ctx.pending[0].set_result(None)
    await asyncio.wait_for(handler, WAIT_S)
    assert not stop.on
    assert [m.delta.text for m in ctx.written] == ["a"]


def test_a_stop_cancels_what_it_watches_and_says_whether_it_was_running() -> None:
    stop = StreamStop()
    calls: list[str] = []

    def running() -> bool:
        calls.append("running")
        return True

    def finished() -> bool:
        calls.append("finished")
        return False

    stop.watch(finished)
    assert stop.set() is False
    stop2 = StreamStop()
    stop2.watch(running)
    stop2.watch(finished)
    stop2.unwatch(finished)
    assert stop2.set() is True and stop2.on
    assert calls == ["finished", "running"]


# --- dispatch's first-token timeout ------------------------------------------------------


async def _chunks(call: FakeCall | None, stop: StreamStop) -> AsyncIterator[Chunk]:
    """A backend stream as an adapter yields it: a gRPC one watches the stop (``call``),
    an HTTP one (None) does not."""
    if call is not None:
        stop.watch(call.cancel)
        yield Chunk(text=await call.read())
    else:
        await asyncio.Event().wait()
        yield Chunk(text="never")  # pragma: no cover


async def test_a_late_first_token_cancels_the_grpc_call_not_its_read() -> None:
    stop, call = StreamStop(), FakeCall()
    with pytest.raises(_FirstTokenTimeout):
        await _first_chunk(_chunks(call, stop), 0.05, stop)
    read = call.read_fut
    assert call.cancelled and stop.on
    assert read is not None and read.done() and not read.cancelled()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_first_token_arriving_as_the_time_runs_out_is_a_timeout() -> None:
    """The chunk's read completed, but the timer fired before the reader resumed: the call
    is cancelled already (its next read would end the stream), so the attempt timed out."""

    class ArrivesAtTheDeadline(FakeCall):
        def cancel(self) -> bool:
            if self.read_fut is not None and not self.read_fut.done():
                self.read_fut.set_result("just in time")
            self.cancelled = True
            return True

    stop, call = StreamStop(), ArrivesAtTheDeadline()
    with pytest.raises(_FirstTokenTimeout):
        await _first_chunk(_chunks(call, stop), 0.05, stop)
    assert call.cancelled


async def test_a_late_first_token_without_a_grpc_call_cancels_the_read() -> None:
    stop = StreamStop()
    with pytest.raises(_FirstTokenTimeout):
        await _first_chunk(_chunks(None, stop), 0.05, stop)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the timeout's cancel is undone


async def test_a_caller_cancel_during_the_first_token_wait_is_not_a_timeout() -> None:
    stop, call = StreamStop(), FakeCall()
    waiting = asyncio.create_task(_first_chunk(_chunks(call, stop), 30.0, stop))
    await until(lambda: call.read_fut is not None, "the read pending")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_the_first_chunk_in_time_is_returned() -> None:
    stop, call = StreamStop(), FakeCall()
    waiting = asyncio.create_task(_first_chunk(_chunks(call, stop), 30.0, stop))
    await until(lambda: call.read_fut is not None, "the read pending")
    assert call.read_fut is not None
    call.read_fut.set_result("hello")
    assert (await waiting).text == "hello"
    assert not stop.on and not call.cancelled


def test_watching_a_stop_that_is_already_set_cancels_at_once() -> None:
    stop = StreamStop()
    stop.set()
    seen: list[str] = []
    stop.watch(lambda: seen.append("cancel") is None)
    assert seen == ["cancel"]
