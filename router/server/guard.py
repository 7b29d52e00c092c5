"""Security and telemetry for one RouterServer, built from its config in one place.

``ServerGuard`` owns: the exposure check (no keys only on loopback), the key store and its
refresh task, tenants, stream limits, TLS credentials, the Prometheus metrics and their
HTTP endpoint, and the tracer provider. ``router.server.app`` asks it for interceptors,
binds the port through it and closes it last.

Interceptor order (outermost first): ErrorMapping (request id, error -> status), then
Telemetry (span, metrics, log line: it sees auth failures too), then Auth.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

import grpc

from router.config import RouterConfig
from router.registry import BackendRegistry
from router.security.authn import Authenticator
from router.security.exposure import check_auth_exposure
from router.security.keystore import KeyStore, SecretReader, read_secret
from router.security.limits import StreamLimits
from router.security.tenants import TenantAccess
from router.security.tls import server_credentials
from router.server.auth import AuthInterceptor
from router.server.observe import TelemetryInterceptor
from router.telemetry.metrics import MetricsServer, PrometheusMetrics
from router.telemetry.observer import Telemetry
from router.telemetry.tracing import build_provider

log = logging.getLogger(__name__)


class ServerGuard:
    def __init__(
        self,
        config: RouterConfig,
        registry: BackendRegistry,
        *,
        telemetry: Telemetry | None = None,
        environ: Mapping[str, str] | None = None,
        secret_reader: SecretReader = read_secret,
    ) -> None:
        """``telemetry``: use this instead of building one from ``config.telemetry``
        (tests pass an in-memory span exporter's tracer this way)."""
        self._config = config
        self._environ = os.environ if environ is None else environ
        self._secret_reader = secret_reader
        tcfg = config.telemetry
        self._metrics_server: MetricsServer | None = None
        if telemetry is None:
            metrics = PrometheusMetrics(registry) if tcfg.metrics.address else None
            provider = build_provider(tcfg.tracing)
            kwargs: dict[str, Any] = {} if metrics is None else {"metrics": metrics}
            telemetry = Telemetry(
                **kwargs,
                provider=provider,
                log_requests=tcfg.logs.requests,
                log_content=tcfg.logs.content,
            )
        self.telemetry = telemetry
        limits = config.server.limits
        self.limits = StreamLimits(limits.max_streams_per_connection)
        self.tenants = {
            t.name: TenantAccess.from_config(t, limits.max_streams_per_tenant)
            for t in config.auth.tenants
        }
        self.keys: KeyStore | None = None
        self.notice: str | None = None

    @property
    def metrics_port(self) -> int:
        return self._metrics_server.port if self._metrics_server is not None else 0

    async def start(self) -> None:
        """Check exposure, load keys, start /metrics. Raises ConfigError or OSError.

        The exposure and plaintext notices are logged by the start-up checks that run
        before (``RouterServer.preflight``, router/preflight.py), not again here."""
        cfg = self._config
        self.notice = check_auth_exposure(cfg)
        if self.notice is None:
            self.keys = KeyStore(
                cfg.auth,
                environ=self._environ,
                secret_reader=self._secret_reader,
                tenants=self.tenants,
            )
            await self.keys.load()
            self.keys.start()
        metrics = self.telemetry.metrics
        address = cfg.telemetry.metrics.address
        if address and isinstance(metrics, PrometheusMetrics):
            self._metrics_server = MetricsServer(metrics, address)
            await self._metrics_server.start()

    def malformed(self, method: str, metadata: Any, reason: str) -> None:
        """A request whose bytes did not decode (router/server/interceptors.py): one
        request log line and the request metrics, as INVALID_ARGUMENT."""
        self.telemetry.begin(method.rpartition("/")[2], metadata).finish("INVALID_ARGUMENT", reason)

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        auth = Authenticator(self.keys, self.tenants) if self.keys is not None else None
        return [
            TelemetryInterceptor(self.telemetry),
            AuthInterceptor(
                auth,
                self.limits,
                default_tenant_streams=self._config.server.limits.max_streams_per_tenant,
                metrics=self.telemetry.metrics,
            ),
        ]

    def bind(self, server: grpc.aio.Server, address: str) -> int:
        """Add the listening port (TLS when server.tls is set); the port, 0 on failure."""
        tls = self._config.server.tls
        if tls.enabled:
            port = server.add_secure_port(address, server_credentials(tls))
            log.info(
                "TLS on %s%s",
                address,
                " with client certificates (mTLS)" if tls.client_ca_file else "",
            )
            return port
        return server.add_insecure_port(address)

    async def close(self) -> None:
        if self.keys is not None:
            await self.keys.close()
        if self._metrics_server is not None:
            await self._metrics_server.close()
            self._metrics_server = None
        # Flushing spans is a blocking export (up to its timeout): keep it off the loop.
        await asyncio.to_thread(self.telemetry.shutdown)
