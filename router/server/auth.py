"""Auth interceptor: API key -> tenant, and the per-tenant / per-connection stream limits.

For every RPC of ours: authenticate the ``authorization`` metadata (unless auth is off on a
loopback server), put the Principal on ``principal_var`` for the servicer, and for
``Generate`` streams hold a slot of the tenant's and the connection's stream limits until
the stream ends. Failures are RouterErrors (UNAUTHENTICATED, PERMISSION_DENIED,
RESOURCE_EXHAUSTED) that ``ErrorMappingInterceptor`` turns into statuses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from router.security.authn import ANONYMOUS, Authenticator, Principal
from router.security.limits import StreamLimitExceeded, StreamLimits
from router.server.context import principal_var
from router.server.interceptors import OUR_PREFIX
from router.server.observe import Behavior, rewrap
from router.telemetry.metrics import NULL_METRICS, Metrics
from router.telemetry.observer import observer_var


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator | None,
        limits: StreamLimits,
        *,
        default_tenant_streams: int = 0,
        metrics: Metrics = NULL_METRICS,
    ) -> None:
        """``authenticator`` None: auth off (loopback only; see router.security.exposure)."""
        self._auth = authenticator
        self._limits = limits
        self._default_streams = default_tenant_streams
        self._metrics = metrics

    def _stream_limit(self, principal: Principal) -> tuple[int, str]:
        access = principal.access
        if access is None:
            return self._default_streams, "server.limits.max_streams_per_tenant"
        return access.max_streams, f"auth.tenants[{access.name}].max_streams"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(OUR_PREFIX):
            return handler
        metadata = handler_call_details.invocation_metadata
        auth = self._auth
        limits = self._limits

        def wrap(behavior: Behavior, stream: bool) -> Behavior:
            async def authorized(request: Any, context: grpc.aio.ServicerContext) -> Any:
                principal = ANONYMOUS if auth is None else auth.authenticate(metadata)
                observer_var.get().set_principal(principal.tenant, principal.key_id)
                slot = None
                if stream:
                    limit, key = self._stream_limit(principal)
                    try:
                        slot = limits.acquire(
                            context.peer(), principal.tenant, limit, limit_key=key
                        )
                    except StreamLimitExceeded as exc:
                        self._metrics.limit_rejected(exc.limit)
                        raise
                token = principal_var.set(principal)
                try:
                    return await behavior(request, context)
                finally:
                    principal_var.reset(token)
                    if slot is not None:
                        slot.release()

            return authorized

        return rewrap(handler, wrap)
