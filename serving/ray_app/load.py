"""Deployment-wide load: replicas report to one ``LoadBoard``; its ``Info`` sums them.

Why not ``ModelService.Info`` on the model application? Serve's proxy sends a unary call
to one replica (two replicas answer in turn), and under saturation the call waits behind
``max_ongoing_requests`` like any request. The board is the ingress of its own
application (``<app>-load``, one replica, no model), so its ``Info`` answers at once with
the sums over every live replica of the model deployment:

==================  ============================================================
``queue_depth``     requests accepted by a replica and waiting for the engine
``in_flight``       requests the engines are decoding
``max_concurrency`` engine slots of the live replicas (0: no live replica)
``replica_id``      ``"<app>: N replicas"``
==================  ============================================================

Each replica's ``LoadReporter`` pushes a ``ReplicaLoad`` when its load changes (at most
every ``min_interval_s``) and at least every ``heartbeat_s``; the board drops a replica it
has not heard from for ``stale_after_s`` (a replica that died), and one that says goodbye
(``forget``) at once. Not counted: requests waiting in Serve's proxy because every replica
already holds ``max_ongoing_requests`` (the router still counts its own streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import grpc
from hybrid_router.v1 import model_service_pb2

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """One replica's report (picklable: it travels through a Serve handle)."""

    replica_id: str
    #: Requests inside the replica's Generate (waiting for the engine or decoding).
    ongoing: int = 0
    #: Of those, requests the engine is decoding.
    decoding: int = 0
    #: Requests the engine decodes at once.
    capacity: int = 1
    decode_tokens_per_s: float = 0.0
    #: The engine's recent prompt reading rate, prompt tokens/s (0: not reported).
    prefill_tokens_per_s: float = 0.0
    model: str = ""
    version: str = ""
    context_window: int = 0
    engine: str = ""
    model_family: str = ""
    #: What the engine offers ("chat", "tools", "json_schema").
    capabilities: tuple[str, ...] = ()
    #: Lifetime counters of Generate calls by outcome.
    started: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0

    @property
    def queued(self) -> int:
        return max(0, self.ongoing - self.decoding)


@dataclass(frozen=True, slots=True)
class BoardSnapshot:
    """The board's view: live replicas and their sums."""

    replicas: tuple[ReplicaLoad, ...] = ()

    @property
    def queued(self) -> int:
        return sum(r.queued for r in self.replicas)

    @property
    def decoding(self) -> int:
        return sum(r.decoding for r in self.replicas)

    @property
    def capacity(self) -> int:
        return sum(r.capacity for r in self.replicas)

    def total(self, name: str) -> int:
        """Sum of a lifetime counter (``started``, ``completed``, ``cancelled``, ``failed``)."""
        return sum(int(getattr(r, name)) for r in self.replicas)


class LoadBoard:
    """Ingress of ``<app>-load``: collects ReplicaLoad reports, answers ``Info``."""

    def __init__(
        self,
        app_name: str,
        stale_after_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._app_name = app_name
        self._stale_after_s = stale_after_s
        self._clock = clock
        self._seen: dict[str, tuple[ReplicaLoad, float]] = {}

    def report(self, load: ReplicaLoad) -> None:
        self._seen[load.replica_id] = (load, self._clock())

    def forget(self, replica_id: str) -> None:
        self._seen.pop(replica_id, None)

    def snapshot(self) -> BoardSnapshot:
        """Live replicas, in replica id order; stale ones are dropped."""
        now = self._clock()
        for rid in [r for r, (_, at) in self._seen.items() if now - at > self._stale_after_s]:
            logger.info("replica %s of %s stopped reporting: dropped", rid, self._app_name)
            del self._seen[rid]
        return BoardSnapshot(tuple(load for _, (load, _) in sorted(self._seen.items())))

    def info(self) -> model_service_pb2.InfoResponse:
        snap = self.snapshot()
        first = snap.replicas[0] if snap.replicas else ReplicaLoad("")
        return model_service_pb2.InfoResponse(
            model=first.model,
            version=first.version,
            context_window=first.context_window,
            queue_depth=snap.queued,
            in_flight=snap.decoding,
            max_concurrency=snap.capacity,
            decode_tokens_per_s=sum(r.decode_tokens_per_s for r in snap.replicas),
            # A request reads its prompt on one replica: their mean rate (of those that
            # report one).
            prefill_tokens_per_s=_mean_positive([r.prefill_tokens_per_s for r in snap.replicas]),
            engine=first.engine,
            replica_id=f"{self._app_name}: {len(snap.replicas)} replicas",
            model_family=first.model_family,
            capabilities=list(first.capabilities),
        )

    # --- gRPC methods (through Serve's proxy) ------------------------------------------

    async def Info(
        self, request: model_service_pb2.InfoRequest, grpc_context: Any = None
    ) -> model_service_pb2.InfoResponse:
        return self.info()

    async def Generate(self, request: Any, grpc_context: Any = None) -> Any:
        message = (
            f"this is the load application of {self._app_name!r}: send Generate with "
            f"metadata application={self._app_name}"
        )
        if grpc_context is not None:
            grpc_context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            grpc_context.set_details(message)
        raise WrongApplication(message)
        yield  # pragma: no cover - makes this an async generator, as the proto says


class WrongApplication(Exception):
    """A call reached an application that does not serve it (status set on the context)."""


Push = Callable[[ReplicaLoad], Awaitable[object]]


@dataclass(slots=True)
class _Counters:
    ongoing: int = 0
    started: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0


class LoadReporter:
    """Replica side: counts Generate calls and pushes ReplicaLoad reports to the board.

    ``sample()`` returns the engine's part of a report (decoding, capacity, model facts);
    ``push`` sends a report (a Serve handle call; failures are logged once per streak and
    retried at the next change or heartbeat). Call ``begin()`` / ``end(outcome)`` around
    each Generate; ``run()`` is the pushing task; ``close()`` stops it.
    """

    def __init__(
        self,
        sample: Callable[[], ReplicaLoad],
        push: Push,
        *,
        min_interval_s: float = 0.05,
        heartbeat_s: float = 1.0,
        push_timeout_s: float = 2.0,
    ) -> None:
        self._sample = sample
        self._push = push
        self._min_interval_s = min_interval_s
        self._heartbeat_s = heartbeat_s
        self._push_timeout_s = push_timeout_s
        self._counts = _Counters()
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def ongoing(self) -> int:
        return self._counts.ongoing

    def begin(self) -> None:
        self._counts.ongoing += 1
        self._counts.started += 1
        self.changed()

    def end(self, outcome: str) -> None:
        """``outcome``: ``completed``, ``cancelled`` or ``failed``."""
        c = self._counts
        c.ongoing = max(0, c.ongoing - 1)
        if outcome == "completed":
            c.completed += 1
        elif outcome == "cancelled":
            c.cancelled += 1
        else:
            c.failed += 1
        self.changed()

    def changed(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def current(self) -> ReplicaLoad:
        c = self._counts
        return replace(
            self._sample(),
            ongoing=c.ongoing,
            started=c.started,
            completed=c.completed,
            cancelled=c.cancelled,
            failed=c.failed,
        )

    def start(self) -> None:
        """Start pushing (on the running loop). Idempotent."""
        if self._task is None:
            self._changed = asyncio.Event()
            self._changed.set()  # the first report goes out at once: the replica is live
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        assert self._changed is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._heartbeat_s):
                    await self._changed.wait()
            self._changed.clear()
            await self.push_now()
            await asyncio.sleep(self._min_interval_s)

    async def push_now(self) -> bool:
        try:
            async with asyncio.timeout(self._push_timeout_s):
                await self._push(self.current())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the board may be redeploying: retry at the next push
            if not self._failing:
                logger.warning("load report failed (will retry): %s", exc)
            self._failing = True
            return False
        if self._failing:
            logger.info("load reports delivered again")
        self._failing = False
        return True

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _mean_positive(rates: list[float]) -> float:
    known = [r for r in rates if r > 0]
    return sum(known) / len(known) if known else 0.0
