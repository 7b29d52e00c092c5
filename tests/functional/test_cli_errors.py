"""An error nobody foresaw in a command is one line, never a traceback, unless asked for.

Value out of range for a protobuf field (`route --max-tokens 99999999999`) is such an
error today: the request builder raises ValueError before any call is made.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = Path(sys.executable).parent / "hybrid-router"
ARGS = ["route", "--address", "127.0.0.1:1", "--max-tokens", "99999999999", "hi"]


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.skipif(not CLI.exists(), reason="console script not installed")
def test_an_unexpected_error_is_one_line_with_the_way_to_see_more() -> None:
    done = _run(*ARGS)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: `hybrid-router route` failed unexpectedly: ValueError: ")
    assert "--debug" in line and "HYBRID_ROUTER_DEBUG=1" in line


@pytest.mark.skipif(not CLI.exists(), reason="console script not installed")
@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--debug", *ARGS], {}),
        ([*ARGS[:1], "--debug", *ARGS[1:]], {}),
        (ARGS, {"HYBRID_ROUTER_DEBUG": "1"}),
    ],
    ids=["before-the-command", "after-the-command", "env"],
)
def test_debug_shows_the_traceback(argv: list[str], env: dict[str, str]) -> None:
    done = _run(*argv, env=env)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "ValueError" in done.stderr
