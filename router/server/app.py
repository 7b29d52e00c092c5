"""Server factory and lifecycle: ``create_server`` for tests and embedding, ``run`` for the CLI.

Lifecycle (SIGTERM/SIGINT): health -> NOT_SERVING, stop accepting new RPCs, let
open streams finish within ``server.grace_period_s``, then cancel what is left.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from hybrid_router.v1 import router_pb2, router_pb2_grpc, sessions_pb2, sessions_pb2_grpc

from router.backends import create_backend
from router.backends.base import Backend
from router.config import RouterConfig
from router.controls import build as build_controls
from router.discovery import start_discovery
from router.dispatch import Dispatcher
from router.errors import ConfigError
from router.preflight import COMPONENTS, OK, WARN, Finding, Options, raise_on_failure
from router.preflight import run as run_preflights
from router.registry import BackendRegistry
from router.server.guard import ServerGuard
from router.server.interceptors import ErrorMappingInterceptor
from router.server.listen import bind_failed, check_address
from router.server.servicer import InferenceRouterServicer, Linger
from router.server.sessions_service import SessionServicer
from router.sessions import build as build_sessions
from router.telemetry.observer import Telemetry
from router.templates import build as build_templates

if TYPE_CHECKING:
    from router.discovery.kubernetes import KubernetesDiscovery
    from router.edge.hub import EdgeHub
    from router.sessions.context import Sessions
    from router.sessions.summaries import Summarizer

log = logging.getLogger(__name__)

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["InferenceRouter"].full_name
SESSIONS_SERVICE_NAME = sessions_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name


class RouterServer:
    """A running router: gRPC server, backend registry and dispatcher."""

    def __init__(
        self,
        config: RouterConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        extra_backends: Sequence[Backend] = (),
        telemetry: Telemetry | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._extra = tuple(extra_backends)
        self.registry = BackendRegistry(config.policy, clock=clock)
        # Auth, TLS, limits, metrics, traces (router/server/guard.py).
        self.guard = ServerGuard(config, self.registry, telemetry=telemetry)
        self.dispatcher = Dispatcher(
            self.registry, config.policy, clock=clock, tracer=self.guard.telemetry.tracer
        )
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self.servicer: InferenceRouterServicer | None = None
        self.port = 0
        self._stopping: asyncio.Task[None] | None = None
        self.discovery: KubernetesDiscovery | None = None
        self.edge: EdgeHub | None = None
        self.sessions: Sessions | None = None
        self.summarizer: Summarizer | None = None
        #: Prompt templates (router/templates/); None without templates.file.
        self.templates = build_templates(config)
        #: Tenant controls (router/controls/): limits, budgets, ledger, cache, PII guard.
        self.controls = build_controls(config)

    @property
    def address(self) -> str:
        host = self.config.server.address.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        if self._server is not None:
            return
        cfg = self.config.server
        await self.preflight()
        await self.guard.start()
        for bcfg in self.config.backends:
            await self.registry.add(create_backend(bcfg))
        for backend in self._extra:
            await self.registry.add(backend)
        # Backends from the Kubernetes API (discovery.kubernetes), beside the static ones.
        self.discovery = await start_discovery(self.config.discovery, self.registry)
        self.registry.start_polling()
        # Load exact tokenizers' vocabularies now, off the event loop, not on a first request.
        ids = {e.spec.tokenizer_id for e in self.registry.entries()}
        exact = await asyncio.to_thread(self.dispatcher.tokens.warm, ids)
        for tid, ok in exact.items():
            if not ok:
                log.warning("tokenizer %s could not load: prompts are estimated instead", tid)

        server = grpc.aio.server(
            interceptors=[
                ErrorMappingInterceptor(on_malformed=self.guard.malformed),
                *self.guard.interceptors(),
            ],
            options=[
                ("grpc.max_receive_message_length", cfg.max_receive_message_bytes),
                ("grpc.max_concurrent_streams", cfg.max_concurrent_streams),
                ("grpc.so_reuseport", 0),
                # Long-lived clients (Lambda channels, edge links) ping to keep NAT and load
                # balancer paths open; accept pings every 30 s, also between calls.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 30_000),
                ("grpc.http2.max_ping_strikes", 0),
            ],
        )
        descriptions = {b.name: b.description for b in self.config.backends if b.description}
        self.servicer = InferenceRouterServicer(
            self.dispatcher,
            coalesce=cfg.coalesce_deltas,
            clock=self._clock,
            descriptions=descriptions,
            limits=cfg.limits,
            linger=Linger(
                cfg.coalesce_linger_ms / 1000.0,
                cfg.coalesce_linger_tokens,
                cfg.coalesce_busy_lag_ms / 1000.0,
            ),
            templates=self.templates,
            controls=self.controls,
        )
        router_pb2_grpc.add_InferenceRouterServicer_to_server(self.servicer, server)
        # Conversations for stateless callers (router/sessions/): the store opens lazily.
        self.sessions, self.summarizer = build_sessions(self.config.sessions, self.dispatcher)
        sessions_pb2_grpc.add_SessionServiceServicer_to_server(
            SessionServicer(self.sessions, max_system_bytes=cfg.limits.max_prompt_bytes), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        # Edge devices dial in over EdgeLink (router/server/edge_link.py, the hub in
        # router/edge/); nothing of it is imported while edge.enabled is off.
        if self.config.edge.enabled:
            from router.server.edge_link import start_edge

            self.edge = await start_edge(self.config, self.registry, server, clock=self._clock)
        if cfg.reflection:
            reflection.enable_server_reflection(
                (
                    SERVICE_NAME,
                    SESSIONS_SERVICE_NAME,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ),
                server,
            )
        try:
            self.port = self.guard.bind(server, cfg.address)
        except RuntimeError:  # grpcio >= 1.60 raises "Failed to bind" instead of returning 0
            self.port = 0
        if self.port == 0:
            raise self.config.locate(bind_failed(cfg.address))
        await server.start()
        self._server = server
        for svc in ("", SERVICE_NAME):
            await self.health.set(svc, health_pb2.HealthCheckResponse.SERVING)
        log.info("router listening on %s with %d backends", self.address, len(self.registry))

    async def preflight(self) -> list[Finding]:
        """The start-up checks ``hybrid-router check`` runs (router/preflight.py): raises
        ConfigError with the text check prints for a failure (nothing else is logged
        then), else logs each warning, named by its check."""
        findings = await run_preflights(
            COMPONENTS, self.config, os.environ, options=Options(tokens=self.dispatcher.tokens)
        )
        raise_on_failure(findings)
        for f in findings:
            if f.level == WARN:
                log.warning("%s: %s", f.component, f.text)
        return findings

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, refuse new RPCs, wait up to ``grace`` s for open streams."""
        if self._server is None:
            return
        if grace is None:
            grace = self.config.server.grace_period_s
        await self.health.enter_graceful_shutdown()
        log.info("draining: up to %.1fs for open streams", grace)
        # Device links stay open until the requests on them end, then close (router/edge/).
        edge_drain = None if self.edge is None else asyncio.ensure_future(self.edge.drain(grace))
        await self._server.stop(grace)
        if edge_drain is not None:
            await edge_drain
        await self.stop_discovery()
        await self.close_sessions()
        await self.registry.close()
        await self.guard.close()
        if self.servicer is not None:
            self.servicer.close()
        self._server = None

    async def close_sessions(self) -> None:
        if self.summarizer is not None:
            await self.summarizer.close()
            self.summarizer = None
        if self.sessions is not None:
            await self.sessions.store.close()
            self.sessions = None
        if self.templates is not None:
            await self.templates.store.close()
        await self.controls.close()

    async def stop_discovery(self) -> None:
        if self.discovery is not None:
            await self.discovery.stop()
            self.discovery = None
        if self.edge is not None:
            await self.edge.stop()
            self.edge = None

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def create_server(
    config: RouterConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    extra_backends: Sequence[Backend] = (),
    telemetry: Telemetry | None = None,
) -> RouterServer:
    """Build, bind and start a router (port 0 in config picks a free port: see ``.port``).

    ``telemetry``: record into this instead of what ``config.telemetry`` builds (tests).
    Raises ConfigError (e.g. no API keys on a non-loopback address) or OSError.
    """
    server = RouterServer(config, clock=clock, extra_backends=extra_backends, telemetry=telemetry)
    try:
        await server.start()
    except BaseException:
        await server.stop_discovery()
        await server.close_sessions()
        await server.registry.close()
        await server.guard.close()
        raise
    return server


async def _serve(config: RouterConfig, ready: Callable[[RouterServer], None]) -> None:
    server = await create_server(config)
    # Everything allocated at start-up (modules, config, tokenizers, channels) lives as
    # long as the process: keep it out of every later collection's scan.
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready(server)
    waiter = loop.create_task(server.wait_for_termination())
    stopper = loop.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    await server.stop()
    waiter.cancel()


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop for ``server.event_loop``: None is asyncio's default.

    Raises ConfigError when ``uvloop`` is asked for and not installed.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "server.event_loop: uvloop is not installed; install it "
                "(pip install 'hybrid-router[fast]') or set server.event_loop to auto or asyncio"
            ) from None
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``server.event_loop``: the loop ``serve`` would run on (uvloop installed when asked);
    ``server.address``: free to listen on (router/server/listen.py)."""
    choice = config.server.event_loop
    try:
        factory = loop_factory(choice)
    except ConfigError as exc:
        return [Finding.failed("event loop", exc)]
    used = "asyncio" if factory is None else "uvloop"
    findings = [
        Finding(OK, "event loop", "server.event_loop", f"server.event_loop {choice}: {used}")
    ]
    address = config.server.address
    try:
        check_address(address)
    except ConfigError as exc:
        findings.append(Finding.failed("listen", exc))
    else:
        findings.append(Finding(OK, "listen", "server.address", f"{address} is free"))
    return findings


def run(config: RouterConfig) -> int:
    """Serve until SIGTERM/SIGINT, then drain. Prints ``READY <port>`` once serving."""

    def ready(server: RouterServer) -> None:
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        print(f"READY {server.port} (hybrid-router listening on {server.address})", flush=True)
        log.info("event loop: %s", loop)

    try:
        with asyncio.Runner(loop_factory=loop_factory(config.server.event_loop)) as runner:
            runner.run(_serve(config, ready))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"error: {config.locate(exc)}", file=sys.stderr)
        return 2
    return 0
