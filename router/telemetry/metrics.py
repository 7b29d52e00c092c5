"""Metrics: a small recording interface, its Prometheus implementation and /metrics.

The router records through :class:`Metrics`; the base class records nothing, so unit
tests, benches and a router without ``telemetry.metrics.address`` pay one no-op call per
event. :class:`PrometheusMetrics` keeps one ``prometheus_client`` registry per router
(never the global one) and caches label children per backend, so a request resolves
its labels once. Backend state (circuit, in flight, health, reported load) is read from
the backend registry when Prometheus scrapes, never on the request path. Names and
labels: docs/telemetry.md.

``/metrics`` is served by :class:`MetricsServer`, a minimal HTTP/1.1 server on the
router's own event loop (no thread touches router state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from router.types import CircuitState, FailoverEvent, Plan, UsageEvent

log = logging.getLogger(__name__)

NS = "hybrid_router"
#: Seconds; LLM latencies run from milliseconds (edge TTFT) to minutes (long outputs).
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
DECISION_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05,
)  # fmt: skip
CIRCUIT_VALUE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


class Metrics:
    """What the router records. This base records nothing."""

    def stream_opened(self) -> None:
        """A Generate stream started (in-flight streams gauge)."""

    def stream_closed(self) -> None:
        """A Generate stream ended, however it ended."""

    def request_done(self, method: str, code: str, tenant: str, seconds: float) -> None:
        """An RPC of ours ended with gRPC status ``code`` after ``seconds``."""

    def decision(self, plan: Plan) -> None:
        """The policy's plan for a request (primary, objective, budget, rejections)."""

    def failover(self, event: FailoverEvent) -> None:
        """Dispatch moved from one backend to the next before the first token."""

    def usage(self, event: UsageEvent) -> None:
        """The final figures of a stream: TTFT, total, tokens, cost."""

    def limit_rejected(self, limit: str) -> None:
        """A request or stream refused by a configured limit (``server.limits.*``)."""

    def set_edge_devices_online(self, count: int) -> None:
        """Edge devices connected to this replica (the edge link feeds it)."""

    def control(self, control: str, outcome: str, tenant: str) -> None:
        """A tenant control acted (router/controls/): ``control`` (rate_limit, budget,
        cache, pii, ledger), ``outcome`` (refused, hit, miss, routed, redacted...)."""

    def tenant_usage(self, tenant: str, input_tokens: int, output_tokens: int, cost: float) -> None:
        """One request's tokens and spend, by tenant ("" = no API key)."""


NULL_METRICS = Metrics()


class _BackendChildren:
    __slots__ = ("ttft", "duration", "tokens_in", "tokens_out", "cost", "incomplete")

    def __init__(self, m: PrometheusMetrics, tier: str, backend: str) -> None:
        self.ttft = m.ttft.labels(tier, backend)
        self.duration = m.backend_duration.labels(tier, backend)
        self.tokens_in = m.tokens.labels(tier, backend, "in")
        self.tokens_out = m.tokens.labels(tier, backend, "out")
        self.cost = m.cost.labels(tier, backend)
        self.incomplete = m.incomplete.labels(tier, backend)


class PrometheusMetrics(Metrics):
    """:class:`Metrics` on a private ``prometheus_client`` registry."""

    def __init__(self, backends: Any = None) -> None:
        """``backends``: a ``router.registry.BackendRegistry`` read at scrape time."""
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{NS}_requests", "RPCs by method, gRPC status code and tenant.",
            ["method", "code", "tenant"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            f"{NS}_request_duration_seconds",
            "RPC time in the router, start to status (decision, failovers, stream).",
            ["method"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.decisions = Counter(
            f"{NS}_decisions", "Plans by primary backend, objective and latency budget outcome.",
            ["tier", "backend", "objective", "budget"], registry=r,
        )  # fmt: skip
        self.decision_seconds = Histogram(
            f"{NS}_decision_seconds", "Time to compute a plan (features + policy).",
            buckets=DECISION_BUCKETS, registry=r,
        )  # fmt: skip
        self.rejections = Counter(
            f"{NS}_candidate_rejections",
            "Backends turned away by a policy filter, by backend and filter.",
            ["backend", "filter"], registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            f"{NS}_ttft_seconds", "Time to first token of the backend that served a stream.",
            ["tier", "backend"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.backend_duration = Histogram(
            f"{NS}_backend_duration_seconds",
            "Total time of the serving backend's stream, its start to the last token.",
            ["tier", "backend"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            f"{NS}_tokens", "Tokens by backend and direction (in: prompt, out: completion).",
            ["tier", "backend", "direction"], registry=r,
        )  # fmt: skip
        self.cost = Counter(
            f"{NS}_cost_usd", "Estimated cost in USD (docs/policy.md formulas).",
            ["tier", "backend"], registry=r,
        )  # fmt: skip
        self.incomplete = Counter(
            f"{NS}_incomplete_streams",
            "Streams whose backend failed after the first token.",
            ["tier", "backend"], registry=r,
        )  # fmt: skip
        self.failovers = Counter(
            f"{NS}_failovers", "Moves to the next backend before the first token.",
            ["from_backend", "to_backend"], registry=r,
        )  # fmt: skip
        self.limits = Counter(
            f"{NS}_limit_rejections", "Requests or streams refused by a limit.",
            ["limit"], registry=r,
        )  # fmt: skip
        self.controls = Counter(
            f"{NS}_control_events", "Tenant controls acting: limits, budgets, cache, PII.",
            ["control", "outcome", "tenant"], registry=r,
        )  # fmt: skip
        self.tenant_tokens = Counter(
            f"{NS}_tenant_tokens", "Tokens by tenant and direction.",
            ["tenant", "direction"], registry=r,
        )  # fmt: skip
        self.tenant_cost = Counter(
            f"{NS}_tenant_cost_usd", "Spend by tenant, USD.", ["tenant"], registry=r
        )
        self.inflight = Gauge(
            f"{NS}_inflight_streams", "Generate streams open on this replica.", registry=r
        )
        self.edge_online = Gauge(
            f"{NS}_edge_devices_online", "Edge devices connected to this replica.", registry=r
        )
        if backends is not None:
            r.register(_BackendStateCollector(backends))
        self._by_backend: dict[tuple[str, str], _BackendChildren] = {}
        self._decisions: dict[tuple[str, str, str, str], Any] = {}
        self._requests: dict[tuple[str, str, str], Any] = {}
        self._durations: dict[str, Any] = {}
        self._rejections: dict[tuple[str, str], Any] = {}
        self._failovers: dict[tuple[str, str], Any] = {}

    def _backend(self, tier: str, backend: str) -> _BackendChildren:
        key = (tier, backend)
        c = self._by_backend.get(key)
        if c is None:
            c = self._by_backend[key] = _BackendChildren(self, tier, backend)
        return c

    def stream_opened(self) -> None:
        self.inflight.inc()

    def stream_closed(self) -> None:
        self.inflight.dec()

    def request_done(self, method: str, code: str, tenant: str, seconds: float) -> None:
        key = (method, code, tenant)
        c = self._requests.get(key)
        if c is None:
            c = self._requests[key] = self.requests.labels(method, code, tenant)
        c.inc()
        d = self._durations.get(method)
        if d is None:
            d = self._durations[method] = self.request_duration.labels(method)
        d.observe(seconds)

    def decision(self, plan: Plan) -> None:
        primary = plan.report(plan.primary)
        tier = primary.tier.value if primary is not None else ""
        budget = "unmet" if plan.budget_unmet else "met"
        key = (tier, plan.primary, plan.objective.value, budget)
        c = self._decisions.get(key)
        if c is None:
            c = self._decisions[key] = self.decisions.labels(*key)
        c.inc()
        self.decision_seconds.observe(plan.decision_us / 1e6)
        for cand in plan.candidates:
            if cand.accepted:
                continue
            rkey = (cand.backend, cand.rejected_by)
            rc = self._rejections.get(rkey)
            if rc is None:
                rc = self._rejections[rkey] = self.rejections.labels(*rkey)
            rc.inc()

    def failover(self, event: FailoverEvent) -> None:
        key = (event.from_backend, event.to_backend)
        c = self._failovers.get(key)
        if c is None:
            c = self._failovers[key] = self.failovers.labels(*key)
        c.inc()

    def usage(self, event: UsageEvent) -> None:
        c = self._backend(event.tier.value, event.backend)
        if event.complete:
            c.ttft.observe(event.ttft_ms / 1000.0)
            c.duration.observe(event.total_ms / 1000.0)
        else:
            c.incomplete.inc()
        c.tokens_in.inc(event.input_tokens)
        c.tokens_out.inc(event.output_tokens)
        if event.cost_usd > 0:
            c.cost.inc(event.cost_usd)

    def limit_rejected(self, limit: str) -> None:
        self.limits.labels(limit).inc()

    def set_edge_devices_online(self, count: int) -> None:
        self.edge_online.set(count)

    def control(self, control: str, outcome: str, tenant: str) -> None:
        self.controls.labels(control, outcome, tenant or "-").inc()

    def tenant_usage(self, tenant: str, input_tokens: int, output_tokens: int, cost: float) -> None:
        t = tenant or "-"
        self.tenant_tokens.labels(t, "in").inc(input_tokens)
        self.tenant_tokens.labels(t, "out").inc(output_tokens)
        if cost > 0:
            self.tenant_cost.labels(t).inc(cost)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _BackendStateCollector:
    """Per-backend gauges read from the backend registry at scrape time."""

    def __init__(self, backends: Any) -> None:
        self._backends = backends

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["tier", "backend"]
        circuit = GaugeMetricFamily(
            f"{NS}_backend_circuit_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open.", labels=labels,
        )  # fmt: skip
        inflight = GaugeMetricFamily(
            f"{NS}_backend_in_flight", "Streams this replica has open to the backend.",
            labels=labels,
        )  # fmt: skip
        healthy = GaugeMetricFamily(
            f"{NS}_backend_healthy", "1 when the backend's last load probe answered.",
            labels=labels,
        )  # fmt: skip
        load = GaugeMetricFamily(
            f"{NS}_backend_reported_load",
            "Queued + running requests the backend reports (deployment-wide), if any.",
            labels=labels,
        )  # fmt: skip
        opened = CounterMetricFamily(
            f"{NS}_backend_circuit_opened", "Times the backend's circuit opened.",
            labels=labels,
        )  # fmt: skip
        for e in self._backends.entries():
            lv = [e.spec.tier.value, e.spec.name]
            st = e.stats
            circuit.add_metric(lv, CIRCUIT_VALUE[st.breaker.state])
            inflight.add_metric(lv, st.in_flight)
            healthy.add_metric(lv, 1 if st.healthy else 0)
            if st.reported_load is not None:
                load.add_metric(lv, st.reported_load)
            opened.add_metric(lv, st.breaker.opened)
        yield from (circuit, inflight, healthy, load, opened)
        try:  # scraped on the router's own loop (MetricsServer); a leak shows here
            tasks = len(asyncio.all_tasks(asyncio.get_running_loop()))
        except RuntimeError:
            return
        yield GaugeMetricFamily(
            f"{NS}_event_loop_tasks", "asyncio tasks alive on the router's event loop.", tasks
        )


# --- /metrics over HTTP ---------------------------------------------------------------------

_MAX_HEAD = 8192
_READ_TIMEOUT_S = 5.0


class MetricsServer:
    """GET /metrics on ``host:port``, served on the running event loop."""

    def __init__(self, metrics: PrometheusMetrics, address: str) -> None:
        self._metrics = metrics
        self._address = address
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        host, _, port = self._address.rpartition(":")
        host = host.strip("[]")
        try:
            self._server = await asyncio.start_server(self._handle, host, int(port))
        except OSError as exc:
            raise OSError(
                f"cannot bind telemetry.metrics.address {self._address}: {exc.strerror}"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > _MAX_HEAD:
                raise ValueError("head too large")
            method, path, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            path = path.split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                await _respond(writer, 405, b"method not allowed\n", "text/plain")
            elif path not in ("/metrics", "/"):
                await _respond(writer, 404, b"not found: try /metrics\n", "text/plain")
            else:
                from prometheus_client import CONTENT_TYPE_LATEST

                body = self._metrics.exposition()
                await _respond(writer, 200, body, CONTENT_TYPE_LATEST, head_only=method == "HEAD")
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            with contextlib.suppress(Exception):
                await _respond(writer, 400, b"bad request\n", "text/plain")
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str, head_only: bool = False
) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}[status]
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
    )
    if not head_only:
        writer.write(body)
    await writer.drain()
