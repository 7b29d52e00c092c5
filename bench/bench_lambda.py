"""Lambda front-ends: layer and package size, client import time, handler init time, and
what a handler invocation adds on top of the gRPC call.

- ``layer``: ``scripts/build_lambda_layer.py --deps local`` for this interpreter (and,
  with ``--download``, the template's target: python3.12 manylinux2014_x86_64 wheels);
  zipped and unzipped bytes, and the handlers' package (``lambda-functions.zip``).
- ``client import``: ``import hybrid_router.client`` (grpc + protobuf + the contract) from
  the unpacked layer in a fresh venv with nothing installed, as a Lambda orchestrator
  importing the layer does; median wall time minus the interpreter's own start-up.
- ``handler init``: ``import lambda_edge.entry_*`` (Lambda's init phase: Powertools,
  pydantic, the Runtime, the gRPC channel; boto3 clients for the SQS function) in a fresh
  interpreter, minus start-up. .pyc files exist (as in the layer the script builds).
- ``stream server``: the streaming function's ``import lambda_edge.stream_server`` minus
  start-up, and the wall time from starting ``python -m lambda_edge.stream_server`` to its
  first ``GET /healthz`` answer (the Lambda Web Adapter's readiness check).
- ``invocation``: the HTTP handler (API Gateway v2 event -> JSON response) against a
  local router + scripted model (16 tokens), versus ``RouterClient.complete`` on the same
  channel: the handler's own cost per request.

    .venv/bin/python bench/bench_lambda.py [--runs 9] [--invocations 200] [--download] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import venv
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "build_lambda_layer.py"
AWS_ENV = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "HYBRID_ROUTER_ADDRESS": "127.0.0.1:9",
    "HYBRID_ROUTER_JOBS_BUCKET": "bench-results",
    "HYBRID_ROUTER_IDEMPOTENCY_TABLE": "bench-idempotency",
}


def build(out: Path, *extra: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *extra],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(proc.stdout))


def wall_ms(cmd: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def layer_figures(runs: int, download: bool) -> dict[str, Any]:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        local = build(t / "local", "--deps", "local", "--python-version", here)
        keys = ("python_version", "layer_zip_bytes", "layer_unzipped_bytes", "functions_zip_bytes")
        out["local"] = {k: local[k] for k in keys}
        if download:
            d = build(t / "download")
            out["python3.12_x86_64"] = {
                k: d[k] for k in ("layer_zip_bytes", "layer_unzipped_bytes", "functions_zip_bytes")
            }
        env_dir = t / "venv"
        venv.EnvBuilder(with_pip=False).create(env_dir)
        opt = t / "opt"
        with zipfile.ZipFile(t / "local" / "lambda-layer.zip") as zf:
            zf.extractall(opt)
        py = str(env_dir / "bin" / "python")
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(opt / "python")}
        base = wall_ms([py, "-s", "-c", "pass"], env, runs)
        imp = wall_ms([py, "-s", "-c", "import hybrid_router.client"], env, runs)
        out["client_import_ms"] = round(imp - base, 1)
        out["interpreter_start_ms"] = round(base, 1)
    return out


def init_figures(runs: int) -> dict[str, float]:
    """Init time per entry module, X-Ray tracing off and on (on: as in Lambda with
    ``Tracing: Active``, which loads the X-Ray SDK and botocore)."""
    off = {**os.environ, **AWS_ENV}
    on = {k: v for k, v in off.items() if k != "POWERTOOLS_TRACE_DISABLED"}
    on["LAMBDA_TASK_ROOT"] = "/var/task"
    base = wall_ms([sys.executable, "-c", "pass"], off, runs)
    out = {}
    for name in ("entry_http", "entry_websocket", "entry_jobs"):
        for label, env in (("tracing_off", off), ("tracing_on", on)):
            ms = wall_ms([sys.executable, "-c", f"import lambda_edge.{name}"], env, runs)
            out[f"{name} ({label})"] = round(ms - base, 1)
    return out


def stream_server_figures(runs: int) -> dict[str, float]:
    """The streaming function's server: its import (init) time, and the time from the
    process's start to the first ``GET /healthz`` answer, which is what the Lambda Web
    Adapter's readiness check waits for before the first invocation (median of ``runs``)."""
    import socket
    import urllib.request

    env = {**os.environ, **AWS_ENV}
    base = wall_ms([sys.executable, "-c", "pass"], env, runs)
    imp = wall_ms([sys.executable, "-c", "import lambda_edge.stream_server"], env, runs)
    ready = []
    for _ in range(runs):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "lambda_edge.stream_server", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                    break
                except OSError:
                    if proc.poll() is not None or time.perf_counter() - t0 > 60:
                        raise RuntimeError("stream server did not start") from None
                    time.sleep(0.005)
            ready.append((time.perf_counter() - t0) * 1000)
        finally:
            proc.terminate()
            proc.wait(10)
    return {
        "import_ms": round(imp - base, 1),
        "start_to_ready_ms": round(statistics.median(ready), 1),
        "interpreter_start_ms": round(base, 1),
    }


class Ctx:
    aws_request_id = "bench"
    function_name = "bench"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def invocation_figures(n: int) -> dict[str, float]:
    from router.config import parse_config
    from router.server.app import create_server
    from serving.engines.scripted import ScriptedEngine
    from serving.model_server import create_server as create_model_server

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> Any:
        engine = ScriptedEngine(reply_tokens=16)
        await engine.start()
        ms, ms_port = await create_model_server(engine, "127.0.0.1:0")
        await ms.start()
        cfg = parse_config(
            {
                "server": {"address": "127.0.0.1:0", "grace_period_s": 0},
                "backends": [
                    {"name": "gpu-a", "tier": "gpu", "kind": "model_service",
                     "endpoint": f"127.0.0.1:{ms_port}", "model": "scripted",
                     "context_window": 8192, "max_concurrency": 8,
                     "data_classes": ["public", "internal", "restricted"]},
                ],
            },
            source="bench",
        )  # fmt: skip
        router = await create_server(cfg)
        return ms, router

    ms, router = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    os.environ["POWERTOOLS_TRACE_DISABLED"] = "true"
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    import logging

    from hybrid_router.client import make_request

    from lambda_edge.http_api import make_http_handler
    from lambda_edge.runtime import Runtime
    from lambda_edge.settings import Settings

    rt = Runtime(Settings.from_env({"HYBRID_ROUTER_ADDRESS": f"127.0.0.1:{router.port}"}))
    rt.logger.setLevel(logging.WARNING)
    handler = make_http_handler(rt)
    body = json.dumps({"messages": [{"role": "user", "content": "alpha beta gamma"}]})
    event: dict[str, Any] = {
        "version": "2.0", "routeKey": "POST /v1/generate", "rawPath": "/v1/generate",
        "rawQueryString": "", "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/v1/generate"},
                           "stage": "$default", "timeEpoch": int(time.time() * 1000)},
        "body": body, "isBase64Encoded": False,
    }  # fmt: skip
    req = make_request(prompt="alpha beta gamma")

    def measure(fn: Any) -> float:
        for _ in range(20):
            fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)

    def via_handler() -> None:
        event["requestContext"]["timeEpoch"] = int(time.time() * 1000)
        assert handler(event, Ctx())["statusCode"] == 200

    try:
        direct = measure(lambda: rt.client.complete(req, timeout_s=10))
        through = measure(via_handler)
    finally:
        rt.close()
        asyncio.run_coroutine_threadsafe(router.stop(0), loop).result(30)
        asyncio.run_coroutine_threadsafe(ms.stop(0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    return {
        "client_complete_p50_ms": round(direct, 2),
        "http_handler_p50_ms": round(through, 2),
        "handler_adds_ms": round(through - direct, 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=9, help="runs per timing (median)")
    p.add_argument("--invocations", type=int, default=200)
    p.add_argument("--download", action="store_true", help="also build the python3.12 layer")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    report: dict[str, Any] = {
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "layer": layer_figures(args.runs, args.download),
        "init_ms": init_figures(args.runs),
        "stream_server": stream_server_figures(args.runs),
        "invocation": invocation_figures(args.invocations),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    lay = report["layer"]
    print(f"machine: {report['machine']}")
    for name, fig in lay.items():
        if isinstance(fig, dict):
            print(
                f"layer {name}: zip {fig['layer_zip_bytes'] / 1e6:.2f} MB, unzipped "
                f"{fig['layer_unzipped_bytes'] / 1e6:.2f} MB; functions zip "
                f"{fig['functions_zip_bytes'] / 1e3:.1f} kB"
            )
    print(f"client import from the layer: {lay['client_import_ms']} ms "
          f"(interpreter start {lay['interpreter_start_ms']} ms)")  # fmt: skip
    for name, ms in report["init_ms"].items():
        print(f"init {name}: {ms} ms")
    ss = report["stream_server"]
    print(
        f"stream server: import {ss['import_ms']} ms, process start to /healthz answering "
        f"{ss['start_to_ready_ms']} ms (interpreter start {ss['interpreter_start_ms']} ms)"
    )
    inv = report["invocation"]
    print(
        f"invocation p50: client.complete {inv['client_complete_p50_ms']} ms, HTTP handler "
        f"{inv['http_handler_p50_ms']} ms (adds {inv['handler_adds_ms']} ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
