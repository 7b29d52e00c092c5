"""The GPU tier on Ray Serve: Serve's overhead, and the router's decisions under saturation.

1. ``overhead``: the same engine called in-process (``engine.generate``) and through Ray
   Serve (gRPC proxy -> replica -> engine, ``serving.ray_app``), at 1 and 8 concurrent
   streams, in alternating rounds (machine noise hits both alike). TTFT = call start ->
   first text; tokens/s = output tokens of all streams / wall time of the round.
   Engines: ``llamacpp`` (the real Gemma 3 270M on CPU, one replica with 2 threads;
   llama.cpp decodes one sequence at a time, so 8 streams queue) and ``scripted`` at full
   speed (no model: what Serve costs per token).
2. ``saturation``: a router with the Serve app (scripted, 2 replicas, one slot each, 50
   tokens/s) as its cheap gpu backend and a dearer hosted backend; a second client opens
   N long streams straight to Serve; for each N the table shows the load board's figure,
   the load the router polled, its estimated gpu TTFT and where a request with a 300 ms
   TTFT budget goes. Then the streams end and the decision comes back.

It measures; it asserts nothing. Usage::

    .venv/bin/python bench/bench_ray_serve.py            # ~3 minutes on 2 cores
    .venv/bin/python bench/bench_ray_serve.py --quick    # fewer rounds
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from hybrid_router.v1 import model_service_pb2 as mpb
from hybrid_router.v1 import model_service_pb2_grpc, router_pb2, router_pb2_grpc
from hybrid_router.v1 import types_pb2 as tpb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving.engines import create_engine  # noqa: E402
from serving.engines.base import EngineRequest  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper and a storm."


def engine_options(kind: str, model_path: str) -> dict[str, Any]:
    if kind == "llamacpp":
        return {"model_path": model_path, "n_ctx": 1024, "n_threads": 2, "temperature": 0.7}
    return {"max_concurrency": 8, "tokens_per_s": 0.0}


# --- 1. overhead ---------------------------------------------------------------------------


async def one_inprocess(engine: Any, i: int, max_tokens: int) -> tuple[float, int]:
    start = time.perf_counter()
    ttft = 0.0
    tokens = 0
    req = EngineRequest(f"b{i}", (("user", PROMPT),), max_tokens, seed=i)
    async for chunk in engine.generate(req):
        if chunk.text and not ttft:
            ttft = time.perf_counter() - start
        if chunk.done:
            tokens = chunk.output_tokens
    return ttft, tokens


async def one_serve(stub: Any, i: int, max_tokens: int, app: str) -> tuple[float, int]:
    start = time.perf_counter()
    ttft = 0.0
    tokens = 0
    req = mpb.ModelGenerateRequest(
        request_id=f"b{i}",
        messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content=PROMPT)],
        max_output_tokens=max_tokens,
        sampling=tpb.SamplingParams(seed=i),
    )
    async for ev in stub.Generate(req, metadata=(("application", app),), timeout=600):
        kind = ev.WhichOneof("event")
        if kind == "delta" and ev.delta.text and not ttft:
            ttft = time.perf_counter() - start
        elif kind == "done":
            tokens = ev.done.output_tokens
    return ttft, tokens


async def one_round(call: Any, streams: int, max_tokens: int, r: int) -> tuple[list[float], float]:
    start = time.perf_counter()
    results = await asyncio.gather(*(call(r * 100 + i, max_tokens) for i in range(streams)))
    wall = time.perf_counter() - start
    return [t for t, _ in results], sum(n for _, n in results) / wall


def summary(ttfts: list[float], rates: list[float]) -> dict[str, float]:
    return {
        "ttft_p50_ms": statistics.median(ttfts) * 1000,
        "ttft_max_ms": max(ttfts) * 1000,
        "tokens_per_s": statistics.median(rates),
    }


async def overhead(kind: str, model_path: str, max_tokens: int, repeat: int) -> list[list[str]]:
    """In-process and Serve rounds alternate, so machine noise hits both alike."""
    from ray import serve

    from serving.ray_app.local import deploy

    app = f"bench-{kind}"
    await asyncio.to_thread(
        deploy,
        {
            "engine": kind,
            "engine_options": engine_options(kind, model_path),
            "deployment": {
                "num_replicas": 1,
                "max_ongoing_requests": 16,
                "ray_actor_options": {"num_cpus": 1},
            },
        },
        app_name=app,
    )
    engine = create_engine(kind, **engine_options(kind, model_path))
    await engine.start()
    rows: list[list[str]] = []
    async with grpc.aio.insecure_channel(ADDRESS) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        await one_inprocess(engine, 0, 4)  # warm-up
        await one_serve(stub, 0, 4, app)

        def local(i: int, n: int) -> Any:
            return one_inprocess(engine, i, n)

        def served(i: int, n: int) -> Any:
            return one_serve(stub, i, n, app)

        for streams in (1, 8):
            data: dict[str, tuple[list[float], list[float]]] = {"a": ([], []), "b": ([], [])}
            for r in range(repeat):
                for key, call in (("a", local), ("b", served)):
                    ttfts, rate = await one_round(call, streams, max_tokens, r)
                    data[key][0].extend(ttfts)
                    data[key][1].append(rate)
            a, b = summary(*data["a"]), summary(*data["b"])
            rows.append(
                [
                    kind,
                    str(streams),
                    f"{a['ttft_p50_ms']:.1f} / {a['ttft_max_ms']:.0f}",
                    f"{b['ttft_p50_ms']:.1f} / {b['ttft_max_ms']:.0f}",
                    f"{b['ttft_p50_ms'] - a['ttft_p50_ms']:+.1f}",
                    f"{a['tokens_per_s']:.0f}",
                    f"{b['tokens_per_s']:.0f}",
                    f"{(b['tokens_per_s'] / a['tokens_per_s'] - 1) * 100:+.0f} %",
                ]
            )
    await engine.close()
    for name in (app, f"{app}-load"):
        await asyncio.to_thread(serve.delete, name)
    return rows


# --- 2. saturation -------------------------------------------------------------------------


async def saturation(steps: list[int]) -> list[list[str]]:
    from ray import serve

    from router.config import parse_config
    from router.server.app import create_server
    from serving.engines.scripted import ScriptedEngine
    from serving.model_server import create_server as create_model_server
    from serving.ray_app.local import deploy

    await asyncio.to_thread(
        deploy,
        {
            "engine": "scripted",
            "engine_options": {"max_concurrency": 1, "tokens_per_s": 50.0},
            "deployment": {
                "num_replicas": 2,
                "max_ongoing_requests": 16,
                "ray_actor_options": {"num_cpus": 0.25},
            },
            "report_heartbeat_s": 0.5,
        },
        app_name="sat",
    )
    hosted_engine = ScriptedEngine(reply_tokens=4)
    hosted, hosted_port = await create_model_server(hosted_engine, "127.0.0.1:0")
    await hosted.start()
    common = {"model": "scripted", "context_window": 8192, "data_classes": ["public", "internal"]}
    cfg = parse_config(
        {
            "server": {"address": "127.0.0.1:0"},
            "policy": {"load_poll_interval_s": 0.05, "min_samples": 1_000_000},
            "backends": [
                {
                    "name": "gpu-ray",
                    "tier": "gpu",
                    "kind": "ray_serve",
                    "endpoint": ADDRESS,
                    "serve_application": "sat",
                    "max_concurrency": 2,
                    "priors": {"ttft_ms": 50, "decode_tokens_per_s": 100},
                    **common,
                },
                {
                    "name": "hosted-a",
                    "tier": "hosted",
                    "kind": "model_service",
                    "endpoint": f"127.0.0.1:{hosted_port}",
                    "priors": {"ttft_ms": 100, "decode_tokens_per_s": 100},
                    "cost": {"input_per_mtok_usd": 1.0, "output_per_mtok_usd": 4.0},
                    **common,
                },
            ],
        }
    )
    router = await create_server(cfg)
    rows: list[list[str]] = []
    direct_ch = grpc.aio.insecure_channel(ADDRESS)
    router_ch = grpc.aio.insecure_channel(f"127.0.0.1:{router.port}")
    direct = model_service_pb2_grpc.ModelServiceStub(direct_ch)
    rstub = router_pb2_grpc.InferenceRouterStub(router_ch)
    md = (("application", "sat"),)
    calls: list[Any] = []
    readers: list[asyncio.Task[Any]] = []

    async def drain(call: Any) -> None:
        async for _ in call:
            pass

    def board() -> Any:
        handle = serve.get_deployment_handle("LoadBoard", app_name="sat-load")
        return handle.snapshot.remote().result(timeout_s=30)

    async def observe(label: str) -> None:
        await asyncio.sleep(1.0)  # reports (50 ms) and the router's poll (50 ms) settle
        snap = await asyncio.to_thread(board)
        status = {
            b.name: b for b in (await rstub.ListBackends(router_pb2.ListBackendsRequest())).backends
        }["gpu-ray"]
        request = router_pb2.GenerateRequest(
            messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content="probe")],
            max_output_tokens=4,
            latency_budget=router_pb2.LatencyBudget(ttft_ms=300),
        )
        decision = await rstub.Route(request)
        gpu = {c.backend: c for c in decision.candidates}["gpu-ray"]
        rows.append(
            [
                label,
                f"{snap.queued} + {snap.decoding}",
                str(status.queue_depth),
                f"{gpu.estimate.queue_wait_ms:.0f}"
                if gpu.accepted
                else f"(rejected: {gpu.rejected_by})",
                f"{gpu.estimate.ttft_ms:.0f}" if gpu.accepted else "-",
                decision.backend,
            ]
        )

    try:
        for n in steps:
            while len(calls) < n:
                call = direct.Generate(
                    mpb.ModelGenerateRequest(
                        messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content="a b c")],
                        max_output_tokens=5000,
                    ),
                    metadata=md,
                )
                calls.append(call)
                readers.append(asyncio.create_task(drain(call)))
            await observe(f"{n} streams")
        for call in calls:
            call.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await observe("after they end")
    finally:
        for call in calls:
            call.cancel()
        await direct_ch.close()
        await router_ch.close()
        await router.stop(0)
        await hosted.stop(0)
        for name in ("sat", "sat-load"):
            await asyncio.to_thread(serve.delete, name)
    return rows


# --- main ----------------------------------------------------------------------------------

ADDRESS = ""


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    from serving.engines.llamacpp import default_model_path

    model_path = default_model_path()
    rows: list[list[str]] = []
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores shared)", flush=True)
    if "overhead" in args.phases:
        rows += await overhead("llamacpp", model_path, args.max_tokens, args.repeat)
        rows += await overhead("scripted", model_path, 200, args.repeat)
        print(
            table(
                [
                    "engine",
                    "streams",
                    "TTFT in-process p50 / max, ms",
                    "TTFT via Serve p50 / max, ms",
                    "Serve adds (p50), ms",
                    "tokens/s in-process",
                    "tokens/s via Serve",
                    "difference",
                ],
                rows,
            ),
            flush=True,
        )
    if "saturation" in args.phases:
        sat = await saturation([0, 2, 4, 6, 8, 12])
        print()
        print(
            table(
                [
                    "direct streams to Serve",
                    "load board: queued + decoding",
                    "router's polled load",
                    "gpu est. queue wait, ms",
                    "gpu est. TTFT, ms",
                    "decision (TTFT budget 300 ms)",
                ],
                sat,
            ),
            flush=True,
        )


def main() -> None:
    global ADDRESS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one round per row")
    p.add_argument("--max-tokens", type=int, default=48, help="tokens per llama.cpp stream")
    p.add_argument(
        "--phases", nargs="+", default=["overhead", "saturation"], help="what to measure"
    )
    args = p.parse_args()
    args.repeat = 1 if args.quick else 3
    import ray

    from serving.ray_app.local import start_serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        grpc_port, _ = start_serve()
        ADDRESS = f"127.0.0.1:{grpc_port}"
        asyncio.run(main_async(args))
    finally:
        from ray import serve

        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
