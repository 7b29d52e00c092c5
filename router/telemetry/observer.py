"""One observer per RPC: it feeds metrics, the request span and the request log line.

The server's telemetry interceptor opens an observer when an RPC of ours starts and
closes it with the final status; in between, the auth interceptor tells it the caller,
and the servicer tells it the validated request and the non-delta events of the stream
(Decision, Failover, Usage). Deltas never pass through it unless content logging is on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from router.telemetry.logs import REQUEST_LOGGER, RequestLine
from router.telemetry.metrics import NULL_METRICS, Metrics
from router.telemetry.tracing import extract, tracer_from
from router.types import (
    DecisionEvent,
    FailoverEvent,
    InferenceRequest,
    Plan,
    UsageEvent,
)

request_log = logging.getLogger(REQUEST_LOGGER)
_MAX_ERROR = 300


class Telemetry:
    """What the router records, built once per server (router.server.app)."""

    def __init__(
        self,
        metrics: Metrics = NULL_METRICS,
        tracer: trace.Tracer | None = None,
        *,
        log_requests: bool = True,
        log_content: bool = False,
        provider: Any = None,
    ) -> None:
        self.metrics = metrics
        self.tracer = tracer if tracer is not None else tracer_from(provider)
        self.log_requests = log_requests
        self.log_content = log_content
        self.provider = provider

    def begin(self, method: str, metadata: Iterable[tuple[str, Any]] | None) -> Observer:
        return Observer(self, method, metadata)

    def shutdown(self) -> None:
        """Flush and stop the span exporter (if this router built one)."""
        if self.provider is not None:
            self.provider.shutdown()


class Observer:
    __slots__ = (
        "_t",
        "method",
        "span",
        "context",
        "tenant",
        "key_id",
        "request",
        "plan",
        "usage",
        "failovers",
        "text",
        "_t0",
    )

    def __init__(
        self, telemetry: Telemetry, method: str, metadata: Iterable[tuple[str, Any]] | None
    ) -> None:
        self._t = telemetry
        self._t0 = time.perf_counter()
        self.method = method
        parent = extract(metadata)
        self.span = telemetry.tracer.start_span(
            f"hybrid_router.{method}", context=parent, kind=SpanKind.SERVER
        )
        self.context: Context = trace.set_span_in_context(self.span, parent)
        self.tenant = ""
        self.key_id = ""
        self.request: InferenceRequest | None = None
        self.plan: Plan | None = None
        self.usage: UsageEvent | None = None
        self.failovers: list[FailoverEvent] = []
        #: Completion text, collected only when content logging is on.
        self.text: list[str] | None = [] if telemetry.log_content else None

    # --- what the interceptors and the servicer report ----------------------------------

    def set_principal(self, tenant: str, key_id: str) -> None:
        self.tenant = tenant
        self.key_id = key_id
        if self.span.is_recording():
            self.span.set_attribute("router.tenant", tenant)

    def limit_rejected(self, limit: str) -> None:
        self._t.metrics.limit_rejected(limit)

    def control(self, control: str, outcome: str) -> None:
        """A tenant control acted on this request (router/controls/)."""
        self._t.metrics.control(control, outcome, self.tenant)

    def set_request(self, request: InferenceRequest) -> None:
        self.request = request
        span = self.span
        if span.is_recording():
            span.set_attribute("router.request_id", request.request_id)
            span.set_attribute("router.data_class", request.data_class.value)

    def decision(self, plan: Plan) -> None:
        self.plan = plan
        self._t.metrics.decision(plan)
        span = self.span
        if span.is_recording():
            primary = plan.report(plan.primary)
            attrs: dict[str, Any] = {
                "router.backend": plan.primary,
                "router.fallbacks": list(plan.fallbacks),
                "router.objective": plan.objective.value,
                "router.budget_unmet": plan.budget_unmet,
                "router.decision_us": plan.decision_us,
            }
            if primary is not None:
                attrs["router.tier"] = primary.tier.value
                if primary.estimate is not None:
                    attrs["router.estimate.ttft_ms"] = primary.estimate.ttft_ms
                    attrs["router.estimate.cost_usd"] = primary.estimate.cost_usd
                    attrs["router.prompt_tokens"] = primary.estimate.prompt_tokens
            span.set_attributes(attrs)

    def event(self, ev: object) -> None:
        """A non-delta event of the Generate stream."""
        t = type(ev)
        # Span attributes are kept to what a trace view needs: exporting costs CPU per
        # attribute (docs/telemetry.md); the request log line has the full picture.
        if t is DecisionEvent:
            self.decision(ev.plan)  # type: ignore[attr-defined]
        elif t is FailoverEvent:
            self.failovers.append(ev)  # type: ignore[arg-type]
            self._t.metrics.failover(ev)  # type: ignore[arg-type]
            if self.span.is_recording():
                self.span.add_event(
                    "failover",
                    {
                        "from_backend": ev.from_backend,  # type: ignore[attr-defined]
                        "to_backend": ev.to_backend,  # type: ignore[attr-defined]
                        "reason": ev.reason,  # type: ignore[attr-defined]
                    },
                )
        elif t is UsageEvent:
            self.usage = ev  # type: ignore[assignment]
            self._t.metrics.usage(ev)  # type: ignore[arg-type]
            self._t.metrics.tenant_usage(
                self.tenant,
                ev.input_tokens,  # type: ignore[attr-defined]
                ev.output_tokens,  # type: ignore[attr-defined]
                ev.cost_usd,  # type: ignore[attr-defined]
            )
            span = self.span
            if span.is_recording():
                u: UsageEvent = ev  # type: ignore[assignment]
                span.set_attributes(
                    {
                        "router.served_by": u.backend,
                        "router.input_tokens": u.input_tokens,
                        "router.output_tokens": u.output_tokens,
                        "router.cost_usd": u.cost_usd,
                        "router.ttft_ms": u.ttft_ms,
                        "router.complete": u.complete,
                        "router.attempts": u.attempts,
                    }
                )

    # --- the end ----------------------------------------------------------------------

    def finish(self, code: str, error: str | None) -> None:
        seconds = time.perf_counter() - self._t0
        t = self._t
        t.metrics.request_done(self.method, code, self.tenant, seconds)
        span = self.span
        if span.is_recording():
            span.set_attribute("rpc.grpc.status_code", code)
            if code != "OK":
                span.set_status(Status(StatusCode.ERROR, f"{code}: {error or ''}"[:_MAX_ERROR]))
        span.end()
        if t.log_requests and request_log.isEnabledFor(logging.INFO):
            request_log.info(RequestLine(self._fields(code, error, seconds)))

    def _fields(self, code: str, error: str | None, seconds: float) -> dict[str, Any]:
        f: dict[str, Any] = {"method": self.method, "code": code}
        req = self.request
        if req is not None:
            f["request_id"] = req.request_id
        f["tenant"] = self.tenant
        if self.key_id:
            f["key_id"] = self.key_id
        f["duration_ms"] = round(seconds * 1000.0, 3)
        if req is not None:
            f["messages"] = len(req.messages)
            f["prompt_chars"] = sum(len(m.content) for m in req.messages)
            f["max_output_tokens"] = req.max_output_tokens
            f["data_class"] = req.data_class.value
            # What the request asked of the policy (replayed by `hybrid-router simulate
            # --from-log`); only when given.
            if req.ttft_budget_ms is not None:
                f["ttft_budget_ms"] = req.ttft_budget_ms
            if req.total_budget_ms is not None:
                f["total_budget_ms"] = req.total_budget_ms
            if req.max_cost_usd is not None:
                f["max_cost_usd"] = req.max_cost_usd
            if req.session_id:
                f["session_id"] = req.session_id
        plan = self.plan
        if plan is not None:
            primary = plan.report(plan.primary)
            d: dict[str, Any] = {
                "backend": plan.primary,
                "tier": primary.tier.value if primary is not None else "",
                "fallbacks": list(plan.fallbacks),
                "objective": plan.objective.value,
                "budget_unmet": plan.budget_unmet,
                "rejected": {c.backend: c.rejected_by for c in plan.candidates if not c.accepted},
                "decision_us": round(plan.decision_us, 1),
            }
            if primary is not None and primary.estimate is not None:
                e = primary.estimate
                d["est_ttft_ms"] = round(e.ttft_ms, 1)
                d["est_total_ms"] = round(e.total_ms, 1)
                d["est_cost_usd"] = e.cost_usd
            f["decision"] = d
        if self.failovers:
            f["failovers"] = [
                {"from": fo.from_backend, "to": fo.to_backend, "reason": fo.reason}
                for fo in self.failovers
            ]
        u = self.usage
        if u is not None:
            f["backend"] = u.backend
            f["tier"] = u.tier.value
            f["attempts"] = u.attempts
            f["ttft_ms"] = round(u.ttft_ms, 3)
            f["total_ms"] = round(u.total_ms, 3)
            f["input_tokens"] = u.input_tokens
            f["output_tokens"] = u.output_tokens
            f["tokens_estimated"] = u.tokens_estimated
            f["cost_usd"] = u.cost_usd
            f["finish_reason"] = u.finish_reason.value
            f["complete"] = u.complete
        if error:
            f["error"] = error[:_MAX_ERROR]
        if self.text is not None and req is not None:
            f["prompt"] = [{"role": m.role.value, "content": m.content} for m in req.messages]
            f["completion"] = "".join(self.text)
        return f


class _NullObserver:
    """Stands in when no telemetry interceptor runs (servicer used on its own)."""

    text: list[str] | None = None

    def set_principal(self, tenant: str, key_id: str) -> None:
        pass

    def limit_rejected(self, limit: str) -> None:
        pass

    def control(self, control: str, outcome: str) -> None:
        pass

    def set_request(self, request: InferenceRequest) -> None:
        pass

    def decision(self, plan: Plan) -> None:
        pass

    def event(self, ev: object) -> None:
        pass


NULL_OBSERVER: Any = _NullObserver()
observer_var: ContextVar[Any] = ContextVar("hybrid_router_observer", default=NULL_OBSERVER)
