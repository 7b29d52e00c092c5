"""The relay port: other router replicas reach the devices this replica holds.

A small grpc.aio server on ``edge.relay.address`` that implements ModelService; the
device is named by the ``x-edge-device`` metadata. ``Generate`` sends the request down the
device's link and streams the device's events back; ``Info`` answers from the device's
last heartbeat. Statuses follow the ModelService contract, so the calling replica's
:class:`~router.backends.edge_relay.RelayBackend` (a ModelService client) classifies them like
any model server's. The servicer raises the tree's errors (``router.errors``) and the
port's :class:`~router.server.interceptors.ErrorMappingInterceptor` ends the RPC with
their status, also after events were sent:

=============================================  ==================  ======================
device not linked here, offline, draining      UNAVAILABLE         DeviceUnavailable
link closed                                    UNAVAILABLE         LinkClosed
no event in time                               UNAVAILABLE         SilenceTimeout
RequestError ``retryable``                     UNAVAILABLE         DeviceRequestError
RequestError ``too_large``                     OUT_OF_RANGE        DeviceRequestError
RequestError ``fatal``                         INVALID_ARGUMENT    DeviceRequestError
no device named                                INVALID_ARGUMENT    InvalidRequest
wrong or missing relay token                   UNAUTHENTICATED     Unauthenticated
anything else                                  INTERNAL            (logged)
=============================================  ==================  ======================

The port is for replicas only: bind it to the pod IP, keep it out of the Service, allow
only router pods (NetworkPolicy), and set ``edge.relay.token_env``.

Mutual TLS (``edge.relay.tls``, :class:`RelayTls`): the port asks every caller for a
certificate that chains to ``ca_file`` and presents ``cert_file``; a replica dialing it
presents the same kind of certificate and verifies the port's as ``server_name`` (pod IPs
are not in the certificate). The files are re-read like the router port's
(``router.security.tls``): the port checks them before each new connection's handshake,
a dialing replica when it makes a channel and, every RECHECK_S, before a request, making a
new channel when they changed. The token still applies on top.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING

import grpc
import grpc.aio
from hybrid_router.v1 import model_service_pb2 as mpb
from hybrid_router.v1 import model_service_pb2_grpc

from router.backends.device_link import link_events
from router.backends.edge_relay import DEVICE_METADATA, TOKEN_METADATA
from router.backends.model_service import CHANNEL_OPTIONS
from router.config import TlsConfig
from router.config.edge import EdgeRelayTlsConfig
from router.edge.devices import DeviceEntry
from router.errors import ConfigError, DeviceUnavailable, InvalidRequest, Unauthenticated
from router.preflight import Finding, Options
from router.security.tls import CertificateFiles, TlsKeys, certificate_validity
from router.server.interceptors import ErrorMappingInterceptor

if TYPE_CHECKING:
    from router.config import RouterConfig

log = logging.getLogger(__name__)

#: Seconds between checks of the relay credential files by a dialing replica.
RECHECK_S = 10.0

RELAY_KEYS = TlsKeys(
    cert="edge.relay.tls.cert_file", key="edge.relay.tls.key_file", ca="edge.relay.tls.ca_file"
)


class RelayTls:
    """The relay port's mTLS credentials, server side and client side.

    Raises ConfigError naming the ``edge.relay.tls`` key of a missing or bad file. A
    rotated set that does not check out is not used (the last good one is, with a
    warning), exactly as on the router port.
    """

    def __init__(
        self,
        cfg: EdgeRelayTlsConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        recheck_s: float | None = None,
    ) -> None:
        """``recheck_s``: seconds between checks of the files by the dialing side
        (None: RECHECK_S)."""
        files = TlsConfig(
            cert_file=cfg.cert_file,
            key_file=cfg.key_file,
            client_ca_file=cfg.ca_file,
            require_client_cert=True,
        )
        # Two readers: each notices a change once, and both the port and the dialer must.
        self._server = CertificateFiles(files, keys=RELAY_KEYS)
        self._client = CertificateFiles(files, keys=RELAY_KEYS)
        self.server_name = cfg.server_name
        self._clock = clock
        self._recheck_s = RECHECK_S if recheck_s is None else recheck_s
        self._checked_at = clock()
        self._generation = 0

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials for the relay port: client certificates required, files re-read
        before each new connection."""
        return self._server.credentials()

    def _refresh(self) -> None:
        self._checked_at = self._clock()
        if self._client.fetch() is not None:
            self._generation += 1

    def generation(self) -> int:
        if self._clock() - self._checked_at >= self._recheck_s:
            self._refresh()
        return self._generation

    def channel(self, endpoint: str) -> tuple[int, grpc.aio.Channel]:
        """A channel to a peer's relay port with the files as they are now."""
        self._refresh()
        cert, key, ca = self._client.pem()
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )
        options = (*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", self.server_name))
        return self._generation, grpc.aio.secure_channel(endpoint, creds, options=options)


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

    def _entry(self, context: grpc.aio.ServicerContext) -> DeviceEntry:
        """The linked, available device the call names. Raises Unauthenticated,
        InvalidRequest or DeviceUnavailable."""
        if self._token:
            given = _meta(context, TOKEN_METADATA).encode()
            if not hmac.compare_digest(given, self._token):
                raise Unauthenticated(
                    f"relay calls need the shared token in '{TOKEN_METADATA}' metadata"
                )
        device = _meta(context, DEVICE_METADATA)
        if not device:
            raise InvalidRequest("", f"name the device in '{DEVICE_METADATA}'")
        entry = self._local(device)
        if entry is None or entry.link is None or entry.link.closed:
            raise DeviceUnavailable(f"device {device!r} is not linked to replica {self._router_id}")
        why = entry.availability()
        if why:
            raise DeviceUnavailable(f"device {device!r}: {why}")
        return entry

    async def Generate(  # noqa: N802 - gRPC method name
        self, request: mpb.ModelGenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[mpb.ModelGenerateEvent]:
        """The device's events; a DeviceError (LinkClosed, SilenceTimeout,
        DeviceRequestError) ends the RPC with its status, also after events were sent."""
        link = self._entry(context).link
        assert link is not None
        events = link_events(link, request, silence_s=self._silence_s)
        async with contextlib.aclosing(events):
            async for event in events:
                yield event

    async def Info(  # noqa: N802
        self, request: mpb.InfoRequest, context: grpc.aio.ServicerContext
    ) -> mpb.InfoResponse:
        entry = self._entry(context)
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
            prefill_tokens_per_s=s.prefill_tokens_per_s,
            engine="edge",
            replica_id=s.device_id,
            model_family=model.model_family if model else "",
        )


async def start_relay_server(
    servicer: RelayServicer, address: str, tls: RelayTls | None = None
) -> tuple[grpc.aio.Server, int]:
    """Bind and start the relay port (mTLS with ``tls``); (server, port). Raises OSError
    when it cannot bind. Errors become statuses as on the router port (one interceptor)."""
    server = grpc.aio.server(
        interceptors=[ErrorMappingInterceptor()], options=[("grpc.so_reuseport", 0)]
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, tls.server_credentials())
    except RuntimeError as exc:
        raise OSError(f"edge.relay.address {address}: cannot bind: {exc}") from exc
    if port == 0:
        raise OSError(f"edge.relay.address {address}: cannot bind (in use?)")
    await server.start()
    log.info(
        "edge relay port listening on %s%s",
        address.rpartition(":")[0] + f":{port}",
        " (mTLS)" if tls is not None else "",
    )
    return server, port


def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``edge.relay.tls``: the relay port's files load as the port loads them
    (:class:`RelayTls`), and its certificate is valid now."""
    tls = config.edge.relay.tls
    if not config.edge.enabled or not tls.enabled:
        return []
    try:
        RelayTls(tls)
    except ConfigError as exc:
        return [Finding.failed("edge.relay.tls", exc)]
    return [
        certificate_validity(
            "edge.relay.tls",
            tls.cert_file,
            "edge.relay.tls.cert_file",
            f"key matches; peers verified against {tls.ca_file}",
            opts.now(),
        )
    ]
