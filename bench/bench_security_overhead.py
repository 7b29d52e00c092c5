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
  full-no-  ``full`` without tracing (to tell the exporter's share from the rest)
  tracing
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
VARIANTS = ("bare", "auth", "auth+tls", "full-no-tracing", "full")


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


# --- micro: the per-request work of each piece, in process ------------------------------------


def micro(repeat: int = 5, number: int = 5000) -> dict[str, float]:
    """Microseconds per request of each piece, best of ``repeat`` runs of ``number``.

    On a shared machine these CPU costs are steadier than end-to-end latency."""
    import io
    import logging
    import timeit

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from router.config import AuthConfig, TenantConfig
    from router.policy import PolicyParams
    from router.policy import plan as policy_plan
    from router.security.authn import Authenticator
    from router.security.keys import hash_key, new_key
    from router.security.keystore import KeyStore
    from router.security.tenants import TenantAccess
    from router.telemetry import tracing
    from router.telemetry.logs import REQUEST_LOGGER, JsonFormatter
    from router.telemetry.metrics import PrometheusMetrics
    from router.telemetry.observer import Telemetry
    from router.types import (
        BackendSnapshot,
        BackendSpec,
        DecisionEvent,
        Features,
        FinishReason,
        InferenceRequest,
        Message,
        Priors,
        Role,
        Tier,
        TokenCount,
        UsageEvent,
    )  # fmt: skip

    def best(fn: Any) -> float:
        return min(timeit.repeat(fn, repeat=repeat, number=number)) / number * 1e6

    out: dict[str, float] = {}
    # Auth: a store of 1,000 keys; one look-up by id and one SHA-256 per call.
    keys = []
    for _ in range(1000):
        kid, k = new_key()
        keys.append({"id": kid, "tenant": "acme", "hash": hash_key(k)})
    store = KeyStore(AuthConfig.model_validate({"keys": keys}), environ={})
    kid, key = new_key()
    store._by_id[kid] = store._by_id[keys[0]["id"]].__class__(kid, "acme", hash_key(key))
    access = TenantAccess.from_config(TenantConfig(name="acme", tiers=(Tier.GPU, Tier.EDGE)))
    auth = Authenticator(store, {"acme": access})
    md = (("authorization", f"Bearer {key}"), ("x-request-id", "r"))
    out["auth: authenticate"] = best(lambda: auth.authenticate(md))

    # Tenant scoping of the policy: 3 backends, one of them not allowed.
    def spec(name: str, tier: Tier) -> BackendSpec:
        return BackendSpec(name, tier, "model_service", "x:1", "m", 8192, 100_000, 8, 8,
                           frozenset({"internal", "public"}), Priors(100.0, 50.0))  # type: ignore[arg-type]  # fmt: skip

    pairs = [(spec(n, t), BackendSnapshot(n)) for n, t in
             (("edge-a", Tier.EDGE), ("gpu-a", Tier.GPU), ("hosted-a", Tier.HOSTED))]  # fmt: skip
    req = InferenceRequest((Message(Role.USER, "hello"),), 64, "r")
    feats = Features(req, 5, {"estimate": TokenCount(6, False)})
    cfg = PolicyParams()
    out["policy.plan (3 backends, no tenant)"] = best(lambda: policy_plan(feats, pairs, cfg, 0.0))
    out["tenant: check + scoped plan"] = best(
        lambda: (access.check_request(req), access.plan(feats, pairs, cfg, 0.0))
    )

    plan = policy_plan(feats, pairs, cfg, 0.0)
    decision = DecisionEvent(plan)
    usage = UsageEvent("r", "gpu-a", Tier.GPU, 9, 10, 0.0001, 20.0, 400.0, FinishReason.STOP, True)

    def one_request(t: Telemetry) -> None:
        obs = t.begin("Generate", md)
        obs.set_principal("acme", kid)
        obs.set_request(req)
        obs.event(decision)
        span = tracing.start_attempt(t.tracer, pairs[1][0], 1)
        tracing.inject(span)
        tracing.end_attempt(span, True, "", True)
        obs.event(usage)
        obs.finish("OK", None)

    logger = logging.getLogger(REQUEST_LOGGER)
    logger.propagate = False
    try:
        logger.setLevel(logging.WARNING)  # bare: no request line
        off = Telemetry(log_requests=False)
        out["telemetry off (no-op metrics and tracer, no log line)"] = best(
            lambda: one_request(off)
        )

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        full = Telemetry(PrometheusMetrics(), provider.get_tracer("bench"))
        metrics_only = Telemetry(PrometheusMetrics(), log_requests=False)
        tracing_only = Telemetry(tracer=provider.get_tracer("bench"), log_requests=False)
        log_only = Telemetry()
        out["metrics only"] = best(lambda: one_request(metrics_only))
        out["tracing only (SDK, batch processor)"] = best(lambda: one_request(tracing_only))
        handler = logging.StreamHandler(io.StringIO())
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        out["request log line only (JSON)"] = best(lambda: one_request(log_only))
        out["metrics + tracing + JSON log line"] = best(lambda: one_request(full))
        logger.removeHandler(handler)
        provider.shutdown()
    finally:
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    return out


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
    if variant in ("auth+tls", "full-no-tracing", "full"):
        cfg["server"]["tls"] = {
            "cert_file": str(work / "cert.pem"),
            "key_file": str(work / "key.pem"),
        }
    if variant.startswith("full"):
        cfg["telemetry"] = {
            "metrics": {"address": "127.0.0.1:0"},
            "tracing": {"exporter": "otlp", "endpoint": f"http://127.0.0.1:{sink_port}"},
            "logs": {"requests": True},
        }
    if variant == "full-no-tracing":
        cfg["telemetry"]["tracing"] = {"exporter": "none"}
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
    if variant.startswith("full"):
        argv.append("--json")
    name = f"router-{variant.replace('+', '-')}-{streams}"
    router = bo.Child(name, argv, work, env=env)
    stop_scrape = threading.Event()
    try:
        port = router.wait_ready()
        scraper = None
        if variant.startswith("full"):
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
            "ca": str(work / "ca.pem") if variant not in ("bare", "auth") else "",
        }
        with bo.Sampler({"router": router.pid}) as sampler:
            proc = subprocess.run(
                [sys.executable, __file__, "_loadgen", json.dumps(spec)],
                capture_output=True, cwd=REPO, env=env,
                timeout=a.warmup_s + a.measure_s + 180,
            )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen failed: {proc.stderr.decode()[-2000:]}")
        result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        # Router CPU inside the measurement window, and per request started in it.
        t0, t1 = result["window"]
        cpu = sampler.window(t0, t1)
        pct = cpu["cpu_pct"].get("router", math.nan)
        result["router_cpu_pct"] = pct
        result["machine_busy_pct"] = cpu.get("machine_busy_pct", math.nan)
        result["router_cpu_ms_per_req"] = (
            pct / 100.0 * (t1 - t0) * 1000.0 / max(1, result["requests"])
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
    p.add_argument("--tokens-per-s", type=float, default=20.0, help="backend rate per stream")
    p.add_argument("--max-tokens", type=int, default=10, help="tokens per request")
    p.add_argument("--measure-s", type=float, default=12.0)
    p.add_argument(
        "--rounds", type=int, default=3, help="repeat every variant; the table shows medians"
    )
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--channels", type=int, default=1, help="connections the loadgen uses")
    p.add_argument(
        "--quiet-pct",
        type=float,
        default=50.0,
        help="before each run, wait (up to 60 s) until the machine's CPU use is below this "
        "(percent of one core, all cores summed); 0 skips the wait",
    )
    p.add_argument("--quick", action="store_true", help="measure 4 s per run")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--micro-only", action="store_true", help="only the in-process micro phase")
    a = p.parse_args(args_in)
    if a.quick:
        a.measure_s = 4.0
    if a.quiet_pct > 0:
        bo.wait_for_quiet(60.0, a.quiet_pct)
    micro_us = micro()
    print("micro (in process, best of 5, us per request):")
    for name, us in micro_us.items():
        print(f"  {name:55s} {us:8.2f}")
    if a.micro_only:
        if a.json:
            Path(a.json).write_text(json.dumps({"micro_us": micro_us}, indent=2))
        return 0
    streams = [int(s) for s in a.streams.split(",")]
    variants = [v for v in a.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")

    from router.security.keys import KeyRecord, hash_key, new_key
    from router.security.keystore import write_keys_file

    # SIGTERM ends the run like Ctrl-C: the finally below stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
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
            for rnd in range(a.rounds):
                # Rotate the order each round so that drift on a shared machine spreads
                # over every variant instead of loading one.
                order = variants[rnd % len(variants) :] + variants[: rnd % len(variants)]
                for variant in order:
                    if a.quiet_pct > 0:
                        bo.wait_for_quiet(60.0, a.quiet_pct)
                    print(f"+ round {rnd + 1} {variant:9s} {n:3d} streams ...", end=" ", flush=True)
                    r = run_variant(variant, n, a, work, env, backend_port, sink_port, key)
                    r.update(variant=variant, streams=n, round=rnd + 1)
                    results.append(r)
                    t, tot = r["ttft_ms"], r["total_ms"]
                    print(
                        f"n={r['requests']} ttft p50 {t['p50']:.2f} p99 {t['p99']:.2f} ms, "
                        f"total p50 {tot['p50']:.1f} ms, router cpu {r['router_cpu_pct']:.0f}% "
                        f"({r['router_cpu_ms_per_req']:.2f} ms/req), machine "
                        f"{r['machine_busy_pct']:.0f}%, errors {r['errors'] or 0}",
                        flush=True,
                    )
    finally:
        for child in reversed(children):
            with contextlib.suppress(Exception):
                child.stop()
    print_table(results, a)
    if a.json:
        Path(a.json).write_text(
            json.dumps({"args": vars(a), "micro_us": micro_us, "results": results}, indent=2)
        )
    print(f"logs: {work}")
    return 0


def _median(values: list[float]) -> float:
    v = sorted(x for x in values if not math.isnan(x))
    if not v:
        return math.nan
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def print_table(results: list[dict[str, Any]], a: argparse.Namespace) -> None:
    print()
    print(
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores; backend {a.tokens_per_s:g} tok/s x {a.max_tokens} tokens; "
        f"{a.measure_s:g} s per run, {a.rounds} rounds (medians), {a.channels} channel(s)"
    )
    print()
    print(
        "| streams | variant | requests/round | TTFT p50 ms | TTFT p99 ms "
        "| added TTFT p50 ms | total p50 ms | router CPU ms/req | added CPU ms/req |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    keys = sorted({(r["streams"], r["variant"]) for r in results},
                  key=lambda k: (k[0], VARIANTS.index(k[1])))  # fmt: skip
    rows: dict[tuple[int, str], dict[str, float]] = {}
    for key in keys:
        rs = [r for r in results if (r["streams"], r["variant"]) == key]
        rows[key] = {
            "n": _median([r["requests"] for r in rs]),
            "p50": _median([r["ttft_ms"]["p50"] for r in rs]),
            "p99": _median([r["ttft_ms"]["p99"] for r in rs]),
            "total": _median([r["total_ms"]["p50"] for r in rs]),
            "cpu": _median([r["router_cpu_ms_per_req"] for r in rs]),
        }
    for (n, variant), row in rows.items():
        base = rows.get((n, "bare"), {})
        print(
            f"| {n} | {variant} | {row['n']:.0f} | {row['p50']:.2f} | {row['p99']:.2f} "
            f"| {row['p50'] - base.get('p50', math.nan):+.2f} | {row['total']:.1f} "
            f"| {row['cpu']:.2f} | {row['cpu'] - base.get('cpu', math.nan):+.2f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
