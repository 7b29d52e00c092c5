"""The router's coalescing relay (router.server.servicer._relay_coalesced) and its linger.

The relay runs against a stand-in for grpc's ServicerContext (the seam: it records what
would go on the wire) and an event source the test feeds step by step, so each test says
exactly which events exist when. No timing assertions: waits are bounded conditions, and a
linger that would wrongly hold a write is made far longer than any wait (60 s), so a wrong
hold shows up as a failed wait, never as a slow pass.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import pytest
from hybrid_router.v1 import router_pb2 as rpb
from testkit import wait_until

from router.server.servicer import Linger, LoopLag, _relay_coalesced
from router.types import DeltaEvent, Event, FailoverEvent, FinishReason, Tier, UsageEvent

WAIT_S = 30.0
LONG_LINGER_S = 60.0


class RecordingContext:
    """What the relay writes, in order; initial metadata apart."""

    def __init__(self) -> None:
        self.headers: tuple[tuple[str, str], ...] | None = None
        self.written: list[rpb.GenerateEvent] = []

    async def send_initial_metadata(self, md: tuple[tuple[str, str], ...]) -> None:
        self.headers = md

    async def write(self, msg: rpb.GenerateEvent) -> None:
        self.written.append(msg)

    def deltas(self) -> list[tuple[str, int]]:
        return [
            (m.delta.text, m.delta.tokens) for m in self.written if m.WhichOneof("event") == "delta"
        ]

    def kinds(self) -> list[str]:
        return [str(m.WhichOneof("event")) for m in self.written]


class Feed:
    """An event source the test pushes into; ``end()`` finishes it."""

    _END = object()

    def __init__(self) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue()

    def push(self, *events: Event) -> None:
        for ev in events:
            self._queue.put_nowait(ev)

    def end(self) -> None:
        self._queue.put_nowait(self._END)

    async def events(self) -> AsyncIterator[Event]:
        while True:
            item = await self._queue.get()
            if item is self._END:
                return
            yield item  # type: ignore[misc]


def usage() -> UsageEvent:
    return UsageEvent(
        request_id="r",
        backend="b",
        tier=Tier.GPU,
        input_tokens=1,
        output_tokens=4,
        cost_usd=0.0,
        ttft_ms=1.0,
        total_ms=2.0,
        finish_reason=FinishReason.STOP,
        complete=True,
    )


def failover() -> FailoverEvent:
    return FailoverEvent("a", "b", Tier.GPU, "unavailable", 2)


#: testkit.wait_until for the relay: it reacts within milliseconds, so look every 5 ms.
until = functools.partial(wait_until, timeout_s=WAIT_S, every_s=0.005)


def always_busy(linger_s: float = LONG_LINGER_S, max_tokens: int = 1000) -> Linger:
    return Linger(linger_s, max_tokens, busy_lag_s=0.0)


async def test_without_linger_every_delta_goes_out_when_the_reader_keeps_up() -> None:
    ctx, feed = RecordingContext(), Feed()
    relay = asyncio.create_task(
        _relay_coalesced(feed.events(), ctx, headers=(("x-request-id", "r"),))
    )
    for i in range(3):
        feed.push(DeltaEvent(f"t{i}"))
        await until(lambda n=i: len(ctx.deltas()) == n + 1, f"delta {i} on the wire")
    feed.push(usage())
    feed.end()
    await asyncio.wait_for(relay, WAIT_S)
    assert ctx.headers == (("x-request-id", "r"),)
    assert ctx.deltas() == [("t0", 1), ("t1", 1), ("t2", 1)]
    assert ctx.kinds()[-1] == "usage"


async def test_linger_never_holds_the_first_delta() -> None:
    ctx, feed = RecordingContext(), Feed()
    relay = asyncio.create_task(_relay_coalesced(feed.events(), ctx, linger=always_busy()))
    feed.push(DeltaEvent("first"))
    # A 60 s linger that applied to the first delta would fail this wait.
    await until(lambda: ctx.deltas() == [("first", 1)], "the first delta on the wire")
    feed.push(usage())
    feed.end()
    await asyncio.wait_for(relay, WAIT_S)


async def test_held_deltas_merge_and_a_usage_ends_the_hold_at_once() -> None:
    ctx, feed = RecordingContext(), Feed()
    relay = asyncio.create_task(_relay_coalesced(feed.events(), ctx, linger=always_busy()))
    feed.push(DeltaEvent("a"))
    await until(lambda: len(ctx.deltas()) == 1, "the first delta")
    feed.push(DeltaEvent(" b"), DeltaEvent(" c", tokens=2))
    await until(lambda: feed._queue.empty(), "the relay to take the deltas")
    assert ctx.deltas() == [("a", 1)]  # held (the linger is 60 s)
    feed.push(usage())
    feed.end()
    await asyncio.wait_for(relay, WAIT_S)  # the usage released the held delta
    assert ctx.deltas() == [("a", 1), (" b c", 3)]
    assert ctx.kinds() == ["delta", "delta", "usage"]


async def test_a_failover_is_never_held_behind_a_delta() -> None:
    ctx, feed = RecordingContext(), Feed()
    relay = asyncio.create_task(_relay_coalesced(feed.events(), ctx, linger=always_busy()))
    feed.push(DeltaEvent("a"))
    await until(lambda: len(ctx.deltas()) == 1, "the first delta")
    feed.push(DeltaEvent(" b"), failover())
    await until(lambda: ctx.kinds() == ["delta", "delta", "failover"], "delta then failover")
    feed.end()
    await asyncio.wait_for(relay, WAIT_S)


async def test_a_held_delta_goes_out_once_it_carries_enough_tokens() -> None:
    ctx, feed = RecordingContext(), Feed()
    relay = asyncio.create_task(
        _relay_coalesced(feed.events(), ctx, linger=always_busy(max_tokens=3))
    )
    feed.push(DeltaEvent("a"))
    await until(lambda: len(ctx.deltas()) == 1, "the first delta")
    feed.push(DeltaEvent(" b"), DeltaEvent(" c"), DeltaEvent(" d"))
    await until(lambda: ctx.deltas() == [("a", 1), (" b c d", 3)], "three held tokens sent")
    feed.push(usage())
    feed.end()
    await asyncio.wait_for(relay, WAIT_S)


async def test_a_hold_ends_when_its_time_is_up() -> None:
    ctx, feed = RecordingContext(), Feed()
    relay = asyncio.create_task(
        _relay_coalesced(feed.events(), ctx, linger=always_busy(linger_s=0.05))
    )
    feed.push(DeltaEvent("a"))
    await until(lambda: len(ctx.deltas()) == 1, "the first delta")
    feed.push(DeltaEvent(" b"))
    # No more events come: the 50 ms hold expires and the delta goes on its own.
    await until(lambda: ctx.deltas() == [("a", 1), (" b", 1)], "the held delta after its time")
    feed.push(usage())
    feed.end()
    await asyncio.wait_for(relay, WAIT_S)


async def test_an_idle_loop_holds_nothing() -> None:
    # Busy only from 10 ms of loop lag; a lag monitor that never saw any: no hold.
    lag = LoopLag()
    ctx, feed = RecordingContext(), Feed()
    linger = Linger(LONG_LINGER_S, 1000, busy_lag_s=0.010, lag=lag)
    relay = asyncio.create_task(_relay_coalesced(feed.events(), ctx, linger=linger))
    feed.push(DeltaEvent("a"))
    await until(lambda: len(ctx.deltas()) == 1, "the first delta")
    feed.push(DeltaEvent(" b"))
    await until(lambda: len(ctx.deltas()) == 2, "the second delta, not held")
    feed.push(usage())
    feed.end()
    await asyncio.wait_for(relay, WAIT_S)


async def test_an_error_after_the_deltas_still_sends_what_was_pending() -> None:
    ctx = RecordingContext()

    async def failing() -> AsyncIterator[Event]:
        yield DeltaEvent("a")
        yield DeltaEvent(" b")
        yield usage()
        raise RuntimeError("backend dropped")

    with pytest.raises(RuntimeError, match="backend dropped"):
        await asyncio.wait_for(_relay_coalesced(failing(), ctx, linger=always_busy()), WAIT_S)
    assert "".join(t for t, _ in ctx.deltas()) == "a b"
    assert ctx.kinds()[-1] == "usage"


# --- the pure parts ------------------------------------------------------------------------


def test_hold_only_fast_streams_below_the_token_cap_while_busy() -> None:
    lag = LoopLag()
    linger = Linger(0.002, 16, busy_lag_s=0.0005, lag=lag)
    lag.observe(0.001)  # busy
    assert linger.hold(since=10.0005, last_write=10.0, tokens=1)  # next token 0.5 ms later
    assert not linger.hold(since=10.020, last_write=10.0, tokens=1)  # 20 ms later: slow
    assert not linger.hold(since=10.0005, last_write=10.0, tokens=16)  # enough tokens
    assert linger.hold(since=9.9, last_write=10.0, tokens=1)  # came during the write


def test_the_loop_lag_follows_a_rise_at_once_and_decays() -> None:
    lag = LoopLag()
    linger = Linger(0.002, 16, busy_lag_s=0.0005, lag=lag)
    lag.observe(0.004)
    assert lag.level == pytest.approx(0.004)
    assert linger.hold(since=1.0, last_write=1.0, tokens=1)
    for _ in range(20):  # 20 quiet samples (400 ms): 0.004 x 0.8^20 is about 0.05 ms
        lag.observe(0.0)
    assert lag.level < 0.0005
    assert not linger.hold(since=1.0, last_write=1.0, tokens=1)


def test_a_linger_without_a_busy_threshold_needs_no_lag_monitor() -> None:
    assert Linger(0.001, 16, busy_lag_s=0.0).lag is None
    assert Linger(0.001, 16, busy_lag_s=0.0005).lag is not None


async def test_the_lag_monitor_runs_on_the_loop_and_stops() -> None:
    lag = LoopLag()
    lag.start(asyncio.get_running_loop())
    assert lag.running
    await asyncio.sleep(0.1)  # a few ticks
    lag.stop()
    assert not lag.running
    assert lag.level >= 0.0
