"""Every ``hybrid-router keys|models ACTION`` line in README.md, docs/*.md and the actions'
own ``--help`` examples uses only flags that action has (README once showed
``keys create --keys-file``, which fails with ``unrecognized arguments``)."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from hybrid_router_cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ACTIONS = {"keys": ("create", "list", "revoke"), "models": ("publish", "set-desired", "status")}
_LINE = re.compile(r"hybrid-router (keys|models) ([a-z-]+)([^\n`)#]*)")


@cache
def _help(command: str, action: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([command, action, "--help"]) == 0
    return out.getvalue()


def _flags(text: str) -> list[str]:
    return [t.split("=", 1)[0] for t in shlex.split(text, posix=True) if t.startswith("--")]


def _uses(text: str, where: str) -> list[tuple[str, str, str, str]]:
    """(where, command, action, flag) for each flag of each command line in ``text``."""
    text = text.replace("\\\n", " ")  # shell line continuations
    return [
        (where, command, action, flag)
        for command, action, rest in _LINE.findall(text)
        if action in ACTIONS[command]
        for flag in _flags(rest)
    ]


def _documented() -> list[tuple[str, str, str, str]]:
    uses = [u for path in DOCS for u in _uses(path.read_text("utf-8"), path.name)]
    for command, actions in ACTIONS.items():
        for action in actions:
            examples = _help(command, action).split("\nexamples:\n", 1)[-1]
            uses += _uses(examples, f"{command} {action} --help")
    return uses


def test_the_docs_show_keys_and_models_commands() -> None:
    where = {w for w, *_ in _documented()}
    assert {"README.md", "security.md", "edge.md", "keys create --help"} <= where


@pytest.mark.parametrize(("where", "command", "action", "flag"), _documented())
def test_a_documented_flag_exists(where: str, command: str, action: str, flag: str) -> None:
    shown = re.findall(r"(?<![\w-])--[a-z][a-z-]*", _help(command, action))
    assert flag in shown, f"{where}: `hybrid-router {command} {action}` has no {flag}"
