"""Response cache: TTFT of a cache hit against a model's answer, per store.

1. ``ttft``: a real router and a real scripted ModelService server (``--model-ttft-ms``
   before the first token, default 0: as fast as read, so the figures are the router's
   own costs), in this process, and a grpc.aio client. Per store (in-process LRU, SQLite
   file, ``redis-server`` on loopback) and concurrency (``--concurrency``):

   - ``model``: ``--requests`` distinct deterministic requests (temperature 0) on a
     router *without* the cache: the baseline;
   - ``miss``: the same on a router with the cache (lookup, model, answer kept);
   - ``hit``: the same requests again: every one is answered from the cache.

   TTFT = call start -> first delta, on the client. Reported: p50/p90/p99 and the
   end-of-stream time (``done``), which includes keeping the answer on a miss.
2. ``lookup``: ``ExactMatchCache.lookup`` alone, in-process, for a hit and a miss (key
   hash, store read, record decode and replay events), per store.

It measures; it asserts nothing. Usage::

    .venv/bin/python bench/bench_cache.py                  # ~1 minute
    .venv/bin/python bench/bench_cache.py --stores memory,redis --concurrency 1 --requests 500
    .venv/bin/python bench/bench_cache.py --model-ttft-ms 150 --reply-tokens 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import router_pb2_grpc
from hybrid_router.v1 import types_pb2 as tpb

from router.config import parse_config
from router.server.app import RouterServer, create_server
from serving.engines.scripted import ScriptedEngine
from serving.model_server import create_server as create_model_server

STORES = ("memory", "sqlite", "redis")


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted ``values`` (nan when empty)."""
    if not values:
        return math.nan
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found: apt-get install redis-server")
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def _request(i: int, reply_tokens: int) -> rpb.GenerateRequest:
    text = f"question {i}: what is the answer to item {i} of the list"
    return rpb.GenerateRequest(
        messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content=text)],
        max_output_tokens=reply_tokens,
        sampling=tpb.SamplingParams(temperature=0.0),
    )


async def _timed(stub: Any, req: rpb.GenerateRequest) -> tuple[float, float, str]:
    """(TTFT s, done s, decision.cache) of one Generate."""
    t0 = time.perf_counter()
    ttft = math.nan
    verdict = ""
    async for ev in stub.Generate(req):
        kind = ev.WhichOneof("event")
        if kind == "decision":
            verdict = ev.decision.cache
        elif kind == "delta" and math.isnan(ttft):
            ttft = time.perf_counter() - t0
    return ttft, time.perf_counter() - t0, verdict


async def _run(
    stub: Any, ids: Sequence[int], concurrency: int, reply_tokens: int, want: str
) -> tuple[list[float], list[float]]:
    ttfts: list[float] = []
    dones: list[float] = []
    queue = list(ids)

    async def worker() -> None:
        while queue:
            i = queue.pop()
            ttft, done, verdict = await _timed(stub, _request(i, reply_tokens))
            if want and not verdict.startswith(want):
                raise SystemExit(f"expected {want!r}, the Decision said {verdict!r}")
            ttfts.append(ttft)
            dones.append(done)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sorted(ttfts), sorted(dones)


def _row(label: str, ttfts: list[float], dones: list[float]) -> str:
    ms = [quantile(ttfts, q) * 1000 for q in (0.5, 0.9, 0.99)]
    done = quantile(dones, 0.5) * 1000
    return f"  {label:<8} TTFT p50 {ms[0]:7.3f}  p90 {ms[1]:7.3f}  p99 {ms[2]:7.3f} ms" + (
        f"   done p50 {done:7.3f} ms"
    )


async def _router(
    backend: dict[str, Any], cache: dict[str, Any] | None
) -> tuple[RouterServer, grpc.aio.Channel, Any]:
    cfg = parse_config(
        {
            "server": {"address": "127.0.0.1:0", "grace_period_s": 1},
            "backends": [backend],
            "telemetry": {"logs": {"requests": False}},
            **({"controls": {"cache": cache}} if cache else {}),
        },
        source="bench",
    )
    router = await create_server(cfg)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{router.port}")
    return router, channel, router_pb2_grpc.InferenceRouterStub(channel)


async def bench_ttft(a: argparse.Namespace, urls: dict[str, str], tmp: Path) -> None:
    """Every router is up at once and the phases take turns in small rounds, so a noisy
    machine slows them alike."""
    engine = ScriptedEngine(
        reply_tokens=a.reply_tokens, ttft_ms=a.model_ttft_ms, max_concurrency=256
    )
    await engine.start()
    server, port = await create_model_server(engine, "127.0.0.1:0")
    await server.start()
    backend = {
        "name": "gpu-1", "tier": "gpu", "kind": "model_service",
        "endpoint": f"127.0.0.1:{port}", "model": "scripted", "context_window": 8192,
        "max_concurrency": 256, "priors": {"ttft_ms": 50, "decode_tokens_per_s": 100},
    }  # fmt: skip
    routers: dict[str, tuple[RouterServer, grpc.aio.Channel, Any]] = {}
    try:
        routers["model"] = await _router(backend, None)
        for store in a.stores:
            cache: dict[str, Any] = {"enabled": True, "store": store}
            if store == "redis":
                cache["redis"] = {"url": urls["redis"]}
            if store == "sqlite":
                cache["sqlite"] = {"path": str(tmp / "cache.sqlite3")}
            routers[store] = await _router(backend, cache)
        n = a.requests
        for c, conc in enumerate(a.concurrency):
            print(f"\nttft: concurrency {conc}, {n} requests, {a.reply_tokens}-token answers, "
                  f"model TTFT {a.model_ttft_ms:g} ms")  # fmt: skip
            first = (c + 1) * 1_000_000
            for _, _, stub in routers.values():  # warm up
                await _run(stub, range(first - 50, first), conc, a.reply_tokens, "")
            got: dict[str, tuple[list[float], list[float]]] = {}
            step = max(4 * conc, 20)
            for lo in range(first, first + n, step):
                ids = range(lo, min(lo + step, first + n))
                for name, (_, _, stub) in routers.items():
                    phases = (
                        [("model", "")] if name == "model" else [("miss", "miss"), ("hit", "hit")]
                    )
                    for phase, want in phases:
                        t, d = await _run(stub, ids, conc, a.reply_tokens, want)
                        ttfts, dones = got.setdefault(f"{name} {phase}", ([], []))
                        ttfts.extend(t)
                        dones.extend(d)
            for v in got.values():
                v[0].sort()
                v[1].sort()
            base = quantile(got["model model"][0], 0.5)
            print(_row("model", *got["model model"]))
            for store in a.stores:
                print(f" {store}:")
                print(_row("miss", *got[f"{store} miss"]))
                print(_row("hit", *got[f"{store} hit"]))
                hit = quantile(got[f"{store} hit"][0], 0.5)
                print(f"  hit TTFT p50: {base / hit:.1f}x the model's speed")
    finally:
        for router, channel, _ in routers.values():
            await channel.close()
            await router.stop(0)
        await server.stop(0)


async def bench_lookup(a: argparse.Namespace, urls: dict[str, str], tmp: Path) -> None:
    from router.config.cache import CacheConfig
    from router.controls.cache import ExactMatchCache
    from router.controls.cache_store import open_cache_store
    from router.security.authn import ANONYMOUS
    from router.types import (
        DeltaEvent,
        FinishReason,
        InferenceRequest,
        Message,
        Role,
        Sampling,
        Tier,
        UsageEvent,
    )

    print(f"\nlookup: ExactMatchCache.lookup in-process, {a.reply_tokens}-token answers")
    answer = tuple(DeltaEvent(f"w{i} ", 1) for i in range(a.reply_tokens))
    usage = UsageEvent("r", "gpu-1", Tier.GPU, 20, a.reply_tokens, 1e-4, 50.0, 90.0,
                       FinishReason.STOP, True)  # fmt: skip
    n = 2000
    for store in a.stores:
        raw: dict[str, Any] = {"enabled": True, "store": store}
        if store == "redis":
            raw["redis"] = {"url": urls["redis"], "key_prefix": "lookup:"}
        if store == "sqlite":
            raw["sqlite"] = {"path": str(tmp / "lookup.sqlite3")}
        cfg = CacheConfig.model_validate(raw)
        cache = ExactMatchCache(cfg, open_cache_store(cfg, os.environ))
        reqs = [
            InferenceRequest(
                messages=(Message(Role.USER, f"question {i} about item {i}"),),
                max_output_tokens=a.reply_tokens,
                request_id=f"r{i}",
                sampling=Sampling(temperature=0.0),
            )
            for i in range(n)
        ]
        misses, hits, puts = [], [], []
        for r in reqs:
            t0 = time.perf_counter()
            lk = await cache.lookup(ANONYMOUS, r)
            t1 = time.perf_counter()
            await cache.store(lk, r, (*answer, usage))
            t2 = time.perf_counter()
            misses.append(t1 - t0)
            puts.append(t2 - t1)
        for r in reqs:
            t0 = time.perf_counter()
            lk = await cache.lookup(ANONYMOUS, r)
            hits.append(time.perf_counter() - t0)
            assert lk.events is not None
        await cache.backing.close()
        line = []
        for label, xs in (("miss", misses), ("hit", hits), ("keep", puts)):
            xs.sort()
            line.append(f"{label} p50 {quantile(xs, 0.5) * 1e6:7.1f} p99 "
                        f"{quantile(xs, 0.99) * 1e6:7.1f} us")  # fmt: skip
        print(f"  {store:<7} " + "   ".join(line))


async def main_async(a: argparse.Namespace) -> None:
    logging.disable(logging.WARNING)  # start-up warnings (auth off, no prices) are expected
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cache-")))
        urls: dict[str, str] = {}
        if "redis" in a.stores:
            (tmp / "redis").mkdir()
            urls["redis"] = stack.enter_context(redis_server(tmp / "redis"))
        print(f"python {platform.python_version()}, {platform.machine()}, "
              f"{os.cpu_count()} CPUs; stores: {', '.join(a.stores)}")  # fmt: skip
        await bench_ttft(a, urls, tmp)
        await bench_lookup(a, urls, tmp)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--stores", default=",".join(STORES), help="comma-separated: " + ", ".join(STORES)
    )
    p.add_argument("--concurrency", default="1,32", help="comma-separated stream counts")
    p.add_argument("--requests", type=int, default=300, help="distinct requests per phase")
    p.add_argument("--reply-tokens", type=int, default=64, help="tokens per answer")
    p.add_argument("--model-ttft-ms", type=float, default=0.0, help="the model's TTFT")
    a = p.parse_args(argv)
    a.stores = [s for s in a.stores.split(",") if s]
    bad = set(a.stores) - set(STORES)
    if bad:
        p.error(f"unknown stores: {', '.join(sorted(bad))}")
    a.concurrency = [int(c) for c in a.concurrency.split(",") if c]
    asyncio.run(main_async(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
