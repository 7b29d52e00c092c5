"""Reliability: the router's shared stores going away and coming back (BENCHMARKS.md,
Reliability).

Separate processes on 127.0.0.1: ``redis-server`` (append-only file on), a scripted
model server and ``hybrid-router serve`` with everything that can live in Redis put
there: sessions, rate limits, budgets, the cost ledger and the response cache. Callers
send requests back to back (half of them turns of sessions) while Redis is, in turn:

1. ``paused``: SIGSTOP for ``--outage-s`` seconds (a store that hangs), then SIGCONT;
2. ``stopped``: SIGKILL, down for ``--outage-s``, then started again on the same port
   from its append-only file (a store that restarts).

It reports, per phase (before, during each outage, after it), the statuses callers got,
how long each request took to fail while the store was away (it must not hang), how long
after the store came back the first request succeeded, and whether every session turn
acknowledged before the outage is still there. The router is never restarted.

Targets: during an outage every request ends within ``--deadline-s`` with UNAVAILABLE
naming the store (or OK for what does not need it); OK again within 5 s of the store's
return; no acknowledged turn lost. Exit status 1 when one is missed.

    .venv/bin/python bench/bench_store_outage.py
    .venv/bin/python bench/bench_store_outage.py --outage-s 3 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import procs
import redis
from hybrid_router.client import AsyncRouterClient, RouterCallError, make_request


@dataclass
class Outcome:
    phase: str
    started: float
    seconds: float
    code: str
    message: str
    session: str = ""
    turn: int = 0


class Redis:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = procs.free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server is not installed (make system-deps)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.work)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


async def drive(
    address: str, args: argparse.Namespace, store: Redis
) -> tuple[list[Outcome], dict[str, Any]]:
    out: list[Outcome] = []
    phase = "before"
    acked: dict[str, int] = collections.Counter()  # session -> turns acknowledged
    stop = asyncio.Event()
    back_at: dict[str, float] = {}

    async with AsyncRouterClient(address, max_attempts=1) as client:

        async def caller(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                session = f"s{n}" if n % 2 == 0 else ""
                kw: dict[str, Any] = {"max_output_tokens": 4}
                if session:
                    kw["session_id"] = session
                req = make_request(f"caller {n} request {i}", **kw)
                t0 = time.monotonic()
                here = phase
                try:
                    await client.complete(req, timeout_s=args.deadline_s * 3)
                    code, msg = "OK", ""
                    if session:
                        acked[session] += 1
                except RouterCallError as exc:
                    code, msg = exc.code, exc.message
                out.append(Outcome(here, t0, time.monotonic() - t0, code, msg, session))
                await asyncio.sleep(0.02)

        tasks = [asyncio.create_task(caller(n)) for n in range(args.concurrency)]
        await asyncio.sleep(args.settle_s)
        for how in ("paused", "stopped"):
            phase = f"{how}"
            assert store.proc is not None
            if how == "paused":
                os.kill(store.proc.pid, signal.SIGSTOP)
                await asyncio.sleep(args.outage_s)
                os.kill(store.proc.pid, signal.SIGCONT)
            else:
                store.proc.kill()
                store.proc.wait()
                await asyncio.sleep(args.outage_s)
                await asyncio.to_thread(store.start)
            back_at[how] = time.monotonic()
            phase = f"after {how}"
            await asyncio.sleep(args.settle_s)
        stop.set()
        await asyncio.gather(*tasks)
        # Every acknowledged turn is still in its session (2 turns each: question, answer).
        kept = {}
        for session, turns in acked.items():
            got = await client.get_session(session)
            kept[session] = (len(got.turns), 2 * turns)
    return out, {"back_at": back_at, "sessions": kept}


def summarize(out: list[Outcome], extra: dict[str, Any], args: argparse.Namespace) -> dict:
    phases: dict[str, Any] = {}
    for o in out:
        p = phases.setdefault(o.phase, {"statuses": collections.Counter(), "slowest_s": 0.0})
        p["statuses"][o.code] += 1
        p["slowest_s"] = max(p["slowest_s"], round(o.seconds, 2))
    for p in phases.values():
        p["statuses"] = dict(p["statuses"].most_common())
    recovered = {}
    for how, at in extra["back_at"].items():
        first_ok = min(
            (o.started + o.seconds for o in out if o.code == "OK" and o.started >= at),
            default=None,
        )
        recovered[how] = None if first_ok is None else round(first_ok - at, 2)
    examples = sorted({o.message for o in out if o.code not in ("OK",)})[:6]
    lost = {s: v for s, v in extra["sessions"].items() if v[0] < v[1]}
    return {
        "phases": phases,
        "first_ok_after_return_s": recovered,
        "error_messages": examples,
        "sessions_checked": len(extra["sessions"]),
        "sessions_missing_turns": lost,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--outage-s", type=float, default=5.0)
    p.add_argument("--settle-s", type=float, default=4.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--deadline-s", type=float, default=3.0, help="a request must end by then")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="outage-"))
    store = Redis(work)
    store.start()
    backend, bport = procs.scripted_backend(work, "--tokens-per-s", "0")
    redis_cfg = {"url": store.url, "timeout_s": 0.5}
    router, port = procs.router(
        work,
        bport,
        backend={"cost": {"gpu_hourly_usd": 1.0, "gpu_throughput_tokens_per_s": 1000}},
        sessions={"store": "redis", "redis": redis_cfg},
        controls={
            "rate_limits": {
                "default": {"requests_per_min": 1_000_000},
                "store": "redis",
                "redis": redis_cfg,
            },
            "budgets": {"default": {"usd_per_day": 1000}, "store": "redis", "redis": redis_cfg},
            "ledger": {"enabled": True, "store": "redis", "redis": redis_cfg},
            "cache": {"enabled": True, "store": "redis", "redis": redis_cfg},
        },
    )
    try:
        out, extra = asyncio.run(drive(f"127.0.0.1:{port}", args, store))
        res = summarize(out, extra, args)
        res["router_exit"] = router.poll()
    finally:
        procs.stop(router, backend)
        if store.proc is not None:
            store.proc.kill()
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    during = [res["phases"].get(h, {}) for h in ("paused", "stopped")]
    ok = (
        all(d.get("slowest_s", 0) <= args.deadline_s for d in during)
        and all(set(d.get("statuses", {})) <= {"OK", "UNAVAILABLE"} for d in during)
        and all(v is not None and v <= 5 for v in res["first_ok_after_return_s"].values())
        and not res["sessions_missing_turns"]
        and res["router_exit"] is None
    )
    print("targets:", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
