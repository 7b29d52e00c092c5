"""Server interceptors: request id, and RouterError -> gRPC status in one place.

Only the router's own services (``/hybrid_router.v1.*``) are wrapped; health and
reflection are left as they are. Our servicer methods are coroutines that write
with ``context.write``, so the wrapper costs one await per RPC, not per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from router.errors import RouterError
from router.server.context import REQUEST_ID_METADATA, request_id_var

log = logging.getLogger(__name__)

OUR_PREFIX = "/hybrid_router.v1."


def _request_id(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == REQUEST_ID_METADATA and isinstance(value, str):
            return value[:128]
    return ""


async def _abort_for(exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
    if isinstance(exc, RouterError):
        code = getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)
        log.info("%s -> %s: %s", method, code.name, exc.message)
        await context.abort(code, exc.message)
    log.exception(
        "unexpected error in %s (request id %s)", method, request_id_var.get(), exc_info=exc
    )
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error; quote request id {request_id_var.get()} when reporting it",
    )


def _wrap(
    behavior: Callable[..., Awaitable[Any]], method: str, rid: str
) -> Callable[..., Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        token = request_id_var.set(rid or "-")
        try:
            return await behavior(request, context)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - the one place errors become statuses
            await _abort_for(exc, context, method)
        finally:
            request_id_var.reset(token)

    return wrapped


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
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
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap(handler.unary_unary, method, rid),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap(handler.unary_stream, method, rid),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
