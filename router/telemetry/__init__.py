"""Router telemetry: metrics, traces and structured request logs (docs/telemetry.md)."""

from router.telemetry.metrics import NULL_METRICS, Metrics, PrometheusMetrics
from router.telemetry.observer import Telemetry, observer_var

__all__ = ["NULL_METRICS", "Metrics", "PrometheusMetrics", "Telemetry", "observer_var"]
