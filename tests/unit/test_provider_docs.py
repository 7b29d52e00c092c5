"""The config examples in docs/providers/*.md are valid router.yaml, and every page's
IAM policy is valid JSON naming only the actions it needs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from router.config import parse_config

DOCS = Path(__file__).resolve().parents[2] / "docs" / "providers"
PAGES = sorted(DOCS.glob("*.md"))
_BLOCK = re.compile(r"```(yaml|json)\n(.*?)```", re.DOTALL)


def _blocks(page: Path, lang: str) -> list[str]:
    return [body for kind, body in _BLOCK.findall(page.read_text(encoding="utf-8")) if kind == lang]


def test_there_is_a_page_per_hosted_kind() -> None:
    assert {p.stem for p in PAGES} >= {"bedrock", "anthropic", "openai"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_config_examples_validate(page: Path) -> None:
    import yaml

    blocks = _blocks(page, "yaml")
    assert blocks, f"{page.name} has no yaml example"
    for body in blocks:
        config = parse_config(yaml.safe_load(body), source=page.name, environ={})
        assert config.backends
        assert {b.kind for b in config.backends} & {page.stem}


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p, "json")], ids=lambda p: p.name)
def test_iam_policies_are_least_privilege(page: Path) -> None:
    for body in _blocks(page, "json"):
        policy = json.loads(body)
        for statement in policy["Statement"]:
            actions = statement["Action"]
            actions = [actions] if isinstance(actions, str) else actions
            assert all("*" not in a for a in actions), actions
            resources = statement["Resource"]
            resources = [resources] if isinstance(resources, str) else resources
            assert resources and all(r != "*" for r in resources), resources
