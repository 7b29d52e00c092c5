"""An error nobody foresaw in a command is one line, never a traceback, unless asked for.

Every error we know of has its own message now (tests/functional/test_cli_fuzz.py), so the
fault is put in: a child process replaces the request builder of ``route`` with one that
raises, as a bug in our code would, then runs the real CLI entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ARGS = ["route", "--address", "127.0.0.1:1", "hi"]
#: The CLI with a bug put into ``route``: its request builder raises RuntimeError.
_FAULTY = """
import sys
import hybrid_router_cli.options as options

def request(args):
    raise RuntimeError("injected fault")

options.request = request
from hybrid_router_cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _FAULTY, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_an_unexpected_error_is_one_line_with_the_way_to_see_more() -> None:
    done = _run(*ARGS)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: `hybrid-router route` failed unexpectedly: RuntimeError: ")
    assert "--debug" in line and "HYBRID_ROUTER_DEBUG=1" in line


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
    assert "RuntimeError: injected fault" in done.stderr
