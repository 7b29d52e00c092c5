"""The shared test helpers (tests/testkit.py): what a failed wait says, the fake clock, the
stream collectors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from testkit import FakeClock, collect, wait_until, wait_until_sync

# --- wait_until ----------------------------------------------------------------------------


async def test_wait_until_returns_the_first_truthy_value() -> None:
    values = iter([0, None, "", "ready"])
    assert await wait_until(lambda: next(values), "the value", every_s=0) == "ready"


async def test_wait_until_takes_async_predicates() -> None:
    calls: list[int] = []

    async def ready() -> list[int]:
        calls.append(1)
        return calls if len(calls) == 3 else []

    assert await wait_until(ready, "three calls", every_s=0) == [1, 1, 1]


async def test_a_timeout_names_the_condition_and_the_last_value() -> None:
    with pytest.raises(AssertionError) as info:
        await wait_until(lambda: 0, "the answer", timeout_s=0.1, every_s=0.01)
    assert str(info.value) == "timed out after 0.1 s waiting for the answer; last value: 0"


async def test_a_timeout_shows_the_predicates_last_error() -> None:
    def check() -> bool:
        assert {"a": 1}.get("b") == 2, "b is not 2 yet"
        return True

    with pytest.raises(AssertionError) as info:
        await wait_until(check, "b to be 2", timeout_s=0.1, every_s=0.01)
    assert str(info.value).startswith(
        "timed out after 0.1 s waiting for b to be 2; last error: AssertionError: b is not 2 yet"
    )
    assert isinstance(info.value.__cause__, AssertionError)


async def test_an_error_is_only_not_yet() -> None:
    attempts = iter([KeyError("x"), KeyError("x"), None])

    def flaky() -> bool:
        err = next(attempts)
        if err is not None:
            raise err
        return True

    assert await wait_until(flaky, "a clean read", every_s=0) is True


async def test_pytest_fail_in_the_predicate_stops_the_wait_at_once() -> None:
    def gone() -> bool:
        pytest.fail("the process exited")

    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="the process exited"):
        await wait_until(gone, "the process", timeout_s=30)
    assert time.monotonic() - started < 5


async def test_a_hanging_async_predicate_is_cut_off_at_the_deadline() -> None:
    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    started = time.monotonic()
    with pytest.raises(AssertionError, match="timed out after 0.2 s waiting for nothing"):
        await wait_until(hangs, "nothing", timeout_s=0.2)
    assert time.monotonic() - started < 5


def test_wait_until_sync_says_the_same() -> None:
    values = iter([False, False, True])
    assert wait_until_sync(lambda: next(values), "the third", every_s=0) is True
    with pytest.raises(AssertionError) as info:
        wait_until_sync(lambda: [], "a list", timeout_s=0.05, every_s=0.01)
    assert str(info.value) == "timed out after 0.05 s waiting for a list; last value: []"


# --- FakeClock -----------------------------------------------------------------------------


async def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock()
    assert clock() == clock.now() == 100.0
    clock.advance(2.5)
    assert clock() == 102.5
    await clock.sleep(0.5)
    await clock.sleep(1.0)
    assert clock.now() == 104.0 and clock.sleeps == [0.5, 1.0]
    assert FakeClock(0.0)() == 0.0
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)


# --- collect -------------------------------------------------------------------------------


async def numbers(n: int, then: BaseException | None = None) -> AsyncIterator[int]:
    for i in range(n):
        yield i
    if then is not None:
        raise then
    await asyncio.Event().wait()  # stays open


async def test_collect_gathers_a_stream_and_lets_its_errors_through() -> None:
    async def three() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    assert await collect(three()) == [0, 1, 2]
    assert await collect(three(), timeout_s=5) == [0, 1, 2]
    with pytest.raises(RuntimeError, match="boom"):
        await collect(numbers(2, RuntimeError("boom")), timeout_s=5)
    with pytest.raises(TimeoutError, match="its own"):  # not mistaken for collect's timeout
        await collect(numbers(1, TimeoutError("its own")), timeout_s=5)


async def test_collect_says_what_arrived_before_its_timeout() -> None:
    with pytest.raises(AssertionError) as info:
        await collect(numbers(4), timeout_s=0.1)
    assert str(info.value) == (
        "timed out after 0.1 s collecting a stream; 4 items so far, the last ones: [1, 2, 3]"
    )
