"""Helpers for the edge-tier tests: real agent processes (``python -m greengrass.agent``),
a router with ``edge.enabled``, a real ``redis-server``, and waiting on the fleet view.

Import as ``from edgeutil import ...``; the fixtures are collected by the importing module.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from hybrid_router.v1 import edge_link_pb2 as epb
from hybrid_router.v1 import edge_link_pb2_grpc
from rtutil import user_request
from testkit import wait_until, wait_until_sync

from router.config import parse_config
from router.server.app import RouterServer, create_server

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def edge_config(**overrides: Any) -> dict[str, Any]:
    """The ``edge`` section for tests: no mTLS, quick heartbeats and timeout."""
    cfg: dict[str, Any] = {
        "enabled": True,
        "device_auth": "none",
        "heartbeat_interval_ms": 250,
        "heartbeat_timeout_s": 3.0,
        "backend": {
            "data_classes": ["public", "internal"],
            "priors": {"ttft_ms": 50, "decode_tokens_per_s": 100},
            "timeout_s": 10,
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


StartEdgeRouter = Callable[..., Awaitable[RouterServer]]


@pytest.fixture
async def edge_router() -> AsyncIterator[StartEdgeRouter]:
    routers: list[RouterServer] = []

    async def start(
        backends: list[dict[str, Any]] | None = None,
        *,
        edge: dict[str, Any] | None = None,
        server: dict[str, Any] | None = None,
    ) -> RouterServer:
        cfg = parse_config(
            {
                "server": {"address": "127.0.0.1:0", "grace_period_s": 1, **(server or {})},
                "policy": {"load_poll_interval_s": 0.1, "ttft_timeout_ms": 20_000},
                "backends": backends or [],
                "edge": edge or edge_config(),
            },
            source="test",
        )
        router = await create_server(cfg)
        routers.append(router)
        return router

    yield start
    for router in routers:
        await router.stop(0)


@dataclass
class Agent:
    device_id: str
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    work_dir: Path
    stopped: bool = field(default=False)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def log(self) -> str:
        return self.err.read_text(errors="replace")

    async def ready(self, timeout_s: float = 30.0) -> str:
        """The router id from ``READY <device> <router>``."""

        def router_id() -> str | None:
            for line in self.stdout().splitlines():
                if line.startswith("READY "):
                    return line.split()[2]
            if self.proc.poll() is not None:
                pytest.fail(f"agent {self.device_id} exited {self.proc.returncode}:\n{self.log()}")
            return None

        try:
            return str(await wait_until(router_id, f"agent {self.device_id} READY", timeout_s))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log()[-3000:]}") from None

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)
        if sig is signal.SIGSTOP:
            self.stopped = True
        elif sig is signal.SIGCONT:
            self.stopped = False

    async def wait(self, timeout_s: float = 30.0) -> int:
        return await asyncio.to_thread(self.proc.wait, timeout_s)


StartAgent = Callable[..., Agent]


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[StartAgent]:
    agents: list[Agent] = []

    def start(
        router: RouterServer | str,
        device_id: str,
        *,
        site: str = "",
        scripted: dict[str, Any] | None = None,
        args: tuple[str, ...] = (),
        env: dict[str, str | None] | None = None,
        work_dir: Path | None = None,
        engine: str = "scripted",
    ) -> Agent:
        target = router if isinstance(router, str) else f"127.0.0.1:{router.port}"
        work = work_dir or tmp_path / f"agent-{device_id}"
        work.mkdir(parents=True, exist_ok=True)
        out = tmp_path / f"{device_id}-{len(agents)}.out"
        err = tmp_path / f"{device_id}-{len(agents)}.err"
        cmd = [
            sys.executable,
            "-m",
            "greengrass.agent",
            "--router",
            target,
            "--device-id",
            device_id,
            "--site",
            site,
            "--engine",
            engine,
            "--work-dir",
            str(work),
            "--reconnect-initial-s",
            "0.2",
            "--reconnect-max-s",
            "1",
            "--drain-grace-s",
            "10",
            *args,
        ]
        if engine == "scripted":
            cmd += ["--scripted", json.dumps(scripted or {})]
        if not any(a in ("--ca-file", "--cert-file") for a in args):
            cmd.append("--insecure")
        environ = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for key, value in (env or {}).items():  # None removes a variable
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=REPO, env=environ)
        agent = Agent(device_id, proc, out, err, work)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        if agent.proc.poll() is None:
            if agent.stopped:
                agent.proc.send_signal(signal.SIGCONT)
            agent.proc.kill()
            agent.proc.wait(10)


async def list_devices(router: RouterServer) -> epb.ListDevicesResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as ch:
        return await edge_link_pb2_grpc.EdgeFleetStub(ch).ListDevices(epb.ListDevicesRequest())


async def wait_for_device(
    router: RouterServer,
    device_id: str,
    predicate: Callable[[epb.DeviceStatus], bool] = lambda d: d.online,
    timeout_s: float = 30.0,
) -> epb.DeviceStatus:
    """The device's status once ``predicate`` holds on this router's fleet view."""

    async def matching() -> epb.DeviceStatus:
        seen = {d.device_id: d for d in (await list_devices(router)).devices}
        assert device_id in seen, f"not listed (devices: {sorted(seen)})"
        assert predicate(seen[device_id]), f"last seen: {seen[device_id]}"
        return seen[device_id]

    status: epb.DeviceStatus = await wait_until(
        matching, f"device {device_id} to match on {router.address}", timeout_s
    )
    return status


async def wait_routed_to_device(
    stub: Any, backend: str = "edge-dev-1", timeout_s: float = 30.0
) -> None:
    """Until a Route through ``stub`` picks ``backend`` (a relay backend turns healthy once
    the directory has the device online)."""

    async def routed() -> bool:
        decision = await stub.Route(user_request("hi"))
        assert decision.backend == backend, decision
        return True

    await wait_until(routed, f"a Route to pick {backend}", timeout_s)


async def assert_healthy_over_load_polls(
    router: RouterServer, backend: str = "edge-dev-1", polls: int = 3
) -> None:
    """``backend`` stays healthy through the registry's load polls: a device's load is its
    heartbeat's (through the directory for a relay backend), polled without a call to the
    replica it is linked to."""
    for _ in range(polls):
        await router.registry.poll_once()
        entry = router.registry.get(backend)
        assert entry is not None, f"{backend} left the registry"
        snap = entry.stats.snapshot()
        assert snap.healthy, f"{backend} unhealthy after a load poll: {snap.detail}"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[str]:
    """A real ``redis-server`` on a free port (no persistence); yields its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server not found: apt-get install redis-server (make system-deps)")
    port = free_port()
    log = tmp_path / "redis.log"
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )

    def accepting() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"redis-server exited: {log.read_text(errors='replace')}")
        with socket.create_connection(("127.0.0.1", port), 1):
            return True

    try:
        wait_until_sync(accepting, f"redis-server on port {port}", timeout_s=20)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
