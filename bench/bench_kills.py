"""Reliability: backends SIGKILLed mid-stream under load (BENCHMARKS.md, Reliability).

Separate processes on 127.0.0.1: ``hybrid-router serve`` (its metrics port on) and three
fleets of scripted backends, each several backends of one kind so that a stream cut by a
kill can go on on another (docs/reliability.md, continuation):

- ``model_server``: ``--fleet`` ModelService servers (``python -m serving.model_server
  --engine scripted``), backends ``ms-0``, ``ms-1``, ...;
- ``edge``: ``--fleet`` edge agents (``python -m greengrass.agent --engine scripted``)
  linked to the router's edge tier, backends ``edge-kill-e0``, ...;
- ``ray``: one local Ray instance (this file run with ``--ray-host``: Serve's gRPC proxy and
  ``--ray-apps`` applications of ``serving/ray_app``, one replica each), backends
  ``ray-a``, ``ray-b``, ... (kind ``ray_serve``).

Every engine decodes at ``--tokens-per-s``. ``--concurrency`` callers per kind stream
requests back to back (pinned to that kind's backends: ``pin_backends``, or
``pin_tiers=[edge]``), each with a ``--deadline-s`` gRPC deadline, ``continue_on_failure``
(off with ``--no-continue``) and a prompt of words unique to the request, so that the
scripted answer (the prompt's words, cycled) is known in advance.

A killer loop takes the kinds in turn. For the kind's turn it waits until every backend
of the kind is healthy again in the router (``ListBackends``) and the streams the kind's
last kill cut have ended (one kill per stream), then until a backend has a stream
mid-answer (at least ``--min-tokens`` tokens received from it, ``--min-left`` still to
come, and a fallback in its Decision: decided while another backend of the kind was up),
picks the backend with the most such streams, SIGKILLs its process and restarts it: a new
model server on the same port, a new agent with the same device id; a Ray replica is an
actor process (``ray::ServeReplica:<app>:ModelServer``) that Serve replaces by itself.
``--kills`` kills in all. The router's circuit breaker is loosened (it opens only after 20
failures in a row): at this pace its defaults open it on every backend of a fleet, and
the breaker has its own tests.

Per stream: the final status and its message, Usage ``complete`` / ``continued``, the
Decision's fallbacks, the Continuation events, the text (checked against the scripted
answer: no duplicated or missing words at a seam; a stream that ended early must hold a
prefix of it), time to end against the deadline. The streams on the victim with tokens
from it when it was killed are the *cut* streams.

Targets (exit status 1 when one is missed): every kill done; no hung stream (open past
its deadline + ``--grace-s``) and none ended by its deadline (DEADLINE_EXCEEDED: answers
take a tenth of it); every stream ends OK with a complete answer, or with a clear status
(not UNKNOWN / INTERNAL, and a message); every text as scripted; with continuation on,
``--min-completed`` (95%) of the cut streams that could go on complete (those with a
fallback and output budget left: one killed after its last token and before its end has
none and ends UNAVAILABLE); the others end with a clear status like every stream; after
the run the router's in-flight counts are 0 (``hybrid_router_inflight_streams`` and
``hybrid_router_backend_in_flight`` on /metrics, ``in_flight`` in ListBackends). It also
reports the host's load average, this process's event-loop lag and the router's
ListBackends round trip: on a busy machine a stall of the whole host slows recovery.

    .venv/bin/python bench/bench_kills.py                          # 100 kills, all kinds
    .venv/bin/python bench/bench_kills.py --kills 10 --json out.json
    .venv/bin/python bench/bench_kills.py --kinds model_server,edge --kills 100
    .venv/bin/python bench/bench_kills.py --kills 30 --no-continue  # cut streams: UNAVAILABLE
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import procs
from hybrid_router.client import make_request
from hybrid_router.v1 import router_pb2 as rpb

KINDS = ("model_server", "edge", "ray")
GENERATE = "/hybrid_router.v1.InferenceRouter/Generate"
LIST_BACKENDS = "/hybrid_router.v1.InferenceRouter/ListBackends"
#: Statuses that say nothing useful to the caller.
UNCLEAR = {"UNKNOWN", "INTERNAL"}
#: The other kinds' backends in a "no backend can take this request" message.
_PINNED_OUT = re.compile(r"[\w.-]+: pin \([^()]*(\([^()]*\))?[^()]*\)(; )?")


# --- the Ray host (this file run with --ray-host) ------------------------------------------


def ray_host(spec: dict[str, Any]) -> int:
    """A local Ray instance with Serve's gRPC proxy and one model application per name in
    ``spec["apps"]`` (each with its load application); prints ``READY <grpc port>``, then
    runs until SIGTERM."""
    ready = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # Ray writes worker deaths to stdout; nobody reads it after READY
    import ray
    from ray import serve

    from serving.ray_app.local import deploy, start_serve

    stop = threading.Event()
    ray.init(
        num_cpus=spec["ray_cpus"],
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        grpc_port, _ = start_serve()
        for app in spec["apps"]:
            deploy(
                {
                    "engine": "scripted",
                    "engine_options": {
                        "tokens_per_s": spec["tokens_per_s"],
                        "max_concurrency": spec["max_concurrency"],
                    },
                    "model": {"id": "scripted", "version": "1", "family": "scripted"},
                    "deployment": {
                        "num_replicas": 1,
                        "max_ongoing_requests": spec["max_concurrency"],
                        "ray_actor_options": {"num_cpus": spec["num_cpus"]},
                        "graceful_shutdown_timeout_s": 1,
                    },
                    "report_heartbeat_s": 0.5,
                },
                app_name=app,
            )
        ready.write(f"READY {grpc_port}\n")
        ready.flush()
        stop.wait()
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
    return 0


# --- records -------------------------------------------------------------------------------


@dataclass
class Stream:
    kind: str
    rid: str
    words: tuple[str, ...]
    max_tokens: int
    deadline_s: float
    started: float
    backend: str = ""  # the backend writing now
    fallbacks: tuple[str, ...] = ()  # the Decision's: where a continuation can go
    on_backend: int = 0  # tokens received from it
    tokens: int = 0
    text: list[str] = field(default_factory=list)
    delta_tokens: list[int] = field(default_factory=list)
    continuations: list[dict[str, Any]] = field(default_factory=list)
    failovers: int = 0
    complete: bool | None = None
    continued: bool = False
    usage_error: str = ""
    code: str = ""
    details: str = ""
    ended: float | None = None
    cut_by: list[int] = field(default_factory=list)

    def expected(self) -> str:
        n = len(self.words)
        return " ".join(self.words[i % n] for i in range(self.max_tokens))


@dataclass
class Kill:
    index: int
    kind: str
    backend: str
    pid: int
    at: float
    cut: int
    waiting: int
    restarted_s: float | None = None
    recovered_s: float | None = None


# --- the fleets ----------------------------------------------------------------------------


def pids_titled(prefix: str) -> list[int]:
    """Processes whose command line (or process title) starts with ``prefix``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if raw.replace(b"\0", b" ").strip().decode(errors="replace").startswith(prefix):
            found.append(int(entry))
    return found


class Fleet:
    """The backends of one kind: their router names, processes, kill and restart."""

    kind = ""

    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.restarts = 0

    @property
    def names(self) -> list[str]:
        raise NotImplementedError

    def pid(self, name: str) -> int:
        raise NotImplementedError

    def restart(self, name: str, old_pid: int) -> None:
        """Blocking: until the new process is up."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class ModelServers(Fleet):
    kind = "model_server"

    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        super().__init__(work, args)
        self.ports = {f"ms-{i}": procs.free_port() for i in range(args.fleet)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def names(self) -> list[str]:
        return list(self.ports)

    def start(self, name: str) -> None:
        argv = [sys.executable, "-m", "serving.model_server", "--engine", "scripted",
                "--port", str(self.ports[name]), "--tokens-per-s", str(self.args.tokens_per_s),
                "--max-concurrency", "64", "--log-level", "WARNING", "--grace-s", "1"]  # fmt: skip
        log = self.work / f"{name}.{self.restarts}.log"
        self.procs[name], _ = procs.start(argv, log)

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def restart(self, name: str, old_pid: int) -> None:
        self.procs[name].wait()
        self.restarts += 1
        for attempt in range(20):  # the port can take a moment to be free again
            try:
                self.start(name)
                return
            except SystemExit:
                if attempt == 19:
                    raise
                time.sleep(0.25)

    def entries(self) -> list[dict[str, Any]]:
        return [
            backend_entry(name, "model_service", f"127.0.0.1:{port}", self.args)
            for name, port in self.ports.items()
        ]

    def stop(self) -> None:
        procs.stop(*self.procs.values())


class EdgeAgents(Fleet):
    kind = "edge"

    def __init__(self, work: Path, args: argparse.Namespace, router_port: int) -> None:
        super().__init__(work, args)
        self.router_port = router_port
        self.devices = [f"kill-e{i}" for i in range(args.fleet)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def names(self) -> list[str]:
        return [f"edge-{d}" for d in self.devices]

    def start(self, device: str) -> None:
        scripted = {"tokens_per_s": self.args.tokens_per_s, "max_concurrency": 64}
        argv = [sys.executable, "-m", "greengrass.agent", "--router",
                f"127.0.0.1:{self.router_port}", "--device-id", device, "--engine", "scripted",
                "--scripted", json.dumps(scripted), "--insecure",
                "--work-dir", str(self.work / device), "--log-level", "WARNING",
                "--reconnect-initial-s", "0.2", "--reconnect-max-s", "1"]  # fmt: skip
        log = self.work / f"{device}.{self.restarts}.log"
        out = log.open("wb")
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=out, stdin=subprocess.DEVNULL, cwd=procs.REPO
        )
        assert proc.stdout is not None
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end:
            line = proc.stdout.readline().decode()
            if line.startswith("READY"):  # READY <device id> <router id>: registered
                self.procs[device] = proc
                return
            if not line and proc.poll() is not None:
                break
        proc.kill()
        raise SystemExit(f"agent {device} did not register; see {log}")

    def pid(self, name: str) -> int:
        return self.procs[name.removeprefix("edge-")].pid

    def restart(self, name: str, old_pid: int) -> None:
        device = name.removeprefix("edge-")
        self.procs[device].wait()
        self.restarts += 1
        self.start(device)

    def stop(self) -> None:
        procs.stop(*self.procs.values())


class RayApps(Fleet):
    kind = "ray"

    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        super().__init__(work, args)
        self.apps = [f"ray-{chr(ord('a') + i)}" for i in range(args.ray_apps)]
        self.host: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def names(self) -> list[str]:
        return list(self.apps)

    def start_host(self) -> None:
        spec = {
            "apps": self.apps,
            "tokens_per_s": self.args.tokens_per_s,
            "max_concurrency": 64,
            "num_cpus": 0.25,
            "ray_cpus": self.args.ray_cpus,
        }
        argv = [sys.executable, str(Path(__file__).resolve()), "--ray-host", json.dumps(spec)]
        for attempt in (1, 2):  # Ray's start can time out on a saturated host
            try:
                self.host, self.port = procs.start(argv, self.work / f"ray-host.{attempt}.log")
                return
            except SystemExit:
                if attempt == 2:
                    raise
                print("  ray: the local instance did not start; trying again", flush=True)

    @staticmethod
    def _prefix(app: str) -> str:
        return f"ray::ServeReplica:{app}:ModelServer"

    def pid(self, name: str) -> int:
        found = pids_titled(self._prefix(name))
        return found[0] if found else 0

    def restart(self, name: str, old_pid: int) -> None:
        """Serve replaces the dead replica: wait for its new process."""
        t_end = time.monotonic() + self.args.recover_timeout_s
        while time.monotonic() < t_end:
            found = [p for p in pids_titled(self._prefix(name)) if p != old_pid]
            if found:
                self.restarts += 1
                return
            time.sleep(0.2)
        raise TimeoutError(f"no new replica of {name} within {self.args.recover_timeout_s} s")

    def entries(self) -> list[dict[str, Any]]:
        return [
            {
                **backend_entry(app, "ray_serve", f"127.0.0.1:{self.port}", self.args),
                "serve_application": app,
            }
            for app in self.apps
        ]

    def stop(self) -> None:
        if self.host is None:
            return
        self.host.terminate()
        try:
            self.host.wait(90)  # Serve's and Ray's shutdown take a while
        except subprocess.TimeoutExpired:
            self.host.kill()


def backend_entry(name: str, kind: str, endpoint: str, args: argparse.Namespace) -> dict:
    return {
        "name": name,
        "tier": "gpu",
        "kind": kind,
        "endpoint": endpoint,
        "model": "scripted",
        "model_family": "scripted",
        "context_window": 8192,
        "max_concurrency": 64,
        "capabilities": ["chat"],
        "priors": {"ttft_ms": 20, "decode_tokens_per_s": args.tokens_per_s},
        # A killed backend's call fails at once (connection reset); this bounds the rest.
        "timeout_s": 10,
    }


def start_router(
    work: Path, args: argparse.Namespace, backends: list[dict[str, Any]], edge: bool
) -> tuple[subprocess.Popen[bytes], int, int]:
    port, mport = procs.free_port(), procs.free_port()
    cfg: dict[str, Any] = {
        "server": {"address": f"127.0.0.1:{port}", "grace_period_s": 1},
        "backends": backends,
        "policy": {
            "objective": "fastest",
            "max_fallbacks": 4,
            "ttft_timeout_ms": 5000,
            "load_poll_interval_s": 0.2,
            # A kill fails every stream on the victim at once, and the backend is back
            # within seconds: a breaker at its defaults (5 in a row, half of 20) opens on
            # every device of the fleet at this pace and refuses the continuations. The
            # breaker has its own tests; here it opens only on a backend that stays down.
            "circuit": {
                "consecutive_failures": 20,
                "error_rate": 1.0,
                "window": 20,
                "min_requests": 20,
                "cooldown_s": 1.0,
            },
        },
        "sessions": {"sqlite": {"path": str(work / "sessions.sqlite3")}},
        "telemetry": {
            "logs": {"requests": False},
            "metrics": {"address": f"127.0.0.1:{mport}"},
        },
    }
    if edge:
        cfg["edge"] = {
            "enabled": True,
            "device_auth": "none",
            # A SIGKILL closes the link at once; the heartbeat timeout is for devices that
            # go silent (bench_edge_churn.py). Long here: on a busy 2-core machine a stall
            # of the whole host reads as every device lost at once (an agent drops its
            # link after 3 intervals + 1 s without a word from the router).
            "heartbeat_interval_ms": 3000,
            "heartbeat_timeout_s": 12,
            "backend": {
                "capabilities": ["chat"],
                "max_concurrency": 64,
                "priors": {"ttft_ms": 20, "decode_tokens_per_s": args.tokens_per_s},
                "timeout_s": 10,
            },
        }
    (work / "router.yaml").write_text(json.dumps(cfg, indent=2))
    exe = Path(sys.executable).parent / "hybrid-router"
    proc, _ = procs.start(
        [str(exe), "serve", "--config", str(work / "router.yaml"), "--log-level", "warning"],
        work / "router.log",
    )
    return proc, port, mport


# --- the run -------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace, fleets: dict[str, Fleet], port: int) -> None:
        self.args = args
        self.fleets = fleets
        self.address = f"127.0.0.1:{port}"
        self.rng = random.Random(args.seed)
        self.streams: list[Stream] = []
        self.open: set[int] = set()  # indexes of streams not ended
        self.kills: list[Kill] = []
        self.not_recovered: list[str] = []
        self.pending: dict[str, asyncio.Task[None]] = {}
        self.stop = asyncio.Event()
        self.seq = 0
        #: (this process's event-loop lag, ListBackends round trip, 1-minute load average)
        self.samples: list[tuple[float, float, float]] = []

    # callers

    def request(self, kind: str) -> tuple[Stream, bytes]:
        self.seq += 1
        n = self.rng.randint(3, 9)
        words = tuple(f"s{self.seq}w{i}" for i in range(n))
        max_tokens = self.rng.randint(self.args.max_tokens // 2, self.args.max_tokens)
        st = Stream(kind, f"kill-{self.seq}", words, max_tokens, self.args.deadline_s, 0.0)
        pins: dict[str, Any] = (
            {"pin_tiers": ["edge"]} if kind == "edge" else {"pin_backends": self.fleets[kind].names}
        )
        body = make_request(
            " ".join(words),
            max_output_tokens=max_tokens,
            request_id=st.rid,
            continue_on_failure=self.args.continue_on_failure,
            **pins,
        ).SerializeToString()
        return st, body

    async def caller(self, gen: Any, kind: str) -> None:
        while not self.stop.is_set():
            st, body = self.request(kind)
            st.started = time.monotonic()
            index = len(self.streams)
            self.streams.append(st)
            self.open.add(index)
            try:
                await self.one(gen, st, body)
            finally:
                st.ended = time.monotonic()
                self.open.discard(index)
            if st.code != "OK":
                await asyncio.sleep(0.2)  # refused at once while a fleet is down: no spin

    async def one(self, gen: Any, st: Stream, body: bytes) -> None:
        call = gen(body, timeout=st.deadline_s)
        try:
            async with asyncio.timeout(st.deadline_s + self.args.grace_s):
                async for raw in call:
                    ev = rpb.GenerateEvent.FromString(raw)
                    kind = ev.WhichOneof("event")
                    if kind == "delta":
                        n = ev.delta.tokens or 1
                        st.text.append(ev.delta.text)
                        st.delta_tokens.append(n)
                        st.tokens += n
                        st.on_backend += n
                    elif kind == "decision":
                        st.backend, st.on_backend = ev.decision.backend, 0
                        st.fallbacks = tuple(ev.decision.fallbacks)
                    elif kind == "continuation":
                        c = ev.continuation
                        st.continuations.append(
                            {
                                "from": c.from_backend,
                                "to": c.to_backend,
                                "reason": c.reason,
                                "tokens_so_far": c.tokens_so_far,
                                "method": c.method,
                            }
                        )
                        st.backend, st.on_backend = c.to_backend, 0
                    elif kind == "failover":
                        st.failovers += 1
                        st.backend, st.on_backend = ev.failover.to_backend, 0
                    elif kind == "usage":
                        u = ev.usage
                        st.complete, st.continued, st.usage_error = (
                            u.complete,
                            u.continued,
                            u.error,
                        )
            st.code = "OK"
        except TimeoutError:
            st.code = "HUNG"
            call.cancel()
        except grpc.aio.AioRpcError as exc:
            st.code, st.details = exc.code().name, exc.details() or ""

    # the router's view

    async def backends(self, channel: Any) -> dict[str, Any]:
        call = channel.unary_unary(
            LIST_BACKENDS,
            request_serializer=rpb.ListBackendsRequest.SerializeToString,
            response_deserializer=rpb.ListBackendsResponse.FromString,
        )
        resp = await call(rpb.ListBackendsRequest(), timeout=10)
        return {b.name: b for b in resp.backends}

    async def wait_healthy(self, channel: Any, kind: str) -> bool:
        names = self.fleets[kind].names
        t_end = time.monotonic() + self.args.recover_timeout_s
        while time.monotonic() < t_end:
            with contextlib.suppress(grpc.aio.AioRpcError):
                seen = await self.backends(channel)
                if all(
                    n in seen and seen[n].healthy and seen[n].circuit != rpb.CIRCUIT_STATE_OPEN
                    for n in names
                ):
                    return True
            await asyncio.sleep(0.1)
        return False

    async def watch(self, channel: Any) -> None:
        """Every 0.5 s: this process's loop lag, the router's ListBackends round trip and
        the host's load average (a stall of the whole host explains a slow recovery)."""
        while not self.stop.is_set():
            t = time.monotonic()
            await asyncio.sleep(0.5)
            lag = time.monotonic() - t - 0.5
            t = time.monotonic()
            try:
                await self.backends(channel)
                rtt = time.monotonic() - t
            except grpc.aio.AioRpcError:
                rtt = float("inf")
            self.samples.append((lag, rtt, os.getloadavg()[0]))

    # the killer

    def victim(self, kind: str) -> tuple[str, list[Stream]] | None:
        names = set(self.fleets[kind].names)
        mid: dict[str, list[Stream]] = collections.defaultdict(list)
        for i in list(self.open):
            st = self.streams[i]
            if (
                st.backend in names
                and st.fallbacks  # decided while another backend was up
                and st.on_backend >= self.args.min_tokens
                and st.max_tokens - st.tokens >= self.args.min_left
            ):
                mid[st.backend].append(st)
        if not mid:
            return None
        most = max(len(v) for v in mid.values())
        name = self.rng.choice(sorted(n for n, v in mid.items() if len(v) == most))
        return name, mid[name]

    async def killer(self, channel: Any) -> None:
        kinds = self.args.kinds
        t0 = time.monotonic()
        for index in range(self.args.kills):
            kind = kinds[index % len(kinds)]
            fleet = self.fleets[kind]
            if kind in self.pending:
                await self.pending.pop(kind)
            if not await self.wait_healthy(channel, kind):
                self.not_recovered.append(f"kill {index}: {kind} not all healthy before it")
            # One kill per stream: the streams the last kill of this kind cut have ended.
            t_end = time.monotonic() + self.args.deadline_s + self.args.grace_s
            while time.monotonic() < t_end and any(
                self.streams[i].kind == kind and self.streams[i].cut_by for i in self.open
            ):
                await asyncio.sleep(0.05)
            await asyncio.sleep(self.args.every_s)
            picked = None
            t_end = time.monotonic() + 30
            while picked is None and time.monotonic() < t_end:
                picked = self.victim(kind)
                if picked is None:
                    await asyncio.sleep(0.02)
            # no stream mid-answer: kill one anyway
            name = picked[0] if picked is not None else self.rng.choice(fleet.names)
            pid = fleet.pid(name)
            on_victim = [self.streams[i] for i in self.open if self.streams[i].backend == name]
            cut = [st for st in on_victim if st.on_backend > 0]
            waiting = len(on_victim) - len(cut)
            if pid:
                os.kill(pid, signal.SIGKILL)
            kill = Kill(index, kind, name, pid, time.monotonic(), len(cut), waiting)
            for st in cut:
                st.cut_by.append(index)
            self.kills.append(kill)
            self.pending[kind] = asyncio.create_task(self.recover(channel, fleet, kill))
            print(
                f"  kill {index + 1}/{self.args.kills} {kind:12} {name:13} pid {pid:>7}: "
                f"{len(cut)} cut mid-answer, {waiting} waiting "
                f"({time.monotonic() - t0:.0f} s)",
                flush=True,
            )
        for task in self.pending.values():
            await task

    async def recover(self, channel: Any, fleet: Fleet, kill: Kill) -> None:
        try:
            await asyncio.to_thread(fleet.restart, kill.backend, kill.pid)
        except (TimeoutError, SystemExit) as exc:
            self.not_recovered.append(f"kill {kill.index}: {kill.backend}: {exc}")
            return
        kill.restarted_s = round(time.monotonic() - kill.at, 2)
        if await self.wait_healthy(channel, fleet.kind):
            kill.recovered_s = round(time.monotonic() - kill.at, 2)

    async def main(self) -> None:
        ident = bytes
        async with grpc.aio.insecure_channel(self.address) as channel:
            for kind in self.args.kinds:
                if not await self.wait_healthy(channel, kind):
                    raise SystemExit(f"{kind}: the router never saw every backend healthy")
            gen = channel.unary_stream(
                GENERATE, request_serializer=ident, response_deserializer=ident
            )
            callers = [
                asyncio.create_task(self.caller(gen, kind))
                for kind in self.args.kinds
                for _ in range(self.args.concurrency)
            ]
            watcher = asyncio.create_task(self.watch(channel))
            try:
                await self.killer(channel)
            finally:
                self.stop.set()
                await asyncio.gather(*callers, watcher)


# --- figures -------------------------------------------------------------------------------


async def in_flight_after(address: str, metrics_port: int, wait_s: float) -> dict[str, Any]:
    """The router's in-flight counts, read until they are 0 (or ``wait_s`` passed)."""
    t0 = time.monotonic()
    out: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(
            LIST_BACKENDS,
            request_serializer=rpb.ListBackendsRequest.SerializeToString,
            response_deserializer=rpb.ListBackendsResponse.FromString,
        )
        async with httpx.AsyncClient() as http:
            while True:
                text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)).text
                streams, per_backend = -1.0, {}
                for line in text.splitlines():
                    if line.startswith("hybrid_router_inflight_streams "):
                        streams = float(line.split()[1])
                    elif line.startswith("hybrid_router_backend_in_flight{"):
                        labels, value = line.rsplit(" ", 1)
                        name = labels.split('backend="', 1)[1].split('"', 1)[0]
                        per_backend[name] = float(value)
                resp = await call(rpb.ListBackendsRequest(), timeout=10)
                listed = {b.name: b.in_flight for b in resp.backends}
                out = {
                    "inflight_streams": streams,
                    "backend_in_flight_nonzero": {k: v for k, v in per_backend.items() if v},
                    "list_backends_in_flight_nonzero": {k: v for k, v in listed.items() if v},
                    "backends_seen": len(listed),
                }
                zero = (
                    streams == 0
                    and not out["backend_in_flight_nonzero"]
                    and not out["list_backends_in_flight_nonzero"]
                )
                if zero or time.monotonic() - t0 > wait_s:
                    out["zero"] = zero
                    out["after_s"] = round(time.monotonic() - t0, 2)
                    return out
                await asyncio.sleep(0.2)


def _q(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def evaluate(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    streams = run.streams
    statuses: dict[str, collections.Counter[str]] = {k: collections.Counter() for k in args.kinds}
    unclear, seams, hung, at_deadline = [], [], [], []
    checked = 0
    for st in streams:
        statuses[st.kind][st.code or "unfinished"] += 1
        if st.code == "HUNG" or not st.code:
            hung.append(st)
        elif st.code == "DEADLINE_EXCEEDED":
            at_deadline.append(st)
        elif st.code == "OK" and not st.complete:
            unclear.append(st)
        elif st.code in UNCLEAR or (st.code != "OK" and not st.details.strip()):
            unclear.append(st)
        # A complete answer is the scripted one; an answer cut short, a prefix of it.
        text, expected = "".join(st.text), st.expected()
        checked += 1
        if text != expected if st.code == "OK" else not expected.startswith(text):
            seams.append(st)
    cut = [st for st in streams if st.cut_by]
    cut_ok = [st for st in cut if st.code == "OK" and st.complete]
    via_cont = [st for st in cut_ok if st.continuations and st.continued]
    cut_other = collections.Counter(st.code for st in cut if st not in cut_ok)
    # Decided while the kind's other backends were down: no candidate to go on with.
    alone = [st for st in cut if not st.fallbacks]
    alone_ok = [st for st in alone if st in cut_ok]
    # Killed after its last token, before its end: no output budget left to go on with.
    spent = [st for st in cut if st.fallbacks and st not in cut_ok and st.tokens >= st.max_tokens]
    # On the victim with tokens from it, yet its whole answer had left it (the last
    # tokens were on their way to the router when the kill came).
    before = [st for st in cut_ok if not st.continuations]
    ends = [st.ended - st.started for st in streams if st.ended is not None]
    cut_ends = [st.ended - st.started for st in cut if st.ended is not None]

    def show(st: Stream) -> dict[str, Any]:
        got, want = "".join(st.text).split(), st.expected().split()
        at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
        if at is None and len(got) != len(want) and st.code == "OK":
            at = min(len(got), len(want))
        seam: dict[str, Any] = {}
        if at is not None:
            deltas, n = [], 0
            for text, tokens in zip(st.text, st.delta_tokens, strict=True):
                words = len(text.split())
                if n + words >= at - 3 and n <= at + 3:
                    deltas.append({"at_word": n, "text": text, "tokens": tokens})
                n += words
            seam = {
                "first_difference_at_word": at,
                "words": [len(got), len(want)],
                "got": got[max(0, at - 3) : at + 4],
                "expected": want[max(0, at - 3) : at + 4],
                "deltas_there": deltas[:12],
            }
        return {
            "request_id": st.rid,
            "kind": st.kind,
            "code": st.code,
            "details": st.details[:300],
            "complete": st.complete,
            "usage_error": st.usage_error[:200],
            "continuations": st.continuations,
            "text_end": "".join(st.text)[-80:],
            "expected_end": st.expected()[-80:],
            "end_s": round(st.ended - st.started, 2) if st.ended else None,
            **seam,
        }

    by_kind = collections.Counter(k.kind for k in run.kills)

    def per_kind(attr: str) -> dict[str, dict[str, float | None]]:
        out = {}
        for kind in args.kinds:
            vals = [getattr(k, attr) for k in run.kills if k.kind == kind]
            vals = [v for v in vals if v is not None]
            out[kind] = {"p50": _q(vals, 0.5), "max": max(vals) if vals else None}
        return out

    details = collections.Counter(
        f"{st.code}: {_PINNED_OUT.sub('', st.details)[:160]}"
        for st in streams
        if st.code not in ("OK", "")
    )
    lags = [x[0] for x in run.samples]
    rtts = [x[1] for x in run.samples]
    loads = [x[2] for x in run.samples]
    return {
        "host": {
            "load_avg_1m": {"p50": _q(loads, 0.5), "max": _q(loads, 1)},
            "bench_loop_lag_s": {"p99": _q(lags, 0.99), "max": _q(lags, 1)},
            "router_list_backends_s": {
                "p50": _q(rtts, 0.5),
                "p99": _q(rtts, 0.99),
                "max": _q(rtts, 1),
            },
            "stalls_over_2s": sum(1 for a, b in zip(lags, rtts, strict=True) if max(a, b) > 2),
        },
        "kills": {
            "requested": args.kills,
            "done": len(run.kills),
            "by_kind": dict(by_kind),
            "with_streams_cut": sum(1 for k in run.kills if k.cut),
            "streams_cut": sum(k.cut for k in run.kills),
            "streams_waiting_for_first_token": sum(k.waiting for k in run.kills),
            "restarted_s": per_kind("restarted_s"),
            "recovered_s": per_kind("recovered_s"),
            "not_recovered": run.not_recovered[:20],
        },
        "streams": {
            "total": len(streams),
            "statuses": {k: dict(v.most_common()) for k, v in statuses.items()},
            "status_messages": dict(details.most_common(12)),
            "with_continuation": sum(1 for st in streams if st.continuations),
            "continuation_events": sum(len(st.continuations) for st in streams),
            "methods": dict(
                collections.Counter(c["method"] for st in streams for c in st.continuations)
            ),
            "with_failover": sum(1 for st in streams if st.failovers),
        },
        "cut_streams": {
            "total": len(cut),
            "completed": len(cut_ok),
            "completed_via_continuation": len(via_cont),
            "completed_before_the_kill_reached_them": len(before),
            "cut_more_than_once": sum(1 for st in cut if len(st.cut_by) > 1),
            "without_fallback": len(alone),
            "without_fallback_completed": len(alone_ok),
            "budget_spent_ended_with_status": len(spent),
            # Of the cut streams that could go on (a fallback, output budget left).
            "completed_share": (
                round((len(cut_ok) - len(alone_ok)) / could, 4)
                if (could := len(cut) - len(alone) - len(spent))
                else None
            ),
            "other_endings": dict(cut_other.most_common()),
            "end_s": {"p50": _q(cut_ends, 0.5), "p99": _q(cut_ends, 0.99), "max": _q(cut_ends, 1)},
        },
        "text_checked": checked,
        "text_mismatched": len(seams),
        "hung": len(hung),
        "at_deadline": len(at_deadline),
        "unclear": len(unclear),
        "deadline_s": args.deadline_s,
        "end_s": {"p50": _q(ends, 0.5), "p99": _q(ends, 0.99), "max": _q(ends, 1)},
        "examples": {
            "text_mismatched": [show(s) for s in seams[:5]],
            "hung": [show(s) for s in hung[:5]],
            "at_deadline": [show(s) for s in at_deadline[:5]],
            "unclear": [show(s) for s in unclear[:5]],
            "cut_not_completed": [show(s) for s in cut if s not in cut_ok][:5],
        },
    }


def targets(res: dict[str, Any], args: argparse.Namespace) -> list[str]:
    missed = []
    if res["kills"]["done"] < args.kills:
        missed.append(f"kills done {res['kills']['done']} < {args.kills}")
    for key in ("hung", "at_deadline", "unclear", "text_mismatched"):
        if res[key]:
            missed.append(f"{key}: {res[key]}")
    cut = res["cut_streams"]
    if cut["total"] == 0:
        missed.append("no stream was cut mid-answer")
    share = cut["completed_share"]
    if args.continue_on_failure and share is not None and share < args.min_completed:
        missed.append(
            f"cut streams that could go on completed: {share:.1%} < {args.min_completed:.0%}"
        )
    if not res["in_flight_after"].get("zero"):
        missed.append(f"in-flight after the run: {res['in_flight_after']}")
    if res["router_exit"] is not None:
        missed.append(f"router exited ({res['router_exit']})")
    return missed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kills", type=int, default=100)
    p.add_argument(
        "--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}"
    )
    p.add_argument("--concurrency", type=int, default=4, help="callers per kind")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--fleet", type=int, default=3, help="model servers; edge agents")
    p.add_argument("--ray-apps", type=int, default=2, help="Serve applications (1 replica each)")
    p.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    p.add_argument("--tokens-per-s", type=float, default=40.0)
    p.add_argument("--max-tokens", type=int, default=100, help="answers of half to all of it")
    p.add_argument("--deadline-s", type=float, default=30.0)
    p.add_argument("--grace-s", type=float, default=5.0, help="past the deadline: hung")
    p.add_argument("--min-tokens", type=int, default=5, help="from the victim before a kill")
    p.add_argument("--min-left", type=int, default=10, help="tokens still to come at a kill")
    p.add_argument("--every-s", type=float, default=0.3, help="pause before each kill")
    p.add_argument("--recover-timeout-s", type=float, default=90.0)
    p.add_argument("--no-continue", dest="continue_on_failure", action="store_false")
    p.add_argument(
        "--min-completed",
        type=float,
        default=0.95,
        help="share of the cut streams that could go on that must complete (a stall of the "
        "whole host can end a continuation with a clear status instead)",
    )
    p.add_argument("--ray-host", metavar="JSON", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ray_host:
        return ray_host(json.loads(args.ray_host))
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = sorted(set(args.kinds) - set(KINDS))
    if bad or not args.kinds:
        p.error(f"--kinds: {', '.join(bad) or 'empty'}; choose from {', '.join(KINDS)}")
    if args.fleet < 2 or args.ray_apps < 2:
        p.error("--fleet and --ray-apps: at least 2 (a cut stream needs another backend)")

    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="kills-"))
    print(f"kills: {args.kills} over {', '.join(args.kinds)}; logs in {work}", flush=True)
    fleets: dict[str, Fleet] = {}
    router = None
    ray_up_s = None
    try:
        backends: list[dict[str, Any]] = []
        if "ray" in args.kinds:
            ray = RayApps(work, args)
            fleets["ray"] = ray
            t = time.monotonic()
            ray.start_host()
            backends += ray.entries()
            ray_up_s = round(time.monotonic() - t, 1)
            print(f"  ray: Serve up in {ray_up_s} s ({len(ray.apps)} applications)", flush=True)
        if "model_server" in args.kinds:
            ms = ModelServers(work, args)
            fleets["model_server"] = ms
            for name in ms.names:
                ms.start(name)
            backends += ms.entries()
        router, port, mport = start_router(work, args, backends, "edge" in args.kinds)
        if "edge" in args.kinds:
            edge = EdgeAgents(work, args, port)
            fleets["edge"] = edge
            for device in edge.devices:
                edge.start(device)
        t_setup = time.monotonic() - t_start
        run = Run(args, fleets, port)
        t_run = time.monotonic()
        asyncio.run(run.main())
        run_s = time.monotonic() - t_run
        res = evaluate(run, args)
        res["in_flight_after"] = asyncio.run(in_flight_after(f"127.0.0.1:{port}", mport, 15.0))
        res["router_exit"] = router.poll()
        res["setup_s"] = round(t_setup, 1)
        res["ray_serve_startup_s"] = ray_up_s
        res["run_s"] = round(run_s, 1)
        res["kills_per_minute"] = round(len(run.kills) / run_s * 60, 1)
        res["config"] = {
            k: getattr(args, k)
            for k in ("kinds", "concurrency", "fleet", "ray_apps", "tokens_per_s",
                      "max_tokens", "deadline_s", "continue_on_failure", "seed")
        }  # fmt: skip
    finally:
        for fleet in fleets.values():
            if fleet.kind == "edge":
                fleet.stop()
        if router is not None:
            procs.stop(router)
        for fleet in fleets.values():
            if fleet.kind != "edge":
                fleet.stop()
    res["wall_s"] = round(time.monotonic() - t_start, 1)
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    missed = targets(res, args)
    print("targets:", "met" if not missed else "MISSED: " + "; ".join(missed))
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
