"""Reliability: edge devices coming and going under load (BENCHMARKS.md, Reliability).

Separate processes on 127.0.0.1: ``hybrid-router serve`` with the edge tier on (heartbeat
every ``--heartbeat-ms``, a device offline after ``--heartbeat-timeout-s`` without one)
and a scripted GPU backend as the dearer fallback; ``--devices`` edge agents
(``python -m greengrass.agent --engine scripted``). While ``--concurrency`` callers send
requests back to back, every ``--every-s`` seconds one device goes away, in turn:

- ``freeze``: SIGSTOP (a device whose network dropped: its TCP link stays open, nothing
  arrives; only the heartbeat timeout can tell), SIGKILL a few seconds later;
- ``kill``: SIGKILL (the link closes at once);
- ``drain``: SIGTERM (the agent drains and says goodbye);

and a new device (a new id) connects in its place.

The check: no request is routed (its Decision names the device) after the device's
heartbeat lapsed, i.e. later than ``gone + heartbeat_timeout_s + --grace-s`` (the
hub's check interval). It also reports the statuses (requests that were streaming from a
device when it froze end with a clear status: that is issue 16's continuation) and how
long after going away each device left the candidates. Exit status 1 on a violation.

    .venv/bin/python bench/bench_edge_churn.py                   # 60 s
    .venv/bin/python bench/bench_edge_churn.py --duration-s 20 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import procs
from hybrid_router.client import make_request
from hybrid_router.v1 import router_pb2 as rpb

GENERATE = "/hybrid_router.v1.InferenceRouter/Generate"


@dataclass
class Device:
    device_id: str
    proc: subprocess.Popen[bytes]
    gone_at: float | None = None
    how: str = ""


@dataclass
class Record:
    started: float
    decided_at: float = 0.0
    backend: str = ""
    code: str = ""
    failovers: list[str] = field(default_factory=list)


def start_agent(work: Path, port: int, device_id: str) -> Device:
    """A scripted edge agent, once it printed READY (registered with the router)."""
    argv = [sys.executable, "-m", "greengrass.agent", "--router", f"127.0.0.1:{port}",
            "--device-id", device_id, "--engine", "scripted", "--insecure",
            "--work-dir", str(work / device_id), "--log-level", "WARNING",
            "--reconnect-initial-s", "0.2", "--reconnect-max-s", "1"]  # fmt: skip
    log = (work / f"{device_id}.log").open("wb")
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, cwd=procs.REPO
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if line.startswith("READY"):
            return Device(device_id, proc)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"agent {device_id} did not register; see {work / device_id}.log")


async def load(address: str, records: list[Record], stop: asyncio.Event, n: int) -> None:
    ident = bytes
    body = make_request("alpha beta gamma", max_output_tokens=8).SerializeToString()
    async with grpc.aio.insecure_channel(address) as channel:
        gen = channel.unary_stream(GENERATE, request_serializer=ident, response_deserializer=ident)

        async def caller() -> None:
            while not stop.is_set():
                rec = Record(time.monotonic())
                records.append(rec)
                try:
                    async for raw in gen(body, timeout=20):
                        ev = rpb.GenerateEvent.FromString(raw)
                        kind = ev.WhichOneof("event")
                        if kind == "decision":
                            rec.decided_at, rec.backend = time.monotonic(), ev.decision.backend
                        elif kind == "failover":
                            rec.failovers.append(ev.failover.to_backend)
                    rec.code = "OK"
                except grpc.aio.AioRpcError as exc:
                    rec.code = exc.code().name

        await asyncio.gather(*(caller() for _ in range(n)))


async def churn(args: argparse.Namespace, work: Path, port: int) -> dict[str, Any]:
    devices = [start_agent(work, port, f"churn-{i}") for i in range(args.devices)]
    gone: list[Device] = []
    records: list[Record] = []
    stop = asyncio.Event()
    loader = asyncio.create_task(load(f"127.0.0.1:{port}", records, stop, args.concurrency))
    actions = ("freeze", "kill", "drain")
    t_end = time.monotonic() + args.duration_s
    n = args.devices
    frozen: list[tuple[float, Device]] = []
    i = 0
    while time.monotonic() < t_end:
        await asyncio.sleep(args.every_s)
        for when, dev in list(frozen):
            if time.monotonic() - when > 3 * args.heartbeat_timeout_s:
                dev.proc.kill()
                frozen.remove((when, dev))
        victim = devices.pop(0)
        how = actions[i % len(actions)]
        i += 1
        victim.gone_at, victim.how = time.monotonic(), how
        if how == "freeze":
            os.kill(victim.proc.pid, signal.SIGSTOP)
            frozen.append((victim.gone_at, victim))
        elif how == "kill":
            victim.proc.kill()
        else:
            victim.proc.terminate()
        gone.append(victim)
        devices.append(await asyncio.to_thread(start_agent, work, port, f"churn-{n}"))
        n += 1
    stop.set()
    await loader
    for _, dev in frozen:
        os.kill(dev.proc.pid, signal.SIGCONT)
        dev.proc.kill()
    for dev in devices:
        dev.proc.terminate()
    return evaluate(args, records, gone)


def evaluate(args: argparse.Namespace, records: list[Record], gone: list[Device]) -> dict:
    by_backend = {f"edge-{d.device_id}": d for d in gone}
    violations = []
    last_routed: dict[str, float] = {}
    for r in records:
        for name in [r.backend, *r.failovers]:
            dev = by_backend.get(name)
            if dev is None or dev.gone_at is None or not r.decided_at:
                continue
            after = r.decided_at - dev.gone_at
            last_routed[name] = max(last_routed.get(name, -1e9), after)
            if after > args.heartbeat_timeout_s + args.grace_s:
                violations.append(
                    {"device": dev.device_id, "how": dev.how, "routed_after_s": round(after, 2)}
                )
    statuses = collections.Counter(r.code or "unfinished" for r in records)
    left = collections.defaultdict(list)
    for name, after in last_routed.items():
        left[by_backend[name].how].append(round(max(0.0, after), 2))
    return {
        "requests": len(records),
        "devices_gone": collections.Counter(d.how for d in gone),
        "statuses": dict(statuses.most_common()),
        "served_by_edge": sum(1 for r in records if r.backend.startswith("edge-")),
        "violations": violations[:20],
        "violation_count": len(violations),
        "last_routed_after_gone_s": {k: sorted(v) for k, v in left.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--devices", type=int, default=4)
    p.add_argument("--duration-s", type=float, default=60.0)
    p.add_argument("--every-s", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--heartbeat-ms", type=int, default=500)
    p.add_argument("--heartbeat-timeout-s", type=float, default=1.5)
    p.add_argument("--grace-s", type=float, default=0.5, help="the hub's check interval")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="churn-"))
    backend, bport = procs.scripted_backend(work, "--tokens-per-s", "0")
    router, port = procs.router(
        work,
        bport,
        # The fallback costs something, so the (free) edge devices are preferred.
        backend={"cost": {"gpu_hourly_usd": 3.6, "gpu_throughput_tokens_per_s": 1000}},
        policy={"load_poll_interval_s": 0.2, "ttft_timeout_ms": 2000},
        edge={
            "enabled": True,
            "device_auth": "none",
            "heartbeat_interval_ms": args.heartbeat_ms,
            "heartbeat_timeout_s": args.heartbeat_timeout_s,
            "backend": {"cost": {"edge_per_mtok_usd": 0.0}},
        },
    )
    try:
        res = asyncio.run(churn(args, work, port))
    finally:
        procs.stop(router, backend)
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    ok = res["violation_count"] == 0 and res["served_by_edge"] > 0
    print("targets:", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
