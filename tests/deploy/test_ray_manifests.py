"""The GPU tier's deployment files: deploy/ray/ and the Helm chart's optional RayService.

- The RayService validates against the KubeRay CRD (v1 openAPIV3Schema, strict) from
  tests/deploy/schemas/crds/, and has the shape the GPU tier needs (CPU head, GPU workers with the
  nvidia.com/gpu toleration, autoscaling, a Service on the gRPC port).
- Every Serve config (serveConfigV2 strings and deploy/ray/serve_config.yaml) validates with
  Ray Serve's own ``ServeDeploySchema`` (the CRD keeps serveConfigV2 an opaque string), its
  import paths import, and each application's ``args`` validate with the app's own models.
- The vLLM engine arguments parse with vLLM 0.29.0's own parser (``tools`` marker: needs
  .tools/vllm-venv from ``make tools``).
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from k8s_schemas import validation_errors
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from serving.ray_app.settings import LoadAppArgs, ModelAppArgs

ROOT = Path(__file__).resolve().parents[2]
RAY_DIR = ROOT / "deploy" / "ray"
RAYSERVICE = RAY_DIR / "rayservice.yaml"
SERVE_CONFIG = RAY_DIR / "serve_config.yaml"
CHECK_SCRIPT = RAY_DIR / "check_vllm_args.py"
VLLM_PYTHON = ROOT / ".tools" / "vllm-venv" / "bin" / "python"
CHART = ROOT / "deploy" / "helm" / "hybrid-router"
SERVICER = "hybrid_router.v1.model_service_pb2_grpc.add_ModelServiceServicer_to_server"
ARGS_MODELS = {
    "serving.ray_app.app:build_app": ModelAppArgs,
    "serving.ray_app.app:build_load_app": LoadAppArgs,
}


def rayservice() -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all(RAYSERVICE.read_text(encoding="utf-8")) if d]
    return doc


def helm_rayservice() -> dict[str, Any]:
    with helm.Chart.load(CHART) as chart:
        out = chart.render({"rayService": {"enabled": True}}, name="hr", namespace="gpu")
    docs = [
        d
        for path, text in out.items()
        if not path.endswith("NOTES.txt")
        for d in yaml.safe_load_all(text)
        if isinstance(d, dict)
    ]
    (rs,) = [d for d in docs if d.get("kind") == "RayService"]
    return rs


def serve_configs() -> dict[str, dict[str, Any]]:
    return {
        "deploy/ray/rayservice.yaml": yaml.safe_load(rayservice()["spec"]["serveConfigV2"]),
        "deploy/ray/serve_config.yaml": yaml.safe_load(SERVE_CONFIG.read_text(encoding="utf-8")),
        "helm rayService": yaml.safe_load(helm_rayservice()["spec"]["serveConfigV2"]),
    }


# --- the RayService object ---------------------------------------------------------------


def test_rayservice_validates_against_the_kuberay_crd() -> None:
    assert validation_errors(rayservice()) == []


def test_rayservice_has_cpu_head_gpu_workers_autoscaling_and_grpc_service() -> None:
    spec = rayservice()["spec"]
    cluster = spec["rayClusterConfig"]
    assert cluster["rayVersion"] == "2.60.0" and cluster["enableInTreeAutoscaling"] is True

    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    (head_container,) = head["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]
    assert "tolerations" not in head["template"]["spec"]  # stays off the GPU nodes

    (gpu,) = cluster["workerGroupSpecs"]
    pod = gpu["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    (worker,) = pod["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]

    serve = yaml.safe_load(spec["serveConfigV2"])
    apps = {a["name"]: a for a in serve["applications"]}
    args = ModelAppArgs.model_validate(apps["gpu"]["args"])
    assert args.engine == "vllm" and args.deployment.ray_actor_options.num_gpus == 1
    scaling = args.deployment.autoscaling
    assert scaling is not None and scaling.max_replicas <= gpu["maxReplicas"]
    assert apps["gpu-load"]["import_path"] == "serving.ray_app.app:build_load_app"

    (port,) = spec["serveService"]["spec"]["ports"]
    assert port["name"] == "grpc" and port["port"] == serve["grpc_options"]["port"]
    assert port["appProtocol"] == "kubernetes.io/h2c"
    assert {"name": "grpc", "containerPort": port["targetPort"]} in worker["ports"]


# --- Serve configs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "source", ["deploy/ray/rayservice.yaml", "deploy/ray/serve_config.yaml", "helm rayService"]
)
def test_serve_config_validates_with_ray_serves_schema(source: str) -> None:
    config = serve_configs()[source]
    schema = ServeDeploySchema.model_validate(config)  # Ray Serve's own config model
    assert list(schema.grpc_options.grpc_servicer_functions) == [SERVICER]
    module, _, func = SERVICER.rpartition(".")
    assert callable(getattr(importlib.import_module(module), func))
    names = {app.name for app in schema.applications}
    for app in schema.applications:
        assert app.route_prefix, f"{app.name}: Serve's gRPC proxy needs a route_prefix"
        module, _, attr = app.import_path.partition(":")
        assert callable(getattr(importlib.import_module(module), attr))
        model = ARGS_MODELS[app.import_path]
        args = model.model_validate(app.args)  # the app's own argument models
        if isinstance(args, ModelAppArgs):
            board = args.load_application or f"{app.name}-load"
            assert board in names, f"{app.name} reports its load to {board}, not deployed"


def unknown_keys(config: dict[str, Any]) -> list[str]:
    """Keys Ray Serve's schema would silently ignore (it allows extra fields): typos."""
    from ray.serve.schema import DeploymentSchema, ServeApplicationSchema

    bad = [k for k in config if k not in ServeDeploySchema.model_fields]
    for i, app in enumerate(config.get("applications") or []):
        bad += [
            f"applications[{i}].{k}" for k in app if k not in ServeApplicationSchema.model_fields
        ]
        for j, dep in enumerate(app.get("deployments") or []):
            bad += [
                f"applications[{i}].deployments[{j}].{k}"
                for k in dep
                if k not in DeploymentSchema.model_fields
            ]
    return bad


@pytest.mark.parametrize(
    "source", ["deploy/ray/rayservice.yaml", "deploy/ray/serve_config.yaml", "helm rayService"]
)
def test_serve_config_has_no_keys_serve_would_ignore(source: str) -> None:
    assert unknown_keys(serve_configs()[source]) == []


def test_bad_serve_configs_are_refused_naming_the_field() -> None:
    good = serve_configs()["deploy/ray/rayservice.yaml"]
    config = copy.deepcopy(good)
    config["grpc_options"]["port"] = "nine thousand"
    with pytest.raises(ValidationError, match=r"grpc_options\.port"):
        ServeDeploySchema.model_validate(config)
    config = copy.deepcopy(good)
    config["applications"][1]["route_prefx"] = "/gpu"
    assert unknown_keys(config) == ["applications[1].route_prefx"]
    args = copy.deepcopy(good["applications"][1]["args"])
    args["deployment"]["autoscaling"]["min_replicas"] = 9
    with pytest.raises(ValidationError, match=r"deployment\.autoscaling"):
        ModelAppArgs.model_validate(args)
    args = {"engine": "llamacpp", "engine_options": {"n_thread": 2}}
    with pytest.raises(ValidationError, match=r"engine_options\.n_thread: not an option"):
        ModelAppArgs.model_validate(args)


# --- vLLM engine arguments ---------------------------------------------------------------


def run_vllm_check(*files: Path) -> tuple[int, dict[str, Any], str]:
    if not VLLM_PYTHON.is_file():
        pytest.fail(
            f"{VLLM_PYTHON} not found: run `make tools` (scripts/install_vllm_check.sh) to "
            "install the vLLM check environment",
            pytrace=False,
        )
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_LOGGING_LEVEL": "ERROR"}
    proc = subprocess.run(
        [str(VLLM_PYTHON), str(CHECK_SCRIPT), *map(str, files)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    start = proc.stdout.find("{")
    report = json.loads(proc.stdout[start:]) if start >= 0 else {}
    return proc.returncode, report, proc.stderr


@pytest.mark.tools
def test_vllm_engine_args_parse_with_vllms_own_parser(tmp_path: Path) -> None:
    helm_file = tmp_path / "helm-rayservice.yaml"
    helm_file.write_text(yaml.safe_dump(helm_rayservice()), encoding="utf-8")
    code, report, stderr = run_vllm_check(RAYSERVICE, helm_file)
    assert code == 0, stderr[-2000:] + json.dumps(report, indent=1)
    assert report["vllm"] == "0.29.0"
    checked = {(Path(a["source"].split("#")[0]).name, a["app"]): a for a in report["apps"]}
    ours = checked[("rayservice.yaml", "gpu")]
    assert ours["errors"] == [] and ours["kwargs"]["max_model_len"] == 16384
    assert checked[("helm-rayservice.yaml", "gpu")]["errors"] == []

    # The check is real: vLLM itself refuses a typo and a bad value.
    bad = rayservice()
    serve = yaml.safe_load(bad["spec"]["serveConfigV2"])
    kwargs = serve["applications"][1]["args"]["engine_options"]["engine_kwargs"]
    kwargs["dtype"] = "bfloat17"
    bad["spec"]["serveConfigV2"] = yaml.safe_dump(serve)
    typo = copy.deepcopy(serve)
    typo["applications"][1]["args"]["engine_options"]["engine_kwargs"]["max_modle_len"] = 1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad), encoding="utf-8")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(typo), encoding="utf-8")
    code, report, _ = run_vllm_check(tmp_path / "bad.yaml", tmp_path / "typo.yaml")
    assert code == 1
    errors = [e for a in report["apps"] for e in a["errors"]]
    assert any("--dtype" in e and "bfloat17" in e for e in errors), errors
    assert any(e.startswith("engine_kwargs.max_modle_len: not an argument") for e in errors)


def test_check_script_needs_only_vllm_and_the_standard_library() -> None:
    """It runs in the vLLM environment, where this project is not installed."""
    code = CHECK_SCRIPT.read_text(encoding="utf-8")
    for line in code.splitlines():
        if line.startswith(("import ", "from ")):
            top = line.split()[1].split(".")[0]
            assert top in sys.stdlib_module_names or top in {"yaml", "__future__"}, line
