"""The Greengrass component: recipe and gdk-config.json against the GDK CLI's schemas
(tests/deploy/schemas/greengrass/, sources in its README.md; the GDK lower-cases recipe keys
before validating), what the recipe wires together, and the artifact zip that
`make edge-artifact` builds."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from greengrass.config import from_args, validate

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "greengrass" / "recipe.yaml"
GDK_CONFIG = ROOT / "greengrass" / "gdk-config.json"
#: The GDK CLI's schemas, copied into the repository (no package publishes them).
GDK_SCHEMAS = Path(__file__).resolve().parent / "schemas" / "greengrass"


def _build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_edge_artifact", ROOT / "scripts" / "build_edge_artifact.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lower_keys(node: Any) -> Any:
    """What the GDK CLI does to a recipe before validating it."""
    if isinstance(node, dict):
        return {str(k).lower(): lower_keys(v) for k, v in node.items()}
    if isinstance(node, list):
        return [lower_keys(v) for v in node]
    return node


def schema(name: str, folder: Path = GDK_SCHEMAS) -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        pytest.fail(
            f"schema missing: {path}. It is part of the repository: restore it from git, or "
            "fetch it again from aws-greengrass/aws-greengrass-gdk-cli (gdk/static/), as "
            "tests/deploy/schemas/README.md says.",
            pytrace=False,
        )
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _build_module().build(tmp_path_factory.mktemp("edge"))


def test_recipe_and_the_built_recipe_match_the_gdk_schema(built):
    validator = jsonschema.Draft7Validator(schema("recipe_schema.json"))
    # The source recipe as the GDK sees it at build time (its placeholders filled in), and
    # the one `make edge-artifact` writes for a local deployment.
    source = RECIPE.read_text()
    assert set(re.findall(r"\{COMPONENT_[A-Z]+\}", source)) == {
        "{COMPONENT_NAME}", "{COMPONENT_VERSION}", "{COMPONENT_AUTHOR}",
    }  # fmt: skip
    texts = {
        "greengrass/recipe.yaml": _build_module().filled_recipe("com.example.Edge", "1.2.3", "me"),
        built["recipe"]: Path(built["recipe"]).read_text(),
    }
    for where, text in texts.items():
        errors = sorted(validator.iter_errors(lower_keys(yaml.safe_load(text))), key=str)
        assert not errors, f"{where}: " + "; ".join(e.message for e in errors)


def test_gdk_config_matches_its_schema():
    config = json.loads(GDK_CONFIG.read_text())
    jsonschema.Draft7Validator(schema("gdk_config_schema.json")).validate(config)
    [(name, comp)] = config["component"].items()
    assert comp["build"]["build_system"] == "custom"
    assert "build_edge_artifact.py" in " ".join(comp["build"]["custom_build_command"])


def test_the_recipe_wires_configuration_lifecycle_artifact_and_access():
    recipe = yaml.safe_load(RECIPE.read_text())
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    assert recipe["ComponentDependencies"]["aws.greengrass.TokenExchangeService"]
    conf = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    for key in ("routerEndpoint", "site", "tls", "model", "modelStore"):
        assert key in conf, key
    assert {"bucket", "prefix"} <= set(conf["modelStore"]) and {"name", "version"} <= set(
        conf["model"]
    )
    # IPC: only what the agent uses (its status to IoT Core, on its own topic).
    access = conf["accessControl"]
    assert list(access) == ["aws.greengrass.ipc.mqttproxy"]
    [policy] = access["aws.greengrass.ipc.mqttproxy"].values()
    assert policy["operations"] == ["aws.greengrass#PublishToIoTCore"]
    assert policy["resources"] == ["hybrid-router/edge/{iot:thingName}/status"]

    [manifest] = recipe["Manifests"]
    [artifact] = manifest["Artifacts"]
    assert artifact["URI"] == (
        "s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/hybrid-router-edge.zip"
    )
    assert artifact["Unarchive"] == "ZIP" and artifact["Permission"]["Read"] == "OWNER"
    lifecycle = manifest["Lifecycle"]
    install = lifecycle["Install"]["Script"]
    # The lock, hash-checked; llama.cpp built for the device's CPU; then the engine check.
    assert "--require-hashes --no-deps" in install and "requirements.txt" in install
    assert install.index("scripts/llama_wheel.py") < install.index("llama_selftest")
    run = lifecycle["Run"]["Script"]

    # Every {configuration:/...} names a default, and the agent accepts the command line.
    def lookup(path: str) -> Any:
        node: Any = conf
        for part in path.strip("/").split("/"):
            assert isinstance(node, dict) and part in node, f"Run uses missing key {path}"
            node = node[part]
        return node

    rendered = re.sub(r"\{configuration:(/[^}]*)\}", lambda m: str(lookup(m.group(1))), run)
    rendered = rendered.replace("{iot:thingName}", "thing-1").replace("{work:path}", "/tmp/w")
    rendered = rendered.replace("{artifacts:decompressedPath}", "/tmp/a")
    assert "{" not in rendered, rendered
    argv = shlex.split(rendered)
    agent_args = argv[argv.index("greengrass.agent") + 1 :]
    cfg = validate(from_args(agent_args))
    assert cfg.device_id == "thing-1" and cfg.router == conf["routerEndpoint"]
    assert cfg.cert_file == conf["tls"]["certFile"] and cfg.ipc and not cfg.insecure
    assert cfg.context_window == conf["llamacpp"]["contextWindow"]
    # A setting interpolated into the lifecycle makes the nucleus restart the component
    # when a deployment changes it; model.version arrives over IPC and swaps in place.
    assert "{configuration:/model/version}" not in json.dumps(lifecycle)
    assert cfg.desired_version == ""


def test_the_artifact_zip_holds_only_the_edge_code(built, tmp_path: Path):
    with zipfile.ZipFile(built["zip"]) as zf:
        names = zf.namelist()
        assert all(n.startswith("hybrid-router-edge/") for n in names)
        inner = {n.removeprefix("hybrid-router-edge/") for n in names}
        for needed in (
            "greengrass/agent.py",
            "greengrass/sync.py",
            "serving/engines/llamacpp.py",
            "serving/engines/scripted.py",
            "hybrid_router/v1/edge_link_pb2.py",
            "hybrid_router/env.py",
            "hybrid_router/refs.py",
            "requirements.txt",
            "scripts/llama_wheel.py",
            "serving/engines/llama_build.py",
            "serving/engines/llama_selftest.py",
            "requirements/llama-cpp-python.txt",
            "requirements/llama-build.txt",
        ):
            assert needed in inner, needed
        for top in ("router/", "lambda_edge/", "tests/", "deploy/", "serving/ray_app/"):
            assert not any(n.startswith(top) for n in inner), top
        assert "serving/model_server.py" not in inner and "serving/engines/vllm.py" not in inner
        assert not any(n.endswith((".yaml", ".json")) and "greengrass/" in n for n in inner)
        requirements = zf.read("hybrid-router-edge/requirements.txt").decode()
        llama = zf.read("hybrid-router-edge/requirements/llama-cpp-python.txt").decode()
        for code in (n for n in names if n.endswith(".py")):
            text = zf.read(code).decode()
            assert not re.search(r"^\s*(from|import) router\b", text, re.M), code
        zf.extractall(tmp_path)
    # The edge lock as is: every requirement pinned with its hashes.
    assert requirements == (ROOT / "requirements" / "edge.txt").read_text(encoding="utf-8")
    pins = dict(
        re.findall(r"^([a-z0-9][a-z0-9._-]*)(?:\[[^\]]*\])?==([^ ;\\]+)", requirements, re.M)
    )
    names_only = set(pins) | set(re.findall(r"^([a-z0-9][a-z0-9._-]*)==", llama, re.M))
    blocks = re.split(r"\n(?=[a-z0-9])", requirements.split("\n", 2)[2])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)
    assert {"grpcio", "protobuf", "llama-cpp-python", "boto3", "awsiotsdk"} <= names_only
    assert not names_only & {"redis", "kubernetes", "pydantic", "rich", "hybrid-router"}
    # The extracted agent imports without the router package.
    check = (
        "import sys, greengrass.agent, greengrass;"
        "assert greengrass.__file__.startswith(sys.argv[1]), greengrass.__file__;"
        "assert not [m for m in sys.modules if m == 'router' or m.startswith('router.')]"
    )
    folder = str(tmp_path / "hybrid-router-edge")
    done = subprocess.run(
        [sys.executable, "-c", check, folder],
        env={"PYTHONPATH": folder, "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_the_build_is_reproducible(built, tmp_path: Path):
    again = _build_module().build(tmp_path)
    assert Path(again["zip"]).read_bytes() == Path(built["zip"]).read_bytes()
    recipe = Path(again["recipe"]).read_text()
    assert "{COMPONENT_" not in recipe and "/com.hybridrouter.EdgeAgent/0.1.0/" in recipe
    gdk = _build_module().build(tmp_path / "gdk", gdk=True)
    assert gdk["recipe"].endswith("greengrass-build/recipes/recipe.yaml")
    assert "greengrass-build/artifacts/com.hybridrouter.EdgeAgent/0.1.0/" in gdk["artifact"]
