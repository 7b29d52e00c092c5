"""Every command, every option, bad values: one error line and a documented exit status,
never a traceback and never "failed unexpectedly" (issue 18, item 1).

The options come from the real parsers (``hybrid_router_cli.main.build_parser``), so a
new option is fuzzed the day it is added. Each command gets the least it needs to run
(a good config file, a keys file, a GGUF file) and then one option at a time with each
bad value: out-of-range numbers, non-finite numbers, empty and blank strings, line breaks,
malformed metadata, missing files, URLs that are not, unreachable addresses (no NUL
byte: a command line cannot carry one). The router address and the AWS endpoint point at
a port nobody listens on, so calls fail fast and for real. ``serve`` runs as a
subprocess (it sets up logging and signals), the rest in-process. ``demo`` is left out:
it starts model servers.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from rtutil import ms_backend

from hybrid_router_cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from hybrid_router_cli.main import build_parser, main

#: The exit statuses the docs give (0 ok, 1 failed, 2 usage or config).
DOCUMENTED = {EXIT_OK, EXIT_FAILED, EXIT_USAGE}

BAD_VALUES = [
    "99999999999999999999999",
    "-1",
    "0",
    "nan",
    "inf",
    "1e400",
    "",
    " ",
    "bad key=1",
    "a\nb",
    "/nonexistent/dir/file.yaml",
    "notaurl",
    "127.0.0.1:99999",
    "é",
]

SKIP = {"demo"}
#: Options whose values are never the problem here (help, debug, choices-only flags are
#: fuzzed by argparse itself).
NOT_FUZZED = {"-h", "--help", "--debug"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Files and environment every command's base arguments use."""
    root = tmp_path_factory.mktemp("fuzz")
    port = _closed_port()
    good = root / "router.yaml"
    good.write_text(
        yaml.safe_dump(
            {"server": {"address": "127.0.0.1:0"}, "backends": [ms_backend("gpu-1", "gpu", "x:1")]}
        )
    )
    # serve must never start: its keys file is missing, so it stops at its checks.
    refused = root / "refused.yaml"
    refused.write_text(
        yaml.safe_dump(
            {
                "server": {"address": "127.0.0.1:0"},
                "auth": {"keys_file": str(root / "absent-keys.yaml"), "tenants": [{"name": "a"}]},
            }
        )
    )
    keys = root / "keys.yaml"
    assert main(["keys", "create", "--file", str(keys), "--tenant", "a"]) == 0
    gguf = root / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    template = root / "greet.yaml"
    template.write_text(
        "name: greet\nversion: '1'\nvariables: {who: {type: string}}\n"
        "messages: [{role: user, content: 'hi {{who}}'}]\n"
    )
    assert main(["templates", "publish", str(template), "--file", str(root / "t.yaml")]) == 0
    env = {
        "HYBRID_ROUTER_ADDRESS": f"127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    yield {"root": root, "good": good, "refused": refused, "keys": keys, "gguf": gguf,
           "template": template, "port": port, "env": env}  # fmt: skip


def _base(command: tuple[str, ...], w: dict[str, Any]) -> list[str]:
    """The least each command needs: it runs, and fails fast on the closed port."""
    aws = ["--endpoint-url", f"http://127.0.0.1:{w['port']}", "--region", "us-east-1"]
    bucket = ["--bucket", "b", *aws]
    return {
        ("check",): ["--config", str(w["good"])],
        ("route",): ["hi"],
        ("chat",): ["hi"],
        ("backends",): [],
        ("prices",): ["--config", str(w["good"])],
        ("usage",): ["--file", str(w["root"] / "ledger.sqlite3")],
        ("devices",): [],
        ("keys", "create"): ["--tenant", "a", "--file", str(w["root"] / "new-keys.yaml")],
        ("keys", "list"): ["--file", str(w["keys"])],
        ("keys", "revoke"): ["--file", str(w["keys"]), "nosuchkey"],
        ("models", "publish"): [
            "--name",
            "m",
            "--version",
            "1",
            "--context-window",
            "2048",
            *bucket,
            str(w["gguf"]),
        ],  # fmt: skip
        ("models", "set-desired"): ["--name", "m", "--version", "1", *bucket],
        ("models", "status"): ["--timeout", "5", *bucket],
        ("sessions", "create"): [],
        ("sessions", "show"): ["chat-1"],
        ("sessions", "list"): [],
        ("sessions", "delete"): ["chat-1"],
        ("templates", "list"): ["--file", str(w["root"] / "t.yaml")],
        ("templates", "show"): ["--file", str(w["root"] / "t.yaml"), "greet"],
        ("templates", "publish"): ["--file", str(w["root"] / "t2.yaml"), str(w["template"])],
        ("templates", "pin"): ["--file", str(w["root"] / "t.yaml"), "greet", "1"],
        ("simulate",): ["--scenario", "steady", "--requests", "50", "--strategies", "router"],
    }[command]


def _leaves() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command (or action of one) with its parser."""
    out: list[tuple[tuple[str, ...], argparse.ArgumentParser]] = []

    def walk(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out.append((path, parser))
            return
        for name, sub in subs[0].choices.items():
            if path or name not in SKIP:
                walk((*path, name), sub)

    walk((), build_parser())
    return [(p, parser) for p, parser in out if p and p != ("serve",)]


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """Options that take a value (argparse checks choices; flags take none)."""
    return [
        a.option_strings[-1]
        for a in parser._actions
        if a.option_strings
        and a.nargs != 0
        and not a.choices
        and not set(a.option_strings) & NOT_FUZZED
    ]


CASES = [(path, opt) for path, parser in _leaves() for opt in _options(parser)]


def _assert_clean(argv: list[str], rc: int, out: str, err: str) -> None:
    shown = " ".join(repr(a) for a in argv)
    assert rc in DOCUMENTED, f"{shown}: exit {rc}\n{err}"
    assert "Traceback" not in err, f"{shown}\n{err}"
    assert "failed unexpectedly" not in err, f"{shown}\n{err}"
    if rc != EXIT_OK:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert lines, f"{shown}: exit {rc} without a word"
        # argparse: usage, then "PROG: error: ..."; ours: "error: ..." (a config error
        # then lists each problem on its own line).
        assert any(ln.startswith("error: ") or ": error: " in ln for ln in lines), (
            f"{shown}: no error line\n{err}"
        )


def test_every_command_and_option_is_fuzzed() -> None:
    commands = {path for path, _ in CASES}
    assert {("route",), ("chat",), ("keys", "create"), ("models", "publish")} <= commands
    assert len(CASES) > 60


@pytest.mark.parametrize(("command", "option"), CASES, ids=[f"{' '.join(c)} {o}" for c, o in CASES])
def test_bad_values_are_one_error_line(command, option, world, capsys, monkeypatch):
    for name, value in world["env"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(world["root"])
    base = _base(command, world)
    for value in BAD_VALUES:
        argv = [*command, *base, f"{option}={value}"]
        rc = main(argv)
        captured = capsys.readouterr()
        _assert_clean(argv, rc, captured.out, captured.err)


@pytest.mark.parametrize(
    ("command", "option"),
    [(c, o) for c, o in CASES if any(o == a for a in ("--config", "--timeout", "--metadata"))],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else v,
)
def test_json_errors_are_json(command, option, world, capsys, monkeypatch):
    """Under --json every error is also a JSON document on stdout (its last line)."""
    for name, value in world["env"].items():
        monkeypatch.setenv(name, value)
    parser = dict(_leaves())[command]
    if "--json" not in {s for a in parser._actions for s in a.option_strings}:
        pytest.skip(f"{' '.join(command)} has no --json")
    for value in ("/nonexistent/x.yaml", "-1", "bad key=1"):
        argv = [*command, *_base(command, world), f"{option}={value}", "--json"]
        rc = main(argv)
        out = capsys.readouterr().out
        if rc == EXIT_OK:
            continue
        last = json.loads(out.strip().splitlines()[-1])
        assert last["error"]["exit_code"] == rc, argv
        assert last["error"]["message"], argv


SERVE_VALUES = ["", "bad", "127.0.0.1:99999", "0.0.0.0:-1", "a\nb", "/nonexistent/x.yaml"]


@pytest.mark.parametrize("option", ["--config", "--address"])
def test_serve_bad_values_are_one_error_line(option, world):
    for value in SERVE_VALUES:
        argv = ["serve", "--config", str(world["refused"]), f"{option}={value}"]
        done = subprocess.run(
            [sys.executable, "-m", "hybrid_router_cli.main", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **world["env"]},
            check=False,
        )
        assert "READY" not in done.stdout
        _assert_clean(argv, done.returncode, done.stdout, done.stderr)
