"""Security and telemetry overhead: what auth, TLS, metrics, tracing and request logs add
to the router's latency, at 1 and 64 concurrent streams.

Processes, all on 127.0.0.1 (the same ones as bench/bench_overhead.py, whose helpers this
script imports):

- the backend: ``python -m serving.model_server --engine scripted`` (fixed token rate,
  TTFT 0);
- an OTLP sink (``_otlp_sink`` mode of this script): a gRPC server that implements the
  OpenTelemetry collector's TraceService and drops what it receives, so the ``full``
  variant pays for real span export (protobuf encoding, gRPC) but not for a collector;
- the router: ``hybrid-router serve --config <generated router.yaml>``, one variant at a
  time:

  ========  ==========================================================================
  bare      no keys (loopback), plaintext, no metrics, no tracing, no request log line
  auth      API key checked on every call (keys file, tenant with limits), plaintext
  auth+tls  the same over TLS (server certificate; the handshake happens before the
            measurement window, as with a client's long-lived channel)
  full      auth + TLS + Prometheus metrics (scraped every second by this script) +
            OTLP tracing (every request sampled, batch export to the sink) + one JSON
            request log line per request (to a file)
  ========  ==========================================================================

- the load generator (``_loadgen`` mode): closed loop, each stream runs requests back to
  back over one shared channel; TTFT = call start -> first delta; total = call start ->
  end of stream. Only requests that start inside the measurement window count.

It measures; it asserts nothing. Usage::

    .venv/bin/python bench/bench_security_overhead.py              # ~3 minutes
    .venv/bin/python bench/bench_security_overhead.py --quick      # ~1 minute
    .venv/bin/python bench/bench_security_overhead.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_overhead as bo  # noqa: E402  (sibling script: process and statistics helpers)

REPO = Path(__file__).resolve().parents[1]
PROMPT = "hello world"
ROUTED_METHOD = "/hybrid_router.v1.InferenceRouter/Generate"
DELTA, USAGE = 0x12, 0x22
VARIANTS = ("bare", "auth", "auth+tls", "full")


# --- load generator (child process) -----------------------------------------------------------


async def _loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    import grpc
    from hybrid_router.v1 import router_pb2, types_pb2

    payload = router_pb2.GenerateRequest(
        messages=[types_pb2.ChatMessage(role=types_pb2.ROLE_USER, content=PROMPT)],
        max_output_tokens=spec["max_tokens"],
    ).SerializeToString()
    if spec.get("ca"):
        creds = grpc.ssl_channel_credentials(root_certificates=Path(spec["ca"]).read_bytes())
        channels = [grpc.aio.secure_channel(spec["target"], creds) for _ in range(spec["channels"])]
    else:
        channels = [grpc.aio.insecure_channel(spec["target"]) for _ in range(spec["channels"])]
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), 10)
    calls = [
        ch.unary_stream(ROUTED_METHOD, request_serializer=None, response_deserializer=None)
        for ch in channels
    ]
    metadata = (("authorization", f"Bearer {spec['key']}"),) if spec.get("key") else None
    streams = spec["streams"]
    clock = time.monotonic
    t0 = clock() + spec["warmup_s"]
    t1 = t0 + spec["measure_s"]
    ttft: list[float] = []
    total: list[float] = []
    errors: dict[str, int] = {}
    eof = grpc.aio.EOF

    async def worker(i: int) -> None:
        call_fn = calls[i % len(calls)]
        await asyncio.sleep(spec["ramp_s"] * i / max(1, streams))
        while True:
            ts = clock()
            if ts >= t1:
                return
            first = None
            call = call_fn(payload, timeout=120.0, metadata=metadata)
            try:
                while True:
                    msg = await call.read()
                    if msg is eof:
                        break
                    if msg[0] == DELTA and first is None:
                        first = clock()
            except grpc.aio.AioRpcError as exc:
                if ts >= t0:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                await asyncio.sleep(0.05)
                continue
            end = clock()
            if ts >= t0 and first is not None:
                ttft.append(first - ts)
                total.append(end - ts)

    await asyncio.gather(*(worker(i) for i in range(streams)))
    for ch in channels:
        await ch.close()
    return {
        "window": [t0, t1],
        "requests": len(total),
        "errors": errors,
        "ttft_ms": bo.summary_ms(ttft),
        "total_ms": bo.summary_ms(total),
    }


# --- OTLP sink (child process) ------------------------------------------------------------------


async def _otlp_sink() -> None:
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received = {"spans": 0}

    class Sink(trace_service_pb2_grpc.TraceServiceServicer):
        async def Export(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    received["spans"] += len(ss.spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {port}", flush=True)
    await stop.wait()
    print(f"spans received: {received['spans']}", file=sys.stderr, flush=True)
    await server.stop(0.5)


# --- set-up ---------------------------------------------------------------------------------------


def make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1: (ca, cert, key) paths."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("bench CA")).issuer_name(name("bench CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        ), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def router_config(variant: str, backend_port: int, work: Path, sink_port: int) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "server": {"address": "127.0.0.1:0", "grace_period_s": 1, "reflection": False},
        "policy": {"load_poll_interval_s": 0.5},
        "backends": [
            {
                "name": "gpu-bench", "tier": "gpu", "kind": "model_service",
                "endpoint": f"127.0.0.1:{backend_port}", "model": "scripted",
                "context_window": 8192, "max_concurrency": 4096, "max_queue": 0,
                "data_classes": ["public", "internal"],
                "priors": {"ttft_ms": 10, "decode_tokens_per_s": 50},
            }
        ],
        "telemetry": {"logs": {"requests": False}},
    }  # fmt: skip
    if variant != "bare":
        cfg["auth"] = {
            "keys_file": str(work / "keys.yaml"),
            "tenants": [{"name": "bench", "max_streams": 1000}],
        }
    if variant in ("auth+tls", "full"):
        cfg["server"]["tls"] = {
            "cert_file": str(work / "cert.pem"),
            "key_file": str(work / "key.pem"),
        }
    if variant == "full":
        cfg["telemetry"] = {
            "metrics": {"address": "127.0.0.1:0"},
            "tracing": {"exporter": "otlp", "endpoint": f"http://127.0.0.1:{sink_port}"},
            "logs": {"requests": True},
        }
    return cfg


def _scrape(port_file: Path, stop: threading.Event, log_path: Path) -> None:
    """Scrape /metrics every second, as Prometheus would (port from the router's log)."""
    port = 0
    while not stop.wait(1.0):
        if not port:
            with contextlib.suppress(OSError, ValueError):
                for line in log_path.read_text(errors="replace").splitlines():
                    if "metrics on http://" in line:
                        port = int(line.rsplit(":", 1)[1].split("/")[0])
            continue
        with contextlib.suppress(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()


def run_variant(
    variant: str, streams: int, a: argparse.Namespace, work: Path, env: dict[str, str],
    backend_port: int, sink_port: int, key: str,
) -> dict[str, Any]:  # fmt: skip
    import yaml

    cfg_path = work / f"router-{variant.replace('+', '-')}.yaml"
    cfg_path.write_text(yaml.safe_dump(router_config(variant, backend_port, work, sink_port)))
    exe = str(Path(sys.executable).parent / "hybrid-router")
    argv = [exe, "serve", "--config", str(cfg_path), "--log-level", "info"]
    if variant == "full":
        argv.append("--json")
    name = f"router-{variant.replace('+', '-')}-{streams}"
    router = bo.Child(name, argv, work, env=env)
    stop_scrape = threading.Event()
    try:
        port = router.wait_ready()
        scraper = None
        if variant == "full":
            scraper = threading.Thread(
                target=_scrape, args=(work, stop_scrape, router.log_path), daemon=True
            )
            scraper.start()
        spec = {
            "target": f"127.0.0.1:{port}",
            "streams": streams,
            "channels": a.channels,
            "max_tokens": a.max_tokens,
            "warmup_s": a.warmup_s,
            "measure_s": a.measure_s,
            "ramp_s": a.max_tokens / a.tokens_per_s,
            "key": key if variant != "bare" else "",
            "ca": str(work / "ca.pem") if "tls" in variant or variant == "full" else "",
        }
        c0 = bo.proc_cpu_ticks(router.pid) or 0
        proc = subprocess.run(
            [sys.executable, __file__, "_loadgen", json.dumps(spec)],
            capture_output=True, cwd=REPO, env=env,
            timeout=a.warmup_s + a.measure_s + 180,
        )  # fmt: skip
        c1 = bo.proc_cpu_ticks(router.pid) or 0
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen failed: {proc.stderr.decode()[-2000:]}")
        result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        # Router CPU over the whole run (warm-up included), per request served in it.
        served = max(1, result["requests"])
        wall = a.warmup_s + a.measure_s + spec["ramp_s"]
        result["router_cpu_pct"] = (c1 - c0) / bo.CLK_TCK / wall * 100.0
        result["router_cpu_ms_per_req"] = (c1 - c0) / bo.CLK_TCK * 1000.0 / (
            served * (wall / a.measure_s)
        )
        return result
    finally:
        stop_scrape.set()
        router.stop()


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["_loadgen"]:
        print(json.dumps(asyncio.run(_loadgen(json.loads(args_in[1])))), flush=True)
        return 0
    if args_in[:1] == ["_otlp_sink"]:
        asyncio.run(_otlp_sink())
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--streams", default="1,64", help="comma-separated stream counts")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variants")
    p.add_argument("--tokens-per-s", type=float, default=50.0, help="backend rate per stream")
    p.add_argument("--max-tokens", type=int, default=50, help="tokens per request")
    p.add_argument("--measure-s", type=float, default=10.0)
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--channels", type=int, default=1, help="connections the loadgen uses")
    p.add_argument("--quick", action="store_true", help="measure 4 s per run")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    a = p.parse_args(args_in)
    if a.quick:
        a.measure_s = 4.0
    streams = [int(s) for s in a.streams.split(",")]
    variants = [v for v in a.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")

    from router.security.keys import KeyRecord, hash_key, new_key
    from router.security.keystore import write_keys_file

    work = Path(tempfile.mkdtemp(prefix="bench-security-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    make_tls(work)
    key_id, key = new_key()
    write_keys_file(work / "keys.yaml", [KeyRecord(key_id, "bench", hash_key(key))])
    children: list[bo.Child] = []
    results: list[dict[str, Any]] = []
    try:
        backend = bo.Child(
            "backend",
            [sys.executable, "-m", "serving.model_server", "--engine", "scripted",
             "--port", "0", "--tokens-per-s", f"{a.tokens_per_s:g}", "--ttft-ms", "0",
             "--max-concurrency", "4096", "--log-level", "WARNING", "--grace-s", "1"],
            work, env=env,
        )  # fmt: skip
        children.append(backend)
        backend_port = backend.wait_ready()
        sink = bo.Child("otlp-sink", [sys.executable, __file__, "_otlp_sink"], work, env=env)
        children.append(sink)
        sink_port = sink.wait_ready()
        for n in streams:
            for variant in variants:
                print(f"+ {variant:9s} {n:3d} streams ...", end=" ", flush=True)
                r = run_variant(variant, n, a, work, env, backend_port, sink_port, key)
                r.update(variant=variant, streams=n)
                results.append(r)
                t, tot = r["ttft_ms"], r["total_ms"]
                print(
                    f"n={r['requests']} ttft p50 {t['p50']:.2f} p99 {t['p99']:.2f} ms, "
                    f"total p50 {tot['p50']:.1f} ms, router cpu {r['router_cpu_pct']:.0f}% "
                    f"errors {r['errors'] or 0}",
                    flush=True,
                )
    finally:
        for child in reversed(children):
            with contextlib.suppress(Exception):
                child.stop()
    print_table(results, a)
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "results": results}, indent=2))
    print(f"logs: {work}")
    return 0


def print_table(results: list[dict[str, Any]], a: argparse.Namespace) -> None:
    print()
    print(
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores; backend {a.tokens_per_s:g} tok/s x {a.max_tokens} tokens; "
        f"{a.measure_s:g} s per run, {a.channels} channel(s)"
    )
    print()
    print("| streams | variant | requests | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms "
          "| total p50 ms | router CPU ms/req |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    base: dict[int, float] = {}
    for r in results:
        t = r["ttft_ms"]
        if r["variant"] == "bare":
            base[r["streams"]] = t["p50"]
        added = t["p50"] - base.get(r["streams"], math.nan)
        print(
            f"| {r['streams']} | {r['variant']} | {r['requests']} | {t['p50']:.2f} "
            f"| {t['p99']:.2f} | {added:+.2f} | {r['total_ms']['p50']:.1f} "
            f"| {r['router_cpu_ms_per_req']:.2f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
