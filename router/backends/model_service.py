"""ModelService gRPC client: the Ray Serve app (GPU tier), the local llama.cpp server and
any self-hosted server that implements ``hybrid_router.v1.ModelService``.

One ``grpc.aio`` channel per backend, opened on the running loop (``start()`` or first
use) and closed by ``close()``.

Errors (``grpc.aio.AioRpcError`` -> :class:`~router.errors.BackendError`):

=================================================  ======================================
UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,  RETRYABLE
ABORTED, INTERNAL, UNKNOWN (and any other code)
OUT_OF_RANGE                                       TOO_LARGE (servers map an engine's
                                                   "too_large" to it)
INVALID_ARGUMENT                                   FATAL, INVALID_ARGUMENT
UNAUTHENTICATED, PERMISSION_DENIED                 FATAL, with that code
stream ends without ``done``                       RETRYABLE ("stream ended early")
no event for ``timeout_s``                         RETRYABLE (the call is cancelled)
=================================================  ======================================

Tools (docs/tools.md): a request's tools, tool choice and response format go in the
request (only when it has them), messages with their tool calls and tool results
(``router.server.convert``), and ``tool_call`` events come back as ``Chunk.tool_calls``
(``FINISH_REASON_TOOL_CALLS`` -> ``tool_calls``). ``poll_load`` adds the capabilities the
server's ``Info`` reports to the configured ones (``backend.spec``, read by the registry on
every decision).

Cancellation: if the consuming task is cancelled or the iterator is closed before the
stream ended, the RPC is cancelled, so the server (and its engine) sees it. After ``done``
the adapter reads the stream to its end before handing over the final chunk, so a
consumer that stops there does not cancel a finished call. ``BackendCall.stop`` (the caller
went away, or dispatch's first-token timeout) cancels the RPC itself, in gRPC core: the
pending read then returns and the stream ends with CancelledError, without a task being
cancelled inside a grpc.aio batch (which leaks the batch's native memory:
grpc/grpc#43360). The idle watchdog and the end of the stream cancel the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from hybrid_router.v1 import model_service_pb2, model_service_pb2_grpc, types_pb2

from router.backends.base import Backend
from router.errors import BackendError, ErrorClass
from router.preflight import FAIL, OK, WARN, Finding
from router.server.convert import message_to_proto, tools_to_proto
from router.tools.calls import tool_call_event
from router.types import (
    BackendCall,
    BackendSpec,
    Chunk,
    FinishReason,
    InferenceRequest,
    ToolChoiceMode,
)

if TYPE_CHECKING:
    from router.config import BackendConfig

log = logging.getLogger(__name__)

#: Keepalive: a ping after 60 s without activity, dropped after 20 s without an ack; no
#: pings on an idle channel. gRPC core caps pings without data at 2 by default, which
#: stays within a default server's ping-strike allowance (2), so servers that keep their
#: default keepalive policy (Ray Serve's proxy) never answer with GOAWAY too_many_pings.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
)

_FINISH = {
    types_pb2.FINISH_REASON_STOP: FinishReason.STOP,
    types_pb2.FINISH_REASON_LENGTH: FinishReason.LENGTH,
    types_pb2.FINISH_REASON_CANCELLED: FinishReason.CANCELLED,
    types_pb2.FINISH_REASON_ERROR: FinishReason.ERROR,
    types_pb2.FINISH_REASON_TOOL_CALLS: FinishReason.TOOL_CALLS,
}
_FATAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


def to_proto(request: InferenceRequest) -> model_service_pb2.ModelGenerateRequest:
    """The ModelService request for an InferenceRequest (the server picks its model; the
    tool fields only when the request has tools, a tool choice or a JSON format)."""
    s = request.sampling
    sampling = types_pb2.SamplingParams(stop=list(s.stop))
    if s.temperature is not None:
        sampling.temperature = s.temperature
    if s.top_p is not None:
        sampling.top_p = s.top_p
    if s.top_k is not None:
        sampling.top_k = s.top_k
    if s.seed is not None:
        sampling.seed = s.seed
    tools: dict[str, Any] = {}
    if (
        request.tools
        or request.response_format.is_json
        or request.tool_choice.mode is not ToolChoiceMode.AUTO
    ):
        tools = tools_to_proto(request)
    return model_service_pb2.ModelGenerateRequest(
        request_id=request.request_id,
        messages=[message_to_proto(m) for m in request.messages],
        max_output_tokens=request.max_output_tokens,
        sampling=sampling,
        tenant=request.tenant,
        session_id=request.session_id,
        continue_final_message=request.prefill,
        **tools,
    )


def _cancelling() -> bool:
    """True when someone asked to cancel the running task (not just our call)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


#: What grpc.aio's ``cancel()`` gives as the reason (the status details).
_LOCAL_CANCEL = "Locally cancelled by application!"


def _cancel_call(rpc: Any) -> bool:
    """Cancel ``rpc`` in gRPC core only (True: it was running). grpc.aio's own
    ``cancel()`` also cancels the task that sends the request, which leaks that task's
    pending batch (grpc/grpc#43360) while the server has not answered yet; cancelled in
    core, every pending batch of the call completes, their tasks end by themselves, and
    a pending read raises CancelledError (the call was cancelled locally)."""
    core = getattr(rpc, "_cython_call", None)
    if core is None:  # not grpc.aio's call object: its public cancel
        return bool(rpc.cancel())
    if core.done():
        return False
    core.cancel(_LOCAL_CANCEL)
    return True


class _IdleWatchdog:
    """Cancels ``rpc`` once ``timeout_s`` pass without an event (``last`` is the loop time
    of the latest one). The timer is re-armed lazily: when it fires early it moves to
    ``last + timeout_s``, so a busy stream costs one float store per event and one timer
    per ``timeout_s``, not a timer per read."""

    __slots__ = ("loop", "last", "fired", "_timeout_s", "_rpc", "_handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float, rpc: Any) -> None:
        self.loop = loop
        self.last = loop.time()
        self.fired = False
        self._timeout_s = timeout_s
        self._rpc = rpc
        self._handle: asyncio.TimerHandle | None = loop.call_at(self.last + timeout_s, self._check)

    def _check(self) -> None:
        due = self.last + self._timeout_s
        if self.loop.time() < due:
            self._handle = self.loop.call_at(due, self._check)
            return
        self._handle = None
        self.fired = True
        _cancel_call(self._rpc)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class ModelServiceBackend(Backend):
    """Streams from a ModelService server over one grpc.aio channel."""

    def __init__(
        self,
        spec: BackendSpec,
        *,
        timeout_s: float = 30.0,
        info_timeout_s: float = 2.0,
        application: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``application``: the Ray Serve application to call, sent as gRPC metadata
        ``application`` on every call (Serve's gRPC proxy routes by it); "" = none."""
        super().__init__(spec)
        #: What router.yaml says the backend offers; Info's capabilities are added to it.
        self.configured_capabilities = spec.capabilities
        self._application: tuple[tuple[str, str], ...] = (
            (("application", application),) if application else ()
        )
        self._timeout_s = timeout_s
        self._info_timeout_s = min(info_timeout_s, timeout_s)
        self._clock = clock
        #: The prompt reading rate of the last Info (None: not reported).
        self._prefill: float | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: model_service_pb2_grpc.ModelServiceStub | None = None

    async def start(self) -> None:
        self._ensure_stub()

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    def _ensure_stub(self) -> model_service_pb2_grpc.ModelServiceStub:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.spec.endpoint, options=CHANNEL_OPTIONS)
            self._stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
        return self._stub

    def _error(self, exc: grpc.aio.AioRpcError) -> BackendError:
        code = exc.code()
        message = f"{code.name}: {exc.details() or 'no details'}"
        if code is grpc.StatusCode.OUT_OF_RANGE:
            return BackendError(self.name, message, ErrorClass.TOO_LARGE)
        if code in _FATAL_CODES:
            return BackendError(self.name, message, ErrorClass.FATAL, grpc_code=code.name)
        return BackendError(self.name, message, ErrorClass.RETRYABLE)

    async def stream(self, call: BackendCall) -> AsyncIterator[Chunk]:
        stub = self._ensure_stub()
        timeout: float | None = None
        if call.deadline is not None:
            timeout = call.deadline - self._clock()
            if timeout <= 0:
                raise BackendError(self.name, "deadline exceeded", ErrorClass.RETRYABLE)
        metadata = [*self._application, *call.metadata]
        if call.request.request_id:
            metadata.append(("x-request-id", call.request.request_id))
        rpc = stub.Generate(to_proto(call.request), timeout=timeout, metadata=metadata or None)
        stop = call.stop
        stopper = functools.partial(_cancel_call, rpc)
        if stop is not None:
            stop.watch(stopper)
        # One idle watchdog per stream instead of a timeout around every read: each event
        # only notes the loop time; the timer re-arms itself at last event + timeout_s and
        # cancels the call when that passes without one.
        watchdog = _IdleWatchdog(asyncio.get_running_loop(), self._timeout_s, rpc)
        final: Chunk | None = None
        try:
            while True:
                try:
                    event = await rpc.read()
                except asyncio.CancelledError:
                    if not watchdog.fired or _cancelling():
                        raise  # the consumer went away: the finally cancels the call
                    if final is not None:
                        break  # the answer is complete; only the stream's end is late
                    raise BackendError(
                        self.name, f"no event for {self._timeout_s:g} s", ErrorClass.RETRYABLE
                    ) from None
                except grpc.aio.AioRpcError as exc:
                    if final is not None:
                        break
                    raise self._error(exc) from exc
                watchdog.last = watchdog.loop.time()
                if event is grpc.aio.EOF:
                    break
                kind = event.WhichOneof("event")
                if kind == "delta":
                    delta = event.delta
                    if final is None and delta.text:
                        # A server may merge tokens into one delta (serving.model_server
                        # does while its writes are pending); tokens says how many.
                        yield Chunk(text=delta.text, tokens=delta.tokens or 1)
                elif kind == "tool_call":
                    if final is None:
                        yield Chunk(tool_calls=(tool_call_event(event.tool_call),))
                elif kind == "done" and final is None:
                    d = event.done
                    final = Chunk(
                        done=True,
                        input_tokens=d.input_tokens,
                        output_tokens=d.output_tokens,
                        finish_reason=_FINISH.get(d.finish_reason, FinishReason.STOP),
                        queue_ms=d.queue_ms,
                    )
        finally:
            if stop is not None:
                stop.unwatch(stopper)
            watchdog.stop()
            _cancel_call(rpc)
        if final is None:
            raise BackendError(self.name, "stream ended early (no done event)")
        yield final

    async def info(
        self, metadata: tuple[tuple[str, str], ...] | None = None
    ) -> model_service_pb2.InfoResponse:
        """The server's Info (model, window, load). Raises BackendError.

        ``metadata`` replaces the call's metadata (default: the ``application`` one).
        """
        stub = self._ensure_stub()
        md = self._application if metadata is None else metadata
        try:
            return await stub.Info(
                model_service_pb2.InfoRequest(), timeout=self._info_timeout_s, metadata=md or None
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from exc

    async def poll_load(self) -> int | None:
        """queue_depth + in_flight from Info.

        ``None`` when the server does not implement Info (no load signal); raises
        BackendError when it does not answer, which marks the backend unhealthy until the
        next good probe.
        """
        try:
            info = await self.info()
        except BackendError as exc:
            if unimplemented(exc):
                return None
            raise
        self.note_capabilities(info)
        self._prefill = info.prefill_tokens_per_s or None
        return info.queue_depth + info.in_flight

    def prefill_rate(self) -> float | None:
        return self._prefill

    def note_capabilities(self, info: model_service_pb2.InfoResponse) -> None:
        """Offer what the server reports (``Info.capabilities``) besides the configured
        capabilities: ``spec.capabilities`` = configured | reported."""
        offered = self.configured_capabilities | frozenset(c for c in info.capabilities if c)
        if offered != self.spec.capabilities:
            self.spec = dataclasses.replace(self.spec, capabilities=offered)


def unimplemented(exc: BackendError) -> bool:
    """Whether the server answered UNIMPLEMENTED (what gRPC says for a service or method
    it does not serve, and for an HTTP/2 404)."""
    return exc.reason.startswith(grpc.StatusCode.UNIMPLEMENTED.name)


# --- check --probe (router/backends/preflight.py) ----------------------------------------------

#: The service a ``model_service`` / ``ray_serve`` endpoint must serve.
SERVICE = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name


async def probe(cfg: BackendConfig, backend: Backend, timeout: float) -> list[Finding]:
    """Prove the endpoint is a ModelService server through the backend's own load signal
    (``poll_load``: ``Info``, on the load application for Ray Serve), never ``Generate``.
    No ``Info`` (UNIMPLEMENTED) is ``fail``: another gRPC server (a router's own port)
    answers there, and every request would fail. A ModelService server's window is
    compared with ``context_window``. Ray Serve's probe too (``router.backends.ray_serve``)."""
    component = f"probe {cfg.name}"
    key = f"backends[{cfg.name}].endpoint"
    try:
        load = await asyncio.wait_for(backend.poll_load(), timeout)
    except BackendError as exc:
        if unimplemented(exc):
            return [_not_a_model_service(cfg, backend)]
        return [
            Finding(
                FAIL,
                component,
                key,
                f"unreachable: {cfg.endpoint}: {exc.reason}",
                f"check {key}, that the server runs and that the network allows it",
            )
        ]
    except TimeoutError:
        return [
            Finding(FAIL, component, key, f"no answer from {cfg.endpoint} within {timeout:g} s")
        ]
    if load is None:  # poll_load's "no Info": a ModelService server always answers it
        return [_not_a_model_service(cfg, backend)]
    detail = f"reachable: {cfg.endpoint}, load {load} ({SERVICE} Info)"
    if isinstance(backend, ModelServiceBackend) and cfg.kind == "model_service":
        with contextlib.suppress(BackendError, TimeoutError):
            info = await asyncio.wait_for(backend.info(), timeout)
            detail += f", serves {info.model or '?'} ({info.engine or 'engine ?'})"
            if info.context_window and cfg.context_window > info.context_window:
                return [
                    Finding(
                        WARN,
                        component,
                        f"backends[{cfg.name}].context_window",
                        f"{detail}; backends[{cfg.name}].context_window {cfg.context_window} > "
                        f"the server's {info.context_window}: prompts in between fail over "
                        "as too large",
                        f"set context_window: {info.context_window}",
                    )
                ]
    return [Finding(OK, component, key, detail)]


def _not_a_model_service(cfg: BackendConfig, backend: Backend) -> Finding:
    key = f"backends[{cfg.name}].endpoint"
    load_app = getattr(backend, "load_application", "")  # Ray Serve's: what poll_load calls
    via = f" via application {load_app!r}" if load_app else ""
    return Finding(
        FAIL,
        f"probe {cfg.name}",
        key,
        f"{key}: {cfg.endpoint} answers gRPC but does not serve {SERVICE} "
        f"(UNIMPLEMENTED Info{via}); every request would fail UNIMPLEMENTED",
        "point endpoint at a model server (hybrid-router's serving/ model server, or a Ray "
        "Serve app with serve_application: Serve's gRPC proxy with ModelService among its "
        "grpc_servicer_functions), not at a router's own port (that serves "
        "hybrid_router.v1.InferenceRouter)",
    )
