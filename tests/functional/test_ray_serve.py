"""The GPU tier as a real local Ray Serve app (serving.ray_app) behind the real router.

One Ray instance for the module (``ray.init(num_cpus=2)``); Serve's gRPC proxy on a free
port; the model application ``gpu`` (scripted engine, two replicas of 0.25 CPU, one
decoding slot each) and its load application ``gpu-load``. Tests that break an
application deploy their own. Calls go through Serve's proxy exactly as in production
(gRPC metadata ``application``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import ray
from hybrid_router.v1 import model_service_pb2 as mpb
from hybrid_router.v1 import model_service_pb2_grpc
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from ray import serve
from rtutil import collect, kinds, ms_backend, shape, stub_for, text_of, user_request
from testkit import wait_until

from router.policy.estimate import QUEUE_WAIT_TAIL
from serving.engines.scripted import ScriptedEngine
from serving.ray_app.load import BoardSnapshot
from serving.ray_app.local import LocalServe, deploy, start_serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

#: Decode rate of the scripted replicas: slow enough to saturate, fast enough to test.
TOKENS_PER_S = 50.0
REPLICAS = 2
#: How long a change may take to show (through Ray, on 2 shared cores), and how often to look.
WAIT_S, POLL_S = 30.0, 0.1


def scripted_app(**engine: Any) -> dict[str, Any]:
    return {
        "engine": "scripted",
        "engine_options": {"max_concurrency": 1, "tokens_per_s": TOKENS_PER_S, **engine},
        "model": {"id": "scripted", "version": "1", "family": "scripted"},
        "deployment": {
            "num_replicas": REPLICAS,
            "max_ongoing_requests": 8,
            "ray_actor_options": {"num_cpus": 0.25},
            "graceful_shutdown_timeout_s": 1,
        },
        "report_heartbeat_s": 0.5,
    }


@pytest.fixture(scope="module")
def gpu() -> Iterator[LocalServe]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        grpc_port, http_port = start_serve()
        deploy(scripted_app(), app_name="gpu")
        yield LocalServe(grpc_port, http_port, "gpu")
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


def ray_backend(name: str, serve: LocalServe, app: str = "gpu", **over: Any) -> dict[str, Any]:
    entry = ms_backend(
        name,
        "gpu",
        serve.grpc_address,
        kind="ray_serve",
        serve_application=app,
        max_concurrency=REPLICAS,  # one decoding slot per replica
        priors={"ttft_ms": 50, "decode_tokens_per_s": 100},
        timeout_s=30,
    )
    entry.update(over)
    return entry


def hosted_backend(addr: str) -> dict[str, Any]:
    return ms_backend(
        "hosted-a",
        "hosted",
        addr,
        priors={"ttft_ms": 100, "decode_tokens_per_s": 100},
        cost={"input_per_mtok_usd": 1.0, "output_per_mtok_usd": 4.0},
    )


#: Priors only (never live stats), so the estimates, and the decisions, are deterministic.
POLICY = {"min_samples": 1_000_000, "ttft_timeout_ms": 60_000}


def serve_stub(serve: LocalServe) -> tuple[grpc.aio.Channel, Any]:
    channel = grpc.aio.insecure_channel(serve.grpc_address)
    return channel, model_service_pb2_grpc.ModelServiceStub(channel)


def gen_request(text: str = "alpha beta gamma", max_tokens: int = 5, **kw: Any) -> Any:
    return mpb.ModelGenerateRequest(
        messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content=text)],
        max_output_tokens=max_tokens,
        **kw,
    )


async def board(app: str = "gpu") -> BoardSnapshot:
    """The load board's view, read through a Serve handle (its one replica)."""

    def read() -> BoardSnapshot:
        handle = serve.get_deployment_handle("LoadBoard", app_name=f"{app}-load")
        return handle.snapshot.remote().result(timeout_s=30)

    return await asyncio.to_thread(read)


# --- the router streams from the Serve app ------------------------------------------------


async def test_router_streams_tokens_from_the_serve_app(gpu, start_router, channel_to):
    # Coalescing off: this checks that Serve's proxy streams token by token, and the
    # router would otherwise merge deltas whenever this test reads slower than they come.
    router = await start_router(
        [ray_backend("gpu-ray", gpu)], policy=POLICY, server={"coalesce_deltas": False}
    )
    events = await collect(
        stub_for(channel_to(router)).Generate(
            user_request("alpha beta", max_output_tokens=6, request_id="ray-1")
        )
    )
    k = kinds(events)
    assert k[0] == "decision" and k[-1] == "usage"
    assert k[1:-1] == ["delta"] * 6  # token by token through Serve's proxy
    assert events[0].decision.backend == "gpu-ray"
    assert text_of(events) == "alpha beta alpha beta alpha beta"
    usage = events[-1].usage
    assert usage.complete and usage.backend == "gpu-ray" and usage.output_tokens == 6
    assert usage.input_tokens == ScriptedEngine().count_tokens((("user", "alpha beta"),))


async def test_load_application_sums_all_replicas(gpu):
    channel, stub = serve_stub(gpu)
    async with channel:
        one = await stub.Info(mpb.InfoRequest(), metadata=(("application", "gpu"),))
        assert one.replica_id.startswith("gpu#") and one.max_concurrency == 1
        whole = await stub.Info(mpb.InfoRequest(), metadata=(("application", "gpu-load"),))
        assert whole.replica_id == f"gpu: {REPLICAS} replicas"
        assert whole.max_concurrency == REPLICAS
        assert (whole.model, whole.engine, whole.context_window) == ("scripted", "scripted", 8192)
        # The load application does not generate: it says where to go instead.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await collect(stub.Generate(gen_request(), metadata=(("application", "gpu-load"),)))
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "application=gpu" in (err.value.details() or "")


async def test_bad_requests_get_invalid_argument_naming_the_field(gpu):
    channel, stub = serve_stub(gpu)
    md = (("application", "gpu"),)
    cases = [
        (gen_request(max_tokens=0), "max_output_tokens"),
        (
            mpb.ModelGenerateRequest(
                messages=[tpb.ChatMessage(role=tpb.ROLE_UNSPECIFIED, content="x")],
                max_output_tokens=3,
            ),
            "messages[0].role",
        ),
        (mpb.ModelGenerateRequest(max_output_tokens=3), "messages"),
        (gen_request(model="other-model"), "model"),
        (gen_request(sampling=tpb.SamplingParams(top_p=1.5)), "sampling.top_p"),
    ]
    async with channel:
        for request, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await collect(stub.Generate(request, metadata=md))
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, field
            assert (err.value.details() or "").startswith(f"{field}:"), err.value.details()
        # The replicas survived every one of them.
        events = await collect(stub.Generate(gen_request(max_tokens=2), metadata=md))
        assert [e.WhichOneof("event") for e in events] == ["delta", "delta", "done"]


# --- load-aware routing -----------------------------------------------------------------


async def test_saturation_moves_decisions_to_another_tier_and_back(
    gpu, model_server, start_router, channel_to
):
    hosted = await model_server(ScriptedEngine(reply_tokens=4))
    router = await start_router(
        [ray_backend("gpu-ray", gpu), hosted_backend(hosted)], policy=POLICY
    )
    stub = stub_for(channel_to(router))

    async def decision() -> Any:
        events = await collect(
            stub.Generate(
                user_request(
                    "probe", max_output_tokens=4, latency_budget=rpb.LatencyBudget(ttft_ms=300)
                )
            )
        )
        return events[0].decision

    first = await decision()
    assert first.backend == "gpu-ray", first.explanation

    # A second client, not the router, fills the deployment through Serve's proxy.
    channel, direct = serve_stub(gpu)
    md = (("application", "gpu"),)
    # 2,000 tokens (40 s at the app's 50 tokens/s) outlast the checks below; a call whose
    # cancel Serve loses while it is queued (seen once under heavy load) still ends in time
    # for the next test.
    calls = [direct.Generate(gen_request(max_tokens=2000), metadata=md) for _ in range(8)]

    readers = [asyncio.create_task(collect(c)) for c in calls]
    try:

        async def saturated() -> BoardSnapshot | None:
            snap = await board()
            return snap if snap.queued + snap.decoding >= 8 else None

        snap = await wait_until(
            saturated, "all 8 calls on the load board", timeout_s=WAIT_S, every_s=POLL_S
        )
        assert snap.decoding == REPLICAS and snap.queued == 8 - REPLICAS

        async def router_sees_it() -> bool:
            resp = await stub.ListBackends(rpb.ListBackendsRequest())
            return {b.name: b for b in resp.backends}["gpu-ray"].queue_depth >= 8

        # the next poll, 50 ms at most
        await wait_until(
            router_sees_it, "the router to see gpu-ray's queue", timeout_s=WAIT_S, every_s=POLL_S
        )

        async def moved() -> Any:
            d = await decision()
            return d if d.backend == "hosted-a" else None

        away = await wait_until(moved, "a route to hosted-a", timeout_s=WAIT_S, every_s=POLL_S)
        gpu_report = next(c for c in away.candidates if c.backend == "gpu-ray")
        assert gpu_report.accepted and not gpu_report.meets_budget
        # 8 requests on 2 slots: 7 ahead of ours, each 100 ms (the prior TTFT p90: twice
        # the 50 ms median) + 4 tokens at 100/s (priors), served 2 at a time; the
        # estimate is that wait's p90 (QUEUE_WAIT_TAIL).
        assert gpu_report.estimate.queue_wait_ms == pytest.approx(
            7 * (2 * 50 + 40) / 2 * QUEUE_WAIT_TAIL
        )
    finally:
        for call in calls:
            call.cancel()
        await asyncio.gather(*readers, return_exceptions=True)  # cancelled calls raise
        await channel.close()

    async def back() -> Any:
        d = await decision()
        return d if d.backend == "gpu-ray" else None

    returned = await wait_until(back, "a route to gpu-ray again", timeout_s=WAIT_S, every_s=POLL_S)
    assert returned.tier == tpb.TIER_GPU


# --- cancellation and failures ------------------------------------------------------------


async def test_cancelling_a_router_stream_stops_decoding_in_the_replica(
    gpu, start_router, channel_to
):
    router = await start_router([ray_backend("gpu-ray", gpu)], policy=POLICY)

    async def idle() -> BoardSnapshot:
        # Counters and load travel in one report: idle means every earlier call is counted.
        snap = await board()
        assert snap.queued + snap.decoding == 0 and len(snap.replicas) == 2, snap
        return snap

    # Earlier tests' cancelled calls must have left the replicas (slow on a busy host).
    before = await wait_until(idle, "both replicas idle", timeout_s=60.0, every_s=POLL_S)
    call = stub_for(channel_to(router)).Generate(
        user_request("one two three", max_output_tokens=2000)  # 40 s at 50 tokens/s
    )
    deltas = 0
    async for event in call:
        if event.WhichOneof("event") == "delta":
            deltas += 1
            if deltas == 3:
                break
    call.cancel()

    async def stopped() -> BoardSnapshot:
        snap = await board()
        done = snap.total("cancelled") > before.total("cancelled")
        assert done and snap.queued + snap.decoding == 0, snap
        return snap

    # long before the 40 s answer would end
    snap = await wait_until(
        stopped, "the cancelled call to leave the replica", timeout_s=20.0, every_s=POLL_S
    )
    assert snap.total("started") == before.total("started") + 1
    assert snap.total("completed") == before.total("completed")


def _replica_actors(app: str) -> list[Any]:
    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{app}#ModelServer#")
    ]
    return [ray.get_actor(n, namespace="serve") for n in names]


async def test_replica_dying_before_first_token_fails_over(
    gpu, model_server, start_router, channel_to
):
    app = "doomed"
    settings = scripted_app(ttft_ms=60_000)  # holds the request before its first token
    settings["deployment"]["num_replicas"] = 1
    await asyncio.to_thread(deploy, settings, app_name=app)
    try:
        hosted = await model_server(ScriptedEngine(reply_tokens=3))
        router = await start_router(
            [ray_backend("gpu-doomed", gpu, app=app, max_concurrency=1), hosted_backend(hosted)],
            policy=POLICY,
        )
        stub = stub_for(channel_to(router))
        task = asyncio.create_task(collect(stub.Generate(user_request("x y z"))))

        async def holding() -> bool:
            return (await board(app)).total("started") >= 1

        await wait_until(
            holding, "the replica to hold the request", timeout_s=WAIT_S, every_s=POLL_S
        )
        for actor in await asyncio.to_thread(_replica_actors, app):
            ray.kill(actor, no_restart=False)
        events = await asyncio.wait_for(task, 60)
        k = kinds(events)
        assert k[0] == "decision" and events[0].decision.backend == "gpu-doomed"
        assert k[1] == "failover", k
        failover = events[1].failover
        assert (failover.from_backend, failover.to_backend) == ("gpu-doomed", "hosted-a")
        assert "no first token" not in failover.reason  # the error, not the TTFT timeout
        assert events[-1].usage.backend == "hosted-a" and events[-1].usage.complete
        assert text_of(events) == "x y z"

        # The application goes away: the router's health view shows it, with the reason.
        await asyncio.to_thread(serve.delete, app)
        await asyncio.to_thread(serve.delete, f"{app}-load")

        async def unhealthy() -> Any:
            resp = await stub.ListBackends(rpb.ListBackendsRequest())
            status = {b.name: b for b in resp.backends}["gpu-doomed"]
            return status if not status.healthy else None

        status = await wait_until(
            unhealthy, "gpu-doomed to turn unhealthy", timeout_s=WAIT_S, every_s=POLL_S
        )
        assert "load probe failed" in status.detail
        decision = await stub.Route(user_request("x"))
        assert decision.backend == "hosted-a"
        rejected = {c.backend: c for c in decision.candidates}["gpu-doomed"]
        assert rejected.rejected_by == "health"
    finally:
        for name in (app, f"{app}-load"):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(serve.delete, name)


# --- the real model -----------------------------------------------------------------------


@pytest.mark.model
async def test_real_model_streams_through_serve(gpu, start_router, channel_to):
    from serving.engines.llamacpp import default_model_path

    app = "gpu-llama"
    settings = {
        "engine": "llamacpp",
        "engine_options": {
            "model_path": await asyncio.to_thread(default_model_path),
            "n_ctx": 512,
            "n_threads": 1,
        },
        "model": {"id": "gemma3-270m", "family": "gemma3"},
        "deployment": {
            "num_replicas": 1,
            "max_ongoing_requests": 4,
            "ray_actor_options": {"num_cpus": 0.5},
            "graceful_shutdown_timeout_s": 1,
        },
    }
    await asyncio.to_thread(deploy, settings, app_name=app)
    try:
        router = await start_router(
            [
                ray_backend(
                    "gpu-llama",
                    gpu,
                    app=app,
                    model="gemma3-270m",
                    model_family="gemma3",
                    context_window=512,
                    max_concurrency=1,
                    tokenizer={"kind": "gguf", "path": "gemma3-270m"},
                )
            ],
            policy=POLICY,
        )
        stub = stub_for(channel_to(router))

        async def healthy() -> bool:
            resp = await stub.ListBackends(rpb.ListBackendsRequest())
            return all(b.healthy for b in resp.backends)

        await wait_until(healthy, "every backend healthy", timeout_s=WAIT_S, every_s=POLL_S)
        events = await collect(
            stub.Generate(
                user_request(
                    "The capital of France is",
                    max_output_tokens=12,
                    sampling=tpb.SamplingParams(temperature=0.0, seed=1),
                )
            )
        )
        assert shape(events) == ["decision", "delta+", "usage"]
        usage = events[-1].usage
        assert usage.complete and usage.backend == "gpu-llama"
        assert 1 <= usage.output_tokens <= 12 and usage.input_tokens > 5
        assert text_of(events).strip()
    finally:
        for name in (app, f"{app}-load"):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(serve.delete, name)
