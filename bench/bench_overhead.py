"""Router overhead: what the router adds between a client and a fixed-rate backend.

Separate processes, all on 127.0.0.1:

- the backend: ``python -m serving.model_server --engine scripted`` (deterministic, fixed
  token rate, TTFT 0; one delta per token unless its writes lag, when it merges them);
- the router: ``hybrid-router serve --config <generated router.yaml>`` with that backend as
  its only backend;
- the load generator: a child process running this script's internal ``_loadgen`` mode
  (grpc.aio client on raw bytes: no protobuf parsing per message, one clock read per
  delta, so that it costs as little CPU as a Python client can);
- the floor relay (``_floor``, skip with ``--no-floor``): a bench-only, do-nothing
  grpc.aio proxy (InferenceRouter.Generate -> ModelService.Generate on raw bytes, no
  policy). It is a yardstick: what any Python grpc.aio hop costs on this machine.

This process only starts and stops them and samples ``/proc`` (CPU ticks, VmRSS) every
0.2 s. On a small machine all of them share the same cores; the tables report each
process's CPU, and the CPU used by everything else on the machine ("other"), so the
reader can see who was saturated. A run during which other processes used more than
``--noise-limit`` CPU is repeated (``--retries``) and the quietest attempt is kept.

Phases:

1. ``latency``: for each stream count (``--streams``): ``direct`` (ModelService.Generate
   on the backend), ``routed`` (InferenceRouter.Generate through the router) and
   ``floor``, same backend, same load. Each stream runs requests back to back (closed
   loop); starts are spread over one request's length. TTFT = call start -> first delta;
   inter-token = gap between consecutive delta messages of one stream. Only requests
   that start inside the measurement window count. The per-stream rate is
   ``--tokens-per-s``, capped so that streams x rate <= ``--aggregate-cap``.
   Router RSS (VmRSS after start, largest sampled VmRSS, VmHWM) per stream count.
2. ``throughput``: backend at full speed (``--tokens-per-s 0``), ``--tp-streams`` streams;
   delta messages/s and tokens/s received by the client: direct (the ceiling of backend
   + client on this machine), through the router with ``server.coalesce_deltas: false``
   and ``true``, and through the floor relay.

It measures; it asserts nothing. Usage::

    .venv/bin/python bench/bench_overhead.py                 # ~6 minutes on a quiet machine
    .venv/bin/python bench/bench_overhead.py --quick         # ~2 minutes
    .venv/bin/python bench/bench_overhead.py --streams 1,64 --json out.json

Before / after: ``--baseline-src DIR`` runs a second router and backend from another
source tree (``git archive <commit> | tar -x -C DIR``) in the same run, as extra
"before" rows, so that both meet the same neighbours on a shared machine.

Experiments: ``--router-set KEY=VALUE`` (server.* keys of the router under test, e.g.
``coalesce_linger_ms=0``, ``event_loop=asyncio``), ``--backend-no-coalesce`` (one delta
per token from the backend), ``--router-server-option K=V`` / ``--router-channel-option
K=V`` (extra grpc options), ``--router-patch`` (bench-only monkeypatches:
no-initial-metadata, log-warning, gc-log, gc-threshold) and ``--py-spy DIR`` (record the
router with py-spy during routed runs; py-spy is not a dependency: ``.venv/bin/pip install
py-spy``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROMPT = "hello world"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Wire tags (field number << 3 | 2) of the first byte of each serialized event.
ROUTED_DELTA, ROUTED_USAGE, ROUTED_DECISION = 0x12, 0x22, 0x0A
DIRECT_DELTA, DIRECT_DONE = 0x0A, 0x12
ROUTER_SERVICE = "hybrid_router.v1.InferenceRouter"
ROUTED_METHOD = f"/{ROUTER_SERVICE}/Generate"
DIRECT_METHOD = "/hybrid_router.v1.ModelService/Generate"


# --------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of an already sorted sequence (nan when empty)."""
    if not sorted_values:
        return math.nan
    idx = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[idx]


def summary_ms(values_s: list[float]) -> dict[str, float]:
    values = sorted(values_s)
    return {
        "n": len(values),
        "p50": quantile(values, 0.50) * 1000.0,
        "p90": quantile(values, 0.90) * 1000.0,
        "p99": quantile(values, 0.99) * 1000.0,
        "max": (values[-1] * 1000.0) if values else math.nan,
        "mean": (sum(values) / len(values) * 1000.0) if values else math.nan,
    }


# --------------------------------------------------------------------------------------
# load generator (child process: ``bench_overhead.py _loadgen '<json spec>'``)
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    t0: float
    t1: float
    ttft: list[float] = field(default_factory=list)
    decision: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    requests: int = 0
    delta_msgs: int = 0
    tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    # running counters for the throughput mode (all requests, sampled at t0/t1)
    live_msgs: int = 0
    live_tokens: int = 0


def _request_bytes(mode: str, max_tokens: int) -> bytes:
    from hybrid_router.v1 import model_service_pb2, router_pb2, types_pb2

    msg = types_pb2.ChatMessage(role=types_pb2.ROLE_USER, content=PROMPT)
    if mode == "direct":
        return model_service_pb2.ModelGenerateRequest(
            messages=[msg], max_output_tokens=max_tokens
        ).SerializeToString()
    return router_pb2.GenerateRequest(
        messages=[msg], max_output_tokens=max_tokens
    ).SerializeToString()


async def _loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    import grpc
    from hybrid_router.v1 import model_service_pb2, router_pb2

    mode: str = spec["mode"]
    streams: int = spec["streams"]
    count_tokens: bool = spec["kind"] == "throughput"
    direct = mode == "direct"
    delta_tag = DIRECT_DELTA if direct else ROUTED_DELTA
    final_tag = DIRECT_DONE if direct else ROUTED_USAGE
    payload = _request_bytes(mode, spec["max_tokens"])
    if direct:

        def parse_tokens(msg: bytes) -> int:
            return model_service_pb2.ModelGenerateEvent.FromString(msg).delta.tokens

        def parse_final(msg: bytes) -> int:
            return model_service_pb2.ModelGenerateEvent.FromString(msg).done.output_tokens
    else:

        def parse_tokens(msg: bytes) -> int:
            return router_pb2.GenerateEvent.FromString(msg).delta.tokens

        def parse_final(msg: bytes) -> int:
            return router_pb2.GenerateEvent.FromString(msg).usage.output_tokens

    channels = [
        grpc.aio.insecure_channel(spec["target"], options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(spec["channels"])
    ]
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), 10)
    calls = [
        ch.unary_stream(
            DIRECT_METHOD if direct else ROUTED_METHOD,
            request_serializer=None,
            response_deserializer=None,
        )
        for ch in channels
    ]
    eof = grpc.aio.EOF
    clock = time.monotonic
    start = clock()
    t0 = start + spec["warmup_s"]
    t1 = t0 + spec["measure_s"]
    tally = _Tally(t0, t1)
    ramp = spec["ramp_s"]

    async def worker(i: int) -> None:
        call_fn = calls[i % len(calls)]
        if streams > 1 and ramp > 0:
            await asyncio.sleep(ramp * i / streams)
        while True:
            ts = clock()
            if ts >= t1:
                return
            counted = ts >= t0
            gaps: list[float] = []
            first = last = None
            msgs = 0
            decision_at = None
            final_tokens = 0
            call = call_fn(payload, timeout=120.0)
            try:
                while True:
                    msg = await call.read()
                    if msg is eof:
                        break
                    tag = msg[0]
                    if tag == delta_tag:
                        now = clock()
                        if last is None:
                            first = now
                        else:
                            gaps.append(now - last)
                        last = now
                        msgs += 1
                        if count_tokens:
                            tally.live_msgs += 1
                            tally.live_tokens += parse_tokens(msg)
                    elif tag == final_tag:
                        final_tokens = parse_final(msg)
                    elif tag == ROUTED_DECISION and not direct and decision_at is None:
                        decision_at = clock()
            except grpc.aio.AioRpcError as exc:
                if counted:
                    key = exc.code().name
                    tally.errors[key] = tally.errors.get(key, 0) + 1
                await asyncio.sleep(0.05)
                continue
            if not counted:
                continue
            tally.requests += 1
            tally.delta_msgs += msgs
            tally.tokens += final_tokens
            if first is not None:
                tally.ttft.append(first - ts)
            if decision_at is not None:
                tally.decision.append(decision_at - ts)
            tally.gaps.extend(gaps)

    window: dict[str, Any] = {}

    async def window_sampler() -> None:
        await asyncio.sleep(max(0.0, t0 - clock()))
        window["m0"], window["k0"], window["tk0"] = clock(), tally.live_msgs, tally.live_tokens
        await asyncio.sleep(max(0.0, t1 - clock()))
        window["m1"], window["k1"], window["tk1"] = clock(), tally.live_msgs, tally.live_tokens

    sampler = asyncio.get_running_loop().create_task(window_sampler())
    await asyncio.gather(*(worker(i) for i in range(streams)))
    await sampler
    for ch in channels:
        await ch.close()
    elapsed = window["m1"] - window["m0"]
    out: dict[str, Any] = {
        "mode": mode,
        "streams": streams,
        "window": [t0, t1],
        "requests": tally.requests,
        "errors": tally.errors,
        "delta_msgs": tally.delta_msgs,
        "tokens": tally.tokens,
        "tokens_per_delta": (tally.tokens / tally.delta_msgs) if tally.tokens else math.nan,
        "ttft_ms": summary_ms(tally.ttft),
        "decision_ms": summary_ms(tally.decision),
        "itl_ms": summary_ms(tally.gaps),
    }
    if count_tokens:
        msgs, toks = window["k1"] - window["k0"], window["tk1"] - window["tk0"]
        out["msgs_per_s"] = msgs / elapsed
        out["tokens_per_s"] = toks / elapsed
        out["tokens_per_delta"] = toks / msgs if msgs else math.nan
    return out


def loadgen_main(raw_spec: str) -> int:
    spec = json.loads(raw_spec)
    if spec.get("uvloop"):
        import uvloop

        uvloop.install()
    result = asyncio.run(_loadgen(spec))
    print(json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------------------
# router variant (child process: ``bench_overhead.py _router --config P [options]``)
# --------------------------------------------------------------------------------------


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"grpc option must be KEY=VALUE, got {text!r}")
    try:
        return key, int(value)
    except ValueError:
        return key, value


ROUTER_PATCHES = (
    "no-initial-metadata",
    "log-warning",
    "gc-log",
    "gc-threshold",
)


def _patch_router(names: Sequence[str]) -> None:
    """Experiments on the router's per-request / per-message work (bench only)."""
    if "gc-log" in names:
        # Every 5 s, log the collections per generation: count, total and longest pause.
        import gc

        started: dict[str, float] = {}
        stats = {g: [0, 0.0, 0.0] for g in (0, 1, 2)}

        def on_gc(phase: str, info: dict[str, int]) -> None:
            now = time.perf_counter()
            if phase == "start":
                started["t"] = now
                return
            ms = (now - started.get("t", now)) * 1000.0
            entry = stats[info["generation"]]
            entry[0] += 1
            entry[1] += ms
            entry[2] = max(entry[2], ms)
            if now - started.setdefault("report", now) >= 5.0:
                started["report"] = now
                line = "; ".join(
                    f"gen{g}: {n} x, {total:.0f} ms, max {mx:.1f} ms"
                    for g, (n, total, mx) in stats.items()
                )
                print(f"bench gc (5 s): {line}", file=sys.stderr, flush=True)
                for entry in stats.values():
                    entry[:] = [0, 0.0, 0.0]

        gc.callbacks.append(on_gc)
    if "gc-threshold" in names:
        # Collect the young generation after 50,000 net allocations instead of 700.
        import gc

        gc.set_threshold(50_000, 20, 100)
    if "no-initial-metadata" in names:
        # Send the request id as trailing metadata instead of a separate initial-metadata op.
        import router.server.servicer as sv

        class _Ctx:
            def __init__(self, ctx: Any) -> None:
                self._ctx = ctx
                self.write = ctx.write
                self.time_remaining = ctx.time_remaining

            async def send_initial_metadata(self, md: Any) -> None:
                self._ctx.set_trailing_metadata(md)

            def __getattr__(self, name: str) -> Any:
                return getattr(self._ctx, name)

        real_generate = sv.InferenceRouterServicer.Generate

        async def generate(self: Any, request: Any, context: Any) -> None:
            await real_generate(self, request, _Ctx(context))

        sv.InferenceRouterServicer.Generate = generate  # type: ignore[method-assign]


def router_variant_main(argv: Sequence[str]) -> int:
    """``hybrid-router serve`` with uvloop installed (for a router that has no
    server.event_loop), bench-only patches and/or extra grpc options."""
    p = argparse.ArgumentParser(prog="bench_overhead.py _router")
    p.add_argument("--config", required=True)
    p.add_argument("--uvloop", action="store_true")
    p.add_argument("--server-option", action="append", default=[])
    p.add_argument("--channel-option", action="append", default=[])
    p.add_argument("--patch", action="append", default=[], choices=ROUTER_PATCHES)
    args = p.parse_args(argv)
    _patch_router(args.patch)
    import grpc.aio

    server_opts = [_parse_option(o) for o in args.server_option]
    channel_opts = [_parse_option(o) for o in args.channel_option]
    if server_opts:
        real_server = grpc.aio.server

        def server(*a: Any, **kw: Any) -> Any:
            kw["options"] = [*(kw.get("options") or ()), *server_opts]
            return real_server(*a, **kw)

        grpc.aio.server = server  # type: ignore[assignment]
    if channel_opts:
        real_channel = grpc.aio.insecure_channel

        def channel(target: str, options: Any = None, *a: Any, **kw: Any) -> Any:
            return real_channel(target, [*(options or ()), *channel_opts], *a, **kw)

        grpc.aio.insecure_channel = channel  # type: ignore[assignment]
    if args.uvloop:
        import uvloop

        uvloop.install()
    from hybrid_router_cli.main import main

    level = "warning" if "log-warning" in args.patch else "info"
    return main(["serve", "--config", args.config, "--log-level", level])


# --------------------------------------------------------------------------------------
# floor relay (child process: ``bench_overhead.py _floor HOST:PORT [--uvloop]``)
# --------------------------------------------------------------------------------------


async def _floor(backend: str) -> None:
    """The least a grpc.aio relay can do: InferenceRouter.Generate -> ModelService.Generate
    with raw bytes. One empty Decision first, each backend delta re-tagged (0x0a -> 0x12,
    the TextDelta bytes are the same), one empty Usage last. No policy, no stats, no
    domain objects, no protobuf per message. Not a router: a yardstick."""
    import grpc
    from hybrid_router.v1 import model_service_pb2, router_pb2

    channel = grpc.aio.insecure_channel(backend)
    call = channel.unary_stream(DIRECT_METHOD, request_serializer=None, response_deserializer=None)
    eof = grpc.aio.EOF

    async def generate(raw: bytes, context: grpc.aio.ServicerContext) -> None:
        req = router_pb2.GenerateRequest.FromString(raw)
        down = model_service_pb2.ModelGenerateRequest(
            messages=req.messages, max_output_tokens=req.max_output_tokens
        ).SerializeToString()
        await context.write(b"\x0a\x00")  # GenerateEvent(decision=Decision())
        rpc = call(down, timeout=context.time_remaining())
        try:
            while True:
                msg = await rpc.read()
                if msg is eof:
                    break
                if msg[0] == DIRECT_DELTA:
                    await context.write(b"\x12" + msg[1:])
                else:
                    await context.write(b"\x22\x00")  # GenerateEvent(usage=Usage())
        finally:
            if not rpc.done():
                rpc.cancel()

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler = grpc.unary_stream_rpc_method_handler(
        generate, request_deserializer=None, response_serializer=None
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "hybrid_router.v1.InferenceRouter", {"Generate": handler}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {port}", flush=True)
    await stop.wait()
    await server.stop(1.0)
    await channel.close()


def floor_main(argv: Sequence[str]) -> int:
    if "--uvloop" in argv:
        import uvloop

        uvloop.install()
    asyncio.run(_floor(argv[0]))
    return 0


# --------------------------------------------------------------------------------------
# orchestration
# --------------------------------------------------------------------------------------


class Child:
    """A child process in its own session; stopped with SIGTERM, then SIGKILL."""

    def __init__(
        self, name: str, argv: list[str], logdir: Path, *, env: dict[str, str], cwd: Path = REPO
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout_s: float = 60.0) -> int:
        """The port from the child's ``READY <port>`` line; then drain stdout in a thread."""
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if not sel.select(timeout=0.5):
                    if self.proc.poll() is not None:
                        break
                    continue
                line = self.proc.stdout.readline().decode(errors="replace")
                if not line:
                    break
                if line.startswith("READY "):
                    port = int(line.split()[1])
                    threading.Thread(target=self._drain, daemon=True).start()
                    return port
        finally:
            sel.close()
        raise RuntimeError(
            f"{self.name} did not print READY within {timeout_s:.0f}s; see {self.log_path}"
        )

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(Exception):
            for _ in self.proc.stdout:
                pass

    def stop(self, timeout_s: float = 5.0, keep_logs: str | None = None) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        if keep_logs:
            Path(keep_logs).mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.copy(self.log_path, Path(keep_logs) / f"{self.name}-{self.pid}.log")


def proc_cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


def proc_status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all cores from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return total - idle, total


class Sampler:
    """Samples CPU ticks and VmRSS of named pids, and machine CPU, every ``interval_s``."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.2) -> None:
        self.pids = dict(pids)
        self.interval_s = interval_s
        self.samples: list[tuple[float, dict[str, tuple[int | None, int | None]], tuple[int, int]]]
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            per = {
                name: (proc_cpu_ticks(pid), proc_status_kb(pid, "VmRSS"))
                for name, pid in self.pids.items()
            }
            self.samples.append((now, per, machine_ticks()))
            self._stop.wait(self.interval_s)

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """CPU% per process and for the machine, and the max VmRSS per process, in [t0, t1]."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        out: dict[str, Any] = {"cpu_pct": {}, "rss_max_mb": {}}
        if len(inside) < 2:
            return out
        first, last = inside[0], inside[-1]
        dt = last[0] - first[0]
        for name in self.pids:
            a, b = first[1][name][0], last[1][name][0]
            if a is not None and b is not None and dt > 0:
                out["cpu_pct"][name] = (b - a) / CLK_TCK / dt * 100.0
            rss = [s[1][name][1] for s in inside if s[1][name][1] is not None]
            if rss:
                out["rss_max_mb"][name] = max(rss) / 1024.0  # type: ignore[type-var]
        busy = last[2][0] - first[2][0]
        total = last[2][1] - first[2][1]
        out["machine_busy_pct"] = busy / total * 100.0 * (os.cpu_count() or 1) if total else 0.0
        out["other_cpu_pct"] = max(0.0, out["machine_busy_pct"] - sum(out["cpu_pct"].values()))
        return out


def wait_for_quiet(max_wait_s: float, threshold_pct: float) -> tuple[float, float]:
    """Wait (at most ``max_wait_s``) until the machine's CPU use over one second is below
    ``threshold_pct`` (percent of one core, summed over cores). Returns (waited s, last %)."""
    start = time.monotonic()
    ncpu = os.cpu_count() or 1
    while True:
        b0, t0 = machine_ticks()
        time.sleep(1.0)
        b1, t1 = machine_ticks()
        pct = (b1 - b0) / max(1, t1 - t0) * 100.0 * ncpu
        waited = time.monotonic() - start
        if pct < threshold_pct or waited >= max_wait_s:
            return waited, pct


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], src: Path | None = None) -> tuple[Child, int]:
        """Start a child; ``src``: run it from that source tree (cwd and PYTHONPATH) instead
        of this one (``--baseline-src``)."""
        env, cwd = self.env, REPO
        if src is not None:
            env = {**self.env, "PYTHONPATH": str(src)}
            cwd = src
        child = Child(name, argv, self.workdir, env=env, cwd=cwd)
        self.children.append(child)
        return child, child.wait_ready()

    def stop(self, child: Child) -> None:
        child.stop(keep_logs=self.args.keep_logs)
        self.children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                child.stop(keep_logs=self.args.keep_logs)
        self.children.clear()

    def backend(self, tokens_per_s: float, *, base: bool = False) -> tuple[Child, int]:
        argv = [
            sys.executable,
            "-m",
            "serving.model_server",
            "--engine",
            "scripted",
            "--port",
            "0",
            "--tokens-per-s",
            f"{tokens_per_s:g}",
            "--ttft-ms",
            "0",
            "--max-concurrency",
            "4096",
            "--log-level",
            "WARNING",
            "--grace-s",
            "1",
        ]
        if self.args.backend_no_coalesce and not base:
            argv.append("--no-coalesce")
        tag = "-before" if base else ""
        return self.start(
            f"backend-{tokens_per_s:g}tps{tag}", argv, self.args.baseline_src if base else None
        )

    def router(
        self, backend_port: int, *, coalesce: bool, tag: str, base: bool = False
    ) -> tuple[Child, int]:
        """The router under test, or with ``base`` the one from ``--baseline-src`` (its own
        defaults: no ``--router-set`` keys, which it may not know)."""
        cfg = self.workdir / f"router-{tag}.yaml"
        server = {} if base else dict(self.args.router_set)
        cfg.write_text(router_yaml(backend_port, coalesce=coalesce, server=server))
        a = self.args
        if base or a.router_server_option or a.router_channel_option or a.router_patch:
            argv = [sys.executable, str(Path(__file__).resolve()), "_router", "--config", str(cfg)]
            if not base:
                argv += [f"--patch={x}" for x in a.router_patch]
                argv += [f"--server-option={o}" for o in a.router_server_option]
                argv += [f"--channel-option={o}" for o in a.router_channel_option]
        else:
            exe = shutil.which("hybrid-router", path=str(Path(sys.executable).parent))
            argv = ([exe] if exe else [sys.executable, "-m", "hybrid_router_cli.main"]) + [
                "serve",
                "--config",
                str(cfg),
            ]
        return self.start(f"router-{tag}", argv, a.baseline_src if base else None)

    def floor(self, backend_port: int) -> tuple[Child, int]:
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_floor",
            f"127.0.0.1:{backend_port}",
        ]
        if self.args.floor_loop == "uvloop":
            argv.append("--uvloop")
        return self.start("floor-relay", argv)

    def loadgen(
        self, spec: dict[str, Any], watch: dict[str, int], py_spy: str | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run one load-generator child, again (up to ``--retries`` times) when the rest of
        the machine used more than ``--noise-limit`` CPU during the window; keeps the
        quietest attempt. Returns (its result, /proc window stats)."""
        best: tuple[dict[str, Any], dict[str, Any]] | None = None
        for attempt in range(self.args.retries + 1):
            res, win = self._loadgen_once(spec, watch, py_spy if attempt == 0 else None)
            res["attempts"] = attempt + 1
            other = win.get("other_cpu_pct", 0.0)
            if best is None or other < best[1].get("other_cpu_pct", 0.0):
                best = (res, win)
            if other <= self.args.noise_limit:
                break
            print(
                f"  (noisy: other processes used {other:.0f}% CPU during the window; "
                f"attempt {attempt + 1}/{self.args.retries + 1})",
                flush=True,
            )
        assert best is not None
        return best

    def _loadgen_once(
        self, spec: dict[str, Any], watch: dict[str, int], py_spy: str | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if self.args.wait_idle > 0:
            waited, pct = wait_for_quiet(self.args.wait_idle, self.args.idle_threshold)
            if waited > 1.5:
                print(f"  (waited {waited:.0f}s for a quiet machine: {pct:.0f}% busy)", flush=True)
        argv = [sys.executable, str(Path(__file__).resolve()), "_loadgen", json.dumps(spec)]
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=self.env,
            start_new_session=True,
        )
        spy = None
        try:
            with Sampler({**watch, "loadgen": proc.pid}) as sampler:
                if py_spy:
                    spy = start_py_spy(watch["router"], py_spy, spec)
                limit = spec["warmup_s"] + spec["measure_s"] + 180
                out, err = proc.communicate(timeout=limit)
            if spy is not None:
                spy.wait(30)
        finally:
            for p in (proc, spy):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait(5)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed ({proc.returncode}): {err.decode()[-2000:]}")
        result = json.loads(out.decode().strip().splitlines()[-1])
        t0, t1 = result["window"]
        return result, sampler.window(t0, t1)


def show_log_tail(child: Child, lines: int = 8) -> None:
    with contextlib.suppress(OSError):
        tail = child.log_path.read_text(errors="replace").splitlines()[-lines:]
        print(f"  --- {child.name} log (last {lines} lines):", *tail, sep="\n    ", flush=True)


def start_py_spy(pid: int, prefix: str, spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        raise SystemExit("--py-spy needs py-spy (.venv/bin/pip install py-spy)")
    Path(prefix).mkdir(parents=True, exist_ok=True)
    name = f"{spec['kind']}-{spec['tag']}-{spec['streams']}"
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--nonblocking",
            "--format",
            "raw",
            "--duration",
            str(max(1, int(spec["warmup_s"] + spec["measure_s"]))),
            "--output",
            str(Path(prefix) / f"{name}.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def router_yaml(backend_port: int, *, coalesce: bool, server: dict[str, str] | None = None) -> str:
    extra = "".join(f"  {k}: {v}\n" for k, v in (server or {}).items())
    return f"""\
# generated by bench/bench_overhead.py
server:
  address: 127.0.0.1:0
  grace_period_s: 1
  coalesce_deltas: {str(coalesce).lower()}
  reflection: false
{extra}policy:
  ttft_timeout_ms: 60000
backends:
  - name: bench-scripted
    tier: gpu
    kind: model_service
    endpoint: 127.0.0.1:{backend_port}
    model: scripted
    context_window: 8192
    max_concurrency: 4096
    max_queue: 0
    timeout_s: 60
    description: "scripted fixed-rate backend (not a model)"
"""


# --------------------------------------------------------------------------------------
# phases
# --------------------------------------------------------------------------------------


def stream_rate(a: argparse.Namespace, streams: int) -> float:
    """Tokens/s per stream for a run: ``--tokens-per-s``, capped so that the aggregate
    stays within ``--aggregate-cap`` (0: no cap)."""
    if a.aggregate_cap > 0:
        return min(a.tokens_per_s, a.aggregate_cap / streams)
    return a.tokens_per_s


def run_latency(bench: Bench, a: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"runs": [], "rss": []}
    base = a.baseline_src is not None
    modes = ["direct", "routed"] + (["before"] if base else []) + (["floor"] if a.floor else [])
    for n in a.streams:
        rate = stream_rate(a, n)
        backend, bport = bench.backend(rate)
        router, rport = bench.router(bport, coalesce=a.latency_coalesce, tag=f"latency-{n}")
        before = before_backend = None
        if base:
            before_backend = bench.backend(rate, base=True)
            before = bench.router(
                before_backend[1], coalesce=a.latency_coalesce, tag=f"latency-{n}-before", base=True
            )
        floor = bench.floor(bport) if a.floor else None
        time.sleep(1.0)
        idle_kb = proc_status_kb(router.pid, "VmRSS") or 0
        idle_before_kb = (proc_status_kb(before[0].pid, "VmRSS") or 0) if before else 0
        max_tokens = a.single_stream_tokens if n == 1 else a.max_tokens
        req_s = max_tokens / rate
        peak: dict[str, float] = {}
        ports = {
            "direct": bport,
            "routed": rport,
            "before": before[1] if before else 0,
            "floor": floor[1] if floor else 0,
        }
        # Rounds rotate the order of the paths, so that no path always runs first or last.
        order = [
            (rnd, modes[(i + rnd) % len(modes)])
            for rnd in range(a.rounds)
            for i in range(len(modes))
        ]
        for rnd, mode in order:
            spec = {
                "kind": "latency",
                "tag": mode,
                "mode": "direct" if mode == "direct" else "routed",
                "target": f"127.0.0.1:{ports[mode]}",
                "streams": n,
                "channels": a.channels,
                "max_tokens": max_tokens,
                "ramp_s": req_s if n > 1 else 0.0,
                "warmup_s": (req_s if n > 1 else 0.0) + a.warmup_s,
                "measure_s": a.measure_s,
                "uvloop": a.loadgen_uvloop,
            }
            watch = {"backend": backend.pid}
            if mode == "routed":
                watch["router"] = router.pid
            elif mode == "before" and before is not None and before_backend is not None:
                watch = {"backend": before_backend[0].pid, "router": before[0].pid}
            elif mode == "floor" and floor is not None:
                watch["router"] = floor[0].pid
            res, win = bench.loadgen(spec, watch, a.py_spy if mode == "routed" else None)
            res["path"] = mode
            res["round"] = rnd
            if res["errors"]:
                culprit = {"routed": router, "before": before[0] if before else backend}
                show_log_tail(culprit.get(mode, floor[0] if floor else backend))
            res["tokens_per_s_per_stream"] = rate
            res["max_tokens"] = max_tokens
            res["proc"] = win
            results["runs"].append(res)
            if mode in ("routed", "before"):
                peak[mode] = max(peak.get(mode, 0.0), win["rss_max_mb"].get("router", 0.0))
            print_latency_row(res, win)
        results["rss"].append(
            {
                "streams": n,
                "idle_mb": idle_kb / 1024.0,
                "peak_sampled_mb": peak.get("routed", 0.0),
                "vmhwm_mb": (proc_status_kb(router.pid, "VmHWM") or 0) / 1024.0,
                **(
                    {
                        "before_idle_mb": idle_before_kb / 1024.0,
                        "before_peak_sampled_mb": peak.get("before", 0.0),
                        "before_vmhwm_mb": (proc_status_kb(before[0].pid, "VmHWM") or 0) / 1024.0,
                    }
                    if before
                    else {}
                ),
            }
        )
        for child in (
            floor[0] if floor else None,
            before[0] if before else None,
            before_backend[0] if before_backend else None,
            router,
            backend,
        ):
            if child is not None:
                bench.stop(child)
    return results


TP_PATHS = {
    "direct": "direct (client -> backend)",
    "off": "routed, coalescing off",
    "on": "routed, coalescing on",
    "floor": "floor relay (bench-only minimal grpc.aio proxy)",
    "before-direct": "before: direct",
    "before-off": "before: routed, coalescing off",
    "before-on": "before: routed, coalescing on",
}


def run_throughput(bench: Bench, a: argparse.Namespace) -> dict[str, Any]:
    backend, bport = bench.backend(0)
    before_backend = bench.backend(0, base=True) if a.baseline_src is not None else None
    runs = []
    keys = [
        k
        for k in TP_PATHS
        if k in a.tp_paths
        and not (k == "floor" and not a.floor)
        and not (k.startswith("before-") and before_backend is None)
    ]
    order = [
        (rnd, keys[(i + rnd) % len(keys)]) for rnd in range(a.rounds) for i in range(len(keys))
    ]
    for rnd, key in order:
        label = TP_PATHS[key]
        is_base = key.startswith("before-")
        be_child, be_port = before_backend if is_base and before_backend else (backend, bport)
        relay: Child | None = None
        kind = key.removeprefix("before-")
        if kind == "direct":
            port = be_port
        elif kind == "floor":
            relay, port = bench.floor(be_port)
        else:
            relay, port = bench.router(
                be_port, coalesce=kind == "on", tag=f"coalesce-{key}", base=is_base
            )
        spec = {
            "kind": "throughput",
            "tag": key,
            "mode": "direct" if kind == "direct" else "routed",
            "target": f"127.0.0.1:{port}",
            "streams": a.tp_streams,
            "channels": a.channels,
            "max_tokens": a.tp_max_tokens,
            "ramp_s": 0.0,
            "warmup_s": a.tp_warmup_s,
            "measure_s": a.tp_measure_s,
            "uvloop": a.loadgen_uvloop,
        }
        watch = {"backend": be_child.pid}
        if relay is not None:
            watch["router"] = relay.pid
        spy = a.py_spy if key in ("on", "off") else None
        res, win = bench.loadgen(spec, watch, spy)
        res["path"] = key
        res["label"] = label
        res["round"] = rnd
        res["proc"] = win
        runs.append(res)
        print_throughput_row(res, win)
        if relay is not None:
            bench.stop(relay)
    bench.stop(backend)
    if before_backend is not None:
        bench.stop(before_backend[0])
    return {"runs": runs}


# --------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------


def _f(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _cpu(win: dict[str, Any], name: str) -> str:
    v = win.get("cpu_pct", {}).get(name)
    return "-" if v is None else f"{v:.0f}%"


def print_latency_row(res: dict[str, Any], win: dict[str, Any]) -> None:
    errs = ",".join(f"{k}:{v}" for k, v in res["errors"].items()) or "0"
    print(
        f"  latency {res['path']:>6} streams={res['streams']:<4} "
        f"rate={res['tokens_per_s_per_stream']:g}/s req={res['requests']:<5} "
        f"err={errs} ttft p50={_f(res['ttft_ms']['p50'])} p99={_f(res['ttft_ms']['p99'])} ms  "
        f"itl p50={_f(res['itl_ms']['p50'])} p99={_f(res['itl_ms']['p99'])} ms  "
        f"cpu router={_cpu(win, 'router')} backend={_cpu(win, 'backend')} "
        f"loadgen={_cpu(win, 'loadgen')} other={_f(win.get('other_cpu_pct', 0), 0)}%",
        flush=True,
    )


def print_throughput_row(res: dict[str, Any], win: dict[str, Any]) -> None:
    print(
        f"  throughput {res['label']:<24} err={sum(res['errors'].values())} "
        f"msgs/s={res['msgs_per_s']:.0f} "
        f"tokens/s={res['tokens_per_s']:.0f} tokens/msg={_f(res['tokens_per_delta'])} "
        f"cpu router={_cpu(win, 'router')} backend={_cpu(win, 'backend')} "
        f"loadgen={_cpu(win, 'loadgen')} other={_f(win.get('other_cpu_pct', 0), 0)}%",
        flush=True,
    )


def _cpus(w: dict[str, Any], names: Sequence[str]) -> str:
    parts = [_cpu(w, n) for n in names]
    parts.append(f"{_f(w.get('other_cpu_pct', math.nan), 0)}%")
    return " / ".join(parts)


def _median(values: list[float]) -> float:
    vals = sorted(v for v in values if v is not None and not math.isnan(v))
    if not vals:
        return math.nan
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's shape with the median of each figure over the rounds (``--rounds``);
    requests and errors are summed."""
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[0])
    for key in ("ttft_ms", "itl_ms"):
        out[key] = {q: _median([r[key][q] for r in runs]) for q in runs[0][key]}
    for key in ("tokens_per_delta", "msgs_per_s", "tokens_per_s"):
        if key in runs[0]:
            out[key] = _median([r[key] for r in runs])
    out["requests"] = sum(r["requests"] for r in runs)
    errors: dict[str, int] = {}
    for r in runs:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    out["errors"] = errors
    names = {n for r in runs for n in r["proc"].get("cpu_pct", {})}
    out["proc"] = {
        "cpu_pct": {
            n: _median([r["proc"]["cpu_pct"].get(n, math.nan) for r in runs]) for n in names
        },
        "other_cpu_pct": _median([r["proc"].get("other_cpu_pct", math.nan) for r in runs]),
    }
    out["rounds"] = len(runs)
    return out


def markdown(report: dict[str, Any]) -> str:
    lines: list[str] = []
    cfg = report["config"]
    lat = report.get("latency")
    if lat:
        groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for run in lat["runs"]:
            groups.setdefault((run["streams"], run["path"]), []).append(run)
        by = {k: _median_run(v) for k, v in groups.items()}
        rows = [
            (n, by[(n, "direct")], by[(n, "routed")], by.get((n, "before")), by.get((n, "floor")))
            for n in cfg["streams"]
            if (n, "direct") in by and (n, "routed") in by
        ]
        has_before = any(r[3] is not None for r in rows)
        cap = (
            f", aggregate capped at {cfg['aggregate_cap']:g} tokens/s"
            if cfg["aggregate_cap"]
            else ""
        )
        lines += [
            f"Latency: up to {cfg['tokens_per_s']:g} tokens/s per stream{cap}, "
            f"{cfg['max_tokens']} tokens per request ({cfg['single_stream_tokens']} with 1 "
            "stream, for more TTFT samples), backend TTFT 0 ms, closed loop (a stream starts "
            f"its next request when one ends), {cfg['measure_s']:g} s window. Added = routed "
            "minus direct, same backend, same load"
            + ("; before = the router and backend of --baseline-src." if has_before else "."),
            "",
            "| streams | tokens/s per stream | TTFT p50 direct | TTFT p50 routed "
            + ("| added p50 before " if has_before else "")
            + "| **added p50** | TTFT p99 direct | TTFT p99 routed "
            + ("| added p99 before " if has_before else "")
            + "| **added p99** | floor relay: added p50 / p99 |",
            "|---:|---:|---:|---:|"
            + ("---:|" if has_before else "")
            + "---:|---:|---:|"
            + ("---:|" if has_before else "")
            + "---:|---:|",
        ]

        def added(run: dict[str, Any] | None, direct: dict[str, Any], q: str) -> str:
            if run is None:
                return "-"
            # Each "before" row has its own direct baseline: the same backend build it used.
            return f"{_f(run['ttft_ms'][q] - direct['ttft_ms'][q])} ms"

        for n, d, r, bf, f in rows:
            dt, rt = d["ttft_ms"], r["ttft_ms"]
            fl = "-"
            if f is not None:
                ft = f["ttft_ms"]
                fl = f"{_f(ft['p50'] - dt['p50'])} / {_f(ft['p99'] - dt['p99'])} ms"
            lines.append(
                f"| {n} | {r['tokens_per_s_per_stream']:g} | {_f(dt['p50'])} ms | "
                f"{_f(rt['p50'])} ms | "
                + (f"{added(bf, d, 'p50')} | " if has_before else "")
                + f"**{_f(rt['p50'] - dt['p50'])} ms** | {_f(dt['p99'])} ms | "
                f"{_f(rt['p99'])} ms | "
                + (f"{added(bf, d, 'p99')} | " if has_before else "")
                + f"**{_f(rt['p99'] - dt['p99'])} ms** | {fl} |"
            )
        lines += [
            "",
            "| streams | path | inter-token p50 / p99 | tokens per delta | requests | errors "
            "| CPU: router / backend / loadgen / other |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        for n, d, r, bf, _ in rows:
            for label, run in (("direct", d), ("routed", r), ("before", bf)):
                if run is None:
                    continue
                it = run["itl_ms"]
                lines.append(
                    f"| {n} | {label} | {_f(it['p50'])} / {_f(it['p99'])} ms | "
                    f"{_f(run['tokens_per_delta'])} | {run['requests']} | "
                    f"{sum(run['errors'].values())} | "
                    f"{_cpus(run['proc'], ('router', 'backend', 'loadgen'))} |"
                )
        lines += [
            "",
            "CPU: % of one core over the measurement window (200% = both cores of a 2-core "
            "machine); other = the rest of the machine (not the benchmark's processes).",
            "",
            "| streams open | router VmRSS idle (after start) | router peak VmRSS (sampled) "
            "| router VmHWM |" + (" before: idle / peak / VmHWM |" if has_before else ""),
            "|---:|---:|---:|---:|" + ("---:|" if has_before else ""),
        ]
        for m in lat["rss"]:
            extra = ""
            if "before_idle_mb" in m:
                extra = (
                    f" {m['before_idle_mb']:.1f} / {m['before_peak_sampled_mb']:.1f} / "
                    f"{m['before_vmhwm_mb']:.1f} MB |"
                )
            lines.append(
                f"| {m['streams']} | {m['idle_mb']:.1f} MB | {m['peak_sampled_mb']:.1f} MB | "
                f"{m['vmhwm_mb']:.1f} MB |{extra}"
            )
        lines.append("")
    tp = report.get("throughput")
    if tp:
        lines += [
            f"Throughput: backend at full speed, {cfg['tp_streams']} "
            f"streams, {cfg['tp_max_tokens']} tokens per request, {cfg['tp_measure_s']:g} s "
            "window.",
            "",
            "| path | delta msgs/s | tokens/s | tokens per message | CPU router | CPU backend "
            "| CPU loadgen | CPU other |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        tgroups: dict[str, list[dict[str, Any]]] = {}
        for run in tp["runs"]:
            tgroups.setdefault(run["path"], []).append(run)
        for key in TP_PATHS:
            if key not in tgroups:
                continue
            r = _median_run(tgroups[key])
            w = r["proc"]
            lines.append(
                f"| {r['label']} | {r['msgs_per_s']:.0f} | {r['tokens_per_s']:.0f} | "
                f"{_f(r['tokens_per_delta'])} | {_cpu(w, 'router')} | {_cpu(w, 'backend')} | "
                f"{_cpu(w, 'loadgen')} | {_f(w.get('other_cpu_pct', math.nan), 0)}% |"
            )
        lines.append("")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import google.protobuf
    import grpc

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "kernel": platform.release(),
    }


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except empty ones (None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/bench_overhead.py",
        description=(
            "Router overhead: TTFT and inter-token latency through the router vs. directly "
            "to the same fixed-rate backend, relay throughput with coalescing off/on, and "
            "router RSS. Backend, router and load generator run as separate processes on "
            "127.0.0.1. Measures; asserts nothing."
        ),
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="short windows (about 1 minute)")
    p.add_argument("--json", metavar="PATH", help="write all results as JSON to PATH")
    p.add_argument(
        "--streams",
        default="1,64,512",
        help="comma-separated concurrent stream counts for the latency phase",
    )
    p.add_argument(
        "--phases",
        default="latency,throughput",
        help="phases to run: latency (includes RSS), throughput",
    )
    g = p.add_argument_group("latency phase")
    g.add_argument("--tokens-per-s", type=float, default=50.0, help="backend rate per stream")
    g.add_argument(
        "--aggregate-cap",
        type=float,
        default=3200.0,
        metavar="TOKENS_PER_S",
        help="cap streams x tokens/s per stream at this (0: no cap); lowers the per-stream "
        "rate of large stream counts",
    )
    g.add_argument(
        "--latency-no-coalesce",
        dest="latency_coalesce",
        action="store_false",
        help="router with server.coalesce_deltas: false in this phase (default: true)",
    )
    g.add_argument("--max-tokens", type=int, help="tokens per request (default 100, quick 50)")
    g.add_argument(
        "--single-stream-tokens",
        type=int,
        default=10,
        help="tokens per request when only 1 stream runs (more TTFT samples per second)",
    )
    g.add_argument("--measure-s", type=float, help="measurement window, s (default 10, quick 4)")
    g.add_argument(
        "--warmup-s",
        type=float,
        default=1.0,
        help="warm-up after the ramp (the ramp lasts one request)",
    )
    g = p.add_argument_group("throughput phase")
    g.add_argument("--tp-streams", type=int, default=16, help="concurrent streams")
    g.add_argument("--tp-max-tokens", type=int, default=500, help="tokens per request")
    g.add_argument("--tp-measure-s", type=float, help="measurement window, s (default 8, quick 4)")
    g.add_argument("--tp-warmup-s", type=float, default=2.0, help="warm-up, s")
    g.add_argument(
        "--tp-paths",
        help="paths to run (default direct,off,on,floor): direct, off (routed, coalescing "
        "off), on (coalescing on), floor; with --baseline-src also before-direct, before-off, "
        "before-on (added by default)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every path this many times, in rotating order; tables show the median of "
        "each figure (a shared machine's neighbours come and go)",
    )
    p.add_argument("--keep-logs", metavar="DIR", help="copy the children's logs to DIR")
    p.add_argument(
        "--no-floor",
        dest="floor",
        action="store_false",
        help="skip the floor relay (a bench-only minimal grpc.aio proxy used as a yardstick)",
    )
    g = p.add_argument_group("shared machine")
    g.add_argument(
        "--wait-idle",
        type=float,
        metavar="S",
        help="before each run, wait up to S seconds for the machine to be quiet (0: never; "
        "default 120, quick 20)",
    )
    g.add_argument(
        "--idle-threshold",
        type=float,
        default=25.0,
        metavar="PCT",
        help="quiet means under PCT%% CPU (of one core, summed over cores) for one second",
    )
    g.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the benchmark's processes at this niceness (negative needs root): "
        "less disturbed by other work on a shared machine",
    )
    g.add_argument(
        "--noise-limit",
        type=float,
        default=30.0,
        metavar="PCT",
        help="a run during which other processes used more than PCT%% CPU is noisy",
    )
    g.add_argument(
        "--retries",
        type=int,
        help="rerun a noisy run up to this many times and keep the quietest (default 2, quick 0)",
    )
    g = p.add_argument_group("load generator")
    g.add_argument("--channels", type=int, default=1, help="grpc channels (connections) used")
    g.add_argument("--loadgen-uvloop", action="store_true", help="run the load generator on uvloop")
    g = p.add_argument_group("before / after and experiments")
    g.add_argument(
        "--baseline-src",
        type=Path,
        metavar="DIR",
        help="also run a router and backend from this source tree (e.g. `git archive HEAD | "
        "tar -x -C DIR`) beside the current ones: 'before' rows in every table",
    )
    g.add_argument(
        "--router-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a server.* key for the router under test (not the baseline), e.g. "
        "coalesce_linger_ms=0 or event_loop=asyncio (repeatable)",
    )
    g.add_argument(
        "--backend-no-coalesce",
        action="store_true",
        help="run the backend under test with --no-coalesce (one delta per token)",
    )
    g.add_argument(
        "--floor-loop",
        choices=("asyncio", "uvloop"),
        default="uvloop",
        help="event loop of the floor relay (the router's default, server.event_loop auto, "
        "is uvloop when installed)",
    )
    g.add_argument(
        "--router-server-option",
        action="append",
        default=[],
        metavar="K=V",
        help="extra grpc option for the router's server (repeatable)",
    )
    g.add_argument(
        "--router-channel-option",
        action="append",
        default=[],
        metavar="K=V",
        help="extra grpc option for the router's channel to the backend (repeatable)",
    )
    g.add_argument(
        "--router-patch",
        action="append",
        default=[],
        choices=ROUTER_PATCHES,
        help="bench-only monkeypatch of the router: no-initial-metadata (request id as "
        "trailing metadata), log-warning (no per-request INFO log line), gc-log (GC pauses "
        "every 5 s), gc-threshold (gen0 threshold 50,000); repeatable",
    )
    g.add_argument(
        "--py-spy",
        metavar="DIR",
        help="record the router with py-spy (raw collapsed stacks) during routed runs",
    )
    a = p.parse_args(argv)
    a.streams = [int(s) for s in a.streams.split(",") if s.strip()]
    a.phases = [s.strip() for s in a.phases.split(",") if s.strip()]
    default_paths = a.tp_paths is None
    if default_paths:
        a.tp_paths = "direct,off,on,floor"
    a.tp_paths = [s.strip() for s in a.tp_paths.split(",") if s.strip()]
    bad = [x for x in a.tp_paths if x not in TP_PATHS]
    if bad:
        p.error(f"--tp-paths: unknown {', '.join(bad)} (use {', '.join(TP_PATHS)})")
    pairs = []
    for item in a.router_set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--router-set: must be KEY=VALUE (a server.* key), got {item!r}")
        pairs.append((key.removeprefix("server."), value))
    a.router_set = pairs
    if a.baseline_src is not None:
        a.baseline_src = a.baseline_src.resolve()
        if not (a.baseline_src / "router").is_dir():
            p.error(f"--baseline-src: {a.baseline_src} holds no router/ package")
        if default_paths:
            a.tp_paths += ["before-direct", "before-off", "before-on"]
    if a.measure_s is None:
        a.measure_s = 4.0 if a.quick else 10.0
    if a.tp_measure_s is None:
        a.tp_measure_s = 4.0 if a.quick else 8.0
    if a.max_tokens is None:
        a.max_tokens = 50 if a.quick else 100
    if a.wait_idle is None:
        a.wait_idle = 20.0 if a.quick else 120.0
    if a.retries is None:
        a.retries = 0 if a.quick else 2
    if a.quick:
        a.tp_warmup_s = min(a.tp_warmup_s, 1.0)
    return a


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_loadgen":
        return loadgen_main(argv[1])
    if argv and argv[0] == "_router":
        return router_variant_main(argv[1:])
    if argv and argv[0] == "_floor":
        return floor_main(argv[1:])
    a = parse_args(argv)
    command = "bench/bench_overhead.py " + " ".join(shlex.quote(x) for x in argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH", "")) if x)
    if a.nice:
        try:
            os.nice(a.nice)  # inherited by every child process
        except PermissionError:
            print(f"--nice {a.nice}: not permitted (negative values need root)", file=sys.stderr)
            return 2
    info = machine_info()
    print(f"# {command}")
    print(
        f"# {info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"grpcio {info['grpcio']}, protobuf {info['protobuf']}"
    )
    report: dict[str, Any] = {
        "command": command,
        "machine": info,
        "config": {
            k: getattr(a, k)
            for k in (
                "streams",
                "tokens_per_s",
                "aggregate_cap",
                "latency_coalesce",
                "floor",
                "max_tokens",
                "single_stream_tokens",
                "measure_s",
                "warmup_s",
                "tp_streams",
                "tp_max_tokens",
                "tp_measure_s",
                "channels",
                "noise_limit",
                "retries",
                "rounds",
                "nice",
                "loadgen_uvloop",
                "baseline_src",
                "router_set",
                "backend_no_coalesce",
                "floor_loop",
                "router_server_option",
                "router_channel_option",
                "router_patch",
            )
        },
    }

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        bench = Bench(a, Path(tmp), env)
        try:
            if "latency" in a.phases:
                print("## latency (and RSS)", flush=True)
                report["latency"] = run_latency(bench, a)
            if "throughput" in a.phases:
                print("## throughput", flush=True)
                report["throughput"] = run_throughput(bench, a)
        except KeyboardInterrupt:
            print("interrupted; stopping children", file=sys.stderr)
            return 130
        except Exception:
            for child in bench.children:
                with contextlib.suppress(OSError):
                    tail = child.log_path.read_text(errors="replace")[-1500:]
                    print(f"--- {child.name} log tail:\n{tail}", file=sys.stderr)
            raise
        finally:
            bench.stop_all()
    print()
    print(markdown(report))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
