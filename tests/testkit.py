"""Helpers shared by every test tier (``import testkit`` / ``from testkit import ...``).

tests/ is on sys.path (tests/conftest.py is a rootdir conftest and tests/ has no
``__init__.py``), so unit, functional and deploy tests all import this module by name.

- ``wait_until`` / ``wait_until_sync``: poll a condition; on timeout, fail with an
  AssertionError that names the condition and shows the predicate's last result or error.
- ``FakeClock``: monotonic seconds that move only when the test (or ``FakeClock.sleep``)
  moves them.
- ``collect``: every item of an async stream, optionally bounded in time;
  ``collect_chunks`` / ``collect_failure``: a router backend adapter's stream, normal or
  failing.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:  # the router is imported only by the tests that use its helpers
    from router.backends.base import Backend
    from router.errors import BackendError
    from router.types import BackendCall, Chunk

T = TypeVar("T")

#: How long an adapter test waits for a backend's stream (generous: 2 shared cores).
STREAM_TIMEOUT_S = 20.0

#: An async predicate still running at the deadline gets at least this long.
_LAST_CALL_S = 0.05


class _Never:
    def __repr__(self) -> str:
        return "nothing (the predicate never returned)"


def _timed_out(what: str, timeout_s: float, last: object) -> AssertionError:
    if isinstance(last, BaseException):
        detail = f"last error: {type(last).__name__}: {last}"
    else:
        detail = f"last value: {last!r}"
    return AssertionError(f"timed out after {timeout_s} s waiting for {what}; {detail}")


def _raise_timed_out(what: str, timeout_s: float, last: object) -> None:
    cause = last if isinstance(last, BaseException) else None
    raise _timed_out(what, timeout_s, last) from cause


async def wait_until(
    predicate: Callable[[], Any | Awaitable[Any]],
    what: str,
    timeout_s: float = 10.0,
    every_s: float = 0.05,
) -> Any:
    """Call ``predicate`` every ``every_s`` s until it returns something truthy; return that.

    ``predicate`` may be sync or async. An exception it raises (a failed ``assert``
    included) counts as "not yet" and is reported if time runs out, so a predicate can
    explain itself: ``assert d.online, d``. ``pytest.fail`` (a BaseException) stops the
    wait at once. An async predicate still running at the deadline is cut off. On timeout:
    ``AssertionError("timed out after {timeout_s} s waiting for {what}; last value: ...")``.
    """
    deadline = time.monotonic() + timeout_s
    last: object = _Never()
    while True:
        scope: asyncio.Timeout | None = None
        try:
            value = predicate()
            if inspect.isawaitable(value):
                left = max(deadline - time.monotonic(), _LAST_CALL_S)
                async with asyncio.timeout(left) as scope:
                    value = await value
        except Exception as exc:
            if scope is None or not scope.expired():
                last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            _raise_timed_out(what, timeout_s, last)
        await asyncio.sleep(every_s)


def wait_until_sync(
    predicate: Callable[[], Any],
    what: str,
    timeout_s: float = 10.0,
    every_s: float = 0.05,
) -> Any:
    """``wait_until`` off the event loop (fixtures that start processes), sync predicates."""
    deadline = time.monotonic() + timeout_s
    last: object = _Never()
    while True:
        try:
            value = predicate()
        except Exception as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            _raise_timed_out(what, timeout_s, last)
        time.sleep(every_s)


class FakeClock:
    """Monotonic seconds that move only when told to.

    Pass the clock itself where code takes ``clock: Callable[[], float]``; pass
    ``clock.sleep`` where it takes an async ``sleep``: that sleep advances the clock instead
    of waiting (it yields to the loop once) and records each duration in ``sleeps``.
    """

    def __init__(self, start: float = 100.0) -> None:
        self._now = float(start)
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a monotonic clock does not go back ({seconds} s)")
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now})"


async def collect(stream: AsyncIterable[T], timeout_s: float | None = None) -> list[T]:
    """Every item of ``stream`` (a gRPC call, an async generator...), in order.

    With ``timeout_s``, a stream still open by then fails the test with an AssertionError
    that says how many items had arrived. Errors the stream raises propagate unchanged.
    """
    items: list[T] = []
    scope: asyncio.Timeout | None = None
    try:
        async with asyncio.timeout(timeout_s) as scope:
            async for item in stream:
                items.append(item)
    except TimeoutError:
        if scope is not None and scope.expired():
            raise AssertionError(
                f"timed out after {timeout_s} s collecting a stream; "
                f"{len(items)} items so far, the last ones: {items[-3:]!r}"
            ) from None
        raise
    return items


async def collect_chunks(
    backend: Backend, call: BackendCall, timeout_s: float = STREAM_TIMEOUT_S
) -> list[Chunk]:
    """Every chunk of ``backend.stream(call)`` (the adapter tests' normal stream)."""
    return await collect(backend.stream(call), timeout_s)


async def collect_failure(
    backend: Backend, call: BackendCall, timeout_s: float = STREAM_TIMEOUT_S
) -> tuple[list[Chunk], BackendError]:
    """The chunks ``backend.stream(call)`` yielded before it failed, and its BackendError.

    Fails the test if the stream ends without a BackendError, or with one that wraps
    another BackendError (an adapter maps a failure once).
    """
    from router.errors import BackendError

    got: list[Chunk] = []

    async def run() -> None:
        async for chunk in backend.stream(call):
            got.append(chunk)

    with pytest.raises(BackendError) as info:
        await asyncio.wait_for(run(), timeout_s)
    assert not isinstance(info.value.__cause__, BackendError), repr(info.value.__cause__)
    return got, info.value


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    import os
    from pathlib import Path

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        return stat.read_text().rsplit(") ", 1)[1][:1] != "Z"
    return True


def rendered(renderable: object, width: int = 200) -> str:
    """What a rich renderable prints on a plain terminal ``width`` columns wide."""
    import io

    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()
