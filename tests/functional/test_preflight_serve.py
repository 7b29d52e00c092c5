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
import sys
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


async def serve(path: Path, timeout: float = 60.0) -> tuple[int, str]:
    """(exit status, stderr) of ``hybrid-router serve`` that is expected not to start."""
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "serve",
        "--config",
        str(path),
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


@pytest.mark.skipif(not CLI, reason="console script not installed")
async def test_serve_refuses_to_start_with_the_failure_check_reports(tmp_path, capsys):
    # Before the start-up checks were shared, serve started with this config and
    # estimated the prompts; check failed it.
    missing = tmp_path / "missing.gguf"
    backend = ms_backend("gpu-1", "gpu", "127.0.0.1:1")
    backend["tokenizer"] = {"kind": "gguf", "path": str(missing)}
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"server": {"address": "127.0.0.1:0"}, "backends": [backend]}))

    rc, report = await check(path, capsys)
    assert rc == 1
    (failure,) = [c for c in report["checks"] if c["result"] == "fail"]
    assert failure["check"] == f"tokenizer gguf:{missing}"

    rc, err = await serve(path)
    assert rc == 2
    # The one line serve prints for a config error; the warnings wait for a good start.
    assert err == f"error: {failure['detail']}\n"


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
