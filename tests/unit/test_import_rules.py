"""The dependency rules of docs/architecture.md ("Folders and dependency rules"), enforced.

Every ``import`` and ``from ... import`` in a package's source, at module level or inside a
function (a lazy import still ties the two), is read with ``ast`` and held to the rules
below. A failure names the file, the line and the rule it breaks.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Rule:
    """Modules under ``folder`` (minus ``except_in``) must not import ``forbidden``."""

    folder: str
    forbidden: tuple[str, ...]
    why: str
    except_in: tuple[str, ...] = ()


RULES = (
    Rule(
        "proto/hybrid_router",
        ("router", "serving", "greengrass", "lambda_edge", "hybrid_router_cli"),
        "the contract and shared client ship with every deployable",
    ),
    Rule(
        "serving",
        ("router", "greengrass", "lambda_edge", "hybrid_router_cli"),
        "model servers never import the router",
    ),
    Rule(
        "greengrass",
        ("router", "lambda_edge", "serving.model_server", "serving.ray_app", "hybrid_router_cli"),
        "the edge agent ships only its own code, the engines and the contract",
    ),
    Rule(
        "lambda_edge",
        ("router", "serving", "greengrass", "hybrid_router_cli"),
        "the Lambda layer holds only the contract, the client and the handlers",
    ),
    Rule(
        "router",
        ("serving", "greengrass", "lambda_edge", "hybrid_router_cli", "rich", "argparse"),
        "the router image holds the service only: no model servers, no edge agent, and not "
        "the command line (hybrid_router_cli: argparse, rich)",
    ),
    Rule(
        "router/policy",
        ("router.config", "serving", "llama_cpp", "grpc", "httpx", "boto3", "pydantic"),
        "the policy is pure: plain records in, a plan out, no I/O",
    ),
    Rule(
        "router/tools",
        ("router.config", "router.server", "serving", "grpc", "httpx", "boto3", "pydantic"),
        "tool and schema checks are pure: records and JSON text in, verdicts out",
    ),
    Rule(
        "router/stats.py",
        ("grpc", "httpx", "boto3", "serving"),
        "live signals are pure bookkeeping with an injectable clock",
    ),
    Rule(
        "router/output_lengths.py",
        ("grpc", "httpx", "boto3", "serving"),
        "expected answer lengths are pure bookkeeping",
    ),
    Rule(
        "router/simulation",
        (
            "grpc",
            "httpx",
            "aiohttp",
            "boto3",
            "matplotlib",
            "router.server",
            "router.backends",
            "router.dispatch",
        ),
        "the simulator runs the policy on simulated time: no network, no clients, no "
        "plots (the command draws them)",
    ),
)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _sources(folder: str) -> list[Path]:
    base = ROOT / folder
    files = [base] if base.suffix == ".py" else sorted(base.rglob("*.py"))
    return [p for p in files if "_pb2" not in p.name]


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.folder)
def test_dependency_rule(rule: Rule) -> None:
    sources = _sources(rule.folder)
    assert sources, f"{rule.folder} has no Python sources: update the rule"
    broken = []
    for path in sources:
        rel = path.relative_to(ROOT).as_posix()
        if any(rel == e or rel.startswith(e + "/") for e in rule.except_in):
            continue
        for line, module in _imports(path):
            bad = [f for f in rule.forbidden if _matches(module, f)]
            if bad:
                broken.append(f"{rel}:{line} imports {module}")
    assert not broken, f"{rule.folder}: {rule.why}:\n  " + "\n  ".join(broken)


def test_the_contract_package_needs_only_grpc_and_protobuf() -> None:
    """hybrid_router is installed everywhere: stdlib, grpc and protobuf (boto3 lazily;
    jinja2 in prompt.py, inside the function that renders a model's own chat template)."""
    allowed = ("grpc", "google.protobuf", "hybrid_router", "boto3", "botocore")
    lazy = {"proto/hybrid_router/prompt.py": ("jinja2",)}
    broken = []
    for path in _sources("proto/hybrid_router"):
        rel = path.relative_to(ROOT).as_posix()
        module_level = {
            n.lineno for n in ast.parse(path.read_text(encoding="utf-8")).body
        }  # imports at module level start a top-level statement
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or any(_matches(module, a) for a in allowed):
                continue
            if line not in module_level and any(_matches(module, a) for a in lazy.get(rel, ())):
                continue
            broken.append(f"{rel}:{line} imports {module}")
    assert not broken, "\n".join(broken)
