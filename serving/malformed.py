"""Malformed requests on the model server: bytes that are not a valid request message end
the call with INVALID_ARGUMENT and a one-line reason (never UNKNOWN with a traceback), and
are logged as one WARNING per interval with a count. The router's own ports do the same
(router/server/interceptors.py; serving never imports the router)."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger(__name__)

WARN_EVERY_S = 10.0

_SHAPES = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
)


class _Malformed:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, every_s: float = WARN_EVERY_S) -> None:
        self._every_s = every_s
        self._last = -1e18
        self._suppressed = 0

    def _note(self, method: str, reason: str) -> None:
        now = time.monotonic()
        if now - self._last < self._every_s:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
        log.warning("malformed request to %s: %s%s", method, reason, more)
        self._last, self._suppressed = now, 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = details.method
        deserialize = handler.request_deserializer
        what = getattr(getattr(deserialize, "__self__", None), "__name__", "") or "request"

        def load(data: bytes) -> Any:
            try:
                return deserialize(data)
            except Exception as exc:  # protobuf's DecodeError
                reason = f"the request is not a valid {what} message ({type(exc).__name__}: {exc})"
                reason = reason.replace("\n", " ")[:300]
                self._note(method, reason)
                return _Malformed(reason)

        for shape, factory in _SHAPES:
            behavior = getattr(handler, shape)
            if behavior is None:
                continue
            if inspect.isasyncgenfunction(behavior):

                async def stream(request: Any, context: Any, _b: Any = behavior) -> Any:
                    if type(request) is _Malformed:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
                    async for response in _b(request, context):
                        yield response

                wrapped: Any = stream
            else:

                async def call(request: Any, context: Any, _b: Any = behavior) -> Any:
                    if type(request) is _Malformed:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
                    return await _b(request, context)

                wrapped = call
            return factory(
                wrapped,
                request_deserializer=load,
                response_serializer=handler.response_serializer,
            )
        return handler
