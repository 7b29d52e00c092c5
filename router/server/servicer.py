"""InferenceRouter servicer: thin proto <-> domain translation over the Dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import grpc
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import router_pb2_grpc
from hybrid_router.v1 import types_pb2 as tpb

from router.config import LimitsConfig
from router.dispatch import Dispatcher
from router.security.limits import RequestLimitExceeded, check_request_size
from router.server import convert
from router.server.context import REQUEST_ID_METADATA, principal_var, request_id_var
from router.telemetry.observer import observer_var
from router.types import DecisionEvent, DeltaEvent, Event, FailoverEvent, UsageEvent


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
    raise TypeError(f"unknown event {t.__name__}")


class _PendingDelta:
    """Deltas merged while the client is not reading."""

    __slots__ = ("parts", "tokens")

    def __init__(self, text: str, tokens: int) -> None:
        self.parts = [text]
        self.tokens = tokens

    def to_proto(self) -> rpb.GenerateEvent:
        return rpb.GenerateEvent(delta=tpb.TextDelta(text="".join(self.parts), tokens=self.tokens))


class InferenceRouterServicer(router_pb2_grpc.InferenceRouterServicer):
    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        coalesce: bool = True,
        clock: Callable[[], float] = time.monotonic,
        descriptions: dict[str, str] | None = None,
        limits: LimitsConfig | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.coalesce = coalesce
        self._clock = clock
        self._descriptions = descriptions or {}
        lim = limits or LimitsConfig()
        self._max_messages = lim.max_messages
        self._max_prompt_bytes = lim.max_prompt_bytes

    def _request(self, pb: rpb.GenerateRequest):  # type: ignore[no-untyped-def]
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
        obs.set_request(req)
        return req

    async def Generate(  # noqa: N802 - gRPC method name
        self, request: rpb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> None:
        req = self._request(request)
        await context.send_initial_metadata(((REQUEST_ID_METADATA, req.request_id),))
        remaining = context.time_remaining()
        deadline = None if remaining is None else self._clock() + remaining
        obs = observer_var.get()
        events = self.dispatcher.generate(req, deadline=deadline, access=principal_var.get().access)
        if obs.text is not None:  # content logging (debug switch) only
            events = _capture_text(events, obs.text)
        async with contextlib.aclosing(events):
            if self.coalesce:
                await _relay_coalesced(events, context, obs.event)
            else:
                async for ev in events:
                    if type(ev) is not DeltaEvent:
                        obs.event(ev)
                    await context.write(event_to_proto(ev))

    async def Route(  # noqa: N802
        self, request: rpb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> rpb.Decision:
        req = self._request(request)
        plan, _ = await self.dispatcher.decide(req, access=principal_var.get().access)
        observer_var.get().decision(plan)
        return convert.decision_to_proto(plan)

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


async def _relay_coalesced(
    events: AsyncIterator[Event],
    context: grpc.aio.ServicerContext,
    observe: Callable[[Event], None] = lambda ev: None,
) -> None:
    """Write events in order; deltas that arrive while a write is pending are merged, so a
    slow reader costs one buffered delta, never an unbounded queue. ``observe`` sees every
    event but the deltas, as it arrives."""
    buf: deque[Event | _PendingDelta] = deque()
    wake = asyncio.Event()

    async def produce() -> None:
        try:
            async for ev in events:
                if type(ev) is DeltaEvent:
                    last = buf[-1] if buf else None
                    if type(last) is _PendingDelta:
                        last.parts.append(ev.text)
                        last.tokens += ev.tokens
                    else:
                        buf.append(_PendingDelta(ev.text, ev.tokens))
                else:
                    observe(ev)
                    buf.append(ev)
                wake.set()
        finally:
            wake.set()

    producer = asyncio.get_running_loop().create_task(produce())
    try:
        while True:
            while buf:
                item = buf.popleft()
                msg = item.to_proto() if type(item) is _PendingDelta else event_to_proto(item)  # type: ignore[union-attr,arg-type]
                await context.write(msg)
            if producer.done() and not buf:
                break
            wake.clear()
            if buf or producer.done():
                continue
            await wake.wait()
        producer.result()
    finally:
        if not producer.done():
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
