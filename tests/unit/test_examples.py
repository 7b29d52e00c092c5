"""Example configs load, and docs/configuration.md stays true to router/config/."""

from __future__ import annotations

import enum
import re
import shlex
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from router.config import RouterConfig, load_config
from router.types import Tier

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CONFIG_DOC = ROOT / "docs" / "configuration.md"
# Rows of every top-level section of router.yaml (server, policy, backends, ...).
_ROW = re.compile(rf"^\| `((?:{'|'.join(RouterConfig.model_fields)})[A-Za-z0-9_.\[\]]*)` \|")
_REQUIRED = "required"


def _config_keys(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Leaf key path -> default (``_REQUIRED`` when the key has none)."""
    keys: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys |= _config_keys(ann, f"{prefix}{name}.")
            continue
        args = typing.get_args(ann)
        if typing.get_origin(ann) is tuple and args and isinstance(args[0], type):
            if issubclass(args[0], BaseModel):
                keys |= _config_keys(args[0], f"{prefix}{name}[].")
                continue
        if field.is_required():
            keys[prefix + name] = _REQUIRED
        else:
            keys[prefix + name] = _plain(field.get_default(call_default_factory=True))
    return keys


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _documented_keys() -> dict[str, str]:
    """Key path -> default cell text, from the reference tables."""
    rows: dict[str, str] = {}
    for line in CONFIG_DOC.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 4, f"docs/configuration.md: row needs 4 cells: {line}"
        key = match.group(1)
        assert key not in rows, f"docs/configuration.md documents {key} twice"
        rows[key] = cells[2]
    return rows


def _parse_default(cell: str) -> Any:
    if cell == _REQUIRED:
        return _REQUIRED
    assert cell.startswith("`") and cell.endswith("`"), f"default must be `code`: {cell}"
    return yaml.safe_load(cell.strip("`"))


def test_examples_exist() -> None:
    assert EXAMPLES, "no examples/*.yaml found"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads(path: Path) -> None:
    config = load_config(path, environ={})

    assert isinstance(config, RouterConfig)
    assert config.backends, f"{path.name} defines no backends"


def test_main_example_has_one_backend_of_each_available_kind() -> None:
    config = load_config(ROOT / "examples" / "router.yaml", environ={})

    pairs = {(b.tier, b.kind) for b in config.backends}

    assert {
        (Tier.GPU, "model_service"),
        (Tier.EDGE, "model_service"),
        (Tier.HOSTED, "openai"),
    } <= pairs
    hosted = [b for b in config.backends if b.tier is Tier.HOSTED]
    assert all(b.api_key_env for b in hosted), "hosted examples read their key from the env"


def test_configuration_doc_lists_exactly_the_config_keys() -> None:
    in_code = _config_keys(RouterConfig)
    in_doc = _documented_keys()

    missing = sorted(in_code.keys() - in_doc.keys())
    unknown = sorted(in_doc.keys() - in_code.keys())

    assert not missing, f"docs/configuration.md lacks rows for: {', '.join(missing)}"
    assert not unknown, f"docs/configuration.md documents keys the code lacks: {unknown}"


def test_configuration_doc_defaults_match_the_code() -> None:
    in_code = _config_keys(RouterConfig)
    wrong = {
        key: (cell, in_code[key])
        for key, cell in _documented_keys().items()
        if key in in_code and _parse_default(cell) != in_code[key]
    }

    assert not wrong, f"docs/configuration.md defaults differ (doc, code): {wrong}"


def test_configuration_doc_env_examples_apply_to_the_example() -> None:
    text = CONFIG_DOC.read_text(encoding="utf-8")
    environ: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("export HYBRID_ROUTER__"):
            name, _, value = line.removeprefix("export ").partition("=")
            environ[name] = shlex.split(value)[0]
    assert len(environ) >= 3, "docs/configuration.md lost its env override examples"

    config = load_config(ROOT / "examples" / "router.yaml", environ=environ)

    backends = {b.name: b for b in config.backends}
    assert config.server.address == "[::]:50051"
    assert config.policy.objective.value == "fastest"
    assert backends["gpu-ray-serve"].endpoint == "ray-serve-grpc.gpu.svc:9000"
    assert backends["gpu-ray-serve"].priors.ttft_ms == 200
    assert [d.value for d in backends["openai-hosted"].data_classes] == ["public"]
