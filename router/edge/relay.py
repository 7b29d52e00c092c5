"""The relay port: other router replicas reach the devices this replica holds.

A small grpc.aio server on ``edge.relay.address`` that implements ModelService; the
device is named by the ``x-edge-device`` metadata. ``Generate`` sends the request down the
device's link and streams the device's events back; ``Info`` answers from the device's
last heartbeat. Statuses follow the ModelService contract, so the calling replica's
:class:`~router.edge.backend.RelayBackend` (a ModelService client) classifies them like
any model server's:

=============================================  ==================
device not linked here, offline, link closed,  UNAVAILABLE
no event in time, RequestError ``retryable``
RequestError ``too_large``                     OUT_OF_RANGE
RequestError ``fatal``, no device named        INVALID_ARGUMENT
wrong or missing relay token                   UNAUTHENTICATED
=============================================  ==================

The port is for replicas only: bind it to the pod IP, keep it out of the Service, allow
only router pods (NetworkPolicy), and set ``edge.relay.token_env``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Callable

import grpc
from hybrid_router.v1 import model_service_pb2 as mpb
from hybrid_router.v1 import model_service_pb2_grpc

from router.edge.backend import DEVICE_METADATA, TOKEN_METADATA, DeviceEntry
from router.edge.link import DeviceRequestError, LinkClosed, SilenceTimeout, link_events

log = logging.getLogger(__name__)

_CODES = {
    "too_large": grpc.StatusCode.OUT_OF_RANGE,
    "fatal": grpc.StatusCode.INVALID_ARGUMENT,
}


def _meta(context: grpc.aio.ServicerContext, key: str) -> str:
    for k, v in context.invocation_metadata() or ():
        if k == key and isinstance(v, str):
            return v
    return ""


class RelayServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(
        self,
        local_entry: Callable[[str], DeviceEntry | None],
        *,
        router_id: str,
        token: str = "",
        silence_s: float = 30.0,
    ) -> None:
        self._local = local_entry
        self._router_id = router_id
        self._token = token.encode()
        self._silence_s = silence_s

    async def _entry(self, context: grpc.aio.ServicerContext) -> DeviceEntry:
        if self._token:
            given = _meta(context, TOKEN_METADATA).encode()
            if not hmac.compare_digest(given, self._token):
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"relay calls need the shared token in '{TOKEN_METADATA}' metadata",
                )
        device = _meta(context, DEVICE_METADATA)
        if not device:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"name the device in '{DEVICE_METADATA}'"
            )
        entry = self._local(device)
        if entry is None or entry.link is None or entry.link.closed:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"device {device!r} is not linked to replica {self._router_id}",
            )
        assert entry is not None and entry.link is not None
        why = entry.availability()
        if why:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"device {device!r}: {why}")
        return entry

    async def Generate(  # noqa: N802 - gRPC method name
        self, request: mpb.ModelGenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[mpb.ModelGenerateEvent]:
        entry = await self._entry(context)
        link = entry.link
        assert link is not None
        failure: tuple[grpc.StatusCode, str] | None = None
        try:
            async for event in link_events(link, request, silence_s=self._silence_s):
                yield event
        except LinkClosed as exc:
            failure = grpc.StatusCode.UNAVAILABLE, f"link to the device closed: {exc}"
        except DeviceRequestError as exc:
            code = _CODES.get(exc.error_class, grpc.StatusCode.UNAVAILABLE)
            failure = code, exc.message
        except SilenceTimeout as exc:
            failure = grpc.StatusCode.UNAVAILABLE, str(exc)
        if failure is not None:
            await context.abort(*failure)

    async def Info(  # noqa: N802
        self, request: mpb.InfoRequest, context: grpc.aio.ServicerContext
    ) -> mpb.InfoResponse:
        entry = await self._entry(context)
        s = entry.state
        model = s.models[0] if s.models else None
        return mpb.InfoResponse(
            model=model.name if model else "",
            version=model.version if model else "",
            context_window=model.context_window if model else 0,
            queue_depth=s.queue_depth,
            in_flight=s.in_flight,
            max_concurrency=s.max_concurrency,
            decode_tokens_per_s=s.decode_tokens_per_s,
            engine="edge",
            replica_id=s.device_id,
            model_family=model.model_family if model else "",
        )


async def start_relay_server(servicer: RelayServicer, address: str) -> tuple[grpc.aio.Server, int]:
    """Bind and start the relay port; (server, port). Raises OSError when it cannot bind."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"edge.relay.address {address}: cannot bind: {exc}") from exc
    if port == 0:
        raise OSError(f"edge.relay.address {address}: cannot bind (in use?)")
    await server.start()
    log.info("edge relay port listening on %s", address.rpartition(":")[0] + f":{port}")
    return server, port
