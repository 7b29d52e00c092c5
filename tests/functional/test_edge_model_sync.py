"""The real model through the whole sync path: a second version of Gemma 3 270M (one GGUF
metadata key rewritten with the ``gguf`` package, so its bytes and sha256 differ) is
published to S3 (moto server); the agent (llama.cpp) serving the bundled model downloads
240 MB, verifies, loads, smoke-tests and switches while requests keep flowing.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import time
from pathlib import Path

import boto3
import edgeutil
import grpc
import pytest
from awsenv import aws_env, moto_server  # noqa: F401 - fixtures
from edgeutil import REPO, edge_config, wait_for_device
from rtutil import collect, stub_for, user_request

from hybrid_router_cli.main import main as cli

# Fixtures from edgeutil (pytest finds them in this module's namespace).
edge_router = edgeutil.edge_router
start_agent = edgeutil.start_agent

pytestmark = [pytest.mark.model, pytest.mark.slow]
MODEL = "gemma3-270m"
REGION = "us-east-1"


def _new_version():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "gguf_new_version", REPO / "scripts" / "gguf_new_version.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.new_version


@pytest.fixture(scope="module")
def model_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from serving.engines.llamacpp import default_model_path

    dest = tmp_path_factory.mktemp("gguf") / "gemma-3-270m-v2.gguf"
    value = _new_version()(default_model_path(), dest)
    assert value == "Gemma 3 270M"
    return dest


@pytest.mark.timeout(420)
async def test_the_real_model_syncs_to_a_new_version_with_no_failed_request(
    edge_router,
    start_agent,
    moto_server,  # noqa: F811
    aws_env,  # noqa: F811
    model_v2,
    channel_to,
):
    bucket = "real-models"
    boto3.client("s3", endpoint_url=moto_server, region_name=REGION).create_bucket(Bucket=bucket)
    models = {"bucket": bucket, "region": REGION, "endpoint_url": moto_server,
              "poll_interval_s": 0.5}  # fmt: skip
    router = await edge_router(edge=edge_config(models=models, backend={"timeout_s": 60}))
    agent = start_agent(
        router,
        "dev-1",
        engine="llamacpp",
        args=("--model-bucket", bucket, "--s3-endpoint-url", moto_server, "--s3-region", REGION,
              "--context-window", "1024", "--threads", "2", "--min-free-disk-mb", "64"),
    )  # fmt: skip
    await agent.ready(timeout_s=120)
    await wait_for_device(router, "dev-1", lambda d: d.models and d.models[0].version == "bundled")

    stub = stub_for(channel_to(router))
    done: list[tuple[float, bool]] = []
    errors: list[str] = []
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            try:
                events = await collect(
                    stub.Generate(user_request("The capital of France is", max_output_tokens=6))
                )
                done.append((time.monotonic(), events[-1].usage.complete))
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")
                done.append((time.monotonic(), False))

    worker = asyncio.create_task(load())
    rc = await asyncio.to_thread(
        cli,
        ["models", "publish", str(model_v2), "--name", MODEL, "--version", "v2",
         "--context-window", "1024", "--model-family", "gemma3", "--bucket", bucket,
         "--endpoint-url", moto_server, "--region", REGION],
    )  # fmt: skip
    assert rc == 0
    status = await wait_for_device(
        router, "dev-1", lambda d: d.models[0].version == "v2", timeout_s=240
    )
    switched = time.monotonic()
    await asyncio.sleep(2.0)
    stop.set()
    await worker

    assert not errors, errors
    assert all(ok for _, ok in done)
    assert any(t < switched for t, _ in done) and any(t > switched for t, _ in done)
    sha = hashlib.sha256(model_v2.read_bytes()).hexdigest()
    assert status.models[0].sha256 == sha and status.sync_status == f"ok: {MODEL} v2"
    installed = agent.work_dir / "models" / MODEL / "v2" / model_v2.name
    assert installed.stat().st_size == model_v2.stat().st_size
