"""Fixtures for the Lambda front-end tests.

- ``moto``: a real moto server (``moto_server`` subprocess on a free loopback port) for S3,
  SQS, DynamoDB, Secrets Manager and the API Gateway Management API; one per session,
  every test uses its own resource names.
- ``aws_env``: points boto3 at it (``AWS_ENDPOINT_URL``) with dummy credentials, turns
  X-Ray off (no daemon here) and names the function; the autouse ``clean_environ``
  fixture restores the environment after each test.
- ``lambda_context``: the context object the Lambda runtime passes to a handler.
- ``tool_router``: a real router whose ``openai`` backends are OpenAI wire servers that
  answer with tool calls and JSON (tool_backends.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lambda_events import LambdaContext, free_port
from openai_wire import WireServer
from testkit import wait_until_sync
from tool_backends import ToolRouter, make_tool_router


@dataclass
class MotoServer:
    url: str
    proc: subprocess.Popen[bytes]

    def _post(self, path: str) -> None:
        req = urllib.request.Request(self.url + path, method="POST", data=b"")
        urllib.request.urlopen(req, timeout=10).read()

    def start_recording(self) -> None:
        self._post("/moto-api/recorder/reset-recording")
        self._post("/moto-api/recorder/start-recording")

    def stop_recording(self) -> list[dict[str, Any]]:
        """Every request moto received while recording (method, url, body)."""
        self._post("/moto-api/recorder/stop-recording")
        raw = urllib.request.urlopen(
            self.url + "/moto-api/recorder/download-recording", timeout=10
        ).read()
        return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        pytest.fail(f"{exe} not found: install the dev extra (pip install -e '.[dev]')")
    port = free_port()
    rec = tmp_path_factory.mktemp("moto") / "recording.jsonl"
    env = {**os.environ, "MOTO_RECORDER_FILEPATH": str(rec)}
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"moto_server on port {port} exited with {proc.returncode}")
        urllib.request.urlopen(url + "/moto-api/", timeout=2).read()
        return True

    try:
        wait_until_sync(answering, f"moto_server to answer on {url}", timeout_s=60, every_s=0.1)
    except BaseException:
        proc.kill()
        raise
    yield MotoServer(url, proc)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def aws_env(moto: MotoServer) -> MotoServer:
    os.environ.update(
        AWS_ENDPOINT_URL=moto.url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_LAMBDA_FUNCTION_NAME="hybrid-router-test",
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_SERVICE_NAME="hybrid-router-lambda-test",
        POWERTOOLS_METRICS_NAMESPACE="HybridRouterTest",
    )
    for var in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(var, None)
    return moto


@pytest.fixture
def lambda_context() -> type[LambdaContext]:
    return LambdaContext


@pytest.fixture
async def tool_router(start_router: Any) -> AsyncIterator[ToolRouter]:
    wire = WireServer()
    await wire.start()
    try:
        yield await make_tool_router(wire, start_router)
    finally:
        await wire.stop()
