"""Every Python package of the project is in pyproject.toml's package list, so an installed
wheel (the router image, the Lambda layer) holds it: a new package left out works in the
checkout and breaks only once installed."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Top-level folders -> the package name they install as.
TOPS = {
    "router": "router",
    "hybrid_router_cli": "hybrid_router_cli",
    "serving": "serving",
    "greengrass": "greengrass",
    "lambda_edge": "lambda_edge",
    "proto/hybrid_router": "hybrid_router",
}


def test_every_package_is_listed() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = set()
    for folder, name in TOPS.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if "__pycache__" in rel.parts:
                continue
            found.add(".".join((name, *rel.parts)))
    missing = sorted(found - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
