"""Processes for the reliability benches (bench_fuzz.py, bench_soak.py): a scripted model
server and ``hybrid-router serve`` on 127.0.0.1, and /proc readings of a process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def thread_names(pid: int) -> list[str]:
    """The names of ``pid``'s threads (``/proc/PID/task/*/comm``), sorted."""
    names = []
    for comm in Path(f"/proc/{pid}/task").glob("*/comm"):
        try:
            names.append(comm.read_text().strip())
        except OSError:  # the thread ended meanwhile
            continue
    return sorted(names)


def start(argv: list[str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``argv`` and wait for its ``READY <port>`` line (stderr goes to ``log``)."""
    out = log.open("wb")
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=out, stdin=subprocess.DEVNULL, cwd=REPO
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if line.startswith("READY"):
            return proc, int(line.split()[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"{' '.join(argv[:4])} did not start; see {log}")


def scripted_backend(work: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    return start(
        [sys.executable, "-m", "serving.model_server", "--engine", "scripted", "--port", "0",
         "--ttft-ms", "0", "--max-concurrency", "512", "--log-level", "WARNING", *extra],
        work / "backend.log",
    )  # fmt: skip


def router(
    work: Path, backend_port: int, backend: dict[str, Any] | None = None, **sections: Any
) -> tuple[subprocess.Popen[bytes], int]:
    """``hybrid-router serve`` with one scripted gpu backend (``backend``: keys merged into
    its entry) and ``sections`` merged in."""
    port = free_port()
    cfg = {
        "server": {"address": f"127.0.0.1:{port}", "grace_period_s": 1},
        "backends": [
            {
                "name": "gpu-scripted",
                "tier": "gpu",
                "kind": "model_service",
                "endpoint": f"127.0.0.1:{backend_port}",
                "model": "scripted",
                "context_window": 32768,
                "max_concurrency": 512,
                "capabilities": ["chat", "tools", "json_schema"],
                "priors": {"ttft_ms": 5, "decode_tokens_per_s": 1000},
                **(backend or {}),
            }
        ],
        "sessions": {"sqlite": {"path": str(work / "sessions.sqlite3")}},
        "telemetry": {"logs": {"requests": False}},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    (work / "router.yaml").write_text(json.dumps(cfg))
    exe = Path(sys.executable).parent / "hybrid-router"
    proc, _ = start(
        [str(exe), "serve", "--config", str(work / "router.yaml"), "--log-level", "warning"],
        work / "router.log",
    )
    return proc, port


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
