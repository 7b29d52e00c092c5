"""``telemetry:``: Prometheus metrics, tracing, request logs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from router.config._base import _Model


class MetricsConfig(_Model):
    #: host:port of the Prometheus /metrics HTTP endpoint ("" = off; port 0 = any free port).
    address: str = ""

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if v:
            host, sep, port = v.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"must be host:port (e.g. 0.0.0.0:9464) or empty, got {v!r}")
        return v


class TracingConfig(_Model):
    #: "none" (no spans leave the process) or "otlp" (OTLP over gRPC).
    exporter: Literal["none", "otlp"] = "none"
    #: OTLP endpoint, e.g. http://otel-collector:4317 ("" = the exporter's default).
    endpoint: str = ""
    #: Fraction of new traces sampled (a caller's sampled flag is honoured).
    sample_ratio: float = Field(1.0, ge=0, le=1)
    service_name: str = "hybrid-router"


class LogsConfig(_Model):
    #: One structured line per request on the router.requests logger.
    requests: bool = True
    #: DEBUG ONLY: add prompt and completion text to the request line.
    content: bool = False


class TelemetryConfig(_Model):
    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig = TracingConfig()
    logs: LogsConfig = LogsConfig()
