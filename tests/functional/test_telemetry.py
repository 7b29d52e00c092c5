"""Metrics scraped over HTTP, traces (in-memory exporter) with a propagated parent, and the
structured request log, on a real router with auth over real backends (127.0.0.1)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from hybrid_router.v1 import model_service_pb2_grpc
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from openai_wire import serve_wire
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families
from rtutil import collect, ms_backend, stub_for, user_request
from secutil import bearer, make_keys

from router.config import parse_config
from router.server.app import RouterServer, create_server
from router.telemetry.logs import JsonFormatter, RequestLine
from router.telemetry.observer import Telemetry
from serving.engines.scripted import ScriptedEngine
from serving.model_server import ModelServiceServicer

Launch = Callable[..., Awaitable[RouterServer]]
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"


@pytest.fixture
async def launch() -> AsyncIterator[Launch]:
    routers: list[RouterServer] = []

    async def start(config: dict[str, Any], **kw: Any) -> RouterServer:
        router = await create_server(parse_config(config, source="test"), **kw)
        routers.append(router)
        return router

    yield start
    for router in routers:
        await router.stop(0)


def config(tmp_path: Path, backends: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "server": {"address": "127.0.0.1:0", "grace_period_s": 1},
        "policy": {"load_poll_interval_s": 0.05},
        "backends": backends,
        "auth": {
            "keys_file": str(tmp_path / "keys.yaml"),
            "tenants": [{"name": "acme", "data_classes": ["public", "internal", "restricted"]}],
        },
        **extra,
    }


class _MetadataRecorder(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        self.seen.append({k: v for k, v in details.invocation_metadata or () if isinstance(v, str)})
        return await continuation(details)


@pytest.fixture
async def recording_model_server() -> AsyncIterator[Callable[..., Awaitable[tuple[str, Any]]]]:
    """A real ModelService server (serving.model_server's servicer) that records the gRPC
    metadata of every call it receives."""
    servers: list[grpc.aio.Server] = []

    async def start(engine: ScriptedEngine) -> tuple[str, _MetadataRecorder]:
        await engine.start()
        recorder = _MetadataRecorder()
        server = grpc.aio.server(interceptors=[recorder])
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServiceServicer(engine), server
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", recorder

    yield start
    for s in servers:
        await s.stop(0)


# --- metrics --------------------------------------------------------------------------------------


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_known_traffic(launch, model_server, tmp_path):
    keys = make_keys(tmp_path / "keys.yaml", ["acme"])
    failing = ScriptedEngine(fail_before_first_token="unavailable")
    backends = [
        ms_backend("edge-a", "edge", await model_server(failing), context_window=64),
        ms_backend("gpu-a", "gpu", await model_server(ScriptedEngine(reply_tokens=4)),
                   cost={"gpu_hourly_usd": 3.6, "gpu_throughput_tokens_per_s": 1000}),
    ]  # fmt: skip
    router = await launch(
        config(tmp_path, backends, telemetry={"metrics": {"address": "127.0.0.1:0"}})
    )
    port = router.guard.metrics_port
    assert port > 0
    md = bearer(keys["acme"])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as ch:
        stub = stub_for(ch)
        # 1: edge first (cheapest), fails before the first token -> failover to gpu-a.
        failed_over = await collect(
            stub.Generate(user_request("a b", max_output_tokens=8), metadata=md)
        )
        # 2, 3: a long prompt skips edge (window 64) -> gpu-a directly.
        for _ in range(2):
            await collect(stub.Generate(user_request("word " * 80), metadata=md))
        await stub.Route(user_request("a b", max_output_tokens=8), metadata=md)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Route(user_request("a b"))  # no key

    assert [ev.failover.to_backend for ev in failed_over if ev.HasField("failover")] == ["gpu-a"]
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        missing = await http.get(f"http://127.0.0.1:{port}/other", timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    assert missing.status_code == 404
    s = _samples(resp.text)
    ns = "hybrid_router"

    assert _value(s, f"{ns}_requests_total", method="Generate", code="OK", tenant="acme") == 3
    assert _value(s, f"{ns}_requests_total", method="Route", code="OK", tenant="acme") == 1
    assert _value(s, f"{ns}_requests_total", method="Route", code="UNAUTHENTICATED", tenant="") == 1
    assert _value(s, f"{ns}_request_duration_seconds_count", method="Generate") == 3
    decisions = {k[1]: v for k, v in s.items() if k[0] == f"{ns}_decisions_total"}
    by_backend: dict[str, float] = {}
    for labels, v in decisions.items():
        by_backend[dict(labels)["backend"]] = by_backend.get(dict(labels)["backend"], 0) + v
    assert by_backend == {"edge-a": 2, "gpu-a": 2}  # Generate x3 + Route x1
    assert _value(s, f"{ns}_candidate_rejections_total", backend="edge-a",
                  filter="context_window") == 2  # fmt: skip
    assert _value(s, f"{ns}_failovers_total", from_backend="edge-a", to_backend="gpu-a") == 1
    gpu = {"tier": "gpu", "backend": "gpu-a"}
    assert _value(s, f"{ns}_ttft_seconds_count", **gpu) == 3
    assert _value(s, f"{ns}_backend_duration_seconds_count", **gpu) == 3
    assert _value(s, f"{ns}_tokens_total", direction="out", **gpu) == 12
    assert _value(s, f"{ns}_tokens_total", direction="in", **gpu) > 160
    assert _value(s, f"{ns}_cost_usd_total", **gpu) > 0
    assert _value(s, f"{ns}_inflight_streams") == 0
    assert (f"{ns}_edge_devices_online", ()) in s
    assert _value(s, f"{ns}_backend_circuit_state", tier="edge", backend="edge-a") == 0
    assert _value(s, f"{ns}_backend_healthy", **gpu) == 1
    assert _value(s, f"{ns}_decision_seconds_count") == 4


async def test_no_metrics_address_means_no_metrics_endpoint(launch, model_server, tmp_path):
    make_keys(tmp_path / "keys.yaml", ["acme"])
    backends = [ms_backend("gpu-a", "gpu", await model_server(ScriptedEngine()))]
    router = await launch(config(tmp_path, backends))

    assert router.guard.metrics_port == 0


# --- traces ---------------------------------------------------------------------------------------


def _by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_trace_has_a_request_span_with_the_decision_and_a_child_per_attempt(
    launch, recording_model_server, tmp_path
):
    keys = make_keys(tmp_path / "keys.yaml", ["acme"])
    edge_addr, edge_md = await recording_model_server(
        ScriptedEngine(fail_before_first_token="unavailable")
    )
    gpu_addr, gpu_md = await recording_model_server(ScriptedEngine(reply_tokens=3))
    backends = [ms_backend("edge-a", "edge", edge_addr), ms_backend("gpu-a", "gpu", gpu_addr)]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(tracer=provider.get_tracer("test"))
    router = await launch(config(tmp_path, backends), telemetry=telemetry)

    md = (*bearer(keys["acme"]), ("traceparent", TRACEPARENT))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as ch:
        events = await collect(
            stub_for(ch).Generate(user_request("a b", request_id="trace-1"), metadata=md)
        )
    assert events[-1].usage.backend == "gpu-a"

    spans = exporter.get_finished_spans()
    (root,) = _by_name(spans, "hybrid_router.Generate")
    attempts = sorted(_by_name(spans, "hybrid_router.attempt"), key=lambda s: s.start_time or 0)
    assert root.kind is SpanKind.SERVER
    assert f"{root.context.trace_id:032x}" == TRACE_ID
    assert root.parent is not None and f"{root.parent.span_id:016x}" == PARENT_SPAN
    a = root.attributes or {}
    assert a["router.backend"] == "edge-a" and a["router.tier"] == "edge"
    assert list(a["router.fallbacks"]) == ["gpu-a"]  # type: ignore[arg-type]
    assert a["router.objective"] == "balanced" and a["router.tenant"] == "acme"
    assert a["router.request_id"] == "trace-1" and a["router.served_by"] == "gpu-a"
    assert a["router.output_tokens"] == 3 and a["rpc.grpc.status_code"] == "OK"
    assert [e.name for e in root.events] == ["failover"]

    assert [s.attributes["router.backend"] for s in attempts] == ["edge-a", "gpu-a"]  # type: ignore[index]
    for s in attempts:
        assert s.kind is SpanKind.CLIENT
        assert s.parent is not None and s.parent.span_id == root.context.span_id
        assert s.context.trace_id == root.context.trace_id
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[1].status.status_code is StatusCode.UNSET

    # Each backend received the traceparent of its own attempt span.
    for recorder, span in ((edge_md, attempts[0]), (gpu_md, attempts[1])):
        (seen,) = [m for m in recorder.seen if m.get("x-request-id") == "trace-1"]
        assert seen["traceparent"] == (f"00-{TRACE_ID}-{span.context.span_id:016x}-01")


async def test_traceparent_reaches_an_openai_backend_as_an_http_header(launch, tmp_path):
    keys = make_keys(tmp_path / "keys.yaml", ["acme"])
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with serve_wire() as wire:
        backends = [{
            "name": "hosted-a", "tier": "hosted", "kind": "openai",
            "endpoint": wire.base_url, "model": "m", "context_window": 8192,
        }]  # fmt: skip
        router = await launch(
            config(tmp_path, backends), telemetry=Telemetry(tracer=provider.get_tracer("t"))
        )
        md = (*bearer(keys["acme"]), ("traceparent", TRACEPARENT))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as ch:
            events = await collect(stub_for(ch).Generate(user_request("hi"), metadata=md))
        assert events[-1].usage.complete
        (attempt,) = _by_name(exporter.get_finished_spans(), "hybrid_router.attempt")
        header = wire.requests[-1].headers.get("traceparent")
    assert header == f"00-{TRACE_ID}-{attempt.context.span_id:016x}-01"


async def test_without_a_tracer_the_callers_traceparent_still_reaches_the_backend(
    launch, recording_model_server, tmp_path
):
    keys = make_keys(tmp_path / "keys.yaml", ["acme"])
    addr, recorder = await recording_model_server(ScriptedEngine(reply_tokens=2))
    router = await launch(config(tmp_path, [ms_backend("gpu-a", "gpu", addr)]))
    md = (*bearer(keys["acme"]), ("traceparent", TRACEPARENT))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as ch:
        await collect(stub_for(ch).Generate(user_request("hi", request_id="r-9"), metadata=md))

    (seen,) = [m for m in recorder.seen if m.get("x-request-id") == "r-9"]
    assert seen["traceparent"] == TRACEPARENT


async def test_otlp_exporter_sends_the_spans_over_the_real_wire_format(
    launch, model_server, tmp_path
):
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: list[Any] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        async def Export(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
            received.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    collector = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), collector)
    port = collector.add_insecure_port("127.0.0.1:0")
    await collector.start()
    try:
        keys = make_keys(tmp_path / "keys.yaml", ["acme"])
        backends = [ms_backend("gpu-a", "gpu", await model_server(ScriptedEngine(reply_tokens=2)))]
        tracing = {"exporter": "otlp", "endpoint": f"http://127.0.0.1:{port}",
                   "service_name": "router-under-test"}  # fmt: skip
        router = await launch(config(tmp_path, backends, telemetry={"tracing": tracing}))
        md = (*bearer(keys["acme"]), ("traceparent", TRACEPARENT))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as ch:
            await collect(stub_for(ch).Generate(user_request("hi"), metadata=md))
        await router.stop(0)  # flushes the batch exporter
    finally:
        await collector.stop(0)

    spans = [
        (rs, span)
        for req in received
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    assert sorted(span.name for _, span in spans) == [
        "hybrid_router.Generate",
        "hybrid_router.attempt",
    ]
    for rs, span in spans:
        service = [a.value.string_value for a in rs.resource.attributes if a.key == "service.name"]
        assert service == ["router-under-test"]
        assert span.trace_id.hex() == TRACE_ID


# --- structured logs ----------------------------------------------------------------------------

SECRET_PROMPTS = [
    "the launch code is tangerine-4471",
    "patient Jane Roe, DOB 1970-01-01, diagnosis confidential",
    "sk-provider-credential-do-not-log-123",
]


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))
        self.lines.append(logging.Formatter("%(message)s").format(record))


@pytest.fixture
def captured() -> AsyncIterator[_Capture]:
    handler = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler  # type: ignore[misc]
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


async def _realistic_traffic(router: RouterServer, keys: dict[str, str]) -> None:
    """Every Generate that is not pinned tries the flaky edge backend first and fails over."""
    md = bearer(keys["acme"])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as ch:
        stub = stub_for(ch)
        for prompt in SECRET_PROMPTS:
            await collect(stub.Generate(user_request(prompt, max_output_tokens=6), metadata=md))
            await stub.Route(user_request(prompt), metadata=md)
        # Restricted data; pinned backends (one of them the OpenAI-compatible one).
        await collect(stub.Generate(
            user_request(SECRET_PROMPTS[0], data_class=tpb.DATA_CLASS_RESTRICTED), metadata=md
        ))  # fmt: skip
        await collect(
            stub.Generate(user_request(SECRET_PROMPTS[1], pin_backends=["gpu-a"]), metadata=md)
        )
        await collect(
            stub.Generate(user_request(SECRET_PROMPTS[2], pin_backends=["hosted-a"]), metadata=md)
        )
        await stub.ListBackends(rpb.ListBackendsRequest(), metadata=md)
        bad_calls = [
            stub.Route(user_request(SECRET_PROMPTS[2])),  # no key
            stub.Route(user_request(SECRET_PROMPTS[2]), metadata=bearer(keys["acme"] + "x")),
            stub.Route(user_request(SECRET_PROMPTS[2]), metadata=bearer(keys["ghost"])),
            stub.Route(
                user_request(SECRET_PROMPTS[2], pin_backends=["nope"]), metadata=md
            ),  # invalid
            stub.Route(user_request("x" * 200_000), metadata=md),  # fits no window
        ]
        for call in bad_calls:
            with pytest.raises(grpc.aio.AioRpcError):
                await call
        # A stream whose backend breaks after the first tokens.
        with pytest.raises(grpc.aio.AioRpcError):
            await collect(stub.Generate(
                user_request(SECRET_PROMPTS[0], pin_backends=["broken"]), metadata=md
            ))  # fmt: skip


async def test_request_log_lines_carry_figures_and_never_content_keys_or_credentials(
    launch, model_server, tmp_path, captured, monkeypatch
):
    from openai_wire import Scenario

    keys = make_keys(tmp_path / "keys.yaml", ["acme", "ghost"])
    wire_key = "sk-openai-test-credential-0123456789"
    monkeypatch.setenv("TEST_OPENAI_KEY", wire_key)
    async with serve_wire() as wire:
        wire.default = Scenario(deltas=("fine", " answer"))
        flaky = ScriptedEngine(fail_before_first_token="unavailable")
        expensive = {"gpu_hourly_usd": 100.0, "gpu_throughput_tokens_per_s": 1.0}
        backends = [
            ms_backend("flaky-edge", "edge", await model_server(flaky)),
            ms_backend("gpu-a", "gpu", await model_server(ScriptedEngine(reply_tokens=4))),
            ms_backend("broken", "gpu", await model_server(ScriptedEngine(fail_after_tokens=2)),
                       cost=expensive),
            {"name": "hosted-a", "tier": "hosted", "kind": "openai", "endpoint": wire.base_url,
             "model": "m", "context_window": 8192, "api_key_env": "TEST_OPENAI_KEY",
             "cost": {"input_per_mtok_usd": 0.0}},
        ]  # fmt: skip
        router = await launch(config(tmp_path, backends))
        await _realistic_traffic(router, keys)
        await router.stop(0)
        assert any(r.headers.get("authorization") == f"Bearer {wire_key}" for r in wire.requests)

    text = "\n".join(captured.lines)
    forbidden = [*SECRET_PROMPTS, wire_key, *keys.values()]
    forbidden += [k[16:] for k in keys.values()]  # the secret parts
    forbidden += ["tangerine", "Jane Roe", "x" * 100]
    for needle in forbidden:
        assert needle not in text, f"log output contains {needle[:20]!r}..."

    lines = [r.msg.fields for r in captured.records if isinstance(r.msg, RequestLine)]
    assert len(lines) == 3 * 2 + 3 + 1 + 5 + 1
    ok = [f for f in lines if f["method"] == "Generate" and f["code"] == "OK"]
    assert len(ok) == 6
    assert {f["backend"] for f in ok} == {"gpu-a", "hosted-a"}
    assert any(f.get("failovers", [{}])[0].get("from") == "flaky-edge" for f in ok)
    for f in ok:
        assert f["tenant"] == "acme" and f["key_id"] == keys["acme"].split("_")[1]
        assert f["request_id"] and f["backend"] and f["output_tokens"] > 0
        assert f["decision"]["backend"] and "est_ttft_ms" in f["decision"]
        assert f["duration_ms"] > 0 and f["complete"] is True
    codes = sorted(f["code"] for f in lines if f["code"] != "OK")
    assert codes == ["INVALID_ARGUMENT", "OUT_OF_RANGE", "PERMISSION_DENIED",
                     "UNAUTHENTICATED", "UNAUTHENTICATED", "UNAVAILABLE"]  # fmt: skip
    broken = [f for f in lines if f["code"] == "UNAVAILABLE"][0]
    assert broken["complete"] is False and broken["backend"] == "broken"
    # The JSON form puts the fields at the top level of one line.
    one = json.loads(next(line for line in captured.lines if '"method": "Generate"' in line))
    assert one["message"] == "request" and one["logger"] == "router.requests"
    assert one["tenant"] == "acme" and one["code"] == "OK"


async def test_content_logging_is_an_explicit_debug_switch(
    launch, model_server, tmp_path, captured
):
    keys = make_keys(tmp_path / "keys.yaml", ["acme"])
    backends = [ms_backend("gpu-a", "gpu", await model_server(ScriptedEngine(reply_tokens=3)))]
    router = await launch(config(tmp_path, backends, telemetry={"logs": {"content": True}}))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as ch:
        events = await collect(stub_for(ch).Generate(
            user_request("debug this prompt"), metadata=bearer(keys["acme"])
        ))  # fmt: skip
    assert events[-1].usage.complete

    (fields,) = [
        r.msg.fields for r in captured.records
        if isinstance(r.msg, RequestLine) and r.msg.fields["method"] == "Generate"
    ]  # fmt: skip
    assert fields["prompt"] == [{"role": "user", "content": "debug this prompt"}]
    assert fields["completion"] == "debug this prompt"
    assert keys["acme"] not in "\n".join(captured.lines)
