"""Edge tier: what the EdgeLink path costs, and how long a model version switch takes.

Separate processes on 127.0.0.1: the router (``hybrid-router serve``), the edge agent
(``python -m greengrass.agent``) and, for the sync phase, ``moto_server`` (S3). This
process is the client.

1. ``overhead``: TTFT and decode rate of the same engine, same requests, (a) in this
   process, calling the engine directly, and (b) through router -> EdgeLink -> agent ->
   engine, as a gRPC client of the router sees them. Two engines: the real model
   (llama.cpp, Gemma 3 270M, greedy, 2 threads) and the scripted engine at full speed
   (no model: the per-token cost of the path itself). TTFT = request start -> first text;
   decode rate = (tokens - 1) / (last text - first text).
   ``relay``: two router replicas sharing a directory (``redis-server``); the scripted
   device is linked to replica A; the same requests through A and through B (B relays
   them to A over its relay port).
2. ``sync``: a second version of the real model (one GGUF metadata key rewritten, 240 MB)
   is published with ``hybrid-router models publish`` to moto S3 while a client sends
   requests back to back through the router to the device serving the bundled model. It
   records when the device reports downloading, loading and serving the new version
   (polling EdgeFleet.ListDevices every 0.1 s) and every request's outcome.

It measures; it asserts nothing. Usage::

    .venv/bin/python bench/bench_edge.py                  # both phases, ~3 minutes
    .venv/bin/python bench/bench_edge.py --phase overhead --requests 20
    .venv/bin/python bench/bench_edge.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import yaml
from hybrid_router.v1 import edge_link_pb2 as epb
from hybrid_router.v1 import edge_link_pb2_grpc, router_pb2_grpc
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb

from serving.engines import create_engine
from serving.engines.base import EngineRequest

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
PROMPT = "Write a long story about a dragon who learns to cook."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --- processes --------------------------------------------------------------------------


class Procs:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Path:
        out = self.folder / f"{name}.out"
        with out.open("wb") as f, (self.folder / f"{name}.err").open("wb") as e:
            proc = subprocess.Popen(
                cmd, stdout=f, stderr=e, cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )  # fmt: skip
        self.procs.append(proc)
        return out

    def wait_line(self, out: Path, prefix: str, timeout_s: float = 180.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in out.read_text(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line
            time.sleep(0.05)
        err = out.with_suffix(".err").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{out.stem}: no {prefix!r} line: {err}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()


def start_router(procs: Procs, edge: dict[str, Any], name: str = "router") -> int:
    cfg = {
        "server": {"address": "127.0.0.1:0", "grace_period_s": 1},
        "policy": {"load_poll_interval_s": 0.2, "ttft_timeout_ms": 60_000},
        "edge": {
            "enabled": True, "device_auth": "none", "heartbeat_interval_ms": 500,
            "heartbeat_timeout_s": 3, "backend": {"timeout_s": 120}, **edge,
        },
    }  # fmt: skip
    path = procs.folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = procs.start(
        name, [PY, "-m", "hybrid_router_cli.main", "serve", "--config", str(path),
               "--log-level", "warning"],
    )  # fmt: skip
    return int(procs.wait_line(out, "READY ").split()[1])


def start_agent(procs: Procs, port: int, engine: str, extra: list[str]) -> None:
    work = procs.folder / f"agent-{engine}-{len(procs.procs)}"
    out = procs.start(
        f"agent-{engine}",
        [PY, "-m", "greengrass.agent", "--router", f"127.0.0.1:{port}", "--device-id",
         "bench-dev", "--engine", engine, "--insecure", "--work-dir", str(work),
         "--threads", "2", "--context-window", "1024", "--log-level", "WARNING", *extra],
    )  # fmt: skip
    procs.wait_line(out, "READY ")


# --- phase 1: overhead ---------------------------------------------------------------------


async def in_process(engine_kind: str, n: int, max_tokens: int) -> list[tuple[float, float]]:
    options: dict[str, Any] = {"n_ctx": 1024, "n_threads": 2} if engine_kind == "llamacpp" else {}
    engine = create_engine(engine_kind, **options)
    await engine.start()
    samples = []
    try:
        for i in range(n + 1):
            req = EngineRequest(
                request_id=f"b{i}", messages=(("user", PROMPT),),
                max_output_tokens=max_tokens, temperature=0.0, seed=0,
            )  # fmt: skip
            t0 = time.perf_counter()
            first = last = 0.0
            tokens = 0
            async for chunk in engine.generate(req):
                if chunk.text:
                    last = time.perf_counter()
                    first = first or last
                tokens = chunk.output_tokens if chunk.done else tokens
            if i:  # the first request warms up
                samples.append(((first - t0) * 1000, (tokens - 1) / (last - first)))
    finally:
        await engine.close()
    return samples


async def routed(port: int, n: int, max_tokens: int) -> list[tuple[float, float]]:
    samples = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = router_pb2_grpc.InferenceRouterStub(ch)
        for i in range(n + 1):
            req = rpb.GenerateRequest(
                messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content=PROMPT)],
                max_output_tokens=max_tokens,
                sampling=tpb.SamplingParams(temperature=0.0, seed=0),
            )
            t0 = time.perf_counter()
            first = last = 0.0
            tokens = 0
            async for ev in stub.Generate(req):
                kind = ev.WhichOneof("event")
                if kind == "delta" and ev.delta.text:
                    last = time.perf_counter()
                    first = first or last
                elif kind == "usage":
                    tokens = ev.usage.output_tokens
                    assert ev.usage.backend == "edge-bench-dev", ev.usage.backend
            if i:
                samples.append(((first - t0) * 1000, (tokens - 1) / (last - first)))
    return samples


def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    ttft = [s[0] for s in samples]
    rate = [s[1] for s in samples]
    return {
        "ttft_p50_ms": round(pct(ttft, 0.5), 2),
        "ttft_p90_ms": round(pct(ttft, 0.9), 2),
        "tokens_per_s": round(statistics.mean(rate), 1),
        "requests": len(samples),
    }


async def phase_overhead(folder: Path, n: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for engine, max_tokens in (("llamacpp", 48), ("scripted", 200)):
        direct = summary(await in_process(engine, n, max_tokens))
        procs = Procs(folder)
        try:
            port = start_router(procs, {})
            start_agent(procs, port, engine, ["--scripted", "{}"] if engine == "scripted" else [])
            await asyncio.sleep(1.0)  # the device's first heartbeat reaches the policy
            via = summary(await routed(port, n, max_tokens))
        finally:
            procs.stop()
        results[engine] = {"max_tokens": max_tokens, "in_process": direct, "routed": via}
        print(f"{engine}: in process {direct}\n{' ' * len(engine)}  routed     {via}", flush=True)
    return results


# --- phase 1b: relay ------------------------------------------------------------------------


def relay_pki(folder: Path) -> dict[str, str]:
    """A throwaway CA and one relay certificate (serverAuth + clientAuth, DNS name
    ``hybrid-router-relay``) shared by both replicas: ``edge.relay.tls``."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("relay CA")).issuer_name(name("relay CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    san = x509.SubjectAlternativeName([x509.DNSName("hybrid-router-relay")])
    usage = x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    cert = (
        x509.CertificateBuilder().subject_name(name("hybrid-router-relay")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(san, critical=False).add_extension(usage, critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    files = {
        "ca_file": ca.public_bytes(pem),
        "cert_file": cert.public_bytes(pem),
        "key_file": key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    }
    out = {"server_name": "hybrid-router-relay"}
    for key_name, data in files.items():
        path = folder / f"relay-{key_name}.pem"
        path.write_bytes(data)
        out[key_name] = str(path)
    return out


async def phase_relay(folder: Path, n: int, tls: bool = False) -> dict[str, Any]:
    """The scripted device linked to replica A; requests through A and through B (relay).
    ``tls``: mutual TLS on the relay port (``edge.relay.tls``)."""
    procs = Procs(folder)
    try:
        redis_port = free_port()
        procs.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"])  # fmt: skip
        time.sleep(0.5)
        edge = {
            "directory": {"redis_url": f"redis://127.0.0.1:{redis_port}/0",
                          "sync_interval_s": 0.2},
            "relay": {"address": "127.0.0.1:0", **({"tls": relay_pki(folder)} if tls else {})},
        }  # fmt: skip
        port_a = start_router(procs, {**edge, "replica_id": "a"}, "router-a")
        port_b = start_router(procs, {**edge, "replica_id": "b"}, "router-b")
        start_agent(procs, port_a, "scripted", ["--scripted", "{}"])
        await asyncio.sleep(2.0)  # B reads the directory and polls the relay backend's load
        via_a = summary(await routed(port_a, n, 200))
        via_b = summary(await routed(port_b, n, 200))
    finally:
        procs.stop()
    label = "relay (mTLS)" if tls else "relay"
    print(f"{label}: holder {via_a}\n{' ' * len(label)}  other  {via_b}", flush=True)
    return {"max_tokens": 200, "holder": via_a, "relayed": via_b, "tls": tls}


# --- phase 2: sync ---------------------------------------------------------------------------


def _new_version() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gguf_new_version", REPO / "scripts" / "gguf_new_version.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.new_version


async def phase_sync(folder: Path) -> dict[str, Any]:
    import boto3

    from serving.engines.llamacpp import default_model_path

    t = time.monotonic()
    v2 = folder / "gemma-3-270m-v2.gguf"
    _new_version()(default_model_path(), v2)
    prep_s = time.monotonic() - t
    procs = Procs(folder)
    env = {
        "AWS_ACCESS_KEY_ID": "AKIDBENCH", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(folder / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(folder / "none"),
    }  # fmt: skip
    os.environ.update(env)
    try:
        moto_port = free_port()
        exe = shutil.which("moto_server", path=str(Path(PY).parent)) or "moto_server"
        procs.start("moto", [exe, "-H", "127.0.0.1", "-p", str(moto_port)])
        s3_url = f"http://127.0.0.1:{moto_port}"
        for _ in range(200):
            with contextlib.suppress(Exception):
                boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1").create_bucket(
                    Bucket="bench-models"
                )
                break
            time.sleep(0.1)
        store = {"bucket": "bench-models", "region": "us-east-1", "endpoint_url": s3_url,
                 "poll_interval_s": 0.5}  # fmt: skip
        port = start_router(procs, {"models": store})
        start_agent(
            procs, port, "llamacpp",
            ["--model-bucket", "bench-models", "--s3-endpoint-url", s3_url,
             "--s3-region", "us-east-1", "--min-free-disk-mb", "64"],
        )  # fmt: skip
        await asyncio.sleep(1.0)
        return await _switch(port, s3_url, v2, prep_s)
    finally:
        procs.stop()


async def _switch(port: int, s3_url: str, v2: Path, prep_s: float) -> dict[str, Any]:
    outcomes: list[tuple[float, bool, str]] = []
    marks: dict[str, float] = {}
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = router_pb2_grpc.InferenceRouterStub(ch)
        fleet = edge_link_pb2_grpc.EdgeFleetStub(ch)

        async def load() -> None:
            while not stop.is_set():
                req = rpb.GenerateRequest(
                    messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content="Hello, who are you?")],
                    max_output_tokens=12,
                )
                try:
                    events = [ev async for ev in stub.Generate(req)]
                    usage = events[-1].usage
                    outcomes.append((time.monotonic(), usage.complete, usage.backend))
                except grpc.aio.AioRpcError as exc:
                    outcomes.append((time.monotonic(), False, f"{exc.code().name}"))

        async def watch() -> None:
            while "v2" not in marks:
                resp = await fleet.ListDevices(epb.ListDevicesRequest())
                for d in resp.devices:
                    status = d.sync_status
                    now = time.monotonic()
                    if status.startswith("downloading") and "downloading" not in marks:
                        marks["downloading"] = now
                    if status.startswith("loading") and "loading" not in marks:
                        marks["loading"] = now
                    if d.models and d.models[0].version == "v2":
                        marks["v2"] = now
                await asyncio.sleep(0.1)

        worker = asyncio.create_task(load())
        await asyncio.sleep(2.0)
        t0 = time.monotonic()
        done = await asyncio.to_thread(
            subprocess.run,
            [PY, "-m", "hybrid_router_cli.main", "models", "publish", str(v2),
             "--name", "gemma3-270m", "--version", "v2", "--context-window", "1024",
             "--model-family", "gemma3",
             "--bucket", "bench-models", "--endpoint-url", s3_url, "--region", "us-east-1"],
            capture_output=True, text=True, check=False, cwd=REPO,
        )  # fmt: skip
        published = time.monotonic()
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        await asyncio.wait_for(watch(), 600)
        await asyncio.sleep(2.0)
        stop.set()
        await worker
    window = [o for o in outcomes if t0 <= o[0] <= marks["v2"] + 2.0]
    result = {
        "artifact_bytes": v2.stat().st_size,
        "make_v2_s": round(prep_s, 1),
        "publish_upload_s": round(published - t0, 2),
        "router_to_device_s": round(marks.get("downloading", published) - published, 2),
        "download_verify_install_s": round(marks["loading"] - marks["downloading"], 2),
        "load_smoke_switch_s": round(marks["v2"] - marks["loading"], 2),
        "publish_done_to_serving_v2_s": round(marks["v2"] - published, 2),
        "requests_during_switch": len(window),
        "failed_during_switch": sum(1 for o in window if not o[1]),
        "failed_total": sum(1 for o in outcomes if not o[1]),
        "requests_total": len(outcomes),
    }
    print(f"sync: {json.dumps(result)}", flush=True)
    return result


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        folder = Path(tmp)
        out: dict[str, Any] = {"cpu_count": os.cpu_count()}
        if args.phase in ("all", "overhead"):
            out["overhead"] = await phase_overhead(folder, args.requests)
        if args.phase in ("all", "relay"):
            out["relay"] = await phase_relay(folder, args.requests)
            if args.relay_tls:
                out["relay_tls"] = await phase_relay(folder, args.requests, tls=True)
        if args.phase in ("all", "sync"):
            out["sync"] = await phase_sync(folder)
        return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--phase", choices=["all", "overhead", "relay", "sync"], default="all")
    p.add_argument("--requests", type=int, default=10, help="requests per measurement")
    p.add_argument("--json", metavar="PATH", help="also write the results here")
    p.add_argument(
        "--relay-tls",
        action="store_true",
        help="relay phase: also measure it with mutual TLS on the relay port (edge.relay.tls)",
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
