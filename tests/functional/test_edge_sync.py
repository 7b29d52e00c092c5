"""Model sync end to end: ``hybrid-router models publish`` to S3 (moto server), a router
that reads the desired version and tells the device, a real agent process that downloads,
verifies, installs, smoke-tests and switches.

The scripted engine's artifacts are small JSON files of engine options (greengrass/
engines.py), so these tests run the whole sync path on a few bytes; the one real-model
sync is in test_edge_model_sync.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import edgeutil
import grpc
import pytest
from awsenv import aws_env, moto_server  # noqa: F401 - fixtures
from edgeutil import edge_config, wait_for_device
from rtutil import collect, stub_for, user_request

from hybrid_router_cli.main import main as cli

# Fixtures from edgeutil (pytest finds them in this module's namespace).
edge_router = edgeutil.edge_router
start_agent = edgeutil.start_agent

MODEL = "gemma3-270m"
REGION = "us-east-1"


@pytest.fixture
def bucket(moto_server: str, aws_env: None, request: pytest.FixtureRequest) -> str:  # noqa: F811
    name = f"models-{request.node.name[:40].replace('_', '-').lower()}"
    boto3.client("s3", endpoint_url=moto_server, region_name=REGION).create_bucket(Bucket=name)
    return name


def store(moto_server: str, bucket: str) -> dict[str, Any]:  # noqa: F811
    return {
        "bucket": bucket,
        "prefix": "models",
        "region": REGION,
        "endpoint_url": moto_server,
        "poll_interval_s": 0.3,
    }


def agent_args(moto_server: str, bucket: str) -> tuple[str, ...]:  # noqa: F811
    return (
        "--model-bucket", bucket, "--s3-endpoint-url", moto_server, "--s3-region", REGION,
        "--min-free-disk-mb", "1",
    )  # fmt: skip


async def publish(
    moto_server: str,  # noqa: F811
    bucket: str,
    tmp_path: Path,
    version: str,
    options: dict[str, Any],
    *extra: str,
) -> None:
    artifact = tmp_path / f"scripted-{version}.json"
    artifact.write_text(json.dumps(options))
    rc = await asyncio.to_thread(
        cli,
        [
            "models", "publish", str(artifact), "--name", MODEL, "--version", version,
            "--context-window", "4096", "--format", "scripted", "--bucket", bucket,
            "--endpoint-url", moto_server, "--region", REGION, *extra,
        ],
    )  # fmt: skip
    assert rc == 0


def version_of(d: Any) -> str:
    return d.models[0].version if d.models else ""


async def test_a_published_version_reaches_the_device_with_no_failed_request_during_the_switch(
    edge_router,
    start_agent,
    moto_server,  # noqa: F811
    bucket,
    tmp_path,
    channel_to,
    capsys,
):
    router = await edge_router(edge=edge_config(models=store(moto_server, bucket)))
    work = tmp_path / "dev-1"
    stale = work / "models" / MODEL / ".incoming" / "v1.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a download from a run that was killed")
    agent = start_agent(
        router,
        "dev-1",
        scripted={"tokens_per_s": 200},
        args=agent_args(moto_server, bucket),
        work_dir=work,
    )
    await agent.ready()
    await wait_for_device(router, "dev-1", lambda d: version_of(d) == "builtin")
    assert not stale.exists()  # an interrupted download restarts from scratch

    await publish(moto_server, bucket, tmp_path, "v1", {"reply_tokens": 3})
    status = await wait_for_device(router, "dev-1", lambda d: version_of(d) == "v1")
    assert status.desired_versions[MODEL] == "v1"

    # Requests keep flowing while v2 is published, downloaded, loaded and swapped in.
    stub = stub_for(channel_to(router))
    outcomes: list[tuple[bool, int]] = []
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            try:
                events = await collect(stub.Generate(user_request("alpha", max_output_tokens=8)))
                usage = events[-1].usage
                outcomes.append((usage.complete, usage.output_tokens))
            except grpc.aio.AioRpcError as exc:
                outcomes.append((False, -1))
                print("failed:", exc.code(), exc.details())

    workers = [asyncio.create_task(load()) for _ in range(3)]
    await asyncio.sleep(0.5)
    await publish(moto_server, bucket, tmp_path, "v2", {"reply_tokens": 5})
    status = await wait_for_device(router, "dev-1", lambda d: version_of(d) == "v2")
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*workers)
    assert outcomes and all(ok for ok, _ in outcomes), outcomes
    lengths = {n for _, n in outcomes}
    assert lengths == {3, 5}, lengths  # v1 answered before the switch, v2 after it
    assert status.sync_status == f"ok: {MODEL} v2"

    state = json.loads((work / "models" / "state.json").read_text())[MODEL]
    assert (state["current"], state["previous"]) == ("v2", "v1")
    assert sorted(p.name for p in (work / "models" / MODEL).iterdir() if p.is_dir()) == [
        ".incoming",
        "v1",
        "v2",
    ]

    # Versions are immutable.
    capsys.readouterr()
    artifact = tmp_path / "scripted-v2.json"
    rc = await asyncio.to_thread(
        cli,
        ["models", "publish", str(artifact), "--name", MODEL, "--version", "v2",
         "--context-window", "4096", "--format", "scripted", "--bucket", bucket,
         "--endpoint-url", moto_server, "--region", REGION],
    )  # fmt: skip
    assert rc == 1 and "versions are immutable" in capsys.readouterr().err

    rc = await asyncio.to_thread(
        cli,
        [
            "models", "status", "--address", f"127.0.0.1:{router.port}", "--bucket", bucket,
            "--endpoint-url", moto_server, "--region", REGION, "--json",
        ],
    )  # fmt: skip
    assert rc == 0
    rows = {r["version"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["v2"]["devices"] == ["dev-1"] and rows["v2"]["desired"] and rows["v2"]["online"]
    assert rows["v1"]["devices"] == [] and rows["v1"]["published"]


async def test_a_corrupt_artifact_is_rejected_and_the_old_version_keeps_serving(
    edge_router,
    start_agent,
    moto_server,  # noqa: F811
    bucket,
    tmp_path,
    channel_to,
):
    router = await edge_router(edge=edge_config(models=store(moto_server, bucket)))
    await publish(moto_server, bucket, tmp_path, "v1", {"reply_tokens": 3})
    agent = start_agent(router, "dev-1", args=agent_args(moto_server, bucket))
    await agent.ready()
    await wait_for_device(router, "dev-1", lambda d: version_of(d) == "v1")

    await publish(moto_server, bucket, tmp_path, "v2", {"reply_tokens": 5}, "--no-desired")
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    key = f"models/{MODEL}/v2/scripted-v2.json"
    good = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=good.replace(b"5", b"6"))  # same size
    assert await asyncio.to_thread(
        cli,
        ["models", "set-desired", "--name", MODEL, "--version", "v2", "--bucket", bucket,
         "--endpoint-url", moto_server, "--region", REGION],
    ) == 0  # fmt: skip

    status = await wait_for_device(router, "dev-1", lambda d: d.sync_status.startswith("failed"))
    assert "rejected the artifact: sha256" in status.sync_status
    assert version_of(status) == "v1" and status.desired_versions[MODEL] == "v2"
    assert not (agent.work_dir / "models" / MODEL / "v2").exists()
    assert not list((agent.work_dir / "models" / MODEL / ".incoming").iterdir())
    events = await collect(stub_for(channel_to(router)).Generate(user_request("alpha")))
    assert events[-1].usage.complete and events[-1].usage.output_tokens == 3  # still v1


async def test_a_version_that_fails_its_smoke_test_is_rolled_back(
    edge_router,
    start_agent,
    moto_server,  # noqa: F811
    bucket,
    tmp_path,
    channel_to,
):
    router = await edge_router(edge=edge_config(models=store(moto_server, bucket)))
    await publish(moto_server, bucket, tmp_path, "v1", {"reply_tokens": 3})
    agent = start_agent(router, "dev-1", args=agent_args(moto_server, bucket))
    await agent.ready()
    await wait_for_device(router, "dev-1", lambda d: version_of(d) == "v1")

    await publish(moto_server, bucket, tmp_path, "v2", {"fail_before_first_token": "unavailable"})
    status = await wait_for_device(router, "dev-1", lambda d: d.sync_status.startswith("failed"))
    assert "smoke test failed" in status.sync_status and "serving v1" in status.sync_status
    assert version_of(status) == "v1"
    events = await collect(stub_for(channel_to(router)).Generate(user_request("alpha")))
    assert events[-1].usage.complete and events[-1].usage.output_tokens == 3

    # A fixed version goes through.
    await publish(moto_server, bucket, tmp_path, "v3", {"reply_tokens": 4})
    await wait_for_device(router, "dev-1", lambda d: version_of(d) == "v3")


class _Credentials(BaseHTTPRequestHandler):
    """The Token Exchange Service's shape: GET with an Authorization token -> credentials."""

    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).seen.append(self.headers.get("Authorization", ""))
        body = json.dumps(
            {
                "AccessKeyId": "ASIATESTTESTTESTTEST",
                "SecretAccessKey": "tes-secret-not-real",
                "Token": "tes-session-token",
                "Expiration": "2099-01-01T00:00:00Z",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def token_exchange_service() -> Iterator[str]:
    _Credentials.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Credentials)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/2016-11-01/credentialprovider/"
    finally:
        server.shutdown()
        with contextlib.suppress(Exception):
            server.server_close()


async def test_under_greengrass_credentials_come_from_the_token_exchange_service(
    edge_router,
    start_agent,
    moto_server,  # noqa: F811
    bucket,
    tmp_path,
    token_exchange_service,
):
    router = await edge_router(edge=edge_config(models=store(moto_server, bucket)))
    await publish(moto_server, bucket, tmp_path, "v1", {"reply_tokens": 3})
    agent = start_agent(
        router,
        "dev-1",
        args=agent_args(moto_server, bucket),
        env={  # what the nucleus gives a component that depends on the TES
            "AWS_ACCESS_KEY_ID": None,
            "AWS_SECRET_ACCESS_KEY": None,
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": token_exchange_service,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": "component-auth-token",
        },
    )
    await agent.ready()
    await wait_for_device(router, "dev-1", lambda d: version_of(d) == "v1")
    assert _Credentials.seen and set(_Credentials.seen) == {"component-auth-token"}
