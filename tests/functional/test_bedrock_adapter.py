"""The Bedrock adapter (boto3 ``bedrock-runtime``) against a local Bedrock wire server.

``bedrock_wire.BedrockWire`` speaks ConverseStream's binary event stream over real HTTP;
the adapter's real boto3 client has its ``endpoint_url`` pointed at it, signs with SigV4
from the standard credential chain (fake keys in the environment) and parses every frame
with botocore. A plain boto3 client is driven against the same server too, so the server
is checked by AWS's own parser, not only by our adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import grpc
import pytest
from awsenv import aws_env  # noqa: F401  (fixture)
from bedrock_wire import BedrockWire, Scenario
from httpwire import Recorded
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from rtutil import stub_for, user_request
from testkit import FakeClock, collect_chunks, collect_failure, wait_until

from router.backends import create_backend
from router.backends.bedrock import BedrockBackend, error_for
from router.config import BackendConfig, parse_config
from router.errors import BackendError, ConfigError, ErrorClass
from router.server.app import RouterServer, create_server
from router.telemetry.observer import Telemetry
from router.types import BackendCall, Chunk, FinishReason, InferenceRequest, Message, Role, Sampling

TIMEOUT = 20.0
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"

pytestmark = pytest.mark.usefixtures("aws_env")


@pytest.fixture
async def wire() -> AsyncIterator[BedrockWire]:
    async with BedrockWire() as server:
        yield server  # type: ignore[misc]


def config(endpoint: str, model: str = MODEL, **kw: Any) -> BackendConfig:
    fields: dict[str, Any] = {
        "name": "bedrock-a",
        "tier": "hosted",
        "kind": "bedrock",
        "endpoint": endpoint,
        "region": "us-west-2",
        "model": model,
        "context_window": 200_000,
        "timeout_s": 10.0,
    }
    fields.update(kw)
    return BackendConfig(**fields)


@contextlib.asynccontextmanager
async def backend_for(
    endpoint: str, model: str = MODEL, **kw: Any
) -> AsyncIterator[BedrockBackend]:
    backend = create_backend(config(endpoint, model, **kw), environ={})
    assert isinstance(backend, BedrockBackend)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def call(
    *messages: Message,
    max_tokens: int = 64,
    sampling: Sampling | None = None,
    deadline: float | None = None,
) -> BackendCall:
    msgs = messages or (Message(Role.SYSTEM, "Be brief."), Message(Role.USER, "Say hello"))
    request = InferenceRequest(
        messages=msgs,
        max_output_tokens=max_tokens,
        request_id="req-1",
        sampling=sampling or Sampling(),
    )
    return BackendCall(request=request, deadline=deadline)


# --- the normal stream ----------------------------------------------------------------


async def test_streams_deltas_then_usage_and_sends_the_converse_request(wire: BedrockWire) -> None:
    sampling = Sampling(temperature=0.3, top_p=0.8, top_k=40, seed=1, stop=("\n\n",))
    messages = (
        Message(Role.SYSTEM, "Be brief."),
        Message(Role.USER, "first"),
        Message(Role.USER, "second"),
        Message(Role.ASSISTANT, "ok"),
        Message(Role.USER, "third"),
    )
    async with backend_for(wire.url) as backend:
        chunks = await collect_chunks(backend, call(*messages, max_tokens=32, sampling=sampling))

    assert [c.text for c in chunks[:-1]] == ["Hello", ",", " world"]
    assert all(c.tokens >= 1 and not c.done for c in chunks[:-1])
    assert chunks[-1] == Chunk(
        done=True, input_tokens=12, output_tokens=3, finish_reason=FinishReason.STOP
    )
    (req,) = wire.requests
    assert req.path == "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
    auth = req.headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDTESTTESTTESTTEST/")
    assert "/us-west-2/bedrock/aws4_request" in auth
    assert req.body == {
        "system": [{"text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [{"text": "first"}, {"text": "second"}]},
            {"role": "assistant", "content": [{"text": "ok"}]},
            {"role": "user", "content": [{"text": "third"}]},
        ],
        "inferenceConfig": {
            "maxTokens": 32,
            "temperature": 0.3,
            "topP": 0.8,
            "stopSequences": ["\n\n"],
        },
    }  # top_k and seed are model-specific: not sent


async def test_converse_without_streaming_gives_one_delta_and_usage(wire: BedrockWire) -> None:
    async with backend_for(wire.url, streaming=False) as backend:
        chunks = await collect_chunks(backend, call())
    assert [c.text for c in chunks[:-1]] == ["Hello, world"]
    assert chunks[-1] == Chunk(
        done=True, input_tokens=12, output_tokens=3, finish_reason=FinishReason.STOP
    )
    assert wire.requests[0].path.endswith("/converse")


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("end_turn", FinishReason.STOP),
        ("stop_sequence", FinishReason.STOP),
        ("max_tokens", FinishReason.LENGTH),
        ("model_context_window_exceeded", FinishReason.LENGTH),
        ("guardrail_intervened", FinishReason.STOP),
    ],
)
async def test_stop_reasons(wire: BedrockWire, stop: str, expected: FinishReason) -> None:
    wire.scenarios["m"] = Scenario(stop_reason=stop)
    async with backend_for(wire.url, "m") as backend:
        chunks = await collect_chunks(backend, call())
    assert chunks[-1].finish_reason is expected


async def test_no_metadata_event_leaves_usage_to_the_router(wire: BedrockWire) -> None:
    wire.scenarios["m"] = Scenario(usage=None, deltas=("abcdef", "ghi"))
    async with backend_for(wire.url, "m") as backend:
        chunks = await collect_chunks(backend, call())
    assert chunks[-1].done and (chunks[-1].input_tokens, chunks[-1].output_tokens) == (None, None)
    assert [c.tokens for c in chunks[:-1]] == [2, 1]  # ceil(chars / 3)


# --- errors -----------------------------------------------------------------------------

HTTP_ERRORS = [
    # (status, code, message, class, grpc code)
    (429, "ThrottlingException", "Too many requests, please wait before trying again.",
     ErrorClass.RETRYABLE, "UNAVAILABLE"),
    (503, "ServiceUnavailableException", "Service unavailable", ErrorClass.RETRYABLE,
     "UNAVAILABLE"),
    (429, "ModelNotReadyException", "Model is not ready", ErrorClass.RETRYABLE, "UNAVAILABLE"),
    (500, "InternalServerException", "Internal error", ErrorClass.RETRYABLE, "UNAVAILABLE"),
    (408, "ModelTimeoutException", "Model timed out", ErrorClass.RETRYABLE, "UNAVAILABLE"),
    (424, "ModelErrorException", "The model failed", ErrorClass.RETRYABLE, "UNAVAILABLE"),
    (404, "ResourceNotFoundException", "Model not found", ErrorClass.RETRYABLE, "UNAVAILABLE"),
    (400, "ValidationException", "Input is too long for requested model.",
     ErrorClass.TOO_LARGE, "UNAVAILABLE"),
    (400, "ValidationException",
     "The model returned the following errors: prompt is too long: 903884 tokens > 200000 "
     "maximum", ErrorClass.TOO_LARGE, "UNAVAILABLE"),
    (400, "ValidationException",
     "The model returned the following errors: input length and `max_tokens` exceed context "
     "limit: 197000 + 8192 > 200000", ErrorClass.TOO_LARGE, "UNAVAILABLE"),
    (400, "ValidationException", "1 validation error detected: Value at 'inferenceConfig."
     "temperature' failed to satisfy constraint", ErrorClass.FATAL, "INVALID_ARGUMENT"),
    (403, "AccessDeniedException", "You don't have access to the model with the specified "
     "model ID.", ErrorClass.FATAL, "PERMISSION_DENIED"),
    (403, "UnrecognizedClientException", "The security token included in the request is "
     "invalid.", ErrorClass.FATAL, "UNAUTHENTICATED"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "code", "message", "cls", "grpc_code"), HTTP_ERRORS)
async def test_http_errors_map_to_error_classes(
    wire: BedrockWire, status: int, code: str, message: str, cls: ErrorClass, grpc_code: str
) -> None:
    wire.scenarios["m"] = Scenario(status=status, error_code=code, message=message)
    async with backend_for(wire.url, "m") as backend:
        got, err = await collect_failure(backend, call())
    assert got == []
    assert err.error_class is cls
    assert err.grpc_code == grpc_code
    assert code in err.reason and message[:20] in err.reason
    assert not isinstance(err.__cause__, BackendError)
    assert len(wire.requests) == 1  # botocore's own retries are off


async def test_throttling_with_retry_after_is_honoured(wire: BedrockWire) -> None:
    wire.scenarios["m"] = Scenario(
        status=429,
        error_code="ThrottlingException",
        message="Too many requests",
        headers=(("Retry-After", "12"),),
    )
    async with backend_for(wire.url, "m") as backend:
        _, err = await collect_failure(backend, call())
    assert err.error_class is ErrorClass.RETRYABLE and err.retry_after_s == 12.0


@pytest.mark.parametrize(
    ("exception", "message", "cls"),
    [
        ("modelStreamErrorException", "The model stream failed", ErrorClass.RETRYABLE),
        ("throttlingException", "Too many tokens", ErrorClass.RETRYABLE),
        ("internalServerException", "oops", ErrorClass.RETRYABLE),
        ("serviceUnavailableException", "unavailable", ErrorClass.RETRYABLE),
        ("validationException", "Input is too long for requested model.", ErrorClass.TOO_LARGE),
    ],
)
async def test_exceptions_inside_the_event_stream(
    wire: BedrockWire, exception: str, message: str, cls: ErrorClass
) -> None:
    wire.scenarios["m"] = Scenario(deltas=("partial",), stream_exception=(exception, message))
    async with backend_for(wire.url, "m") as backend:
        got, err = await collect_failure(backend, call())
    assert [c.text for c in got] == ["partial"]
    assert err.error_class is cls
    assert message in err.reason
    assert err.reason.startswith(exception[:1].upper() + exception[1:])


async def test_a_stream_cut_mid_way_is_retryable(wire: BedrockWire) -> None:
    wire.scenarios["m"] = Scenario(deltas=("one", " two", " three"), cut_after=2)
    async with backend_for(wire.url, "m") as backend:
        got, err = await collect_failure(backend, call())
    assert [c.text for c in got] == ["one", " two"]
    assert err.error_class is ErrorClass.RETRYABLE


async def test_a_stream_without_message_stop_is_retryable(wire: BedrockWire) -> None:
    wire.scenarios["m"] = Scenario(send_message_stop=False, usage=None)
    async with backend_for(wire.url, "m") as backend:
        got, err = await collect_failure(backend, call())
    assert [c.text for c in got] == ["Hello", ",", " world"]
    assert err.error_class is ErrorClass.RETRYABLE and "stream ended early" in err.reason


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with backend_for(f"http://127.0.0.1:{port}") as backend:
        _, err = await collect_failure(backend, call())
    assert err.error_class is ErrorClass.RETRYABLE
    assert "EndpointConnectionError" in err.reason


async def test_a_read_timeout_is_retryable(wire: BedrockWire) -> None:
    wire.scenarios["m"] = Scenario(first_event_delay_s=30.0)
    async with backend_for(wire.url, "m", timeout_s=0.5) as backend:
        _, err = await collect_failure(backend, call())
    assert err.error_class is ErrorClass.RETRYABLE and "timed out" in err.reason


async def test_no_credentials_is_retryable_and_says_where_they_come_from(
    wire: BedrockWire, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    async with backend_for(wire.url) as backend:
        _, err = await collect_failure(backend, call())
    assert err.error_class is ErrorClass.RETRYABLE
    assert "no AWS credentials" in err.reason
    assert wire.requests == []


async def test_no_region_is_a_config_error_naming_the_key(wire: BedrockWire) -> None:
    backend = create_backend(config(wire.url, region=""), environ={})
    with pytest.raises(ConfigError) as info:
        await backend.start()
    assert "region" in str(info.value) and "AWS_REGION" in str(info.value)


def test_error_codes_from_the_event_stream_and_http_agree() -> None:
    a = error_for("b", "throttlingException", "slow down", None)
    b = error_for("b", "ThrottlingException", "slow down", 429)
    assert (a.error_class, a.reason) == (b.error_class, b.reason)
    assert error_for("b", "SomethingNew", "x", 502).error_class is ErrorClass.RETRYABLE
    assert error_for("b", "SomethingNew", "x", 400).grpc_code == "INVALID_ARGUMENT"


# --- deadline and cancellation ------------------------------------------------------------


async def test_the_deadline_bounds_a_stalled_stream(wire: BedrockWire) -> None:
    clock = FakeClock(0.0)
    wire.scenarios["m"] = Scenario(deltas=("first", "never"), delta_interval_s=60.0)
    cfg = config(wire.url, "m", timeout_s=120.0)
    backend = BedrockBackend(cfg.to_spec(), cfg, clock=clock)
    await backend.start()
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
    assert info.value.reason == "deadline exceeded"
    await asyncio.wait_for(wire.requests[0].disconnected.wait(), TIMEOUT)


async def test_cancelling_the_consumer_drops_the_connection(wire: BedrockWire) -> None:
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


async def test_closing_while_the_first_event_is_awaited_drops_the_connection(
    wire: BedrockWire,
) -> None:
    # The worker thread is blocked reading the socket: closing must wake it.
    wire.scenarios["m"] = Scenario(first_event_delay_s=60.0)
    async with backend_for(wire.url, "m", timeout_s=120.0) as backend:
        stream = backend.stream(call())
        pending = asyncio.ensure_future(anext(stream))
        await wait_until(lambda: wire.requests, "the request at the server", timeout_s=TIMEOUT)
        await asyncio.sleep(0.2)
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        await stream.aclose()  # type: ignore[attr-defined]
        # well before the 120 s read timeout: the socket was shut down, not timed out
        await asyncio.wait_for(wire.requests[0].disconnected.wait(), TIMEOUT)
        # the backend still serves the next request
        wire.scenarios["m"] = Scenario()
        chunks = await collect_chunks(backend, call())
    assert chunks[-1].done


# --- boto3 imported lazily ------------------------------------------------------------------


def test_the_router_does_not_import_boto3_until_a_bedrock_backend_starts() -> None:
    code = (
        "import sys\n"
        "import router.server.app, router.backends, router.backends.bedrock\n"
        "import router.backends.anthropic, router.backends.openai_compat\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- botocore itself reads the wire server --------------------------------------------------


async def test_botocore_parses_the_wire_server(wire: BedrockWire) -> None:
    wire.scenarios["thr"] = Scenario(status=429, error_code="ThrottlingException", message="x")
    wire.scenarios["exc"] = Scenario(
        deltas=("a",), stream_exception=("modelStreamErrorException", "boom")
    )
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=wire.url,
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )
    msgs = [{"role": "user", "content": [{"text": "hi"}]}]

    def events(model: str) -> list[dict[str, Any]]:
        return list(client.converse_stream(modelId=model, messages=msgs)["stream"])

    got = await asyncio.to_thread(events, MODEL)
    assert [next(iter(e)) for e in got] == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert got[1]["contentBlockDelta"] == {"delta": {"text": "Hello"}, "contentBlockIndex": 0}
    assert got[-1]["metadata"]["usage"] == {"inputTokens": 12, "outputTokens": 3, "totalTokens": 15}
    with pytest.raises(client.exceptions.ThrottlingException):
        await asyncio.to_thread(events, "thr")
    with pytest.raises(botocore.exceptions.EventStreamError) as info:
        await asyncio.to_thread(events, "exc")
    assert info.value.response["Error"] == {"Code": "modelStreamErrorException", "Message": "boom"}
    whole = await asyncio.to_thread(lambda: client.converse(modelId=MODEL, messages=msgs))
    assert whole["output"]["message"]["content"] == [{"text": "Hello, world"}]
    assert whole["stopReason"] == "end_turn" and whole["usage"]["outputTokens"] == 3
    client.close()


# --- W3C trace context ------------------------------------------------------------------------

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def sigv4_checks_out(req: Recorded, url: str) -> list[str]:
    """Recompute the request's SigV4 signature with botocore from what the server received
    (the headers it names as signed, the body, the time it names); the signed headers."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    fields = req.headers["authorization"].split(" ", 1)[1]
    parts = dict(p.strip().split("=", 1) for p in fields.split(","))
    signed = parts["SignedHeaders"].split(";")
    scope = parts["Credential"].split("/")  # key id / date / region / service / aws4_request
    aws = AWSRequest(
        method=req.method,
        url=url + req.path,
        data=req.raw_body,
        headers={name: req.headers[name] for name in signed},
    )
    aws.context["timestamp"] = req.headers["x-amz-date"]
    signer = SigV4Auth(
        Credentials("AKIDTESTTESTTESTTEST", "test-secret-key-not-real"), scope[3], scope[2]
    )
    string_to_sign = signer.string_to_sign(aws, signer.canonical_request(aws))
    assert signer.signature(string_to_sign, aws) == parts["Signature"]
    return signed


@pytest.mark.parametrize("streaming", [True, False])
async def test_the_attempts_trace_context_goes_out_as_headers_and_sigv4_holds(
    wire: BedrockWire, streaming: bool
) -> None:
    traced = call()
    traced = BackendCall(
        request=traced.request,
        deadline=None,
        metadata=(("traceparent", TRACEPARENT), ("tracestate", "vendor=1")),
    )
    async with backend_for(wire.url, streaming=streaming) as backend:
        await collect_chunks(backend, traced)
        await collect_chunks(backend, call())  # the next call on the same client has none

    first, second = wire.requests
    assert first.headers["traceparent"] == TRACEPARENT
    assert first.headers["tracestate"] == "vendor=1"
    assert "traceparent" not in second.headers and "tracestate" not in second.headers
    for req in (first, second):
        signed = sigv4_checks_out(req, wire.url)
        assert "host" in signed and "x-amz-date" in signed
        assert "traceparent" not in signed  # botocore leaves trace headers unsigned


async def _router_with_bedrock(wire: BedrockWire, telemetry: Telemetry | None) -> RouterServer:
    cfg = parse_config(
        {
            "server": {"address": "127.0.0.1:0", "grace_period_s": 1},
            "backends": [
                {
                    "name": "bedrock-a",
                    "tier": "hosted",
                    "kind": "bedrock",
                    "endpoint": wire.url,
                    "region": "us-west-2",
                    "model": MODEL,
                    "context_window": 200_000,
                }
            ],
        },
        source="test",
    )
    kwargs: dict[str, Any] = {} if telemetry is None else {"telemetry": telemetry}
    return await create_server(cfg, **kwargs)


async def _generate(router: RouterServer, metadata: tuple[tuple[str, str], ...] = ()) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as ch:
        events = [ev async for ev in stub_for(ch).Generate(user_request("hi"), metadata=metadata)]
    assert events[-1].usage.complete and events[-1].usage.backend == "bedrock-a"


async def test_the_router_sends_its_client_spans_traceparent_to_bedrock(
    wire: BedrockWire,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    router = await _router_with_bedrock(wire, Telemetry(tracer=provider.get_tracer("t")))
    try:
        await _generate(router, (("traceparent", TRACEPARENT),))
    finally:
        await router.stop(0)

    (attempt,) = [s for s in exporter.get_finished_spans() if s.name == "hybrid_router.attempt"]
    assert attempt.kind is SpanKind.CLIENT
    (req,) = wire.requests
    assert req.headers["traceparent"] == f"00-{TRACE_ID}-{attempt.context.span_id:016x}-01"
    sigv4_checks_out(req, wire.url)


async def test_without_tracing_bedrock_gets_no_traceparent_or_the_callers_unchanged(
    wire: BedrockWire,
) -> None:
    router = await _router_with_bedrock(wire, None)  # telemetry.tracing.exporter: none
    try:
        await _generate(router)
        await _generate(router, (("traceparent", TRACEPARENT),))
    finally:
        await router.stop(0)

    untraced, forwarded = wire.requests
    assert "traceparent" not in untraced.headers
    assert forwarded.headers["traceparent"] == TRACEPARENT
