"""Telemetry interceptor: one observer per RPC of ours (span, metrics, request log line).

Runs inside ``ErrorMappingInterceptor`` (which sets the request id and turns errors into
statuses) and outside the auth interceptor, so it sees every outcome, authentication
failures included, as the exception that produced it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import context as otel_context

from router.errors import RouterError
from router.server.interceptors import OUR_PREFIX
from router.telemetry.observer import Telemetry, observer_var

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def rewrap(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Behavior, bool], Behavior]
) -> grpc.RpcMethodHandler:
    """``handler`` with its unary-unary or unary-stream behaviour wrapped by
    ``wrap(behavior, is_stream)``; other kinds are returned unchanged."""
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            wrap(handler.unary_unary, False),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            wrap(handler.unary_stream, True),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


def status_of(exc: BaseException) -> tuple[str, str | None]:
    """(gRPC status name, message) an exception ends an RPC with."""
    if isinstance(exc, RouterError):
        return exc.grpc_code, exc.message
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED", None
    return "INTERNAL", f"unexpected {type(exc).__name__}"


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(OUR_PREFIX):
            return handler
        name = method.rpartition("/")[2]
        metadata = handler_call_details.invocation_metadata
        telemetry = self._telemetry

        def wrap(behavior: Behavior, stream: bool) -> Behavior:
            async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
                obs = telemetry.begin(name, metadata)
                token = observer_var.set(obs)
                ctx_token = otel_context.attach(obs.context)
                metrics = telemetry.metrics
                if stream:
                    metrics.stream_opened()
                code, error = "OK", None
                try:
                    return await behavior(request, context)
                except BaseException as exc:
                    code, error = status_of(exc)
                    raise
                finally:
                    if stream:
                        metrics.stream_closed()
                    obs.finish(code, error)
                    otel_context.detach(ctx_token)
                    observer_var.reset(token)

            return observed

        return rewrap(handler, wrap)
