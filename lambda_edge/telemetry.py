"""Powertools Logger, Tracer and EMF metrics for the handlers, and the router span.

One EMF line per router call with the dimensions ``tier`` and ``backend`` (metrics:
``RouterLatency``, ``TimeToFirstToken`` in ms, ``CostUSD``, ``InputTokens``,
``OutputTokens``) and one per failure (``RouterErrors`` by ``status``). Logs carry ids,
sizes, the decision and the status, never prompt or completion text.

The router call runs in an X-Ray subsegment when tracing is on; its W3C ``traceparent``
(X-Ray trace id, subsegment id as parent) goes to the router as metadata, so the
router's spans join the Lambda's trace. With tracing off, Lambda's ``_X_AMZN_TRACE_ID``
header is converted as it is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.tracing import Tracer
from hybrid_router.client import TIERS, traceparent_from_xray, valid_traceparent
from hybrid_router.client.context import ENV_XRAY_TRACE
from hybrid_router.v1 import router_pb2 as rpb


def tracing_enabled(explicit: bool | None = None) -> bool:
    """As Powertools decides: off when POWERTOOLS_TRACE_DISABLED is true, outside Lambda
    (no LAMBDA_TASK_ROOT) and under SAM local."""
    if explicit is not None:
        return explicit
    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return False
    return bool(os.environ.get("LAMBDA_TASK_ROOT")) and not os.environ.get("AWS_SAM_LOCAL")


class Telemetry:
    def __init__(
        self,
        *,
        service: str,
        namespace: str,
        patch_modules: Sequence[str] = (),
        tracing: bool | None = None,
    ) -> None:
        self.service = service
        self.namespace = namespace
        self.logger = Logger(service=service)
        # The X-Ray SDK (and botocore with it) is imported only when tracing is on:
        # about 200 ms of init saved where it is off (local runs, tests, benchmarks).
        self.tracer: Tracer | None = None
        if tracing_enabled(tracing):
            self.tracer = Tracer(
                service=service,
                auto_patch=bool(patch_modules),
                patch_modules=list(patch_modules) or None,
            )

    @contextmanager
    def router_span(self, name: str, incoming: str | None = None) -> Iterator[str | None]:
        """A span around one router call; yields the traceparent to send.

        ``incoming`` (a caller's own W3C traceparent) wins: the router joins the caller's
        trace rather than the Lambda's."""
        caller = valid_traceparent(incoming)
        if self.tracer is None or self.tracer.disabled:
            yield caller or traceparent_from_xray(os.environ.get(ENV_XRAY_TRACE))
            return
        with self.tracer.provider.in_subsegment(name) as segment:
            sub: Any = segment
            own = traceparent_from_xray(
                f"Root={sub.trace_id};Sampled={1 if getattr(sub, 'sampled', True) else 0}",
                parent_id=sub.id,
            )
            yield caller or own

    def usage(self, kind: str, usage: rpb.Usage | None, *, request_id: str) -> None:
        if usage is None:
            return
        tier = TIERS.name(usage.tier, "unknown")
        backend = usage.backend or "unknown"
        m = EphemeralMetrics(namespace=self.namespace, service=self.service)
        m.add_dimension(name="tier", value=tier)
        m.add_dimension(name="backend", value=backend)
        m.add_metric(name="RouterLatency", unit=MetricUnit.Milliseconds, value=usage.total_ms)
        m.add_metric(name="TimeToFirstToken", unit=MetricUnit.Milliseconds, value=usage.ttft_ms)
        m.add_metric(name="CostUSD", unit=MetricUnit.NoUnit, value=usage.cost_usd)
        m.add_metric(name="InputTokens", unit=MetricUnit.Count, value=usage.input_tokens)
        m.add_metric(name="OutputTokens", unit=MetricUnit.Count, value=usage.output_tokens)
        m.flush_metrics()
        self.logger.info(
            "router call done",
            extra={
                "kind": kind,
                "request_id": request_id,
                "tier": tier,
                "backend": backend,
                "latency_ms": round(usage.total_ms, 1),
                "ttft_ms": round(usage.ttft_ms, 1),
                "cost_usd": usage.cost_usd,
                "output_tokens": usage.output_tokens,
                "complete": usage.complete,
            },
        )

    def failure(self, kind: str, code: str, message: str, *, request_id: str, **extra: Any) -> None:
        m = EphemeralMetrics(namespace=self.namespace, service=self.service)
        m.add_dimension(name="status", value=code)
        m.add_metric(name="RouterErrors", unit=MetricUnit.Count, value=1)
        m.flush_metrics()
        self.logger.warning(
            "router call failed",
            extra={"kind": kind, "request_id": request_id, "status": code, "error": message}
            | extra,
        )
