"""EdgeLink and EdgeFleet servicers: thin proto <-> hub translation (the hub, devices and
their rules are ``router.edge``), and :func:`start_edge`, which ``router.server.app`` calls
only when ``edge.enabled`` is on.

``EdgeLink.Connect`` (bidirectional, opened by the device): the first message must be a
``Register`` (within ``edge.register_timeout_s``); the router answers ``Registered`` and
then writes generate / cancel / desired-models messages and one ``HeartbeatAck`` per
heartbeat, while it reads heartbeats and request events. The RPC ends when the device
closes it, the link is lost, the device misses heartbeats, or the replica drains.

Device identity: with ``edge.device_auth: mtls`` the stream must come over TLS with a
verified client certificate whose common name (or a DNS name) is the device id.

Refusals are the tree's errors (``router.errors``), each naming the field or the fix;
``ErrorMappingInterceptor`` ends the stream with their status (it wraps every RPC shape,
this bidirectional one included):

=================================================  ===================  ===================
replica draining                                   UNAVAILABLE          ReplicaDraining
no client certificate (``device_auth: mtls``)      UNAUTHENTICATED      Unauthenticated
no message within ``edge.register_timeout_s``      DEADLINE_EXCEEDED    DeadlineExceeded
first message not ``register``, bad ``register``   INVALID_ARGUMENT     InvalidRegistration
``device_id`` not the certificate's name           PERMISSION_DENIED    PermissionDenied
``edge-<device id>`` is a configured backend       FAILED_PRECONDITION  BackendNameTaken
=================================================  ===================  ===================

The auth and telemetry interceptors wrap unary and server-streaming RPCs only, so the link
needs no API key: the certificate is the credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

import grpc
from hybrid_router.v1 import edge_link_pb2 as epb
from hybrid_router.v1 import edge_link_pb2_grpc

from router.backends.device_link import DeviceLink
from router.config import EdgeConfig, RouterConfig
from router.edge.devices import DeviceEntry, from_register
from router.edge.hub import EdgeHub
from router.errors import (
    ConfigError,
    DeadlineExceeded,
    InvalidRegistration,
    PermissionDenied,
    ReplicaDraining,
    Unauthenticated,
)
from router.preflight import OK, Finding, Options
from router.registry import BackendRegistry
from router.server.context import principal_var

log = logging.getLogger(__name__)


def peer_names(context: grpc.aio.ServicerContext) -> set[str]:
    """Common name and subject alternative names of the peer's verified certificate."""
    auth = context.auth_context() or {}
    names: set[str] = set()
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth.get(key, ()):
            names.add(value.decode() if isinstance(value, bytes) else str(value))
    return names


class EdgeLinkServicer(edge_link_pb2_grpc.EdgeLinkServicer):
    def __init__(self, hub: EdgeHub, cfg: EdgeConfig) -> None:
        self._hub = hub
        self._cfg = cfg

    async def Connect(  # noqa: N802 - gRPC method name
        self, request_iterator: object, context: grpc.aio.ServicerContext
    ) -> None:
        hub = self._hub
        if hub.draining:
            raise ReplicaDraining()
        names: set[str] = set()
        if self._cfg.device_auth == "mtls":
            names = peer_names(context)
            if not names:
                raise Unauthenticated(
                    "edge links need a client certificate (mTLS) whose common name is the device id"
                )
        try:
            async with asyncio.timeout(self._cfg.register_timeout_s):
                first = await context.read()
        except TimeoutError:
            raise DeadlineExceeded(
                f"send register as the first message within {self._cfg.register_timeout_s:g} s"
            ) from None
        if first is grpc.aio.EOF:
            return
        if first.WhichOneof("message") != "register":
            raise InvalidRegistration("", "the first message on a link must be register")
        state = from_register(first.register)  # raises InvalidRegistration
        if names and state.device_id not in names:
            raise PermissionDenied(
                f"register.device_id {state.device_id!r} does not match the client "
                f"certificate ({', '.join(sorted(names))})"
            )
        link = DeviceLink(state.device_id)
        entry = await hub.attach(state, link)  # raises LinkRefused
        reason = "device closed the link"
        reader = asyncio.get_running_loop().create_task(self._read(context, entry, link))
        try:
            await context.write(hub.registered_message())
            async for msg in link.outgoing():
                await context.write(msg)
            reason = link.closed_reason or reason
        except asyncio.CancelledError:
            reason = "link lost"
            raise
        except Exception as exc:  # the transport failed under a write
            reason = f"link lost: {exc}"
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            hub.detach(entry, link, reason)

    async def _read(
        self, context: grpc.aio.ServicerContext, entry: DeviceEntry, link: DeviceLink
    ) -> None:
        hub = self._hub
        try:
            while True:
                msg = await context.read()
                if msg is grpc.aio.EOF:
                    link.close("device closed the link")
                    return
                kind = msg.WhichOneof("message")
                if kind == "heartbeat":
                    try:
                        await hub.heartbeat(entry, link, msg.heartbeat)
                    except InvalidRegistration as exc:
                        log.warning("edge: device %s: bad heartbeat: %s", link.device_id, exc)
                        continue
                    if not link.closed:
                        link.send(
                            epb.RouterMessage(
                                heartbeat_ack=epb.HeartbeatAck(unix_ms=int(time.time() * 1000))
                            )
                        )
                elif kind in ("event", "error"):
                    link.deliver(msg)
                else:
                    log.warning("edge: device %s sent %s after registering", link.device_id, kind)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            link.close(f"link lost: {exc}")


class EdgeFleetServicer(edge_link_pb2_grpc.EdgeFleetServicer):
    def __init__(self, hub: EdgeHub) -> None:
        self._hub = hub

    async def ListDevices(  # noqa: N802
        self, request: epb.ListDevicesRequest, context: grpc.aio.ServicerContext
    ) -> epb.ListDevicesResponse:
        access = principal_var.get().access  # a tenant sees the devices it may use
        devices = []
        for status in self._hub.fleet():
            if access is not None:
                entry = self._hub.entries.get(status.device_id)
                backend = entry.backend if entry is not None else None
                if backend is None or not access.allows(backend.spec):
                    continue
            devices.append(status)
        return epb.ListDevicesResponse(devices=devices, router_id=self._hub.router_id)


def add_edge_services(server: grpc.aio.Server, hub: EdgeHub, cfg: EdgeConfig) -> None:
    edge_link_pb2_grpc.add_EdgeLinkServicer_to_server(EdgeLinkServicer(hub, cfg), server)
    edge_link_pb2_grpc.add_EdgeFleetServicer_to_server(EdgeFleetServicer(hub), server)


def check_device_auth(config: RouterConfig) -> None:
    """``edge.device_auth: mtls`` needs TLS with client certificate verification."""
    tls = config.server.tls
    if config.edge.device_auth == "mtls" and not (tls.enabled and tls.client_ca_file):
        raise ConfigError(
            "edge.device_auth 'mtls' needs server.tls.cert_file, key_file and client_ca_file "
            "(devices present certificates signed by that CA); set them, or set "
            "edge.device_auth: none to trust device ids as sent (development only)",
            key="edge.device_auth",
        )


def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``edge``: how devices prove who they are (:func:`check_device_auth`)."""
    edge = config.edge
    if not edge.enabled:
        return []
    try:
        check_device_auth(config)
    except ConfigError as exc:
        return [Finding.failed("edge", exc)]
    return [Finding(OK, "edge", "edge.device_auth", f"edge.device_auth {edge.device_auth}")]


async def start_edge(
    config: RouterConfig,
    registry: BackendRegistry,
    server: grpc.aio.Server,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> EdgeHub | None:
    """Start the hub and add EdgeLink/EdgeFleet to ``server`` (not yet started); None when
    ``edge.enabled`` is off. Raises ConfigError or OSError."""
    if not config.edge.enabled:
        return None
    check_device_auth(config)
    hub = EdgeHub(config.edge, registry, clock=clock)
    await hub.start()
    add_edge_services(server, hub, config.edge)
    return hub
