"""The HTTP handler (API Gateway HTTP API 2.0 and Function URL events) against a real router
on loopback with scripted ModelService backends."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import grpc
import pytest
from lambda_events import (
    FunctionUrlEmulator,
    LambdaContext,
    free_port,
    function_url_event,
    http_event,
    prompt_body,
    unique,
)
from rtutil import ms_backend

from lambda_edge.http_api import make_http_handler
from lambda_edge.runtime import Runtime
from lambda_edge.settings import Settings
from router.config import parse_config
from router.server.app import create_server
from serving.engines.scripted import ScriptedEngine

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def runtime_for(port: int, **env: str) -> Runtime:
    return Runtime(Settings.from_env({"HYBRID_ROUTER_ADDRESS": f"127.0.0.1:{port}", **env}))


async def invoke(handler: Handler, event: dict[str, Any], ctx: Any = None) -> dict[str, Any]:
    """Call a sync Lambda handler off the event loop (the router runs on the loop)."""
    return await asyncio.to_thread(handler, event, ctx or LambdaContext())


def body_of(resp: dict[str, Any]) -> Any:
    return json.loads(resp["body"])


@pytest.fixture
async def gpu_router(model_server, start_router):  # type: ignore[no-untyped-def]
    engine = ScriptedEngine(reply_tokens=5)
    router = await start_router([ms_backend("gpu-a", "gpu", await model_server(engine))])
    return engine, router


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    made: list[Runtime] = []
    yield made
    for rt in made:
        rt.close()


@pytest.fixture
def http_handler(gpu_router, runtimes):  # type: ignore[no-untyped-def]
    def make(**env: str) -> Handler:
        rt = runtime_for(gpu_router[1].port, **env)
        runtimes.append(rt)
        return make_http_handler(rt)

    return make


# --- happy paths ------------------------------------------------------------------------


async def test_generate_returns_decision_text_and_usage(gpu_router, http_handler):
    engine, _ = gpu_router
    handler = http_handler()
    ctx = LambdaContext()
    resp = await invoke(handler, http_event("/v1/generate", prompt_body("alpha beta")), ctx)
    assert resp["statusCode"] == 200, resp["body"]
    assert resp["headers"]["Content-Type"] == "application/json"
    body = body_of(resp)
    assert body["text"] == "alpha beta alpha beta alpha"
    assert body["decision"]["backend"] == "gpu-a" and body["decision"]["tier"] == "gpu"
    assert body["decision"]["candidates"][0]["accepted"] is True
    assert body["usage"]["output_tokens"] == 5 and body["usage"]["complete"] is True
    assert body["usage"]["finish_reason"] == "stop"
    # The Lambda request id is the router's request id: one id across both logs.
    assert body["request_id"] == ctx.aws_request_id == resp["headers"]["x-request-id"]
    assert engine.started == [ctx.aws_request_id]


async def test_function_url_event_with_base64_body(http_handler):
    handler = http_handler()
    event = function_url_event(
        "/v1/generate",
        prompt_body("one two", max_output_tokens=3, request_id="fn-url-1"),
        base64_body=True,
    )
    resp = await invoke(handler, event)
    assert resp["statusCode"] == 200, resp["body"]
    body = body_of(resp)
    assert body["request_id"] == "fn-url-1"
    assert body["text"] == "one two one"


async def test_route_explains_without_calling_a_model(gpu_router, http_handler):
    engine, _ = gpu_router
    resp = await invoke(http_handler(), http_event("/v1/route", prompt_body(request_id="r-9")))
    assert resp["statusCode"] == 200, resp["body"]
    body = body_of(resp)
    assert body["backend"] == "gpu-a" and body["request_id"] == "r-9"
    assert body["explanation"]
    assert engine.started == []


async def test_the_channel_is_made_once_and_reused_across_invocations(gpu_router, runtimes):
    """Three invocations, one gRPC channel object and one TCP connection to the router."""
    _, router = gpu_router
    accepted = 0

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", router.port)
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    proxy = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    try:
        rt = runtime_for(port)
        runtimes.append(rt)
        channel = rt.client.channel
        handler = make_http_handler(rt)
        for i in range(3):
            resp = await invoke(handler, http_event("/v1/generate", prompt_body(f"call {i}")))
            assert resp["statusCode"] == 200, resp["body"]
        assert rt.client.channel is channel
        assert accepted == 1
    finally:
        rt.close()
        proxy.close()
        await proxy.wait_closed()


# --- OpenAI-compatible ------------------------------------------------------------------


async def test_openai_client_calls_chat_completions_through_the_handler(gpu_router, http_handler):
    import openai

    engine, _ = gpu_router
    emu = FunctionUrlEmulator(http_handler())
    client = openai.OpenAI(base_url=emu.base_url, api_key="unused", max_retries=0, timeout=30)
    try:
        done = await asyncio.to_thread(
            client.chat.completions.create,
            model="auto",
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "red green blue"},
            ],
            max_tokens=4,
            extra_body={"hybrid_router": {"data_class": "public"}},
        )
        assert done.object == "chat.completion"
        assert done.choices[0].message.content == "red green blue red"
        assert done.choices[0].finish_reason == "length"
        assert done.model == "gpu-a"
        assert done.usage is not None and done.usage.completion_tokens == 4
        assert done.usage.total_tokens == done.usage.prompt_tokens + 4

        # Pinning through the model name; an unknown form is refused naming "model".
        pinned = await asyncio.to_thread(
            client.chat.completions.create,
            model="tier/gpu",
            messages=[{"role": "user", "content": "x y"}],
            max_tokens=2,
        )
        assert pinned.choices[0].message.content == "x y"
        with pytest.raises(openai.BadRequestError) as bad:
            await asyncio.to_thread(
                client.chat.completions.create,
                model="gpt-4o",
                messages=[{"role": "user", "content": "x"}],
            )
        assert bad.value.status_code == 400
        err = bad.value.body
        assert isinstance(err, dict) and err["param"] == "model"
        assert "tier/<hosted|gpu|edge>" in err["message"]

        with pytest.raises(openai.BadRequestError) as streamed:
            await asyncio.to_thread(
                client.chat.completions.create,
                model="auto",
                messages=[{"role": "user", "content": "x"}],
                stream=True,
            )
        assert isinstance(streamed.value.body, dict)
        assert streamed.value.body["param"] == "stream"
        assert len(engine.started) == 2
    finally:
        client.close()
        emu.close()


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({}, "messages", "Field required"),
        ({"messages": []}, "messages", "at least 1 item"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "'system'"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "Field required"),
        (prompt_body(max_output_tokens=-1), "max_output_tokens", "greater than or equal to 0"),
        (prompt_body(data_class="secret"), "data_class", "'public'"),
        (prompt_body(sampling={"temperature": 3}), "sampling.temperature", "less than or equal"),
        (prompt_body(colour="blue"), "colour", "unknown field"),
    ],
)
async def test_invalid_bodies_are_400_naming_the_field(http_handler, body, field, words):
    resp = await invoke(http_handler(), http_event("/v1/generate", body))
    assert resp["statusCode"] == 400
    err = body_of(resp)["error"]
    assert err["status"] == "INVALID_ARGUMENT"
    assert err["field"] == field
    assert err["message"].startswith(f"{field}: ") and words in err["message"]


async def test_malformed_json_and_empty_body_are_400(http_handler):
    handler = http_handler()
    resp = await invoke(handler, http_event("/v1/generate", raw="{not json"))
    assert resp["statusCode"] == 400
    assert "Invalid JSON" in body_of(resp)["error"]["message"]
    resp = await invoke(handler, http_event("/v1/route"))
    assert resp["statusCode"] == 400
    assert body_of(resp)["error"]["message"].startswith("body: empty")


async def test_oversize_body_is_413(gpu_router, http_handler):
    engine, _ = gpu_router
    handler = http_handler(HYBRID_ROUTER_MAX_BODY_BYTES="2048")
    resp = await invoke(handler, http_event("/v1/generate", prompt_body("word " * 600)))
    assert resp["statusCode"] == 413
    err = body_of(resp)["error"]
    assert err["status"] == "PAYLOAD_TOO_LARGE"
    assert "2048 bytes" in err["message"] and "HYBRID_ROUTER_MAX_BODY_BYTES" in err["message"]
    big_b64 = http_event("/v1/generate", prompt_body("word " * 600), base64_body=True)
    assert (await invoke(handler, big_b64))["statusCode"] == 413
    assert engine.started == []


async def test_unknown_route_is_404_listing_routes(http_handler):
    resp = await invoke(http_handler(), http_event("/v1/nothing", {}))
    assert resp["statusCode"] == 404
    assert "POST /v1/generate" in body_of(resp)["error"]["message"]


# --- router statuses --------------------------------------------------------------------


async def test_router_unreachable_is_503_with_message(runtimes):
    rt = Runtime(Settings.from_env({"HYBRID_ROUTER_ADDRESS": f"127.0.0.1:{free_port()}"}))
    runtimes.append(rt)
    resp = await invoke(make_http_handler(rt), http_event("/v1/generate", prompt_body()))
    assert resp["statusCode"] == 503
    err = body_of(resp)["error"]
    assert err["status"] == "UNAVAILABLE" and err["message"]


async def test_every_backend_failing_is_503_with_the_routers_message(
    model_server, start_router, runtimes
):
    engine = ScriptedEngine(fail_before_first_token="unavailable")
    router = await start_router([ms_backend("gpu-x", "gpu", await model_server(engine))])
    rt = runtime_for(router.port)
    runtimes.append(rt)
    resp = await invoke(make_http_handler(rt), http_event("/v1/generate", prompt_body()))
    assert resp["statusCode"] == 503
    body = body_of(resp)
    assert body["error"]["status"] == "UNAVAILABLE"
    assert "every candidate failed" in body["error"]["message"]
    assert "gpu-x" in body["error"]["message"]
    # What arrived before the failure (the decision) is returned too.
    assert body["partial"]["decision"]["backend"] == "gpu-x"


async def test_router_statuses_map_to_http(model_server, start_router, runtimes):
    engine = ScriptedEngine(reply_tokens=2, context_window=64)
    router = await start_router(
        [
            ms_backend(
                "edge-a",
                "edge",
                await model_server(engine),
                context_window=64,
                data_classes=["public"],
            )
        ]
    )
    rt = runtime_for(router.port)
    runtimes.append(rt)
    handler = make_http_handler(rt)

    # INVALID_ARGUMENT from the router itself (our schema lets an empty content through).
    resp = await invoke(handler, http_event("/v1/generate", prompt_body("")))
    assert resp["statusCode"] == 400
    assert body_of(resp)["error"]["message"] == "messages[0].content: must not be empty"

    # OUT_OF_RANGE, no context window big enough -> 413 with the router's numbers, and no
    # Retry-After: waiting does not make it fit.
    resp = await invoke(
        handler, http_event("/v1/generate", prompt_body("word " * 200, data_class="public"))
    )
    assert resp["statusCode"] == 413 and "Retry-After" not in resp["headers"]
    err = body_of(resp)["error"]
    assert err["status"] == "OUT_OF_RANGE" and "context window" in err["message"]

    # FAILED_PRECONDITION: no tier may take restricted data -> 422.
    resp = await invoke(
        handler, http_event("/v1/generate", prompt_body("hi", data_class="restricted"))
    )
    assert resp["statusCode"] == 422
    assert body_of(resp)["error"]["status"] == "FAILED_PRECONDITION"
    assert engine.started == []


async def test_deadline_follows_the_lambda_time_left(model_server, start_router, runtimes):
    slow = ScriptedEngine(ttft_ms=20_000)
    router = await start_router(
        [ms_backend("slow", "gpu", await model_server(slow))],
        policy={"ttft_timeout_ms": 60_000},
    )
    rt = runtime_for(router.port, HYBRID_ROUTER_DEADLINE_MARGIN_MS="500")
    runtimes.append(rt)
    ctx = LambdaContext(timeout_s=2.0)
    resp = await invoke(make_http_handler(rt), http_event("/v1/generate", prompt_body()), ctx)
    err = body_of(resp)["error"]
    # The router enforces the deadline: DEADLINE_EXCEEDED (504), or, when its first-token
    # timeout (cut to the time left) fires first, UNAVAILABLE (503) saying so.
    assert (resp["statusCode"], err["status"]) in ((504, "DEADLINE_EXCEEDED"), (503, "UNAVAILABLE"))
    if err["status"] == "UNAVAILABLE":
        ms = int(re.search(r"no first token within (\d+) ms", err["message"]).group(1))  # type: ignore[union-attr]
        assert ms <= 1500
    # Answered before Lambda would have killed the invocation.
    assert ctx.get_remaining_time_in_millis() > 0


# --- credentials ------------------------------------------------------------------------


async def test_key_from_secrets_manager_authenticates_and_is_cached(
    aws_env, model_server, runtimes
):
    """A router with API keys on; the function reads its key from Secrets Manager (moto)
    once, sends it as 'authorization: Bearer', and re-reads it after UNAUTHENTICATED."""
    key = "hr_0123456789ab_" + "A" * 43
    digest = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    engine = ScriptedEngine(reply_tokens=2)
    cfg = parse_config(
        {
            "server": {"address": "127.0.0.1:0", "grace_period_s": 1},
            "policy": {"load_poll_interval_s": 0.05},
            "backends": [ms_backend("gpu-a", "gpu", await model_server(engine))],
            "auth": {
                "keys": [{"id": "0123456789ab", "tenant": "orchestrators", "hash": digest}],
                "tenants": [{"name": "orchestrators"}],
            },
        },
        source="test",
    )
    router = await create_server(cfg)
    try:
        sm = boto3.client("secretsmanager")
        secret = unique("router-key")
        sm.create_secret(Name=secret, SecretString=json.dumps({"api_key": key}))
        rt = runtime_for(router.port, HYBRID_ROUTER_API_KEY_SECRET=secret)
        runtimes.append(rt)
        handler = make_http_handler(rt)
        for _ in range(2):
            resp = await invoke(handler, http_event("/v1/generate", prompt_body()))
            assert resp["statusCode"] == 200, resp["body"]
        assert rt.api_key.fetches == 1

        # Rotated to a value the router does not know: 401 with the router's message,
        # and the cached value is dropped so the next request reads the secret again.
        sm.put_secret_value(SecretId=secret, SecretString="hr_0123456789ab_" + "B" * 43)
        rt.api_key.invalidate()
        resp = await invoke(handler, http_event("/v1/generate", prompt_body()))
        assert resp["statusCode"] == 401
        assert body_of(resp)["error"]["status"] == "UNAUTHENTICATED"
        sm.put_secret_value(SecretId=secret, SecretString=key)
        resp = await invoke(handler, http_event("/v1/generate", prompt_body()))
        assert resp["statusCode"] == 200, resp["body"]
        assert rt.api_key.fetches == 3
    finally:
        await router.stop(0)


async def test_unreadable_secret_is_500_without_leaking_details(aws_env, runtimes, gpu_router):
    rt = runtime_for(gpu_router[1].port, HYBRID_ROUTER_API_KEY_SECRET=unique("missing"))
    runtimes.append(rt)
    resp = await invoke(make_http_handler(rt), http_event("/v1/generate", prompt_body()))
    assert resp["statusCode"] == 500
    assert "router credentials" in body_of(resp)["error"]["message"]


def test_grpc_is_the_sync_api() -> None:
    """The handler's channel is a sync grpc.Channel (a grpc.aio channel made at init would
    break across invocations that each run their own event loop)."""
    rt = Runtime(Settings.from_env({"HYBRID_ROUTER_ADDRESS": "127.0.0.1:1"}))
    try:
        assert isinstance(rt.client.channel, grpc.Channel)
        assert not isinstance(rt.client.channel, grpc.aio.Channel)
    finally:
        rt.close()


ENTRY_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import lambda_edge.entry_http as entry          # Lambda's init phase
init_ms = (time.perf_counter() - t0) * 1000
from lambda_events import LambdaContext, http_event, prompt_body
channel = entry.runtime.client.channel
out = []
for i in range(3):
    resp = entry.handler(http_event("/v1/generate", prompt_body(f"n{i}")), LambdaContext())
    out.append([resp["statusCode"], entry.runtime.client.channel is channel])
print(json.dumps({"init_ms": init_ms, "calls": out}))
"""


async def test_entry_module_builds_at_init_and_reuses_the_channel(gpu_router):
    """The real entry point, as Lambda loads it: the environment is read and the channel
    made during the import (init); three invocations reuse it."""
    _, router = gpu_router
    env = {
        **os.environ,
        "HYBRID_ROUTER_ADDRESS": f"127.0.0.1:{router.port}",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "PYTHONPATH": str(Path(__file__).resolve().parent),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ENTRY_SCRIPT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["calls"] == [[200, True]] * 3
    assert result["init_ms"] > 0


async def test_entry_module_fails_init_with_a_clear_message():
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRID_ROUTER")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import lambda_edge.entry_http", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode != 0
    assert "HYBRID_ROUTER_ADDRESS is not set" in err.decode()
