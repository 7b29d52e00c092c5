"""The command registry (hybrid_router_cli/registry.py): ``hybrid-router --help`` lists every
command, and a command's heavy dependencies load only when it runs, so ``serve`` (the router
image: no rich) and every ``--json`` work without the ``cli`` extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hybrid_router_cli import registry
from hybrid_router_cli.main import main

ROOT = Path(__file__).resolve().parents[2]
#: What only running a command may import (the router image has none of rich).
HEAVY = ("rich", "boto3", "botocore", "serving", "greengrass", "pydantic", "router.server")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_help_lists_every_registered_command_with_its_help_line(capsys) -> None:
    commands = registry.commands()
    assert [c.name for c in commands] == list(registry.NAMES)
    assert {p.stem for p in (ROOT / "hybrid_router_cli" / "commands").glob("[a-z]*.py")} == set(
        registry.NAMES
    ), "every module under hybrid_router_cli/commands/ is registered"

    assert main(["--help"]) == 0

    out = _one_line(capsys.readouterr().out)
    for c in commands:
        assert _one_line(f"{c.name} {c.help}") in out, c.name


def _python(code: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRID_ROUTER")}
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
        check=False,
    )


_LOADED = """\
import json, sys
from hybrid_router_cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize("argv", [["serve", "--help"], ["--help"], ["keys", "create", "--help"]])
def test_help_imports_no_command_dependency(argv: list[str]) -> None:
    proc = _python(_LOADED, *argv)

    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    heavy = [m for m in result["modules"] for h in HEAVY if m == h or m.startswith(h + ".")]
    assert result["code"] == 0
    assert heavy == [], "rich must not load for serve (the router image has none)"


#: rich absent, as in the router image (requirements/router.txt has no rich).
_NO_RICH = """\
import sys
sys.modules["rich"] = None
from hybrid_router_cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_rich_json_works_and_tables_name_the_extra(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    backend = {"name": "edge-a", "tier": "edge", "kind": "model_service"}
    backend |= {"endpoint": "127.0.0.1:1", "model": "m", "context_window": 1024}
    config.write_text(yaml.safe_dump({"backends": [backend]}), encoding="utf-8")

    as_json = _python(_NO_RICH, "prices", "--config", str(config), "--json")
    checked = _python(_NO_RICH, "check", "--config", str(config), "--json")
    table = _python(_NO_RICH, "prices", "--config", str(config))

    assert as_json.returncode == 0, as_json.stderr
    assert [b["name"] for b in json.loads(as_json.stdout)["backends"]] == ["edge-a"]
    assert json.loads(checked.stdout)["config"] == str(config), checked.stderr
    assert table.returncode == 1
    assert table.stderr.strip().splitlines() == [
        "error: `hybrid-router prices` prints its tables with rich, which this install lacks "
        "(the router image installs the service only): pip install 'hybrid-router[cli]', "
        "or pass --json"
    ]
