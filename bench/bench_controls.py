"""Tenant controls (router/controls/): what each adds to TTFT, per store and concurrency.

For every variant of every control named by ``--controls`` (default: all in
:data:`CONTROLS`), two real routers run over one real scripted ModelService server (TTFT
0, as fast as read): one without controls (``off``) and one with the variant (``on``).
``--concurrency`` streams (default 1 and 64) of a grpc.aio client each send
``--requests`` requests, alternating between the two routers, so both see the same load
and the same machine noise. TTFT = call start -> first delta. Reported: p50/p90 of both
and the difference of the medians ("added"), per run, and the median of ``--repeat``
runs' "added".

By default everything runs in this process, on one event loop: on a small shared machine
that is the fair setting (every router gets the same loop; at 64 streams the loop is
saturated, so "added" there is the control's CPU per request times the queue it meets).
``--separate`` puts the backend and each router in its own process (this one is the
client only): the realistic setting on a machine with a core per process to spare.

A control adds a variant with one entry in :data:`CONTROLS`: a function that, given the
stores the run started (``Stores``: a ``redis-server`` on loopback), yields
``(label, controls section)`` pairs; the section is set as ``controls:`` of the ``on``
router. Its limits must never refuse a request of the bench (the bench asserts every
call completes).

``limits``: rate limits (``controls.rate_limits``) so high that nothing is refused, per
tenant (requests and tokens: one charge of two limits before the decision, one
correction after the answer), in memory and in Redis. Also reported, outside any router:
the limiter's own ``charge`` + ``correct`` per request (``--micro``).

It measures; it asserts nothing but that every call completes. Usage::

    .venv/bin/python bench/bench_controls.py                       # ~1 minute
    .venv/bin/python bench/bench_controls.py --controls limits --concurrency 1 --requests 400
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import router_pb2_grpc
from hybrid_router.v1 import types_pb2 as tpb

from router.config import parse_config
from router.server.app import create_server
from serving.engines.scripted import ScriptedEngine
from serving.model_server import create_server as create_model_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found: apt-get install redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"redis-server exited with {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), 0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass(frozen=True)
class Stores:
    """What the run started for the controls that need a server."""

    redis_url: str


# --- the controls' variants -------------------------------------------------------------------

#: Limits no request of the bench reaches (per minute).
_NEVER = {"requests_per_min": 1e9, "tokens_per_min": 1e11}


def limits_variants(stores: Stores) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "limits memory", {"rate_limits": {"default": _NEVER}}
    yield (
        "limits redis",
        {
            "rate_limits": {
                "default": _NEVER,
                "store": "redis",
                "redis": {"url": stores.redis_url, "key_prefix": f"bench-{time.time_ns()}:"},
            }
        },
    )


#: Control name -> its variants. Other controls add their own entry here.
CONTROLS: dict[str, Callable[[Stores], Iterator[tuple[str, dict[str, Any]]]]] = {
    "limits": limits_variants,
}


# --- measuring --------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _router_config(port: int, controls: dict[str, Any] | None, tmp: Path) -> dict[str, Any]:
    return {
        "server": {"address": "127.0.0.1:0"},
        "backends": [
            {"name": "gpu-1", "tier": "gpu", "kind": "model_service",
             "endpoint": f"127.0.0.1:{port}", "model": "scripted",
             "context_window": 8192, "max_concurrency": 4096, "max_queue": 0,
             "priors": {"ttft_ms": 10, "decode_tokens_per_s": 1000},
             "cost": {"gpu_hourly_usd": 1, "gpu_throughput_tokens_per_s": 1000,
                      "source": "bench"}},
        ],
        "sessions": {"sqlite": {"path": str(tmp / f"sessions-{time.time_ns()}.sqlite3")}},
        **({"controls": controls} if controls else {}),
    }  # fmt: skip


# --- the child processes: a backend, a router -------------------------------------------------


async def _child_backend() -> None:
    engine = ScriptedEngine(reply_tokens=8, max_concurrency=4096)
    await engine.start()
    server, port = await create_model_server(engine, "127.0.0.1:0")
    await server.start()
    print(f"READY {port}", flush=True)
    await server.wait_for_termination()


async def _child_router(config_file: str) -> None:
    import yaml

    cfg = parse_config(yaml.safe_load(Path(config_file).read_text()), source=config_file)
    router = await create_server(cfg)
    print(f"READY {router.port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await router.stop(0)


class Child:
    """This script in a child mode; ``port`` once it printed ``READY <port>``."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("READY "):
            self.stop()
            raise SystemExit(f"bench child {args} did not start")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _ttft(stub: Any, request: rpb.GenerateRequest) -> float:
    t0 = time.perf_counter()
    first = None
    complete = False
    async for ev in stub.Generate(request):
        if first is None and ev.HasField("delta"):
            first = time.perf_counter() - t0
        if ev.HasField("usage"):
            complete = ev.usage.complete
    if first is None or not complete:
        raise SystemExit("a bench call did not complete: a control refused or failed it")
    return first * 1000.0


@contextlib.asynccontextmanager
async def _servers(
    controls: dict[str, Any], tmp: Path, separate: bool
) -> Any:  # AsyncIterator[tuple[int, int]]: the (off, on) routers' ports
    """The backend and the two routers: in this process (one event loop for all, the
    client too), or ``separate``: each in its own process."""
    if separate:
        import yaml

        backend = Child("_backend")
        routers: list[Child] = []
        try:
            for name, section in (("off", None), ("on", controls)):
                path = tmp / f"router-{name}-{time.time_ns()}.yaml"
                path.write_text(yaml.safe_dump(_router_config(backend.port, section, tmp)))
                routers.append(Child("_router", str(path)))
            yield routers[0].port, routers[1].port
        finally:
            for child in (*routers, backend):
                child.stop()
        return
    engine = ScriptedEngine(reply_tokens=8, max_concurrency=4096)
    await engine.start()
    ms, port = await create_model_server(engine, "127.0.0.1:0")
    await ms.start()
    made = []
    try:
        for section in (None, controls):
            made.append(await create_server(parse_config(_router_config(port, section, tmp))))
        yield made[0].port, made[1].port
    finally:
        for router in made:
            await router.stop(0)
        await ms.stop(0)


async def run_variant(
    label: str,
    controls: dict[str, Any],
    concurrency: int,
    requests: int,
    tmp: Path,
    *,
    separate: bool = False,
) -> dict[str, Any]:
    times: tuple[list[float], list[float]] = ([], [])
    async with _servers(controls, tmp, separate) as ports:
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in ports]
        stubs = [router_pb2_grpc.InferenceRouterStub(c) for c in channels]

        async def stream(i: int) -> None:
            for n in range(requests):
                which = (i + n) % 2
                msg = tpb.ChatMessage(role=tpb.ROLE_USER, content=f"stream {i} request {n}: hi")
                req = rpb.GenerateRequest(messages=[msg], max_output_tokens=8)
                times[which].append(await _ttft(stubs[which], req))

        try:
            # Warm both routers (channels, the first Redis connection, script loading).
            for s in stubs:
                for _ in range(20):
                    msg = tpb.ChatMessage(role=tpb.ROLE_USER, content="warm")
                    await _ttft(s, rpb.GenerateRequest(messages=[msg], max_output_tokens=8))
            await asyncio.gather(*(stream(i) for i in range(concurrency)))
        finally:
            for c in channels:
                await c.close()
    off_t, on_t = times
    return {
        "variant": label,
        "concurrency": concurrency,
        "calls": len(off_t) + len(on_t),
        "off_p50_ms": statistics.median(off_t),
        "off_p90_ms": _pct(off_t, 0.9),
        "on_p50_ms": statistics.median(on_t),
        "on_p90_ms": _pct(on_t, 0.9),
        "added_p50_ms": statistics.median(on_t) - statistics.median(off_t),
    }


async def limiter_micro(label: str, controls: dict[str, Any], rounds: int, tmp: Path) -> dict:
    """The limiter alone: ``charge`` then ``correct`` per request, one at a time."""
    from router.controls.limits import build_limiter
    from router.security.authn import Principal
    from router.types import (
        FinishReason,
        InferenceRequest,
        Message,
        Role,
        Tier,
        UsageEvent,
    )

    config = parse_config(_router_config(1, controls, tmp))
    limiter, close = build_limiter(config.controls.rate_limits, config, {})
    who = Principal(tenant="bench")
    req = InferenceRequest(
        messages=(Message(Role.USER, "hello there, how are you"),),
        max_output_tokens=8,
        request_id="r",
    )
    usage = UsageEvent("r", "b", Tier.GPU, 10, 8, 0.0, 1.0, 2.0, FinishReason.STOP, True)
    charge: list[float] = []
    correct: list[float] = []
    try:
        for _ in range(50):
            await limiter.correct(await limiter.charge(who, req), usage)
        for _ in range(rounds):
            t0 = time.perf_counter()
            ticket = await limiter.charge(who, req)
            t1 = time.perf_counter()
            await limiter.correct(ticket, usage)
            t2 = time.perf_counter()
            charge.append((t1 - t0) * 1e6)
            correct.append((t2 - t1) * 1e6)
    finally:
        result = close()
        if hasattr(result, "__await__"):
            await result
    return {
        "variant": label,
        "charge_p50_us": statistics.median(charge),
        "charge_p90_us": _pct(charge, 0.9),
        "correct_p50_us": statistics.median(correct),
    }


async def main_async(args: argparse.Namespace) -> None:
    names = [n.strip() for n in args.controls.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONTROLS))
    if unknown:
        raise SystemExit(f"--controls: unknown {', '.join(unknown)}; known: {', '.join(CONTROLS)}")
    concurrency = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as d, redis_server(Path(d)) as url:
        stores = Stores(redis_url=url)
        tmp = Path(d)
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        print(
            f"python {sys.version.split()[0]}, event loop {loop}, {len(names)} control(s): "
            f"{', '.join(names)}"
        )
        print(
            f"{'variant':<22} {'streams':>7} {'calls':>6} {'off p50':>8} {'off p90':>8} "
            f"{'on p50':>8} {'on p90':>8} {'added p50':>10}  (ms)"
        )
        micro: list[dict[str, Any]] = []
        summary: list[tuple[str, int, float]] = []
        for name in names:
            for label, controls in CONTROLS[name](stores):
                for c in concurrency:
                    added = []
                    for _ in range(args.repeat):
                        r = await run_variant(
                            label, controls, c, args.requests, tmp, separate=args.separate
                        )
                        added.append(r["added_p50_ms"])
                        print(
                            f"{r['variant']:<22} {r['concurrency']:>7} {r['calls']:>6} "
                            f"{r['off_p50_ms']:>8.3f} {r['off_p90_ms']:>8.3f} "
                            f"{r['on_p50_ms']:>8.3f} {r['on_p90_ms']:>8.3f} "
                            f"{r['added_p50_ms']:>+10.3f}"
                        )
                    if args.repeat > 1:
                        summary.append((label, c, statistics.median(added)))
                if name == "limits" and args.micro:
                    micro.append(await limiter_micro(label, controls, args.micro, tmp))
        if summary:
            print(f"\n{'variant':<22} {'streams':>7} {'added p50, median of runs':>26}  (ms)")
            for label, c, med in summary:
                print(f"{label:<22} {c:>7} {med:>+26.3f}")
        if micro:
            head = f"{'charge p50':>11} {'charge p90':>11} {'correct p50':>12}  (us)"
            print(f"\n{'limiter alone':<22} {head}")
            for m in micro:
                print(
                    f"{m['variant']:<22} {m['charge_p50_us']:>11.1f} {m['charge_p90_us']:>11.1f} "
                    f"{m['correct_p50_us']:>12.1f}"
                )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("_backend", "_router"):
        logging.basicConfig(level=logging.ERROR)
        from router.server.app import loop_factory

        with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
            if sys.argv[1] == "_backend":
                runner.run(_child_backend())
            else:
                runner.run(_child_router(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--controls", default=",".join(CONTROLS), help=f"comma list of {', '.join(CONTROLS)}"
    )
    parser.add_argument("--concurrency", default="1,64", help="streams at once, comma list")
    parser.add_argument("--requests", type=int, default=200, help="requests per stream")
    parser.add_argument(
        "--event-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="as server.event_loop (auto: uvloop when installed, as serve runs)",
    )
    parser.add_argument(
        "--separate",
        action="store_true",
        help="run the backend and each router in its own process (a machine with spare cores)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per variant and concurrency (median shown)"
    )
    parser.add_argument("--micro", type=int, default=2000, help="limiter-alone rounds (0: skip)")
    args = parser.parse_args()
    # The routers' start-up notices (auth off on loopback) are not figures.
    logging.getLogger("router").setLevel(logging.ERROR)
    from router.server.app import loop_factory

    # The loop `hybrid-router serve` runs on (server.event_loop), for every router here.
    with asyncio.Runner(loop_factory=loop_factory(args.event_loop)) as runner:
        runner.run(main_async(args))


if __name__ == "__main__":
    main()
