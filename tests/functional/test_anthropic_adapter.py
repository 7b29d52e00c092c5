"""The Anthropic Messages adapter against a local Anthropic wire server, and its API key
from AWS Secrets Manager (a real ``moto_server`` process).

``anthropic_wire.AnthropicWire`` speaks the Messages API's SSE stream over real HTTP; the
official ``anthropic`` SDK is run against it too, so the server is checked by a client we
did not write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import boto3
import pytest
from anthropic_wire import AnthropicWire, Scenario
from awsenv import aws_env, moto_server  # noqa: F401  (fixtures)
from testkit import FakeClock, collect_chunks, collect_failure

from router.backends import create_backend
from router.backends.anthropic import AnthropicBackend
from router.backends.openai_compat import OpenAIBackend
from router.backends.secrets import SecretsManagerKey
from router.config import BackendConfig
from router.errors import BackendError, ConfigError, ErrorClass
from router.types import BackendCall, Chunk, FinishReason, InferenceRequest, Message, Role, Sampling

TIMEOUT = 20.0
MODEL = "claude-haiku-test"
KEY = "sk-ant-test-0123456789"


@pytest.fixture
async def wire() -> AsyncIterator[AnthropicWire]:
    async with AnthropicWire() as server:
        yield server  # type: ignore[misc]


def config(endpoint: str, model: str = MODEL, **kw: Any) -> BackendConfig:
    fields: dict[str, Any] = {
        "name": "claude-a",
        "tier": "hosted",
        "kind": "anthropic",
        "endpoint": endpoint,
        "model": model,
        "context_window": 200_000,
        "timeout_s": 10.0,
    }
    if "api_key_secret" not in kw:
        fields["api_key_env"] = "ANTHROPIC_TEST_KEY"
    fields.update(kw)
    return BackendConfig(**fields)


@contextlib.asynccontextmanager
async def backend_for(
    endpoint: str, model: str = MODEL, environ: dict[str, str] | None = None, **kw: Any
) -> AsyncIterator[AnthropicBackend]:
    env = {"ANTHROPIC_TEST_KEY": KEY} if environ is None else environ
    backend = create_backend(config(endpoint, model, **kw), environ=env)
    assert isinstance(backend, AnthropicBackend)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def call(*messages: Message, max_tokens: int = 64, sampling: Sampling | None = None) -> BackendCall:
    msgs = messages or (Message(Role.SYSTEM, "Be brief."), Message(Role.USER, "Say hello"))
    request = InferenceRequest(
        messages=msgs,
        max_output_tokens=max_tokens,
        request_id="req-1",
        sampling=sampling or Sampling(),
    )
    return BackendCall(request=request)


# --- the normal stream ----------------------------------------------------------------


async def test_streams_deltas_then_usage_and_sends_the_messages_request(
    wire: AnthropicWire,
) -> None:
    sampling = Sampling(temperature=0.2, top_k=40, seed=3, stop=("###",))
    messages = (
        Message(Role.SYSTEM, "Be brief."),
        Message(Role.SYSTEM, "Answer in English."),
        Message(Role.USER, "Say hello"),
        Message(Role.ASSISTANT, "Hi"),
        Message(Role.USER, "Again"),
    )
    async with backend_for(
        wire.url,
        environ={"ANTHROPIC_TEST_KEY": KEY, "BETA": "feature-2025-01-01"},
        headers={"anthropic-beta": "env:BETA"},
    ) as backend:
        chunks = await collect_chunks(backend, call(*messages, max_tokens=50, sampling=sampling))

    assert [c.text for c in chunks[:-1]] == ["Hello", ",", " world"]
    assert chunks[-1] == Chunk(
        done=True, input_tokens=25, output_tokens=3, finish_reason=FinishReason.STOP
    )
    (req,) = wire.requests
    assert req.headers["x-api-key"] == KEY
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert req.headers["anthropic-beta"] == "feature-2025-01-01"
    assert req.body == {
        "model": MODEL,
        "max_tokens": 50,
        "system": "Be brief.\n\nAnswer in English.",
        "messages": [
            {"role": "user", "content": "Say hello"},
            {"role": "assistant", "content": "Hi"},
            {"role": "user", "content": "Again"},
        ],
        "stream": True,
        "temperature": 0.2,
        "top_k": 40,
        "stop_sequences": ["###"],
    }  # no seed in the Messages API


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("end_turn", FinishReason.STOP),
        ("stop_sequence", FinishReason.STOP),
        ("max_tokens", FinishReason.LENGTH),
        ("model_context_window_exceeded", FinishReason.LENGTH),
        ("refusal", FinishReason.STOP),
    ],
)
async def test_stop_reasons(wire: AnthropicWire, stop: str, expected: FinishReason) -> None:
    wire.scenarios["m"] = Scenario(stop_reason=stop)
    async with backend_for(wire.url, "m") as backend:
        chunks = await collect_chunks(backend, call())
    assert chunks[-1].finish_reason is expected


# --- HTTP errors -------------------------------------------------------------------------

HTTP_ERRORS = [
    (429, "Number of request tokens has exceeded your per-minute rate limit",
     ErrorClass.RETRYABLE, "UNAVAILABLE"),
    (529, "Overloaded", ErrorClass.RETRYABLE, "UNAVAILABLE"),
    (500, "Internal server error", ErrorClass.RETRYABLE, "UNAVAILABLE"),
    (404, "model: claude-nope", ErrorClass.RETRYABLE, "UNAVAILABLE"),
    (401, "invalid x-api-key", ErrorClass.FATAL, "UNAUTHENTICATED"),
    (403, "Your API key does not have permission to use the specified resource.",
     ErrorClass.FATAL, "PERMISSION_DENIED"),
    (400, "prompt is too long: 210266 tokens > 200000 maximum", ErrorClass.TOO_LARGE,
     "UNAVAILABLE"),
    (400, "input length and `max_tokens` exceed context limit: 197687 + 8192 > 200000, "
     "decrease input length or `max_tokens` and try again", ErrorClass.TOO_LARGE, "UNAVAILABLE"),
    (413, "Request exceeds the maximum allowed number of bytes.", ErrorClass.TOO_LARGE,
     "UNAVAILABLE"),
    (400, "temperature: range: 0..1", ErrorClass.FATAL, "INVALID_ARGUMENT"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "message", "cls", "grpc_code"), HTTP_ERRORS)
async def test_http_errors_map_to_error_classes(
    wire: AnthropicWire, status: int, message: str, cls: ErrorClass, grpc_code: str
) -> None:
    wire.scenarios["m"] = Scenario(status=status, message=message)
    async with backend_for(wire.url, "m") as backend:
        got, err = await collect_failure(backend, call())
    assert got == []
    assert (err.error_class, err.grpc_code) == (cls, grpc_code)
    assert f"HTTP {status}" in err.reason and message[:20] in err.reason
    assert len(wire.requests) == 1


async def test_retry_after_is_read(wire: AnthropicWire) -> None:
    wire.scenarios["m"] = Scenario(status=429, message="slow down", headers=(("retry-after", "9"),))
    async with backend_for(wire.url, "m") as backend:
        _, err = await collect_failure(backend, call())
    assert err.error_class is ErrorClass.RETRYABLE and err.retry_after_s == 9.0


# --- failures inside the stream ---------------------------------------------------------


async def test_overloaded_error_mid_stream_is_retryable_with_its_type(wire: AnthropicWire) -> None:
    wire.scenarios["m"] = Scenario(
        deltas=("Once", " upon"), stream_error=("overloaded_error", "Overloaded")
    )
    async with backend_for(wire.url, "m") as backend:
        got, err = await collect_failure(backend, call())
    assert [c.text for c in got] == ["Once", " upon"]
    assert err.error_class is ErrorClass.RETRYABLE
    assert err.reason == "error in stream: overloaded_error: Overloaded"


async def test_a_stream_without_message_stop_is_retryable(wire: AnthropicWire) -> None:
    wire.scenarios["m"] = Scenario(send_message_stop=False)
    async with backend_for(wire.url, "m") as backend:
        got, err = await collect_failure(backend, call())
    assert [c.text for c in got] == ["Hello", ",", " world"]
    assert err.error_class is ErrorClass.RETRYABLE and "no message_stop" in err.reason


async def test_a_stream_cut_mid_way_is_retryable(wire: AnthropicWire) -> None:
    wire.scenarios["m"] = Scenario(deltas=("a", "b", "c"), cut_after=1)
    async with backend_for(wire.url, "m") as backend:
        got, err = await collect_failure(backend, call())
    assert [c.text for c in got] == ["a"]
    assert err.error_class is ErrorClass.RETRYABLE


async def test_cancelling_the_consumer_closes_the_connection(wire: AnthropicWire) -> None:
    wire.scenarios["m"] = Scenario(deltas=("tok",) * 2000, delta_interval_s=0.01)
    async with backend_for(wire.url, "m") as backend:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in backend.stream(call()):
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), TIMEOUT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (req,) = wire.requests
        await asyncio.wait_for(req.disconnected.wait(), TIMEOUT)
        assert not req.completed.is_set()


# --- configuration ------------------------------------------------------------------------


def test_a_key_is_required() -> None:
    with pytest.raises(ValueError) as info:
        BackendConfig(name="c", tier="hosted", kind="anthropic", model="m", context_window=1000)
    assert "api_key_env" in str(info.value) and "api_key_secret" in str(info.value)


def test_a_missing_key_variable_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as info:
        create_backend(config("http://127.0.0.1:1"), environ={})
    assert "ANTHROPIC_TEST_KEY" in str(info.value) and "api_key_env" in str(info.value)


def test_the_default_endpoint_is_anthropics() -> None:
    cfg = config("")
    backend = create_backend(cfg, environ={"ANTHROPIC_TEST_KEY": KEY})
    assert isinstance(backend, AnthropicBackend)
    assert backend._url == "https://api.anthropic.com/v1/messages"


# --- the key in Secrets Manager (moto server) ------------------------------------------------


@pytest.fixture
def secrets(aws_env: None, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:  # noqa: F811
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_server)
    client = boto3.client("secretsmanager", region_name="eu-west-1")
    yield client
    for page in client.get_paginator("list_secrets").paginate():
        for s in page["SecretList"]:
            client.delete_secret(SecretId=s["ARN"], ForceDeleteWithoutRecovery=True)
    client.close()


async def test_the_key_comes_from_secrets_manager_and_is_cached(
    wire: AnthropicWire, secrets: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets.create_secret(Name="router/anthropic", SecretString=json.dumps({"api_key": KEY}))
    caplog.clear()  # the test's own CreateSecret call is not the router's to log
    wire.valid_keys = {KEY}
    async with backend_for(
        wire.url,
        environ={},
        api_key_secret="router/anthropic",
        api_key_secret_field="api_key",
        region="eu-west-1",
    ) as backend:
        for _ in range(3):
            chunks = await collect_chunks(backend, call())
            assert chunks[-1].done
        assert backend._secret is not None and backend._secret.fetches == 1
    assert [r.headers["x-api-key"] for r in wire.requests] == [KEY] * 3
    assert KEY not in caplog.text


async def test_a_rotated_key_is_fetched_again_after_a_401(
    wire: AnthropicWire, secrets: Any
) -> None:
    arn = secrets.create_secret(Name="router/rotating", SecretString="old-key")["ARN"]
    wire.valid_keys = {"old-key"}
    async with backend_for(wire.url, environ={}, api_key_secret=arn, region="eu-west-1") as backend:
        assert (await collect_chunks(backend, call()))[-1].done
        secrets.put_secret_value(SecretId=arn, SecretString="new-key")
        wire.valid_keys = {"new-key"}
        _, err = await collect_failure(backend, call())  # the cached old key is refused once...
        assert err.grpc_code == "UNAUTHENTICATED"
        assert (await collect_chunks(backend, call()))[-1].done  # ...then the new one is used
    assert [r.headers["x-api-key"] for r in wire.requests] == ["old-key", "old-key", "new-key"]


async def test_the_cache_expires_after_the_ttl(secrets: Any) -> None:
    secrets.create_secret(Name="ttl", SecretString="v1")
    clock = FakeClock(0.0)
    key = SecretsManagerKey("ttl", backend="b", region="eu-west-1", ttl_s=60, clock=clock)
    assert await key.get() == "v1"
    secrets.put_secret_value(SecretId="ttl", SecretString="v2")
    clock.advance(59.0)
    assert await key.get() == "v1"
    clock.advance(2.0)  # 61 s: past the TTL
    assert await key.get() == "v2"
    assert key.fetches == 2
    assert "v2" not in repr(key)


async def test_a_missing_secret_is_a_config_error_at_start(
    wire: AnthropicWire, secrets: Any
) -> None:
    backend = create_backend(
        config(wire.url, api_key_secret="router/nope", region="eu-west-1"), environ={}
    )
    with pytest.raises(ConfigError) as info:
        await backend.start()
    message = str(info.value)
    assert "api_key_secret" in message and "router/nope" in message
    assert "ResourceNotFoundException" in message
    await backend.close()


async def test_a_secret_that_is_not_the_expected_json_says_so(secrets: Any) -> None:
    secrets.create_secret(Name="plain", SecretString="just-a-key")
    key = SecretsManagerKey("plain", backend="b", field="api_key", region="eu-west-1")
    with pytest.raises(BackendError) as info:
        await key.get()
    assert "api_key_secret_field" in info.value.reason
    assert "just-a-key" not in info.value.reason


async def test_openai_backends_can_take_their_key_from_secrets_manager(secrets: Any) -> None:
    from openai_wire import serve_wire

    secrets.create_secret(Name="router/openai", SecretString="sk-from-secrets")
    async with serve_wire() as oa:
        cfg = BackendConfig(
            name="oa",
            tier="hosted",
            kind="openai",
            endpoint=oa.base_url,
            model="wire",
            context_window=8192,
            api_key_secret="router/openai",
            region="eu-west-1",
        )
        backend = create_backend(cfg, environ={})
        assert isinstance(backend, OpenAIBackend)
        await backend.start()
        try:
            chunks = await collect_chunks(backend, call())
        finally:
            await backend.close()
    assert chunks[-1].done
    assert oa.requests[0].headers["authorization"] == "Bearer sk-from-secrets"


# --- the official SDK against the wire server ------------------------------------------------


async def test_the_official_anthropic_sdk_reads_the_wire_server(wire: AnthropicWire) -> None:
    client = anthropic.AsyncAnthropic(base_url=wire.url, api_key=KEY, max_retries=0)
    try:
        async with client.messages.stream(
            model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "Say hello"}]
        ) as stream:
            texts = [t async for t in stream.text_stream]
            final = await stream.get_final_message()
        assert texts == ["Hello", ",", " world"]
        assert final.stop_reason == "end_turn"
        assert (final.usage.input_tokens, final.usage.output_tokens) == (25, 3)
        assert final.content[0].type == "text" and final.content[0].text == "Hello, world"

        wire.scenarios["busy"] = Scenario(
            status=429, message="slow", headers=(("retry-after", "3"),)
        )
        with pytest.raises(anthropic.RateLimitError):
            await client.messages.create(
                model="busy", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )
        wire.scenarios["over"] = Scenario(status=529, message="Overloaded")
        with pytest.raises(anthropic.InternalServerError) as over:
            await client.messages.create(
                model="over", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )
        assert over.value.status_code == 529
        wire.scenarios["long"] = Scenario(status=400, message="prompt is too long: 3 > 2")
        with pytest.raises(anthropic.BadRequestError) as bad:
            await client.messages.create(
                model="long", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )
        assert "prompt is too long" in str(bad.value)
        wire.scenarios["mid"] = Scenario(
            deltas=("partial",), stream_error=("overloaded_error", "Overloaded")
        )
        with pytest.raises(anthropic.APIStatusError) as mid:
            async with client.messages.stream(
                model="mid", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            ) as s:
                async for _ in s.text_stream:
                    pass
        assert "overloaded_error" in str(mid.value)
    finally:
        await client.close()
    sent = wire.requests[0].headers
    # The SDK sends the key as x-api-key (the documented header) or, in recent versions,
    # as a bearer token; the wire server accepts both.
    assert sent.get("x-api-key") == KEY or sent.get("authorization") == f"Bearer {KEY}"
    assert sent["anthropic-version"]  # the SDK pins its own API version
