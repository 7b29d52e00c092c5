"""Check the vLLM engine arguments of Serve configs against vLLM's own argument parser.

Runs in the vLLM check environment (``scripts/install_vllm_check.sh``: vllm==0.29.0, no
GPU needed), not in the project's venv: it imports only the standard library, PyYAML and
vLLM. For every application with ``engine: vllm`` in the given files (a RayService's
``serveConfigV2`` or a Serve config file), its ``engine_options.engine_kwargs`` (with
``model`` defaulting to ``args.model.id``, as the app does) must

1. name only fields of vLLM's ``AsyncEngineArgs``,
2. parse with vLLM's own CLI parser (``AsyncEngineArgs.add_cli_args``): types, choices
   and ranges exactly as ``vllm serve`` checks them,
3. come back unchanged from ``AsyncEngineArgs.from_cli_args``.

What it cannot check without a GPU and the weights: that the model fits the GPU's memory
at ``max_model_len`` and ``gpu_memory_utilization``, and that the model id resolves.

    VLLM_TARGET_DEVICE=cpu .tools/vllm-venv/bin/python deploy/ray/check_vllm_args.py \
        deploy/ray/rayservice.yaml

Prints one JSON object (``{"vllm": ..., "apps": [{"source", "app", "kwargs", "errors"}]}``)
and exits 1 when any application has errors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import sys
from pathlib import Path
from typing import Any

import yaml


def serve_configs(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(source label, Serve config) for every Serve config in a YAML file."""
    found = []
    for index, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == "RayService":
            found.append(
                (f"{path}#{index} serveConfigV2", yaml.safe_load(doc["spec"]["serveConfigV2"]))
            )
        elif "applications" in doc:
            found.append((f"{path}#{index}", doc))
    return found


def vllm_apps(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    apps = []
    for app in config.get("applications") or []:
        args = app.get("args") or {}
        if args.get("engine") != "vllm":
            continue
        kwargs = dict((args.get("engine_options") or {}).get("engine_kwargs") or {})
        model_id = (args.get("model") or {}).get("id")
        if not kwargs.get("model") and model_id:
            kwargs["model"] = model_id
        apps.append((str(app.get("name")), kwargs))
    return apps


def to_argv(kwargs: dict[str, Any]) -> list[str]:
    argv = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False:
            argv.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, list):
            argv += [flag, *(str(v) for v in value)]
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value)]
        else:
            argv += [flag, str(value)]
    return argv


def check(kwargs: dict[str, Any]) -> list[str]:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    errors = [
        f"engine_kwargs.{key}: not an argument of vLLM's AsyncEngineArgs"
        for key in kwargs
        if key not in fields
    ]
    if errors:
        return errors
    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser(prog="vllm"))
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            namespace = parser.parse_args(to_argv(kwargs))
    except SystemExit:
        lines = [ln for ln in stderr.getvalue().splitlines() if "error:" in ln]
        return [f"engine_kwargs: {ln.split('error:', 1)[1].strip()}" for ln in lines] or [
            "engine_kwargs: rejected by vLLM's parser"
        ]
    parsed = AsyncEngineArgs.from_cli_args(namespace)
    for key, value in kwargs.items():
        got = getattr(parsed, key)
        if got != value and not (isinstance(value, list) and list(got or ()) == value):
            errors.append(f"engine_kwargs.{key}: vLLM reads {got!r}, the config says {value!r}")
    return errors


def main(argv: list[str]) -> int:
    import vllm

    report: dict[str, Any] = {"vllm": vllm.__version__, "apps": []}
    failed = False
    for name in argv:
        for source, config in serve_configs(Path(name)):
            for app, kwargs in vllm_apps(config):
                errors = check(kwargs)
                failed = failed or bool(errors)
                report["apps"].append(
                    {"source": source, "app": app, "kwargs": kwargs, "errors": errors}
                )
    print(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
