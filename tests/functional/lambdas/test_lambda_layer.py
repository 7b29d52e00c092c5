"""The Lambda layer: built by scripts/build_lambda_layer.py, unpacked the way Lambda does it
(/opt, with /opt/python on sys.path) into a fresh venv that has nothing installed, and
its client streams from a real router.

The layer is built with ``--deps local`` (this interpreter's grpcio/protobuf files, no
network) for this interpreter's Python; ``make lambda-layer`` downloads the wheels of the
template's runtime instead (same script, same contents).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from rtutil import ms_backend

from serving.engines.scripted import ScriptedEngine

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "build_lambda_layer.py"

ORCHESTRATOR = r"""
import json, sys
from hybrid_router.client import RouterClient, make_request
import grpc, google.protobuf

client = RouterClient(sys.argv[1])
req = make_request(prompt="layer test", max_output_tokens=6, data_class="public")
out = {"events": [], "grpc": grpc.__file__, "protobuf": google.protobuf.__file__}
with client.generate(req, timeout_s=30) as stream:
    for ev in stream:
        kind = ev.WhichOneof("event")
        out["events"].append([kind, ev.delta.text if kind == "delta" else ""])
out["request_id"] = stream.request_id
heavy = ("pydantic", "aws_lambda_powertools", "boto3", "botocore", "router", "serving")
out["heavy_imported"] = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
client.close()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def built_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layer-build")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--deps", "local", "--python-version", version,
         "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["layer_zip_bytes"] < 50 * 1024 * 1024  # Lambda's zipped upload limit
    return out


def test_layer_holds_the_client_contract_and_grpc_only(built_layer: Path) -> None:
    with zipfile.ZipFile(built_layer / "lambda-layer.zip") as zf:
        names = zf.namelist()
    tops = {n.split("/")[1] for n in names if n.startswith("python/")}
    # The client, the contract and their dependencies: no handlers, no router, no boto3.
    assert {"hybrid_router", "grpc", "google", "typing_extensions.py"} <= tops
    assert not tops & {"lambda_edge", "router", "serving", "pydantic", "aws_lambda_powertools"}
    assert "boto3" not in tops
    client = REPO / "proto" / "hybrid_router" / "client"
    ours = sorted(
        n for n in names if n.startswith("python/hybrid_router/client/") and n.endswith(".py")
    )
    assert ours == sorted(f"python/hybrid_router/client/{p.name}" for p in client.glob("*.py"))
    assert "python/hybrid_router/v1/router_pb2_grpc.py" in names
    # The client's variable names and the reference resolver ship with the contract.
    assert {"python/hybrid_router/env.py", "python/hybrid_router/refs.py"} <= set(names)
    with zipfile.ZipFile(built_layer / "lambda-functions.zip") as zf:
        fn = set(zf.namelist())
    assert {"lambda_edge/entry_http.py", "lambda_edge/entry_websocket.py"} <= fn
    assert "lambda_edge/entry_jobs.py" in fn


def test_functions_zip_holds_the_streaming_bootstrap_executable(built_layer: Path) -> None:
    """The streaming function's handler is a script the Lambda Web Adapter's /opt/bootstrap
    executes: it must be in the package with its execute bit (Lambda keeps zip modes)."""
    with zipfile.ZipFile(built_layer / "lambda-functions.zip") as zf:
        info = zf.getinfo("lambda_edge/run_stream.sh")
        assert "lambda_edge/stream_server.py" in zf.namelist()
    assert (info.external_attr >> 16) & 0o111 == 0o111
    assert (info.external_attr >> 16) & 0o777 == 0o755


def test_build_is_reproducible(built_layer: Path, tmp_path: Path) -> None:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--deps", "local", "--python-version", version,
         "--out", str(tmp_path)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    for name in ("lambda-layer.zip", "lambda-functions.zip"):
        assert (tmp_path / name).read_bytes() == (built_layer / name).read_bytes(), name


def test_refuses_local_deps_for_another_python(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--deps", "local", "--python-version", "3.9",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "use --deps download" in proc.stderr


async def test_layer_in_a_clean_venv_streams_from_the_router(
    built_layer: Path, tmp_path: Path, model_server, start_router
) -> None:
    engine = ScriptedEngine(reply_tokens=6)
    router = await start_router([ms_backend("gpu-a", "gpu", await model_server(engine))])

    # A fresh venv (no pip, nothing installed) and the layer unpacked as Lambda does.
    env_dir = tmp_path / "venv"
    await asyncio.to_thread(venv.EnvBuilder(with_pip=False, clear=True).create, env_dir)
    python = env_dir / "bin" / "python"
    opt = tmp_path / "opt"
    with zipfile.ZipFile(built_layer / "lambda-layer.zip") as zf:
        zf.extractall(opt)
    script = tmp_path / "orchestrator.py"
    script.write_text(ORCHESTRATOR)

    bare = await asyncio.create_subprocess_exec(
        str(python), "-s", "-c", "import grpc",
        stderr=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    _, err = await bare.communicate()
    assert bare.returncode != 0 and b"No module named 'grpc'" in err  # the venv is clean

    proc = await asyncio.create_subprocess_exec(
        str(python), "-s", str(script), f"127.0.0.1:{router.port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(opt / "python")},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["grpc"].startswith(str(opt / "python"))
    assert result["protobuf"].startswith(str(opt / "python"))
    kinds = [k for k, _ in result["events"]]
    assert kinds[0] == "decision" and kinds[-1] == "usage"
    assert "".join(t for _, t in result["events"]) == "layer test layer test layer test"
    assert result["request_id"] == engine.started[0]
    assert result["heavy_imported"] == []
