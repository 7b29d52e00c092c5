"""The PII guard (controls.pii, issue 14) through a real router: real ModelService servers
over the scripted engine (it echoes the words of the last message, and these tests keep
every prompt each one was sent), three tiers on 127.0.0.1, real gRPC clients, real API
keys for the per-tenant rules.

The hosted tier is the cheapest here, so a clean prompt goes there: each test shows what
the guard changes for a prompt with PII.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from rtutil import collect, ms_backend, stub_for, text_of, user_request
from secutil import bearer, make_keys

from router.config import parse_config
from router.server.app import RouterServer, create_server
from router.server.status_details import read_details
from router.telemetry.metrics import PrometheusMetrics
from router.telemetry.observer import Telemetry
from serving.engines.base import EngineRequest
from serving.engines.scripted import ScriptedEngine

EMAIL = "alice.smith@example.com"
CARD = "4111 1111 1111 1111"
IBAN = "DE89370400440532013000"
PII_PROMPT = f"contact {EMAIL} card {CARD}"
#: Every PII value the tests send: none may show in a log line, an error or a span.
VALUES = (EMAIL, CARD, CARD.replace(" ", ""), IBAN, "alice.smith")


class RecordingEngine(ScriptedEngine):
    """The scripted engine, keeping every prompt it is sent (what its backend saw)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(reply_tokens=40, **kw)
        self.prompts: list[tuple[Any, ...]] = []  # serving.engines.base.Message records

    def generate(self, request: EngineRequest):  # type: ignore[no-untyped-def]
        self.prompts.append(request.messages)
        return super().generate(request)

    def saw(self, value: str) -> bool:
        return any(value in m.content for prompt in self.prompts for m in prompt)


Tiers = dict[str, RecordingEngine]


@pytest.fixture
async def tiers(model_server) -> tuple[Tiers, list[dict[str, Any]]]:
    engines = {tier: RecordingEngine() for tier in ("edge", "gpu", "hosted")}
    addr = {tier: await model_server(engine) for tier, engine in engines.items()}
    backends = [
        ms_backend("edge-1", "edge", addr["edge"],
                   cost={"edge_per_mtok_usd": 40, "source": "test"}),
        ms_backend("gpu-1", "gpu", addr["gpu"],
                   cost={"gpu_hourly_usd": 50, "gpu_throughput_tokens_per_s": 100,
                         "source": "test"}),
        ms_backend("hosted-1", "hosted", addr["hosted"],
                   cost={"input_per_mtok_usd": 0.01, "output_per_mtok_usd": 0.01,
                         "source": "test"}),
    ]  # fmt: skip
    return engines, backends


def pii(default: str = "allow", **tenants: dict[str, Any]) -> dict[str, Any]:
    return {"pii": {"default": {"action": default}, "tenants": tenants}}


def _decision(events: list[rpb.GenerateEvent]) -> rpb.Decision:
    assert events[0].WhichOneof("event") == "decision"
    return events[0].decision


def _candidate(decision: rpb.Decision, backend: str) -> rpb.CandidateReport:
    (c,) = [c for c in decision.candidates if c.backend == backend]
    return c


def _no_values(text: str) -> None:
    for value in VALUES:
        assert value not in text, f"PII value {value!r} leaked into: {text[:300]}"


async def test_a_clean_prompt_goes_to_the_cheapest_tier_hosted(tiers, start_router, channel_to):
    engines, backends = tiers
    router = await start_router(backends, controls=pii("route"))
    events = await collect(stub_for(channel_to(router)).Generate(user_request("hello there")))
    assert _decision(events).backend == "hosted-1"
    assert events[-1].usage.backend == "hosted-1" and text_of(events).startswith("hello there")


async def test_route_keeps_pii_off_hosted_and_names_the_kinds(tiers, start_router, channel_to):
    engines, backends = tiers
    router = await start_router(backends, controls=pii("route"))
    events = await collect(stub_for(channel_to(router)).Generate(user_request(PII_PROMPT)))

    decision = _decision(events)
    assert decision.backend in ("gpu-1", "edge-1")
    hosted = _candidate(decision, "hosted-1")
    assert not hosted.accepted and hosted.rejected_by == "pii"
    assert "card, email" in hosted.reason and "controls.pii: route" in hosted.reason
    assert "hosted tiers excluded: the prompt holds PII (card, email)" in decision.explanation
    _no_values(str(decision))
    # The private tier got the original prompt (it echoes it); hosted got nothing.
    assert EMAIL in text_of(events) and events[-1].usage.tier != tpb.TIER_HOSTED
    assert engines["hosted"].prompts == []


async def test_the_route_dry_run_explains_the_same_pii_routing(tiers, start_router, channel_to):
    engines, backends = tiers
    router = await start_router(backends, controls=pii("route"))
    decision = await stub_for(channel_to(router)).Route(user_request(PII_PROMPT))
    assert decision.backend in ("gpu-1", "edge-1")
    hosted = _candidate(decision, "hosted-1")
    assert not hosted.accepted and hosted.rejected_by == "pii"
    _no_values(str(decision))
    assert all(not e.prompts for e in engines.values())  # a dry run calls no model


async def test_route_with_nothing_private_left_says_why(tiers, start_router, channel_to):
    _, backends = tiers
    router = await start_router(backends, controls=pii("route"))
    stub = stub_for(channel_to(router))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(stub.Generate(user_request(PII_PROMPT, pin_tiers=[tpb.TIER_HOSTED])))
    details = err.value.details() or ""
    assert "the prompt holds PII (card, email)" in details and "no private backend" in details
    _no_values(details)
    info, _ = read_details(err.value.trailing_metadata())
    assert info is not None and info.metadata["kinds"] == "card,email"


async def test_redact_sends_hosted_a_redacted_copy_and_private_tiers_the_original(
    tiers, start_router, channel_to
):
    engines, backends = tiers
    router = await start_router(backends, controls=pii("redact"))
    stub = stub_for(channel_to(router))

    events = await collect(stub.Generate(user_request(PII_PROMPT)))
    assert _decision(events).backend == "hosted-1" and events[-1].usage.backend == "hosted-1"
    assert text_of(events).startswith("contact [EMAIL] card [CARD]")
    assert not engines["hosted"].saw(EMAIL) and not engines["hosted"].saw(CARD)

    # Hosted fails before its first token: the fallback (private) gets the original.
    engines["hosted"].fail_before_first_token = "unavailable"
    events = await collect(stub.Generate(user_request(PII_PROMPT)))
    assert events[-1].usage.backend in ("gpu-1", "edge-1")
    assert text_of(events).startswith(f"contact {EMAIL} card {CARD}")
    assert len(engines["hosted"].prompts) == 2
    assert not engines["hosted"].saw(EMAIL) and not engines["hosted"].saw(CARD)


async def test_refuse_answers_failed_precondition_naming_the_kinds_before_any_model(
    tiers, start_router, channel_to
):
    engines, backends = tiers
    router = await start_router(backends, controls=pii("refuse"))
    stub = stub_for(channel_to(router))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(stub.Generate(user_request(f"my IBAN is {IBAN}, mail {EMAIL}")))
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    details = err.value.details() or ""
    assert details.startswith("the prompt holds PII (email, iban)")
    assert "controls.pii: refuse" in details
    _no_values(details)
    info, retry = read_details(err.value.trailing_metadata())
    assert info is not None and info.reason == "PII_FOUND" and retry is None
    assert all(e.prompts == [] for e in engines.values())
    # A request no hosted backend could take is not the guard's business.
    events = await collect(stub.Generate(user_request(PII_PROMPT, pin_tiers=[tpb.TIER_GPU])))
    assert events[-1].usage.backend == "gpu-1" and EMAIL in text_of(events)


async def test_each_tenant_gets_its_own_rule(tiers, start_router, channel_to, tmp_path):
    engines, backends = tiers
    names = ["routed", "refused", "cards-only"]
    keys = make_keys(tmp_path / "keys.yaml", names)
    router = await start_router(
        backends,
        auth={"keys_file": str(tmp_path / "keys.yaml"), "tenants": [{"name": n} for n in names]},
        controls=pii("redact", routed={"action": "route"}, refused={"action": "refuse"},
                     **{"cards-only": {"kinds": ["card"]}}),
    )  # fmt: skip
    stub = stub_for(channel_to(router))
    email_only = user_request(f"write to {EMAIL}")

    routed = await collect(stub.Generate(email_only, metadata=bearer(keys["routed"])))
    assert _decision(routed).backend != "hosted-1" and EMAIL in text_of(routed)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(stub.Generate(email_only, metadata=bearer(keys["refused"])))
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "tenant 'refused' may not send PII" in (err.value.details() or "")
    # cards-only looks for cards alone (and redacts, the default's action).
    md = bearer(keys["cards-only"])
    plain = await collect(stub.Generate(email_only, metadata=md))
    assert _decision(plain).backend == "hosted-1" and EMAIL in text_of(plain)
    carded = await collect(stub.Generate(user_request(PII_PROMPT), metadata=md))
    assert text_of(carded).startswith(f"contact {EMAIL} card [CARD]")


# --- sessions: what a hosted backend gets is the fitted history plus the new turn ---------


async def _turn(stub, session_id: str, text: str, **fields: Any) -> list[rpb.GenerateEvent]:
    return await collect(stub.Generate(user_request(text, session_id=session_id, **fields)))


async def test_session_history_is_redacted_in_the_hosted_copy(tiers, start_router, channel_to):
    engines, backends = tiers
    router = await start_router(backends, controls=pii("redact"))
    stub = stub_for(channel_to(router))
    await _turn(stub, "s-1", f"remember {EMAIL}")
    events = await _turn(stub, "s-1", "what did I say")  # a clean turn: the history is not
    assert events[-1].usage.backend == "hosted-1"
    history = engines["hosted"].prompts[-1]
    assert [m.role for m in history] == ["user", "assistant", "user"]
    assert history[0].content == "remember [EMAIL]"
    assert not engines["hosted"].saw(EMAIL)


async def test_session_history_with_pii_is_withheld_from_hosted_under_route(
    tiers, start_router, channel_to
):
    engines, backends = tiers
    router = await start_router(backends, controls=pii("route"))
    stub = stub_for(channel_to(router))
    first = await _turn(stub, "s-2", f"remember {EMAIL}")
    assert first[-1].usage.backend != "hosted-1"  # the turn itself holds PII
    events = await _turn(stub, "s-2", "what did I say")
    # The clean turn's Decision may pick hosted; its copy (with the history) is withheld.
    assert _decision(events).backend == "hosted-1"
    (failover,) = [ev.failover for ev in events if ev.WhichOneof("event") == "failover"]
    assert failover.from_backend == "hosted-1" and failover.to_backend in ("gpu-1", "edge-1")
    assert "withheld" in failover.reason and "(email)" in failover.reason
    _no_values(failover.reason)
    assert events[-1].usage.complete and events[-1].usage.backend == failover.to_backend
    assert engines["hosted"].prompts == []


async def test_a_session_pinned_to_hosted_with_pii_in_its_history_says_why(
    tiers, start_router, channel_to
):
    engines, backends = tiers
    router = await start_router(backends, controls=pii("route"))
    stub = stub_for(channel_to(router))
    await _turn(stub, "s-4", f"remember {EMAIL}", pin_tiers=[tpb.TIER_GPU])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _turn(stub, "s-4", "what did I say", pin_tiers=[tpb.TIER_HOSTED])
    # Only hosted was planned, and it was withheld: the policy's status, PII's reason.
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    details = err.value.details() or ""
    assert details.startswith("this session's history holds PII (email), which")
    assert "the plan had no private backend" in details
    _no_values(details)
    assert engines["hosted"].prompts == []


async def test_session_history_with_pii_is_refused_under_refuse(tiers, start_router, channel_to):
    engines, backends = tiers
    router = await start_router(backends, controls=pii("refuse"))
    stub = stub_for(channel_to(router))
    # Pinned to a private tier, the turn is not the guard's business: it is stored.
    await _turn(stub, "s-3", f"remember {EMAIL}", pin_tiers=[tpb.TIER_GPU])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _turn(stub, "s-3", "what did I say")
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    details = err.value.details() or ""
    assert details.startswith("this session's history holds PII (email)")
    _no_values(details)
    assert engines["hosted"].prompts == []


# --- never logged, never in a span; counted -----------------------------------------------


@pytest.fixture
async def launch() -> AsyncIterator[Callable[..., Awaitable[RouterServer]]]:
    routers: list[RouterServer] = []

    async def start(config: dict[str, Any], telemetry: Telemetry) -> RouterServer:
        router = await create_server(parse_config(config, source="test"), telemetry=telemetry)
        routers.append(router)
        return router

    yield start
    for router in routers:
        await router.stop(0)


def _counts(metrics: PrometheusMetrics) -> dict[tuple[str, str, str], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            if s.name == "hybrid_router_control_events_total":
                out[(s.labels["control"], s.labels["outcome"], s.labels["tenant"])] = s.value
    return out


async def test_pii_never_reaches_a_log_line_an_error_or_a_span_and_is_counted(
    tiers, launch, tmp_path: Path, caplog
):
    engines, backends = tiers
    names = ["routed", "redacted", "refused"]
    keys = make_keys(tmp_path / "keys.yaml", names)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    metrics = PrometheusMetrics()
    # Content logging on (a debug switch): it must still leave out requests with PII.
    telemetry = Telemetry(metrics, provider.get_tracer("test"), log_content=True)
    router = await launch(
        {
            "server": {"address": "127.0.0.1:0", "grace_period_s": 1},
            "backends": backends,
            "auth": {
                "keys_file": str(tmp_path / "keys.yaml"),
                "tenants": [{"name": n} for n in names],
            },
            "controls": pii(
                "allow",
                routed={"action": "route"},
                redacted={"action": "redact"},
                refused={"action": "refuse"},
            ),
        },  # fmt: skip
        telemetry,
    )
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as ch:
        stub = stub_for(ch)
        clean = await collect(
            stub.Generate(user_request("plain words only"), metadata=bearer(keys["routed"]))
        )
        for name in names:
            for text in (PII_PROMPT, f"iban {IBAN} for alice.smith"):
                try:
                    await collect(stub.Generate(user_request(text), metadata=bearer(keys[name])))
                except grpc.aio.AioRpcError as exc:
                    errors.append(f"{exc.code()} {exc.details()} {exc.trailing_metadata()}")
        # A session under route: its history holds PII, the next turn withholds hosted.
        md = bearer(keys["routed"])
        await collect(stub.Generate(user_request(PII_PROMPT, session_id="s-9"), metadata=md))
        await collect(stub.Generate(user_request("and now?", session_id="s-9"), metadata=md))
    assert _decision(clean).backend == "hosted-1"
    assert len(errors) == 2 and all("FAILED_PRECONDITION" in e for e in errors)

    logged = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    # Content logging works (the clean prompt is there), and nothing with PII is.
    assert "plain words only" in logged
    _no_values(logged)
    for e in errors:
        _no_values(e)
    spans = exporter.get_finished_spans()
    assert spans
    for span in spans:
        _no_values(repr(span.to_json()))

    counts = _counts(metrics)
    # The clean prompt and the session's clean turn; then routed: two prompts, the session's
    # first turn, and its history at the second turn's hosted copy.
    assert counts[("pii", "clean", "routed")] == 2
    assert counts[("pii", "routed", "routed")] == 4
    assert counts[("pii", "redacted", "redacted")] == 2
    assert counts[("pii", "refused", "refused")] == 2
    assert counts[("pii_kind", "email", "routed")] == 3
    assert counts[("pii_kind", "iban", "refused")] == 1
    assert not engines["hosted"].saw(EMAIL) and not engines["hosted"].saw(IBAN)
