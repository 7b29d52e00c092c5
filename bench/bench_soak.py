"""Reliability: a long run through one router (BENCHMARKS.md, Reliability).

A scripted model server (full speed) and ``hybrid-router serve`` with its metrics port,
as separate processes on 127.0.0.1. ``--requests`` Generate calls from ``--concurrency``
concurrent callers, mixed: prompts of 1 to ~4,000 characters, 1 to 64 output tokens, a
share of JSON-schema and tool requests, and ``--cancel-share`` of the streams cancelled
by the caller after their first event (the Decision). After the warm-up (``--warmup``
requests) and at the end it reads the router's RSS, open file descriptors and threads
from /proc and its asyncio tasks from ``hybrid_router_event_loop_tasks`` on /metrics.

Targets: RSS growth under 10% after the warm-up; no growth in file descriptors, threads
or tasks; every request ends OK or CANCELLED. Exit status 1 when one is missed.

    .venv/bin/python bench/bench_soak.py                     # 1,000,000 requests
    .venv/bin/python bench/bench_soak.py --requests 50000 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import procs
from hybrid_router.client import make_request

GENERATE = "/hybrid_router.v1.InferenceRouter/Generate"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOLS = [{"name": "get_weather", "parameters": SCHEMA}]


def _pool(rng: random.Random) -> list[bytes]:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    out = []
    for i in range(200):
        size = rng.choice([1, 5, 50, 300, 1000])
        prompt = " ".join(rng.choice(words) for _ in range(size))
        kw: dict[str, Any] = {"max_output_tokens": rng.choice([1, 4, 16, 64])}
        if i % 10 == 0:
            kw["json_schema"] = SCHEMA
        elif i % 10 == 1:
            kw.update(tools=TOOLS, tool_choice="required")
        out.append(make_request(prompt, **kw).SerializeToString())
    return out


async def _tasks(metrics_port: int) -> int:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)).text
    for line in text.splitlines():
        if line.startswith("hybrid_router_event_loop_tasks "):
            return int(float(line.split()[1]))
    return -1


async def _snapshot(pid: int, metrics_port: int) -> dict[str, Any]:
    return {
        "rss_kb": procs.rss_kb(pid),
        "fds": procs.open_fds(pid),
        "threads": procs.threads(pid),
        "thread_names": procs.thread_names(pid),
        "tasks": await _tasks(metrics_port),
    }


async def run(address: str, args: argparse.Namespace, pid: int, metrics_port: int) -> dict:
    rng = random.Random(args.seed)
    pool = _pool(rng)
    codes: collections.Counter[str] = collections.Counter()
    done = 0
    warm: dict[str, Any] = {}
    curve: list[tuple[int, int]] = []  # (requests done, router RSS kB) every 5%
    t0 = time.monotonic()
    ident = bytes
    next_index = 0

    async with grpc.aio.insecure_channel(address) as channel:
        gen = channel.unary_stream(GENERATE, request_serializer=ident, response_deserializer=ident)

        async def one(body: bytes, cancel: bool) -> str:
            call = gen(body, timeout=30)
            try:
                async for _ in call:
                    if cancel:
                        call.cancel()
                        return "CANCELLED"
            except grpc.aio.AioRpcError as exc:
                return exc.code().name
            except asyncio.CancelledError:
                return "CANCELLED"
            return "OK"

        async def worker() -> None:
            nonlocal done, next_index, warm
            while next_index < args.requests:
                next_index += 1
                body = pool[rng.randrange(len(pool))]
                codes[await one(body, rng.random() < args.cancel_share)] += 1
                done += 1
                if done == args.warmup:
                    warm = await _snapshot(pid, metrics_port)
                    warm["at_request"] = done
                if done % max(1, args.requests // 20) == 0:
                    rate = done / (time.monotonic() - t0)
                    rss = procs.rss_kb(pid)
                    curve.append((done, rss))
                    print(
                        f"  {done:,}/{args.requests:,} ({rate:,.0f}/s, rss {rss:,} kB)", flush=True
                    )

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    await asyncio.sleep(1.0)  # cancelled streams finish their clean-up
    end = await _snapshot(pid, metrics_port)
    elapsed = time.monotonic() - t0
    growth = 100.0 * (end["rss_kb"] - warm["rss_kb"]) / warm["rss_kb"] if warm else None
    return {
        "requests": args.requests,
        "seconds": round(elapsed, 1),
        "per_second": round(args.requests / elapsed),
        "statuses": dict(codes.most_common()),
        "after_warmup": warm,
        "end": end,
        "rss_growth_pct": None if growth is None else round(growth, 1),
        "rss_kb_curve": curve,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int, default=1_000_000)
    p.add_argument("--warmup", type=int, default=0, help="default: 10%% of --requests")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--cancel-share", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)
    args.warmup = args.warmup or max(1, args.requests // 10)

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    backend, bport = procs.scripted_backend(work, "--tokens-per-s", "0")
    mport = procs.free_port()
    router, rport = procs.router(
        work, bport, telemetry={"metrics": {"address": f"127.0.0.1:{mport}"}}
    )
    try:
        print(f"soak: {args.requests:,} requests through 127.0.0.1:{rport}", flush=True)
        res = asyncio.run(run(f"127.0.0.1:{rport}", args, router.pid, mport))
        res["router_exit"] = router.poll()
    finally:
        procs.stop(router, backend)
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    warm, end = res["after_warmup"], res["end"]
    ok = (
        set(res["statuses"]) <= {"OK", "CANCELLED"}
        and res["rss_growth_pct"] is not None
        and res["rss_growth_pct"] < 10
        and end["fds"] <= warm["fds"]
        and end["threads"] <= warm["threads"]
        and end["tasks"] <= warm["tasks"]
    )
    print("targets:", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
