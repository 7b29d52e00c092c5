"""router.yaml loading: files, environment overrides, readable errors.

Precedence: explicit argument > environment override > file > default.
Environment overrides use ``HYBRID_ROUTER__`` + a ``__``-separated key path, values
parsed as YAML scalars; backends are addressed by name, e.g.::

    HYBRID_ROUTER__SERVER__ADDRESS=0.0.0.0:50051
    HYBRID_ROUTER__POLICY__OBJECTIVE=fastest
    HYBRID_ROUTER__BACKENDS__GPU_A__ENDPOINT=ray-serve.gpu.svc:9000   # backend gpu-a

A backend is named exactly, or in shell spelling: upper case, ``_`` for ``-`` and ``.``
(a shell variable cannot hold ``-``).

Environment is read only when ``load_config`` is called, never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from hybrid_router.env import ENV_CONFIG, ENV_OVERRIDE_PREFIX
from pydantic import ValidationError

from router.config._base import validation_problems
from router.config.root import RouterConfig
from router.errors import ConfigError

#: HYBRID_ROUTER__SECTION__KEY overrides, and the config path (names: hybrid_router.env).
ENV_PREFIX = ENV_OVERRIDE_PREFIX
ENV_CONFIG_PATH = ENV_CONFIG


def _apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Apply every ``HYBRID_ROUTER__...`` variable to ``data``; the keys they set, each
    with its variable (``{"policy.objective": "HYBRID_ROUTER__POLICY__OBJECTIVE"}``)."""
    applied: dict[str, str] = {}
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        path = var[len(ENV_PREFIX) :].split("__")
        if not path or any(not p for p in path):
            raise ConfigError(
                "malformed override: use HYBRID_ROUTER__SECTION__KEY=value", source=var
            )
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"value is not valid YAML: {yaml_problem(exc)}", source=var) from None
        node: Any = data
        head = path[0].lower()
        if head == "backends":
            if len(path) < 3:
                raise ConfigError("use HYBRID_ROUTER__BACKENDS__<name>__<key>=value", source=var)
            name = path[1]
            node = _backend(data.get("backends") or [], name, var)
            name = str(node.get("name"))
            keys = [p.lower() for p in path[2:]]
            prefix = f"backends[{name}]."
        else:
            keys = [p.lower() for p in path]
            prefix = ""
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{k!r} is not a section", source=var)
            node = child
        node[keys[-1]] = value
        applied[prefix + ".".join(keys)] = var
    return applied


def _shell_name(name: str) -> str:
    """A backend name as a shell variable can spell it: ``gpu-ray-serve`` -> ``GPU_RAY_SERVE``."""
    return name.upper().replace("-", "_").replace(".", "_")


def _backend(backends: list[Any], name: str, var: str) -> dict[str, Any]:
    """The backend an override names: by its exact name, else by its name in shell
    spelling (``GPU_RAY_SERVE`` for ``gpu-ray-serve``: a shell variable cannot hold ``-``)."""
    named = [b for b in backends if isinstance(b, dict)]
    exact = [b for b in named if b.get("name") == name]
    if exact:
        return exact[0]
    spelled = [b for b in named if _shell_name(str(b.get("name"))) == _shell_name(name)]
    if len(spelled) == 1:
        return spelled[0]
    known = ", ".join(str(b.get("name")) for b in named)
    if spelled:
        raise ConfigError(
            f"{name!r} matches several backends ({', '.join(str(b.get('name')) for b in spelled)})"
            "; use the exact name (env 'VAR=value' cmd sets a variable with '-' in its name)",
            source=var,
        )
    raise ConfigError(f"no backend named {name!r} (known: {known or 'none'})", source=var)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error as ``line L, column C: problem`` (never PyYAML's ``<unicode string>``)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{context}, {problem}" if context else str(problem)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {text}"
    return text


def parse_config(
    data: Mapping[str, Any] | None,
    *,
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
) -> RouterConfig:
    """Validate a config mapping (after env overrides) into a RouterConfig."""
    raw: dict[str, Any] = dict(data or {})
    if not isinstance(data, Mapping | None):
        raise ConfigError("top level must be a mapping with server/policy/backends", source=source)
    # deep-ish copy of the parts env overrides may touch
    raw = yaml.safe_load(yaml.safe_dump(raw)) or {}
    origins = _apply_env_overrides(raw, environ) if environ else {}
    try:
        config = RouterConfig.model_validate(raw)
    except ValidationError as exc:
        problems = validation_problems(exc, raw, origins)
        if all(p.origin for p in problems):
            source = "environment overrides"
        raise ConfigError(
            "invalid configuration:\n" + "\n".join(p.line() for p in problems), source=source
        ) from None
    return config.located_at(source, origins)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> RouterConfig:
    """Load router.yaml. ``path`` falls back to $HYBRID_ROUTER_CONFIG; env overrides apply."""
    env = os.environ if environ is None else environ
    if path is None:
        path = env.get(ENV_CONFIG_PATH)
    if path is None:
        raise ConfigError(f"no config file given: pass --config PATH or set {ENV_CONFIG_PATH}")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found; check the path", source=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {yaml_problem(exc)}", source=str(p)) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            "top level must be a mapping with server/policy/backends keys", source=str(p)
        )
    return parse_config(data, source=str(p), environ=env)
