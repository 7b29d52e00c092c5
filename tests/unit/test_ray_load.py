"""The GPU tier's deployment-wide load signal (serving/ray_app/load.py), without Ray.

LoadBoard and LoadReporter are plain classes; Serve only hosts them. A fake clock drives
the board's staleness; the reporter's push is a recording function.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from hybrid_router.v1 import model_service_pb2 as mpb
from testkit import FakeClock

from router.config import parse_config
from router.errors import ConfigError
from serving.ray_app.load import LoadBoard, LoadReporter, ReplicaLoad
from serving.ray_app.settings import DeploymentSettings, ModelAppArgs


def load(rid: str, ongoing: int, decoding: int, capacity: int = 1, **kw: object) -> ReplicaLoad:
    return ReplicaLoad(
        rid,
        ongoing=ongoing,
        decoding=decoding,
        capacity=capacity,
        model="m",
        engine="scripted",
        context_window=4096,
        **kw,  # type: ignore[arg-type]
    )


# --- the board ---------------------------------------------------------------------------


def test_board_sums_queued_and_decoding_over_live_replicas() -> None:
    clock = FakeClock()
    board = LoadBoard("gpu", stale_after_s=3.0, clock=clock)
    board.report(load("gpu#a", ongoing=4, decoding=1))
    board.report(load("gpu#b", ongoing=2, decoding=1, decode_tokens_per_s=20.0))
    info = board.info()
    assert (info.queue_depth, info.in_flight, info.max_concurrency) == (4, 2, 2)
    assert info.replica_id == "gpu: 2 replicas"
    assert (info.model, info.engine, info.context_window) == ("m", "scripted", 4096)
    assert info.decode_tokens_per_s == 20.0
    # A newer report replaces the replica's previous one.
    board.report(load("gpu#a", ongoing=1, decoding=1))
    assert board.info().queue_depth == 1


def test_board_reports_the_mean_prefill_rate_of_the_replicas_that_report_one() -> None:
    board = LoadBoard("gpu", stale_after_s=3.0, clock=FakeClock())
    board.report(load("gpu#a", 0, 0, prefill_tokens_per_s=4000.0))
    board.report(load("gpu#b", 0, 0, prefill_tokens_per_s=6000.0))
    board.report(load("gpu#c", 0, 0))  # reports none (0): not counted
    assert board.info().prefill_tokens_per_s == 5000.0
    assert LoadBoard("gpu", stale_after_s=3.0).info().prefill_tokens_per_s == 0.0


def test_board_drops_silent_replicas_and_goodbyes() -> None:
    clock = FakeClock()
    board = LoadBoard("gpu", stale_after_s=3.0, clock=clock)
    board.report(load("gpu#a", ongoing=3, decoding=1))
    board.report(load("gpu#b", ongoing=1, decoding=1))
    clock.advance(2.0)
    board.report(load("gpu#b", ongoing=1, decoding=1))  # b heartbeats, a has died
    clock.advance(1.5)
    snap = board.snapshot()
    assert [r.replica_id for r in snap.replicas] == ["gpu#b"]
    board.forget("gpu#b")
    info = board.info()
    # No live replica: capacity 0 is what the router's ray_serve adapter treats as down.
    assert (info.max_concurrency, info.queue_depth, info.in_flight) == (0, 0, 0)
    assert info.replica_id == "gpu: 0 replicas"


def test_board_counters_sum_lifetime_outcomes() -> None:
    board = LoadBoard("gpu", clock=FakeClock())
    board.report(load("gpu#a", 0, 0, started=5, completed=3, cancelled=1, failed=1))
    board.report(load("gpu#b", 0, 0, started=2, completed=2))
    snap = board.snapshot()
    assert [snap.total(n) for n in ("started", "completed", "cancelled", "failed")] == [7, 5, 1, 1]


async def test_board_generate_points_to_the_model_application() -> None:
    class Context:
        code = details = None

        def set_code(self, code: object) -> None:
            self.code = code

        def set_details(self, details: str) -> None:
            self.details = details

    board = LoadBoard("gpu", clock=FakeClock())
    ctx = Context()
    with pytest.raises(Exception, match="application=gpu"):
        async for _ in board.Generate(mpb.ModelGenerateRequest(), ctx):
            pass
    assert "FAILED_PRECONDITION" in str(ctx.code)
    assert isinstance(await board.Info(mpb.InfoRequest()), mpb.InfoResponse)


# --- the reporter ------------------------------------------------------------------------


def sample() -> ReplicaLoad:
    return load("gpu#a", ongoing=0, decoding=1, capacity=1)


async def test_reporter_counts_calls_and_pushes_changes() -> None:
    pushed: list[ReplicaLoad] = []
    got = asyncio.Event()

    async def push(item: ReplicaLoad) -> None:
        pushed.append(item)
        got.set()

    reporter = LoadReporter(sample, push, min_interval_s=0.001, heartbeat_s=60.0)
    reporter.start()
    try:
        await asyncio.wait_for(got.wait(), 10)  # the first report goes out at once
        assert pushed[0].ongoing == 0
        got.clear()
        reporter.begin()
        reporter.begin()
        reporter.end("cancelled")
        while not (pushed and pushed[-1].cancelled == 1):
            got.clear()
            await asyncio.wait_for(got.wait(), 10)
        last = pushed[-1]
        assert (last.ongoing, last.started, last.cancelled, last.decoding) == (1, 2, 1, 1)
        assert last.queued == 0
    finally:
        await reporter.close()


async def test_reporter_survives_a_failing_board(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def push(item: ReplicaLoad) -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("board redeploying")

    reporter = LoadReporter(sample, push)
    assert await reporter.push_now() is False
    assert await reporter.push_now() is False
    assert await reporter.push_now() is True
    warnings = [r for r in caplog.records if "load report failed" in r.getMessage()]
    assert len(warnings) == 1  # once per failing streak, not per attempt


# --- settings and router config -----------------------------------------------------------


def test_deployment_settings_map_to_serve_options() -> None:
    fixed = DeploymentSettings(num_replicas=2, ray_actor_options={"num_cpus": 0.25})
    opts = fixed.to_options()
    assert opts["num_replicas"] == 2 and "autoscaling_config" not in opts
    assert opts["ray_actor_options"] == {"num_cpus": 0.25, "num_gpus": 0.0}
    scaled = DeploymentSettings.model_validate(
        {"autoscaling": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}}
    ).to_options()
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"]["max_replicas"] == 4


def test_model_args_name_bad_fields() -> None:
    with pytest.raises(ValueError, match=r"engine\n"):
        ModelAppArgs.model_validate({"engine": "tensorrt"})
    with pytest.raises(ValueError, match=r"engine_options\.model_pth: not an option"):
        ModelAppArgs.model_validate({"engine": "llamacpp", "engine_options": {"model_pth": "x"}})
    with pytest.raises(ValueError, match=r"engine_options\.clock: not an option"):
        ModelAppArgs.model_validate({"engine": "scripted", "engine_options": {"clock": 1}})
    with pytest.raises(ValueError, match="engine vllm needs a model"):
        ModelAppArgs.model_validate({"engine": "vllm"})
    args = ModelAppArgs.model_validate(
        {"engine": "scripted", "model": {"id": "m1", "version": "7"}}
    )
    assert args.engine_kwargs() == {"model_name": "m1", "version": "7"}


def test_demo_ray_variant_is_a_valid_router_config_and_app() -> None:
    from hybrid_router_cli.demo import config as dc
    from serving.ray_app.local import build_parser, model_args_from

    ports = {s.name: 1000 + i for i, s in enumerate(dc.stand_ins(ray=True))}
    cfg = parse_config(dc.router_config(ports, ray=True))
    gpu = {b.name: b for b in cfg.backends}[dc.GPU_RAY.name]
    assert (gpu.kind, gpu.serve_application) == ("ray_serve", dc.RAY_APP)
    argv = dc.ray_serve_argv(dc.GPU_RAY, "/models/m.gguf")
    assert argv[1:3] == ["-m", "serving.ray_app"]
    args = model_args_from(build_parser().parse_args(argv[3:]))
    assert args.engine_options["n_ctx"] == dc.GPU_RAY.context_window
    assert args.deployment.max_ongoing_requests == gpu.max_concurrency + (gpu.max_queue or 0)


def gpu_backend(**over: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "name": "gpu-a",
        "tier": "gpu",
        "kind": "ray_serve",
        "endpoint": "ray-serve.gpu.svc:9000",
        "serve_application": "gpu",
        "model": "llama",
        "context_window": 8192,
    }
    entry.update(over)
    return entry


def test_router_config_for_ray_serve_backends() -> None:
    cfg = parse_config({"backends": [gpu_backend()]})
    assert cfg.backends[0].serve_load_application == ""
    from router.backends import create_backend
    from router.backends.ray_serve import RayServeBackend

    backend = create_backend(cfg.backends[0])
    assert isinstance(backend, RayServeBackend)
    assert (backend.application, backend.load_application) == ("gpu", "gpu-load")

    cases = [
        (gpu_backend(serve_application=""), "needs serve_application"),
        (gpu_backend(endpoint="http://x:9000"), "endpoint must be host:port for kind 'ray_serve'"),
        (
            {**gpu_backend(kind="openai", endpoint="http://x/v1")},
            "serve_application applies to kinds 'model_service' and 'ray_serve'",
        ),
        (
            gpu_backend(kind="model_service", serve_load_application="x"),
            "serve_load_application applies to kind 'ray_serve' only",
        ),
    ]
    for entry, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_config({"backends": [entry]})


def test_engines_and_model_server_import_without_ray() -> None:
    code = (
        "import sys\n"
        "import serving.engines, serving.engines.vllm, serving.engines.llamacpp\n"
        "import serving.engines.scripted, serving.model_server\n"
        "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith(('ray.', 'vllm')))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
