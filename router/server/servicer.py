"""InferenceRouter servicer: thin proto <-> domain translation over the Dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from dataclasses import replace
from typing import Any

import grpc
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import router_pb2_grpc
from hybrid_router.v1 import types_pb2 as tpb

from router.config import LimitsConfig
from router.controls.pipeline import Controls, PiiGuard
from router.dispatch import Dispatcher
from router.errors import InvalidRequest
from router.security.authn import Principal
from router.security.limits import RequestLimitExceeded, check_request_size
from router.server import convert
from router.server.context import REQUEST_ID_METADATA, principal_var, request_id_var
from router.telemetry.observer import observer_var
from router.templates.model import render
from router.templates.store import TemplateRegistry
from router.types import (
    ContinuationEvent,
    DecisionEvent,
    DeltaEvent,
    Event,
    FailoverEvent,
    InferenceRequest,
    Plan,
    Role,
    StreamStop,
    ToolCallEvent,
    UsageEvent,
)


def event_to_proto(ev: Event) -> rpb.GenerateEvent:
    t = type(ev)
    if t is DeltaEvent:
        return convert.delta_to_proto(ev)  # type: ignore[arg-type]
    if t is DecisionEvent:
        return rpb.GenerateEvent(decision=convert.decision_to_proto(ev.plan))  # type: ignore[union-attr]
    if t is FailoverEvent:
        return convert.failover_to_proto(ev)  # type: ignore[arg-type]
    if t is UsageEvent:
        return convert.usage_to_proto(ev)  # type: ignore[arg-type]
    if t is ToolCallEvent:
        return convert.tool_call_to_proto(ev)  # type: ignore[arg-type]
    if t is ContinuationEvent:
        return convert.continuation_to_proto(ev)  # type: ignore[arg-type]
    raise TypeError(f"unknown event {t.__name__}")


class _PendingDelta:
    """Deltas merged while the client is not reading; ``since``: loop time of the first."""

    __slots__ = ("parts", "tokens", "since")

    def __init__(self, text: str, tokens: int, since: float = 0.0) -> None:
        self.parts = [text]
        self.tokens = tokens
        self.since = since

    def to_proto(self) -> rpb.GenerateEvent:
        return rpb.GenerateEvent(delta=tpb.TextDelta(text="".join(self.parts), tokens=self.tokens))


class LoopLag:
    """How late the event loop runs a timer that fires every ``INTERVAL_S``: the time one
    loop iteration takes under load. ``level`` is a decaying maximum of the samples (it
    follows a rise at once and halves in about 60 ms)."""

    INTERVAL_S = 0.02
    DECAY = 0.8

    __slots__ = ("level", "_loop", "_due", "_handle")

    def __init__(self) -> None:
        self.level = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def observe(self, lag_s: float) -> None:
        self.level = max(lag_s, self.level * self.DECAY)

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._handle is None:
            self._loop = loop
            self._due = loop.time() + self.INTERVAL_S
            self._handle = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        self.observe(max(0.0, now - self._due))
        self._due = now + self.INTERVAL_S
        self._handle = loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Linger:
    """When the coalescing relay holds a delta write to merge more tokens into it.

    Only a stream whose next token came within ``linger_s`` of its previous write (a fast
    backend), only while the event loop lags at least ``busy_lag_s`` (0: always), and only
    until ``linger_s`` after that token arrived or ``max_tokens`` are pending. The first
    delta, the Decision, Failover and Usage events are never held (see _relay_coalesced).
    """

    __slots__ = ("linger_s", "max_tokens", "busy_lag_s", "lag")

    def __init__(
        self,
        linger_s: float,
        max_tokens: int,
        busy_lag_s: float = 0.0,
        lag: LoopLag | None = None,
    ) -> None:
        self.linger_s = linger_s
        self.max_tokens = max_tokens
        self.busy_lag_s = busy_lag_s
        self.lag = lag if lag is not None else (LoopLag() if busy_lag_s > 0 else None)

    def hold(self, since: float, last_write: float, tokens: int) -> bool:
        """Hold a pending delta (first token at ``since``; this stream's previous write
        ended at ``last_write``) that carries ``tokens``? Pure: loop times in, bool out."""
        return (
            tokens < self.max_tokens
            and since - last_write < self.linger_s
            and (self.lag is None or self.lag.level >= self.busy_lag_s)
        )


class InferenceRouterServicer(router_pb2_grpc.InferenceRouterServicer):
    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        coalesce: bool = True,
        clock: Callable[[], float] = time.monotonic,
        descriptions: dict[str, str] | None = None,
        limits: LimitsConfig | None = None,
        linger: Linger | None = None,
        templates: TemplateRegistry | None = None,
        controls: Controls | None = None,
    ) -> None:
        """``linger``: hold fast streams' delta writes under load (None: never hold);
        ``templates``: resolves a request's prompt template (None: requests naming one
        are refused)."""
        self.dispatcher = dispatcher
        self.templates = templates
        #: Tenant controls (router/controls/); None or inactive: none.
        self.controls = controls if controls is not None and controls.active else None
        self.coalesce = coalesce
        self.linger = linger if linger is not None and linger.linger_s > 0 else None
        self._clock = clock
        self._descriptions = descriptions or {}
        lim = limits or LimitsConfig()
        self._max_messages = lim.max_messages
        self._max_prompt_bytes = lim.max_prompt_bytes

    async def _request(self, pb: rpb.GenerateRequest) -> InferenceRequest:
        rid = request_id_var.get()
        obs = observer_var.get()
        try:
            check_request_size(
                [m.content for m in pb.messages], self._max_messages, self._max_prompt_bytes
            )
        except RequestLimitExceeded as exc:
            obs.limit_rejected(exc.limit)
            raise
        req = convert.request_from_proto(
            pb,
            self.dispatcher.cfg,
            tenant=principal_var.get().tenant,
            request_id="" if rid == "-" else rid,
        )
        request_id_var.set(req.request_id)
        if pb.template:
            req = await self._render(req, pb)
        obs.set_request(req)
        return req

    async def _render(self, req: InferenceRequest, pb: rpb.GenerateRequest) -> InferenceRequest:
        """The request with its template's messages in front (router/templates/)."""
        if self.templates is None:
            raise InvalidRequest("template", "this router has no templates (templates.file)")
        template = await self.templates.resolve(pb.template, pb.template_version)
        messages = (*render(template, dict(pb.template_variables)), *req.messages)
        if all(m.role is Role.SYSTEM for m in messages):
            raise InvalidRequest(
                "messages", "needs at least one user or assistant message (template or request)"
            )
        try:
            check_request_size(
                [m.content for m in messages], self._max_messages, self._max_prompt_bytes
            )
        except RequestLimitExceeded as exc:
            observer_var.get().limit_rejected(exc.limit)
            raise
        return replace(
            req, messages=messages, template=template.name, template_version=template.version
        )

    async def Generate(  # noqa: N802 - gRPC method name
        self, request: rpb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> None:
        req = await self._request(request)
        headers = ((REQUEST_ID_METADATA, req.request_id),)
        remaining = context.time_remaining()
        deadline = None if remaining is None else self._clock() + remaining
        obs = observer_var.get()
        principal = principal_var.get()
        # Set when the caller goes away (see _detached); it travels to the backend call.
        stop = _Stop()
        if self.controls is not None:
            events = self.controls.generate(
                self.dispatcher,
                req,
                principal,
                deadline=deadline,
                access=principal.access,
                stop=stop,
            )
        else:
            events = self.dispatcher.generate(
                req, deadline=deadline, access=principal.access, stop=stop
            )
        if obs.text is not None:  # content logging (debug switch) only
            events = _capture_text(events, obs.text)
        # gRPC cancels this task when the caller goes away: the stream runs in its own.
        await _detached(self._stream(events, context, headers, obs.event, stop), stop)

    async def _stream(
        self,
        events: AsyncGenerator[Event, None],
        context: grpc.aio.ServicerContext,
        headers: tuple[tuple[str, str], ...],
        observe: Callable[[Event], None],
        stop: _Stop,
    ) -> None:
        async with contextlib.aclosing(events):
            if self.coalesce:
                linger = self.linger
                if linger is not None and linger.lag is not None and not linger.lag.running:
                    linger.lag.start(asyncio.get_running_loop())
                # The headers (x-request-id) go out while dispatch decides and calls the
                # backend, not before: their round trip through gRPC core is off the TTFT path.
                await _relay_coalesced(
                    events, context, observe, headers=headers, linger=linger, stop=stop
                )
            else:
                stop.writing = True
                await context.send_initial_metadata(headers)
                stop.writing = False
                async for ev in events:
                    if stop.on:
                        break  # the caller is gone: the stream closes here, between reads
                    if type(ev) is not DeltaEvent:
                        observe(ev)
                    stop.writing = True
                    await context.write(event_to_proto(ev))
                    stop.writing = False

    def close(self) -> None:
        """Stop the loop-lag timer (server stop)."""
        if self.linger is not None and self.linger.lag is not None:
            self.linger.lag.stop()

    async def Route(  # noqa: N802
        self, request: rpb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> rpb.Decision:
        req = await self._request(request)
        principal = principal_var.get()
        pii = self.controls.pii if self.controls is not None else None
        if pii is None:
            plan, _ = await self.dispatcher.decide(req, access=principal.access)
        else:
            # The dry run explains what Generate would do: PII kept off hosted tiers too.
            req = await pii.apply(principal, req)
            plan = await self._decide_watched(pii, req, principal)
        observer_var.get().decision(plan)
        return convert.decision_to_proto(plan)

    async def _decide_watched(
        self, pii: PiiGuard, req: InferenceRequest, principal: Principal
    ) -> Plan:
        async def decision() -> AsyncGenerator[Event, None]:
            plan, _ = await self.dispatcher.decide(req, access=principal.access)
            yield DecisionEvent(plan)

        events = pii.watch(req, decision())
        async with contextlib.aclosing(events):
            first = await anext(events)
        assert type(first) is DecisionEvent
        return first.plan

    async def ListBackends(  # noqa: N802
        self, request: rpb.ListBackendsRequest, context: grpc.aio.ServicerContext
    ) -> rpb.ListBackendsResponse:
        access = principal_var.get().access  # a tenant sees only the backends it may use
        return rpb.ListBackendsResponse(
            backends=[
                convert.backend_status(
                    e.spec, e.stats.snapshot(), description=self._descriptions.get(e.spec.name, "")
                )
                for e in self.dispatcher.registry.entries()
                if access is None or access.allows(e.spec)
            ]
        )


async def _capture_text(
    events: AsyncGenerator[Event, None], text: list[str]
) -> AsyncGenerator[Event, None]:
    async with contextlib.aclosing(events):
        async for ev in events:
            if type(ev) is DeltaEvent:
                text.append(ev.text)
            yield ev


def _ignore(ev: Event) -> None:
    pass


#: How long a stopped stream may take to end by itself before it is cancelled anyway
#: (see _detached): a write gRPC core ends, a backend read that returns once its call is
#: cancelled; both take moments.
STOP_GRACE_S = 1.0


class _Stop(StreamStop):
    """The request's StreamStop as the servicer runs it: ``writing`` while a write to the
    caller is pending, ``live`` once ``set`` cancelled a running backend call (whose
    read now returns), ``wake`` (the relay's) called when it is set."""

    __slots__ = ("writing", "live", "wake")

    def __init__(self) -> None:
        super().__init__()
        self.writing = False
        self.live = False
        self.wake: Callable[[], None] | None = None

    def set(self) -> bool:
        self.live = super().set()
        if self.wake is not None:
            self.wake()
        return self.live


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a finished task's outcome as seen (nobody awaits it any more)."""
    if not task.cancelled():
        task.exception()


async def _detached(body: Coroutine[Any, Any, None], stop: _Stop) -> None:
    """Run a stream (``body``) in a task of its own, so that gRPC's cancellation of the
    handler (the caller went away, the deadline passed) never lands inside a pending gRPC
    batch: grpc.aio leaks the native memory of a batch whose awaiting task is cancelled
    (its grpc_op array and message buffers, 100-300 bytes each: grpc/grpc#43360), be it a
    write to the caller or a read from a ModelService backend. Instead ``stop`` is set: it
    cancels a running backend call (router.types.StreamStop), whose pending read then
    returns and ends the stream; a pending write is ended by gRPC core; the relay writes
    no more. Only a body in neither (deciding, an HTTP backend's read) is cancelled at
    once, as before; any other after STOP_GRACE_S. The body has ended before the handler
    does (it must not touch the call after that), and the handler ends CANCELLED."""
    task = asyncio.get_running_loop().create_task(body)
    try:
        await asyncio.shield(task)
        return
    except asyncio.CancelledError as exc:
        if task.done():
            _retrieve(task)
            raise
        cancelled = exc
    try:
        if stop.set() or stop.writing:
            await asyncio.wait((task,), timeout=STOP_GRACE_S)
    finally:
        if not task.done():
            task.cancel()
        # Its end is nobody's business now (a write the cancel failed, a backend error).
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task
    raise cancelled


async def _relay_coalesced(
    events: AsyncIterator[Event],
    context: grpc.aio.ServicerContext,
    observe: Callable[[Event], None] = _ignore,
    *,
    headers: tuple[tuple[str, str], ...] | None = None,
    linger: Linger | None = None,
    stop: _Stop | None = None,
) -> None:
    """Write events in order; deltas that arrive while a write is pending are merged, so a
    slow reader costs one buffered delta, never an unbounded queue. ``observe`` sees every
    event but the deltas, as it arrives. ``headers``: initial metadata, sent first (while
    the producer already runs). ``linger``: hold later delta writes of a fast stream under
    load so that more tokens go out per message; never the first delta, and a pending
    non-delta event (Failover, Usage) ends a hold at once. ``stop`` (set when the caller
    went away): no more writes, and a producer whose backend call the stop cancelled ends
    by itself rather than being cancelled inside the read (see _detached)."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = _Stop()  # never set
    buf: deque[Event | _PendingDelta] = deque()
    parked: asyncio.Future[None] | None = None  # the writer's waiter while it waits
    holding = False
    max_tokens = linger.max_tokens if linger is not None else 0
    timed = linger is not None

    def wake() -> None:
        nonlocal parked
        fut = parked
        if fut is not None:
            parked = None
            if not fut.done():
                fut.set_result(None)

    async def produce() -> None:
        try:
            async for ev in events:
                if stop.on:
                    return  # the caller is gone: the events are closed from here
                if type(ev) is DeltaEvent:
                    last = buf[-1] if buf else None
                    if type(last) is _PendingDelta:
                        last.parts.append(ev.text)
                        last.tokens += ev.tokens
                        if holding and last.tokens < max_tokens:
                            continue  # the held write goes when its time is up
                    else:
                        buf.append(_PendingDelta(ev.text, ev.tokens, loop.time() if timed else 0.0))
                else:
                    observe(ev)
                    buf.append(ev)
                wake()
        finally:
            wake()

    producer = loop.create_task(produce())
    stop.wake = wake
    try:
        if headers is not None:
            stop.writing = True
            await context.send_initial_metadata(headers)
            stop.writing = False
        wrote_delta = False
        last_write = -math.inf
        while True:
            if stop.on:
                return  # the caller is gone: nothing more to write
            if buf:
                item = buf[0]
                if type(item) is _PendingDelta:
                    if (
                        linger is not None
                        and wrote_delta
                        and len(buf) == 1
                        and not producer.done()
                        and linger.hold(item.since, last_write, item.tokens)
                    ):
                        due = item.since + linger.linger_s
                        if loop.time() < due - _TIMER_SLACK_S:
                            parked = loop.create_future()
                            timer = loop.call_at(due, wake)
                            holding = True
                            try:
                                await parked
                            finally:
                                holding = False
                                timer.cancel()
                            continue  # look again: time up, enough tokens, or a Usage
                    buf.popleft()
                    stop.writing = True
                    await context.write(item.to_proto())
                    stop.writing = False
                    wrote_delta = True
                    if timed:
                        last_write = loop.time()
                else:
                    buf.popleft()
                    stop.writing = True
                    await context.write(event_to_proto(item))  # type: ignore[arg-type]
                    stop.writing = False
                continue
            if producer.done():
                break
            parked = loop.create_future()
            await parked
        producer.result()
    finally:
        if not producer.done():
            if stop.live:
                await producer  # its backend call is cancelled: the read returns, it ends
            else:
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producer


#: A timer may run this much before its time (asyncio's clock resolution); no new hold then.
_TIMER_SLACK_S = 1e-4
