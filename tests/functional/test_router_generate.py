"""The router end to end: real router + real ModelService servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from rtutil import (
    collect,
    delta_tokens,
    kinds,
    ms_backend,
    shape,
    stub_for,
    text_of,
    user_request,
)
from testkit import wait_until

from serving.engines.scripted import ScriptedEngine
from serving.model_server import create_server as create_model_server

# --- the stream -----------------------------------------------------------------------


async def test_generate_streams_decision_then_deltas_then_usage(
    model_server, start_router, channel_to
):
    engine = ScriptedEngine(reply_tokens=5)
    addr = await model_server(engine)
    router = await start_router([ms_backend("gpu-a", "gpu", addr)])
    events = await collect(
        stub_for(channel_to(router)).Generate(user_request("alpha beta", request_id="r-1"))
    )
    k = kinds(events)
    assert k[0] == "decision" and k[-1] == "usage"
    assert set(k[1:-1]) == {"delta"}
    assert events[0].decision.backend == "gpu-a"
    assert events[0].decision.tier == tpb.TIER_GPU
    assert events[0].decision.request_id == "r-1"
    assert text_of(events) == "alpha beta alpha beta alpha"
    usage = events[-1].usage
    assert usage.complete and usage.backend == "gpu-a" and usage.tier == tpb.TIER_GPU
    assert usage.output_tokens == 5
    assert usage.input_tokens == engine.count_tokens((("user", "alpha beta"),))
    assert usage.finish_reason == tpb.FINISH_REASON_STOP
    assert usage.request_id == "r-1" and usage.attempts == 1
    assert usage.ttft_ms > 0 and usage.total_ms >= usage.ttft_ms


async def test_route_explains_without_calling_a_model(model_server, start_router, channel_to):
    cheap = ScriptedEngine()
    dear = ScriptedEngine()
    router = await start_router(
        [
            ms_backend(
                "edge-a",
                "edge",
                await model_server(cheap),
                context_window=64,
                cost={"edge_per_mtok_usd": 0.0},
            ),
            ms_backend(
                "hosted-a",
                "hosted",
                await model_server(dear),
                cost={"input_per_mtok_usd": 1.0, "output_per_mtok_usd": 5.0},
                data_classes=["public", "internal"],
            ),
        ]
    )
    stub = stub_for(channel_to(router))
    decision = await stub.Route(user_request("short one", max_output_tokens=16))
    assert decision.backend == "edge-a"
    assert list(decision.fallbacks) == ["hosted-a"]
    by_name = {c.backend: c for c in decision.candidates}
    assert by_name["edge-a"].accepted and by_name["edge-a"].rank == 1
    assert by_name["hosted-a"].estimate.cost_usd > by_name["edge-a"].estimate.cost_usd
    assert decision.explanation

    # Too big for the edge window: size decides.
    long = await stub.Route(user_request("word " * 100, max_output_tokens=16))
    assert long.backend == "hosted-a"
    edge = next(c for c in long.candidates if c.backend == "edge-a")
    assert not edge.accepted and edge.rejected_by == "context_window"

    # Restricted data may not go to hosted: data class decides.
    restricted = await stub.Route(
        user_request("short one", max_output_tokens=16, data_class=tpb.DATA_CLASS_RESTRICTED)
    )
    hosted = next(c for c in restricted.candidates if c.backend == "hosted-a")
    assert not hosted.accepted and hosted.rejected_by == "data_class"
    assert cheap.started == [] and dear.started == []


# --- failover and failures ------------------------------------------------------------


async def test_failover_before_first_token(model_server, start_router, channel_to):
    broken = ScriptedEngine(fail_before_first_token="unavailable")
    good = ScriptedEngine(reply_tokens=3)
    router = await start_router(
        [
            ms_backend("a-broken", "edge", await model_server(broken)),
            ms_backend(
                "b-good",
                "gpu",
                await model_server(good),
                cost={"gpu_hourly_usd": 4, "gpu_throughput_tokens_per_s": 1000},
            ),
        ]
    )
    events = await collect(stub_for(channel_to(router)).Generate(user_request()))
    assert shape(events) == ["decision", "failover", "delta+", "usage"]
    assert delta_tokens(events) == 3 == events[-1].usage.output_tokens
    assert events[0].decision.backend == "a-broken"
    fo = events[1].failover
    assert (fo.from_backend, fo.to_backend, fo.attempt) == ("a-broken", "b-good", 2)
    assert "retryable" in fo.reason
    assert events[-1].usage.backend == "b-good" and events[-1].usage.attempts == 2
    assert events[-1].usage.complete


async def test_ttft_timeout_moves_to_next_candidate(model_server, start_router, channel_to):
    slow = ScriptedEngine(ttft_ms=5_000)
    fast = ScriptedEngine(reply_tokens=2)
    router = await start_router(
        [
            ms_backend("a-slow", "edge", await model_server(slow)),
            ms_backend(
                "b-fast",
                "gpu",
                await model_server(fast),
                cost={"gpu_hourly_usd": 4, "gpu_throughput_tokens_per_s": 1000},
            ),
        ],
        policy={"ttft_timeout_ms": 1000},
    )
    events = await collect(stub_for(channel_to(router)).Generate(user_request()))
    assert kinds(events)[:2] == ["decision", "failover"]
    assert "no first token within 1000 ms" in events[1].failover.reason
    assert events[-1].usage.backend == "b-fast" and events[-1].usage.complete
    # The timed-out attempt was cancelled at the backend.
    await wait_until(
        lambda: len(slow.cancelled) == 1, "the slow backend to see its attempt cancelled"
    )


async def test_failure_after_first_token_ends_incomplete(model_server, start_router, channel_to):
    flaky = ScriptedEngine(fail_after_tokens=3)
    other = ScriptedEngine()
    router = await start_router(
        [
            ms_backend("a-flaky", "edge", await model_server(flaky)),
            ms_backend(
                "b-other",
                "gpu",
                await model_server(other),
                cost={"gpu_hourly_usd": 4, "gpu_throughput_tokens_per_s": 1000},
            ),
        ]
    )
    call = stub_for(channel_to(router)).Generate(user_request(max_output_tokens=10))
    events = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for ev in call:
            events.append(ev)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "after the first token" in info.value.details()
    assert shape(events) == ["decision", "delta+", "usage"]
    assert delta_tokens(events) == 3
    usage = events[-1].usage
    assert not usage.complete and usage.backend == "a-flaky"
    assert usage.finish_reason == tpb.FINISH_REASON_ERROR and usage.error
    assert usage.output_tokens == 3
    assert other.started == []  # no continuation on another backend


async def test_every_candidate_failing_lists_attempts(model_server, start_router, channel_to):
    router = await start_router(
        [
            ms_backend(
                "a",
                "edge",
                await model_server(ScriptedEngine(fail_before_first_token="unavailable")),
            ),
            ms_backend(
                "b",
                "gpu",
                await model_server(ScriptedEngine(fail_before_first_token="unavailable")),
            ),
        ]
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub_for(channel_to(router)).Generate(user_request()))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    details = info.value.details()
    assert "every candidate failed" in details and "a:" in details and "b:" in details


async def test_backend_down_fails_over(model_server, start_router, channel_to):
    good = ScriptedEngine(reply_tokens=1)
    router = await start_router(
        [
            # Nothing listens on port 1.
            ms_backend("a-down", "edge", "127.0.0.1:1"),
            ms_backend("b-up", "gpu", await model_server(good)),
        ],
        policy={"load_poll_interval_s": 3600},
    )
    events = await collect(stub_for(channel_to(router)).Generate(user_request()))
    assert events[-1].usage.backend == "b-up" and events[-1].usage.complete


async def test_fatal_backend_error_does_not_fail_over(model_server, start_router, channel_to):
    bad = ScriptedEngine(fail_before_first_token="invalid")
    other = ScriptedEngine()
    router = await start_router(
        [
            ms_backend("a-bad", "edge", await model_server(bad)),
            ms_backend("b-other", "gpu", await model_server(other)),
        ]
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub_for(channel_to(router)).Generate(user_request()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert other.started == []


async def test_too_large_at_backend_moves_on(model_server, start_router, channel_to):
    # The router's estimate says it fits; the backend's own count says it does not.
    small = ScriptedEngine(context_window=40)
    big = ScriptedEngine(reply_tokens=1)
    router = await start_router(
        [
            ms_backend("a-small", "edge", await model_server(small), context_window=4096),
            ms_backend("b-big", "gpu", await model_server(big)),
        ]
    )
    events = await collect(
        stub_for(channel_to(router)).Generate(user_request("w " * 30, max_output_tokens=8))
    )
    assert "too_large" in events[1].failover.reason
    assert events[-1].usage.backend == "b-big"


# --- cancellation and deadlines -------------------------------------------------------


async def test_client_cancel_reaches_the_backend(model_server, start_router, channel_to):
    engine = ScriptedEngine(tokens_per_s=20)
    router = await start_router([ms_backend("a", "gpu", await model_server(engine))])
    call = stub_for(channel_to(router)).Generate(
        user_request(max_output_tokens=1000, request_id="cancel-me")
    )
    seen = []
    async for ev in call:
        seen.append(ev.WhichOneof("event"))
        if seen.count("delta") == 2:
            call.cancel()
            break
    await wait_until(lambda: "cancel-me" in engine.cancelled, "the engine to see the client cancel")
    await wait_until(
        lambda: router.registry.get("a").stats.in_flight == 0, "the router to free the backend slot"
    )


async def test_deadline_reaches_the_backend(model_server, start_router, channel_to):
    engine = ScriptedEngine(tokens_per_s=10)
    router = await start_router([ms_backend("a", "gpu", await model_server(engine))])
    call = stub_for(channel_to(router)).Generate(
        user_request(max_output_tokens=1000, request_id="late"), timeout=0.6
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(call)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_until(lambda: "late" in engine.cancelled, "the engine to see the deadline cancel")


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_pb", "code", "needle"),
    [
        (rpb.GenerateRequest(), grpc.StatusCode.INVALID_ARGUMENT, "messages"),
        (
            user_request(max_output_tokens=1_000_000),
            grpc.StatusCode.INVALID_ARGUMENT,
            "max_output_tokens",
        ),
        (
            rpb.GenerateRequest(messages=[tpb.ChatMessage(content="x")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "messages[0].role",
        ),
        (
            user_request(sampling=tpb.SamplingParams(temperature=7)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "sampling.temperature",
        ),
        (user_request(pin_backends=["nope"]), grpc.StatusCode.INVALID_ARGUMENT, "nope"),
        (user_request(max_cost_usd=-1), grpc.StatusCode.INVALID_ARGUMENT, "max_cost_usd"),
        (
            user_request(request_id="bad id with spaces"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "request_id",
        ),
        (user_request("x" * 70000), grpc.StatusCode.INVALID_ARGUMENT, "largest any backend"),
        (user_request("w " * 3000), grpc.StatusCode.OUT_OF_RANGE, "2048"),
        (
            user_request(data_class=tpb.DATA_CLASS_RESTRICTED),
            grpc.StatusCode.FAILED_PRECONDITION,
            "restricted",
        ),
    ],
    ids=[
        "empty",
        "huge-max",
        "no-role",
        "temperature",
        "unknown-pin",
        "neg-cost",
        "bad-request-id",
        "payload",
        "no-window",
        "data-class",
    ],
)
async def test_bad_input_gets_a_clear_status(
    model_server, start_router, channel_to, request_pb, code, needle
):
    engine = ScriptedEngine()
    addr = await model_server(engine)
    router = await start_router(
        [
            ms_backend(
                "small",
                "edge",
                addr,
                context_window=1024,
                max_payload_bytes=65536,
                data_classes=["public", "internal"],
            ),
            ms_backend(
                "large",
                "gpu",
                addr,
                context_window=2048,
                max_payload_bytes=65536,
                data_classes=["public", "internal"],
            ),
        ]
    )
    stub = stub_for(channel_to(router))
    for method in (stub.Route, stub.Generate):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            result = method(request_pb)
            if method is stub.Generate:
                await collect(result)
            else:
                await result
        assert info.value.code() == code, info.value.details()
        assert needle in info.value.details()
    assert engine.started == []
    # The server is still healthy after all that.
    events = await collect(stub.Generate(user_request(max_output_tokens=2)))
    assert events[-1].usage.complete


# --- live state, registry, health -----------------------------------------------------


async def test_live_queue_moves_the_decision(model_server, start_router, channel_to):
    edge = ScriptedEngine(max_concurrency=1, tokens_per_s=20)
    gpu = ScriptedEngine(reply_tokens=1)
    router = await start_router(
        [
            ms_backend(
                "edge-a",
                "edge",
                await model_server(edge),
                max_concurrency=1,
                priors={"ttft_ms": 50, "decode_tokens_per_s": 20},
            ),
            ms_backend(
                "gpu-a",
                "gpu",
                await model_server(gpu),
                cost={"gpu_hourly_usd": 4, "gpu_throughput_tokens_per_s": 1000},
                priors={"ttft_ms": 50, "decode_tokens_per_s": 100},
            ),
        ]
    )
    stub = stub_for(channel_to(router))
    budget = rpb.LatencyBudget(ttft_ms=1000)
    before = await stub.Route(user_request(max_output_tokens=8, latency_budget=budget))
    assert before.backend == "edge-a"
    # Occupy the edge device with long requests sent around the router.
    long_calls = [
        stub.Generate(user_request(max_output_tokens=400, pin_backends=["edge-a"]))
        for _ in range(3)
    ]
    for c in long_calls:
        await c.read()  # decision arrived: the request is dispatched
    await wait_until(lambda: edge.load().queue_depth >= 2, "two requests queued on edge-a")
    after = await stub.Route(user_request(max_output_tokens=8, latency_budget=budget))
    assert after.backend == "gpu-a", after.explanation
    edge_report = next(c for c in after.candidates if c.backend == "edge-a")
    assert edge_report.estimate.queue_wait_ms > 0
    for c in long_calls:
        c.cancel()


async def test_list_backends_reports_live_stats(model_server, start_router, channel_to):
    engine = ScriptedEngine(reply_tokens=4)
    router = await start_router(
        [ms_backend("a", "gpu", await model_server(engine))], policy={"min_samples": 2}
    )
    stub = stub_for(channel_to(router))
    for _ in range(3):
        await collect(stub.Generate(user_request()))
    resp = await stub.ListBackends(rpb.ListBackendsRequest())
    (status,) = resp.backends
    assert status.name == "a" and status.tier == tpb.TIER_GPU and status.kind == "model_service"
    assert status.healthy and status.circuit == rpb.CIRCUIT_STATE_CLOSED
    assert status.requests == 3 and status.failures == 0
    assert status.ttft_p50_ms > 0 and not status.from_priors


async def test_a_reported_prefill_rate_keeps_ttft_samples_without_their_prompt(
    model_server, start_router, channel_to
):
    # A real model server whose first token comes after 20 ms plus the prompt at 4,000
    # tokens a second (a 2,000-word prompt waits about half a second more); its Info
    # reports that rate, and the router's priors say nothing of it.
    engine = ScriptedEngine(reply_tokens=1, ttft_ms=20, prefill_tokens_per_s=4000)
    priors = {"ttft_ms": 20, "decode_tokens_per_s": 100}
    router = await start_router(
        [ms_backend("a", "gpu", await model_server(engine), priors=priors)],
        policy={"min_samples": 2},
    )
    stub = stub_for(channel_to(router))

    async def status() -> rpb.BackendStatus:
        (one,) = (await stub.ListBackends(rpb.ListBackendsRequest())).backends
        return one

    async def reported() -> bool:
        return (await status()).prefill_tokens_per_s == 4000

    await wait_until(reported, "the load poll to bring the reported prefill rate")
    long_text = " ".join(["word"] * 2000)
    for text in (long_text, long_text, "short"):
        events = await collect(stub.Generate(user_request(text)))
        assert events[-1].usage.complete
    now = await status()
    assert now.requests == 3 and not now.from_priors and now.priors.prefill_tokens_per_s == 0
    # Two of the three answers waited >= 500 ms for their first token; the window keeps
    # each without its own prompt's prefill, so its median is the 20 ms (plus overhead).
    assert now.ttft_p50_ms < 400, now
    # Each estimate adds its own prompt's prefill to that.
    long_plan = await stub.Route(user_request(long_text))
    short_plan = await stub.Route(user_request("short"))
    long_est, short_est = long_plan.candidates[0].estimate, short_plan.candidates[0].estimate
    assert long_est.ttft_ms >= short_est.ttft_ms + 400, (long_est, short_est)


async def test_a_configured_prefill_rate_stands_in_until_the_backend_reports_one(
    model_server, start_router, channel_to
):
    engine = ScriptedEngine(reply_tokens=1)  # reports no prefill rate
    priors = {"ttft_ms": 20, "decode_tokens_per_s": 100, "prefill_tokens_per_s": 1000}
    router = await start_router([ms_backend("a", "gpu", await model_server(engine), priors=priors)])
    stub = stub_for(channel_to(router))
    (status,) = (await stub.ListBackends(rpb.ListBackendsRequest())).backends
    assert status.priors.prefill_tokens_per_s == 1000 and status.prefill_tokens_per_s == 1000
    # 2,000 words of prompt against one: a millisecond per prompt token more (1,000/s)
    long_est = (await stub.Route(user_request(" ".join(["word"] * 2000)))).candidates[0].estimate
    short_est = (await stub.Route(user_request("short"))).candidates[0].estimate
    assert long_est.prompt_tokens >= 2000
    gap = long_est.ttft_ms - short_est.ttft_ms
    assert gap == pytest.approx(long_est.prompt_tokens - short_est.prompt_tokens), gap


async def test_circuit_opens_after_failures(model_server, start_router, channel_to):
    broken = ScriptedEngine(fail_before_first_token="unavailable")
    good = ScriptedEngine(reply_tokens=1)
    router = await start_router(
        [
            ms_backend("a-broken", "edge", await model_server(broken)),
            ms_backend(
                "b-good",
                "gpu",
                await model_server(good),
                cost={"gpu_hourly_usd": 4, "gpu_throughput_tokens_per_s": 1000},
            ),
        ],
        policy={"circuit": {"consecutive_failures": 2, "cooldown_s": 60}},
    )
    stub = stub_for(channel_to(router))
    for _ in range(2):
        await collect(stub.Generate(user_request()))
    decision = await stub.Route(user_request())
    assert decision.backend == "b-good"
    broken_report = next(c for c in decision.candidates if c.backend == "a-broken")
    assert broken_report.rejected_by == "health" and "circuit" in broken_report.reason
    status = {b.name: b for b in (await stub.ListBackends(rpb.ListBackendsRequest())).backends}
    assert status["a-broken"].circuit == rpb.CIRCUIT_STATE_OPEN


async def test_backends_can_be_added_and_removed_at_run_time(
    model_server, start_router, channel_to
):
    from router.backends import create_backend
    from router.config import BackendConfig

    first = ScriptedEngine(reply_tokens=1)
    router = await start_router([ms_backend("gpu-a", "gpu", await model_server(first))])
    stub = stub_for(channel_to(router))
    new = ScriptedEngine(reply_tokens=1)
    cfg = BackendConfig.model_validate(ms_backend("edge-new", "edge", await model_server(new)))
    await router.registry.add(create_backend(cfg))
    assert (await stub.Route(user_request())).backend == "edge-new"
    names = [b.name for b in (await stub.ListBackends(rpb.ListBackendsRequest())).backends]
    assert names == ["edge-new", "gpu-a"]
    assert await router.registry.remove("edge-new")
    assert (await stub.Route(user_request())).backend == "gpu-a"


async def test_health_and_reflection(model_server, start_router, channel_to):
    router = await start_router([ms_backend("a", "gpu", await model_server(ScriptedEngine()))])
    ch = channel_to(router)
    health = health_pb2_grpc.HealthStub(ch)
    for service in ("", "hybrid_router.v1.InferenceRouter"):
        resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(ch)
    responses = refl.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = []
    async for r in responses:
        names = [s.name for s in r.list_services_response.service]
        break
    assert "hybrid_router.v1.InferenceRouter" in names
    assert "grpc.health.v1.Health" in names


async def test_graceful_drain_lets_open_streams_finish(model_server, start_router, channel_to):
    engine = ScriptedEngine(tokens_per_s=50)
    router = await start_router([ms_backend("a", "gpu", await model_server(engine))])
    ch = channel_to(router)
    stub = stub_for(ch)
    call = stub.Generate(user_request(max_output_tokens=25))
    first = await call.read()
    assert first.WhichOneof("event") == "decision"
    stopping = asyncio.ensure_future(router.stop(grace=10))
    await asyncio.sleep(0.1)
    # New work is refused while the open stream drains.
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Route(user_request(), timeout=2)
    rest = []
    while (ev := await call.read()) is not grpc.aio.EOF:
        rest.append(ev)
    assert rest[-1].WhichOneof("event") == "usage" and rest[-1].usage.complete
    assert rest[-1].usage.output_tokens == 25
    await stopping


# --- coalescing -----------------------------------------------------------------------


async def test_slow_reader_gets_coalesced_deltas(model_server, start_router, channel_to):
    word = "x" * 2000
    engine = ScriptedEngine()
    router = await start_router(
        [ms_backend("a", "gpu", await model_server(engine), max_payload_bytes=1 << 20)],
        policy={"max_output_tokens_limit": 2000},
    )
    # A small, fixed HTTP/2 window so that a reader that does not read pushes back.
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{router.port}", options=[("grpc.http2.bdp_probe", 0)]
    ) as ch:
        call = stub_for(ch).Generate(user_request(word, max_output_tokens=600))
        await asyncio.sleep(1.5)  # let the router buffer while we do not read
        events = await collect(call)
    deltas = [e for e in events if e.WhichOneof("event") == "delta"]
    assert events[-1].usage.complete, events[-1]
    assert sum(d.delta.tokens for d in deltas) == 600
    assert text_of(events) == " ".join([word] * 600)
    assert len(deltas) < 600  # merged while the reader was away
    assert events[-1].usage.complete


@contextlib.asynccontextmanager
async def uncoalesced_model_server(engine: ScriptedEngine) -> AsyncIterator[str]:
    """A model server that sends one delta per token (no source-side coalescing)."""
    server, port = await create_model_server(engine, "127.0.0.1:0", coalesce=False)
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_without_coalescing_every_token_is_a_message(start_router, channel_to):
    engine = ScriptedEngine()
    async with uncoalesced_model_server(engine) as endpoint:
        router = await start_router(
            [ms_backend("a", "gpu", endpoint)],
            server={"coalesce_deltas": False},
        )
        events = await collect(
            stub_for(channel_to(router)).Generate(user_request(max_output_tokens=50))
        )
    assert kinds(events).count("delta") == 50


async def test_linger_merges_a_fast_stream_and_keeps_the_text(start_router, channel_to):
    # Always busy (coalesce_busy_lag_ms 0), 50 ms linger: a backend that sends 300 one-token
    # deltas as fast as it can reaches the client in fewer, larger messages, text intact.
    engine = ScriptedEngine()
    async with uncoalesced_model_server(engine) as endpoint:
        router = await start_router(
            [ms_backend("a", "gpu", endpoint)],
            server={"coalesce_linger_ms": 50, "coalesce_busy_lag_ms": 0},
        )
        events = await collect(
            stub_for(channel_to(router)).Generate(
                user_request("alpha beta", max_output_tokens=300, request_id="fast")
            )
        )
    assert shape(events) == ["decision", "delta+", "usage"]
    assert text_of(events) == " ".join(["alpha", "beta"] * 150)
    assert delta_tokens(events) == 300
    assert events[-1].usage.complete and events[-1].usage.output_tokens == 300
    assert kinds(events).count("delta") < 300


async def test_deadline_before_first_token_is_deadline_exceeded(
    model_server, start_router, channel_to
):
    slow = ScriptedEngine(ttft_ms=5_000)
    other = ScriptedEngine(ttft_ms=5_000)
    router = await start_router(
        [
            ms_backend("a-slow", "edge", await model_server(slow)),
            ms_backend("b-slow", "gpu", await model_server(other)),
        ],
    )
    call = stub_for(channel_to(router)).Generate(user_request(request_id="dl"), timeout=0.5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(call)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_until(lambda: "dl" in slow.cancelled, "the slow backend to see the deadline cancel")
    assert other.started == []  # no failover once the caller's time is up
