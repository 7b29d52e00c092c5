"""Server interceptors: request id, and RouterError -> gRPC status in one place.

``ErrorMappingInterceptor`` runs outermost on every grpc.aio server the router runs: the
router port (``router.server.app``: InferenceRouter, EdgeLink, EdgeFleet) and the edge
relay port (``router.server.relay``: ModelService). It wraps all four RPC shapes
(unary-unary, unary-stream, stream-unary, stream-stream), whether the handler is a
coroutine (``return`` a response, or ``context.read`` / ``context.write``) or an async
generator (``yield``). A :class:`~router.errors.RouterError` ends the RPC with the status
it declares and its message (with its reason and retry delay, when it declares them, as
trailing metadata: ``router.server.status_details``), also when it is raised mid-stream
after messages were sent; anything else ends it with INTERNAL, a generic message quoting
the request id, and one logged traceback. A handler's own ``context.abort`` and
cancellation pass through.

Malformed requests: the request deserializer of every wrapped handler is made safe. Bytes
that are not a valid request message (or a stream message that is not) end the RPC with
INVALID_ARGUMENT and a one-line reason, never UNKNOWN with a traceback; they are logged
as one WARNING per ``MALFORMED_WARN_EVERY_S`` with a count (a caller cannot flood the
log), and reported to ``on_malformed(method, metadata, message)`` (the router's request
log and metrics).

Only the router's own services (``/hybrid_router.v1.*``) are wrapped; health and
reflection are left as they are. The wrapper costs one await per RPC for coroutine
handlers and one generator step per message for async-generator handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from router.errors import MalformedRequest, RouterError
from router.server.context import REQUEST_ID_METADATA, request_id_var
from router.server.status_details import trailing_metadata

log = logging.getLogger(__name__)

OUR_PREFIX = "/hybrid_router.v1."

Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]

#: The four RPC shapes: the handler's attribute and the factory that rebuilds it.
_SHAPES: tuple[tuple[str, Callable[..., grpc.RpcMethodHandler]], ...] = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


#: At most one WARNING about malformed requests per this many seconds (with a count).
MALFORMED_WARN_EVERY_S = 10.0

OnMalformed = Callable[[str, Any, str], None]


class Malformed:
    """What the safe deserializer hands on for bytes that are not a valid message."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _MalformedLog:
    """One WARNING per interval: the first malformed request at once, then a count."""

    def __init__(self, every_s: float = MALFORMED_WARN_EVERY_S) -> None:
        self.every_s = every_s
        self.last = -1e18
        self.suppressed = 0

    def note(self, method: str, reason: str) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more since the last warning)" if self.suppressed else ""
        log.warning("malformed request to %s: %s%s", method, reason, more)
        self.last, self.suppressed = now, 0


_MALFORMED_LOG = _MalformedLog()


def _safe_deserializer(
    deserialize: Callable[[bytes], Any] | None, method: str
) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None
    what = getattr(getattr(deserialize, "__self__", None), "__name__", "") or "request"

    def load(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf's DecodeError, or anything a parser raises
            reason = f"the request is not a valid {what} message ({type(exc).__name__}: {exc})"
            reason = reason.replace("\n", " ")[:300]
            _MALFORMED_LOG.note(method, reason)
            return Malformed(reason)

    return load


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for r in requests:
        if type(r) is Malformed:
            raise MalformedRequest(r.reason)
        yield r


def _request_id(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == REQUEST_ID_METADATA and isinstance(value, str):
            return value[:128]
    return ""


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status an exception ends an RPC with: a RouterError's declared one, else
    INTERNAL."""
    if isinstance(exc, RouterError):
        return getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)
    return grpc.StatusCode.INTERNAL


async def _abort_for(exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
    """End the RPC for ``exc`` (always raises grpc.aio.AbortError)."""
    if isinstance(exc, RouterError):
        code = status_for(exc)
        log.info("%s -> %s: %s", method, code.name, exc.message)
        await context.abort(code, exc.message, trailing_metadata(exc, code))
    log.exception(
        "unexpected error in %s (request id %s)", method, request_id_var.get(), exc_info=exc
    )
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error; quote request id {request_id_var.get()} when reporting it",
    )


def _wrap_coroutine(
    behavior: Callable[..., Awaitable[Any]], method: str, rid: str, check: Checker
) -> Callable[..., Awaitable[Any]]:
    """A coroutine handler: returns the response (unary response) or None (it wrote the
    stream with ``context.write``)."""

    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        token = request_id_var.set(rid or "-")
        try:
            return await behavior(check(request), context)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - the one place errors become statuses
            await _abort_for(exc, context, method)
        finally:
            request_id_var.reset(token)

    return wrapped


def _wrap_generator(
    behavior: Callable[..., AsyncGenerator[Any, None]], method: str, rid: str, check: Checker
) -> Callable[..., AsyncIterator[Any]]:
    """An async-generator handler (stream response by ``yield``); an error after some
    messages still ends the RPC with its status. Closing this generator (cancellation)
    closes the handler's."""

    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        token = request_id_var.set(rid or "-")
        try:
            async with contextlib.aclosing(behavior(check(request), context)) as responses:
                async for response in responses:
                    yield response
        except asyncio.CancelledError:
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - the one place errors become statuses
            await _abort_for(exc, context, method)
        finally:
            # A generator closed by the garbage collector runs in another context.
            with contextlib.suppress(ValueError):
                request_id_var.reset(token)

    return wrapped


Checker = Callable[[Any], Any]


def _checker(stream_request: bool, on_bad: Callable[[str], None]) -> Checker:
    """A unary request: MalformedRequest for a Malformed one. A request stream: the
    stream, checked message by message."""

    def unary(request: Any) -> Any:
        if type(request) is Malformed:
            on_bad(request.reason)
            raise MalformedRequest(request.reason)
        return request

    def stream(requests: Any) -> Any:
        return _checked_stream(requests) if hasattr(requests, "__aiter__") else requests

    return stream if stream_request else unary


def _wrap(behavior: Behavior, method: str, rid: str, check: Checker) -> Behavior:
    if inspect.isasyncgenfunction(behavior):
        return _wrap_generator(behavior, method, rid, check)
    if inspect.iscoroutinefunction(behavior):
        return _wrap_coroutine(behavior, method, rid, check)
    return behavior  # a synchronous handler (grpc runs it in a thread): none of ours


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Request id -> ``request_id_var``; RouterError -> its status; anything else ->
    INTERNAL with one logged traceback; malformed request bytes -> INVALID_ARGUMENT (and
    ``on_malformed``). For every RPC shape (see the module docstring)."""

    def __init__(self, on_malformed: OnMalformed | None = None) -> None:
        self._on_malformed = on_malformed

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(OUR_PREFIX):
            return handler
        rid = _request_id(handler_call_details)
        report = self._on_malformed
        metadata = handler_call_details.invocation_metadata

        def on_bad(reason: str) -> None:
            if report is not None:
                report(method, metadata, reason)

        for shape, factory in _SHAPES:
            behavior = getattr(handler, shape)
            if behavior is not None:
                check = _checker(shape.startswith("stream"), on_bad)
                return factory(
                    _wrap(behavior, method, rid, check),
                    request_deserializer=_safe_deserializer(handler.request_deserializer, method),
                    response_serializer=handler.response_serializer,
                )
        return handler
