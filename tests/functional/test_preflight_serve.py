"""``serve`` and ``check`` run the same start-up checks (router/preflight.py).

A config with a failing check: ``check`` reports the failure, and ``serve`` (the installed
console script, in a subprocess) refuses to start with exactly that text and the config
error's exit status. The warnings ``check`` reports are what ``serve`` logs when it starts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rtutil import ms_backend

from hybrid_router_cli.commands.check import Row
from hybrid_router_cli.main import main
from router import preflight
from router.preflight import WARN

CLI = shutil.which("hybrid-router", path=str(Path(sys.executable).parent)) or ""


async def serve(path: Path, *extra: str, timeout: float = 60.0) -> tuple[int, str]:
    """(exit status, stderr) of ``hybrid-router serve`` that is expected not to start."""
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "serve",
        "--config",
        str(path),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "160"},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert b"READY" not in out, out
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def check(path: Path, capsys: Any) -> tuple[int, dict[str, Any]]:
    rc = await asyncio.to_thread(main, ["check", "--config", str(path), "--json"])
    return rc, json.loads(capsys.readouterr().out)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process's listener holds (a plain socket, as any server's)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.skipif(not CLI, reason="console script not installed")
async def test_serve_refuses_to_start_with_the_failure_check_reports(tmp_path, capsys, busy_port):
    # Before, serve printed a 30-line "Failed to bind" traceback and check said ok.
    backend = ms_backend("gpu-1", "gpu", "127.0.0.1:1")
    path = tmp_path / "edge-site.yaml"
    config = {"server": {"address": f"127.0.0.1:{busy_port}"}, "backends": [backend]}
    path.write_text(yaml.safe_dump(config))

    rc, report = await check(path, capsys)
    assert rc == 1
    (failure,) = [c for c in report["checks"] if c["result"] == "fail"]
    assert failure["check"] == "listen"
    assert failure["key"] == "server.address"
    assert failure["detail"].startswith(f"{path}: server.address: port {busy_port} is in use")

    rc, err = await serve(path)
    assert rc == 2
    # The one line serve prints for a config error; the warnings wait for a good start.
    assert err == f"error: {failure['detail']}\n"


@pytest.mark.skipif(not CLI, reason="console script not installed")
async def test_a_port_in_use_given_by_flag_names_the_flag(tmp_path, busy_port):
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"server": {"address": "127.0.0.1:0"}}))
    rc, err = await serve(path, "--address", f"127.0.0.1:{busy_port}")
    assert rc == 2
    assert err == (
        f"error: --address: server.address: port {busy_port} is in use (another process "
        "listens there): stop it, or choose another port\n"
    )


@pytest.mark.skipif(not CLI, reason="console script not installed")
async def test_serve_starts_on_estimates_when_an_exact_tokenizer_does_not_load(tmp_path, capsys):
    """check warns (not fails) about a vocabulary that does not load, because serve runs on
    and estimates those prompts; the warning is what serve logs."""
    missing = tmp_path / "missing.gguf"
    backend = ms_backend("gpu-1", "gpu", "127.0.0.1:1")
    backend["tokenizer"] = {"kind": "gguf", "path": str(missing)}
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"server": {"address": "127.0.0.1:0"}, "backends": [backend]}))

    rc, report = await check(path, capsys)
    assert rc == 0
    (warn,) = [c for c in report["checks"] if c["check"] == f"tokenizer gguf:{missing}"]
    assert warn["result"] == WARN

    proc = await asyncio.create_subprocess_exec(
        CLI, "serve", "--config", str(path), "--log-level", "warning",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.startswith(b"READY "), line
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert f"tokenizer gguf:{missing}: {warn['detail']}" in err.decode()


async def test_serve_logs_the_warnings_check_reports(start_router, caplog):
    """A start that passes logs each warning check reports, named by its check."""
    with caplog.at_level(logging.WARNING, logger="router"):
        router = await start_router([ms_backend("gpu-1", "gpu", "127.0.0.1:1")])
    findings = await preflight.run(preflight.COMPONENTS, router.config, {})
    warnings = [Row.of(f) for f in findings if f.level == WARN]
    assert {r.check for r in warnings} == {"exposure", "prices"}  # no keys, no price
    logged = [r.getMessage() for r in caplog.records if r.name == "router.server.app"]
    for r in warnings:
        assert f"{r.check}: {r.detail}" in logged
