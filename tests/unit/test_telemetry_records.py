"""Request log lines, the JSON formatter, and what PrometheusMetrics records per event."""

from __future__ import annotations

import json
import logging

from prometheus_client.parser import text_string_to_metric_families

from router.config import PolicyConfig
from router.errors import ErrorClass
from router.server.context import request_id_var
from router.stats import BackendStats
from router.telemetry.logs import JsonFormatter, RequestLine
from router.telemetry.metrics import PrometheusMetrics
from router.types import (
    BackendSpec,
    CandidateReport,
    FailoverEvent,
    FinishReason,
    Objective,
    Plan,
    Priors,
    Tier,
    UsageEvent,
)


def _record(msg: object) -> logging.LogRecord:
    return logging.LogRecord("router.requests", logging.INFO, "f.py", 1, msg, None, None)


def test_request_line_renders_key_value_pairs() -> None:
    line = RequestLine({"method": "Generate", "code": "OK", "ms": 1.5, "d": {"a": [1, 2]}})

    assert str(line) == 'request method=Generate code=OK ms=1.5 d={"a":[1,2]}'


def test_json_formatter_puts_request_fields_at_the_top_level() -> None:
    fmt = JsonFormatter()

    req = json.loads(fmt.format(_record(RequestLine({"method": "Route", "tenant": "acme"}))))
    token = request_id_var.set("rid-7")
    try:
        other = json.loads(fmt.format(_record("plain %s")))
    finally:
        request_id_var.reset(token)

    assert req["message"] == "request" and req["method"] == "Route" and req["tenant"] == "acme"
    assert req["logger"] == "router.requests" and req["level"] == "INFO"
    assert other["message"] == "plain %s" and other["request_id"] == "rid-7"


def _spec(name: str, tier: Tier) -> BackendSpec:
    return BackendSpec(
        name=name, tier=tier, kind="model_service", endpoint="x:1", model="m",
        context_window=1024, max_payload_bytes=1000, max_concurrency=1, max_queue=1,
        data_classes=frozenset(), priors=Priors(100.0, 10.0),
    )  # fmt: skip


class _Entry:
    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.stats = BackendStats(spec.name, PolicyConfig())


class _Registry:
    def __init__(self, *entries: _Entry) -> None:
        self._entries = entries

    def entries(self) -> tuple[_Entry, ...]:
        return self._entries


def _samples(m: PrometheusMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(m.exposition().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_prometheus_metrics_record_each_event_once() -> None:
    edge = _Entry(_spec("edge-a", Tier.EDGE))
    for _ in range(5):
        edge.stats.record_failure(ErrorClass.RETRYABLE)
    m = PrometheusMetrics(_Registry(edge, _Entry(_spec("gpu-a", Tier.GPU))))
    plan = Plan(
        request_id="r", objective=Objective.CHEAPEST, order=("gpu-a",),
        candidates=(
            CandidateReport("gpu-a", Tier.GPU, True, "", ""),
            CandidateReport("edge-a", Tier.EDGE, False, "health", "circuit open"),
        ),
        budget_unmet=True, explanation="", decision_us=40.0,
    )  # fmt: skip
    usage = UsageEvent(
        request_id="r", backend="gpu-a", tier=Tier.GPU, input_tokens=10, output_tokens=4,
        cost_usd=0.5, ttft_ms=20.0, total_ms=100.0, finish_reason=FinishReason.STOP,
        complete=True,
    )  # fmt: skip
    for _ in range(2):
        m.decision(plan)
        m.usage(usage)
    m.failover(FailoverEvent("edge-a", "gpu-a", Tier.GPU, "x", 2))
    m.request_done("Generate", "OK", "acme", 0.2)
    m.stream_opened()
    m.limit_rejected("max_messages")
    m.set_edge_devices_online(3)

    s = _samples(m)
    gpu = (("backend", "gpu-a"), ("tier", "gpu"))
    assert s[("hybrid_router_decisions_total", (("backend", "gpu-a"), ("budget", "unmet"),
             ("objective", "cheapest"), ("tier", "gpu")))] == 2  # fmt: skip
    assert s[("hybrid_router_candidate_rejections_total",
              (("backend", "edge-a"), ("filter", "health")))] == 2  # fmt: skip
    out = (("backend", "gpu-a"), ("direction", "out"), ("tier", "gpu"))
    assert s[("hybrid_router_tokens_total", out)] == 8
    assert s[("hybrid_router_cost_usd_total", gpu)] == 1.0
    assert s[("hybrid_router_ttft_seconds_count", gpu)] == 2
    assert s[("hybrid_router_ttft_seconds_sum", gpu)] == 0.04
    assert s[("hybrid_router_failovers_total",
              (("from_backend", "edge-a"), ("to_backend", "gpu-a")))] == 1  # fmt: skip
    assert s[("hybrid_router_requests_total",
              (("code", "OK"), ("method", "Generate"), ("tenant", "acme")))] == 1  # fmt: skip
    assert s[("hybrid_router_inflight_streams", ())] == 1
    assert s[("hybrid_router_limit_rejections_total", (("limit", "max_messages"),))] == 1
    assert s[("hybrid_router_edge_devices_online", ())] == 3
    assert (
        s[("hybrid_router_backend_circuit_state", (("backend", "edge-a"), ("tier", "edge")))] == 2
    )
    assert s[("hybrid_router_backend_circuit_opened_total",
              (("backend", "edge-a"), ("tier", "edge")))] == 1  # fmt: skip
    assert s[("hybrid_router_backend_circuit_state", gpu)] == 0


def test_two_routers_in_one_process_keep_separate_registries() -> None:
    a, b = PrometheusMetrics(), PrometheusMetrics()
    a.request_done("Route", "OK", "", 0.1)

    key = ("hybrid_router_requests_total", (("code", "OK"), ("method", "Route"), ("tenant", "")))
    assert _samples(a)[key] == 1 and key not in _samples(b)
