"""OpenTelemetry traces: provider from config, W3C context in and out.

- One span per RPC (``hybrid_router.<Method>``, kind SERVER), its parent taken from the
  caller's ``traceparent`` / ``tracestate`` gRPC metadata; the decision goes on it as
  attributes (``router.*``, docs/telemetry.md).
- One child span per backend attempt (``hybrid_router.attempt``, kind CLIENT), whose
  context is injected into the backend call: ModelService gRPC metadata and OpenAI HTTP
  headers both carry ``traceparent`` (``BackendCall.metadata``).

``telemetry.tracing.exporter: none`` (default) builds no SDK provider: the tracer is the
OpenTelemetry API's global one, which records nothing unless the embedding process
installed a provider, yet still forwards a caller's ``traceparent`` to the backends.
``otlp`` exports in batches over OTLP/gRPC (``opentelemetry-exporter-otlp-proto-grpc``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from router.config import TracingConfig
from router.errors import ConfigError
from router.preflight import OK, Finding, Options
from router.types import BackendSpec

if TYPE_CHECKING:
    from router.config import RouterConfig

TRACER_NAME = "hybrid_router"
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_KEYS = frozenset({"traceparent", "tracestate"})


def build_provider(cfg: TracingConfig) -> Any | None:
    """An SDK TracerProvider for ``cfg`` (None for exporter ``none``)."""
    if cfg.exporter == "none":
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ConfigError(
            f"telemetry.tracing.exporter 'otlp' needs opentelemetry-exporter-otlp-proto-grpc "
            f"({exc}); pip install 'hybrid-router[router]'",
            key="telemetry.tracing.exporter",
        ) from None
    provider = TracerProvider(
        resource=Resource.create({"service.name": cfg.service_name}),
        sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)),
    )
    exporter = OTLPSpanExporter(endpoint=cfg.endpoint) if cfg.endpoint else OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def tracer_from(provider: Any | None) -> trace.Tracer:
    """The router's tracer: from ``provider``, else the API's global one."""
    if provider is None:
        return trace.get_tracer(TRACER_NAME)
    return provider.get_tracer(TRACER_NAME)  # type: ignore[no-any-return]


def extract(metadata: Iterable[tuple[str, Any]] | None) -> Context | None:
    """The caller's trace context from gRPC metadata (None when it sent none)."""
    carrier = {k: v for k, v in metadata or () if k in _TRACE_KEYS and isinstance(v, str)}
    if not carrier:
        return None
    return _PROPAGATOR.extract(carrier)


def inject(span: trace.Span) -> tuple[tuple[str, str], ...]:
    """``traceparent`` (and ``tracestate``) for ``span``, as metadata/header pairs."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return tuple(carrier.items())


def start_attempt(tracer: trace.Tracer, spec: BackendSpec, attempt: int) -> trace.Span:
    """The span of one backend attempt, a child of the current (request) span."""
    return tracer.start_span(
        "hybrid_router.attempt",
        kind=SpanKind.CLIENT,
        attributes={
            "router.backend": spec.name,
            "router.tier": spec.tier.value,
            "router.backend_kind": spec.kind,
            "router.attempt": attempt,
        },
    )


def end_attempt(span: trace.Span, done: bool, failure: str, first_token: bool) -> None:
    if span.is_recording():
        span.set_attribute("router.first_token", first_token)
        if not done:
            span.set_status(Status(StatusCode.ERROR, failure or "did not complete"))
    span.end()


def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``telemetry.tracing``: the exporter ``serve`` would build is installed."""
    tracing = config.telemetry.tracing
    if tracing.exporter == "none":
        return []
    try:
        provider = build_provider(tracing)
    except ConfigError as exc:
        return [Finding.failed("telemetry.tracing", exc)]
    if provider is not None:
        provider.shutdown()
    return [
        Finding(
            OK,
            "telemetry.tracing",
            "telemetry.tracing",
            f"OTLP exporter to {tracing.endpoint or 'its default endpoint'}",
        )
    ]
