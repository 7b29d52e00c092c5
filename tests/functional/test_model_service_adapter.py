"""The ModelService adapter against real grpc.aio servers on 127.0.0.1.

Mostly the real ``serving.model_server`` over the scripted engine (the ``model_server``
fixture in conftest.py); a small test servicer covers statuses and stream shapes that
server never produces.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from hybrid_router.v1 import model_service_pb2 as pb
from hybrid_router.v1 import model_service_pb2_grpc, types_pb2
from testkit import collect, collect_chunks, collect_failure, wait_until

from router.backends import create_backend
from router.backends.model_service import ModelServiceBackend
from router.config import BackendConfig, PolicyConfig
from router.errors import BackendError, ErrorClass
from router.registry import BackendRegistry
from router.types import (
    BackendCall,
    Chunk,
    FinishReason,
    InferenceRequest,
    Message,
    Role,
    Sampling,
)
from serving.engines.scripted import ScriptedEngine, count_scripted_tokens
from serving.model_server import create_server as create_model_server

TIMEOUT = 20.0


def spec_config(endpoint: str, **kw: object) -> BackendConfig:
    fields: dict[str, object] = {
        "name": "gpu-a",
        "tier": "gpu",
        "kind": "model_service",
        "endpoint": endpoint,
        "model": "scripted",
        "context_window": 8192,
    }
    fields.update(kw)
    return BackendConfig(**fields)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def backend_for(endpoint: str, timeout_s: float = 30.0) -> AsyncIterator[ModelServiceBackend]:
    backend = ModelServiceBackend(spec_config(endpoint).to_spec(), timeout_s=timeout_s)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def call(
    text: str = "hello world",
    *,
    max_tokens: int = 5,
    request_id: str = "req-1",
    sampling: Sampling | None = None,
    deadline: float | None = None,
) -> BackendCall:
    request = InferenceRequest(
        messages=(Message(Role.SYSTEM, "Be brief."), Message(Role.USER, text)),
        max_output_tokens=max_tokens,
        request_id=request_id,
        sampling=sampling or Sampling(),
        tenant="acme",
    )
    return BackendCall(request=request, deadline=deadline)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the normal stream --------------------------------------------------------------------


async def test_streams_deltas_then_usage(model_server) -> None:
    engine = ScriptedEngine()
    endpoint = await model_server(engine)
    async with backend_for(endpoint) as backend:
        chunks = await collect_chunks(backend, call("hello world", max_tokens=5))
    # The server may merge tokens that arrive while its write is pending (source-side
    # coalescing): the text is intact and each chunk counts the words it carries.
    assert "".join(c.text for c in chunks[:-1]) == "hello world hello world hello"
    assert all(c.text and c.tokens == len(c.text.split()) for c in chunks[:-1])
    assert sum(c.tokens for c in chunks[:-1]) == 5
    expected_input = count_scripted_tokens((("system", "Be brief."), ("user", "hello world")))
    final = chunks[-1]
    assert final.queue_ms is not None and final.queue_ms >= 0
    assert final == Chunk(
        done=True,
        input_tokens=expected_input,
        output_tokens=5,
        finish_reason=FinishReason.LENGTH,
        queue_ms=final.queue_ms,
    )
    assert engine.started == ["req-1"]
    # the consumer read to the end: nothing was cancelled
    assert engine.cancelled == []


async def test_stop_string_and_short_answer_finish_with_stop(model_server) -> None:
    engine = ScriptedEngine()
    endpoint = await model_server(engine)
    async with backend_for(endpoint) as backend:
        chunks = await collect_chunks(
            backend, call("one two three four", max_tokens=10, sampling=Sampling(stop=("three",)))
        )
    assert "".join(c.text for c in chunks) == "one two "
    assert chunks[-1].finish_reason is FinishReason.STOP
    assert chunks[-1].output_tokens == 3


async def test_the_factory_builds_a_working_model_service_backend(model_server) -> None:
    endpoint = await model_server(ScriptedEngine(reply_tokens=2))
    backend = create_backend(spec_config(endpoint, timeout_s=5.0), environ={})
    assert isinstance(backend, ModelServiceBackend)
    await backend.start()
    try:
        chunks = await collect_chunks(backend, call())
    finally:
        await backend.close()
    assert chunks[-1].finish_reason is FinishReason.STOP and chunks[-1].output_tokens == 2


# --- error mapping ---------------------------------------------------------------------------


async def test_a_prompt_over_the_window_is_too_large(model_server) -> None:
    endpoint = await model_server(ScriptedEngine(context_window=32))
    async with backend_for(endpoint) as backend:
        got, err = await collect_failure(backend, call("word " * 40, max_tokens=8))
    assert got == []
    assert err.error_class is ErrorClass.TOO_LARGE
    assert "OUT_OF_RANGE" in err.reason and "context window of 32" in err.reason


async def test_an_invalid_request_is_fatal_invalid_argument(model_server) -> None:
    endpoint = await model_server(ScriptedEngine())
    async with backend_for(endpoint) as backend:
        _, err = await collect_failure(backend, call(sampling=Sampling(temperature=-1.0)))
    assert err.error_class is ErrorClass.FATAL
    assert err.grpc_code == "INVALID_ARGUMENT"
    assert "sampling.temperature" in err.reason


async def test_an_engine_failure_mid_stream_is_retryable(model_server) -> None:
    endpoint = await model_server(ScriptedEngine(fail_after_tokens=2))
    async with backend_for(endpoint) as backend:
        got, err = await collect_failure(backend, call(max_tokens=10))
    assert [c.text for c in got] == ["hello", " world"]
    assert err.error_class is ErrorClass.RETRYABLE
    assert "UNAVAILABLE" in err.reason


async def test_no_server_is_retryable() -> None:
    async with backend_for(f"127.0.0.1:{closed_port()}") as backend:
        _, err = await collect_failure(backend, call())
        assert err.error_class is ErrorClass.RETRYABLE
        assert "UNAVAILABLE" in err.reason
        with pytest.raises(BackendError) as probe:
            await backend.poll_load()  # no answer: the registry marks it unhealthy
        assert probe.value.error_class is ErrorClass.RETRYABLE


async def test_a_server_stopping_mid_stream_is_retryable() -> None:
    engine = ScriptedEngine(tokens_per_s=20)
    await engine.start()
    server, port = await create_model_server(engine, "127.0.0.1:0")
    await server.start()
    try:
        async with backend_for(f"127.0.0.1:{port}") as backend:
            stream = backend.stream(call(max_tokens=1000))
            first = await asyncio.wait_for(anext(stream), TIMEOUT)
            assert first.text == "hello"
            await server.stop(0)
            with pytest.raises(BackendError) as info:
                await collect(stream, TIMEOUT)
            assert info.value.error_class is ErrorClass.RETRYABLE
    finally:
        await server.stop(0)
        await engine.close()


class _ScriptedServicer(model_service_pb2_grpc.ModelServiceServicer):
    """A test servicer: aborts with ``code`` after ``deltas`` deltas, or ends the stream
    without ``done`` when ``code`` is None."""

    def __init__(
        self, code: grpc.StatusCode | None, deltas: int = 0, send_done: bool = False
    ) -> None:
        self.code = code
        self.deltas = deltas
        self.send_done = send_done

    async def Generate(self, request, context):  # type: ignore[no-untyped-def]
        for _ in range(self.deltas):
            yield pb.ModelGenerateEvent(delta=types_pb2.TextDelta(text="x", tokens=1))
        if self.send_done:
            yield pb.ModelGenerateEvent(
                done=pb.ModelDone(
                    input_tokens=4,
                    output_tokens=self.deltas,
                    finish_reason=types_pb2.FINISH_REASON_STOP,
                )
            )
        if self.code is not None:
            await context.abort(self.code, f"scripted {self.code.name}")

    async def Info(self, request, context):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no info")


@contextlib.asynccontextmanager
async def servicer_endpoint(
    servicer: model_service_pb2_grpc.ModelServiceServicer,
) -> AsyncIterator[str]:
    server = grpc.aio.server()
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@pytest.mark.parametrize(
    ("code", "error_class", "grpc_code"),
    [
        (grpc.StatusCode.UNAVAILABLE, ErrorClass.RETRYABLE, "UNAVAILABLE"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ErrorClass.RETRYABLE, "UNAVAILABLE"),
        (grpc.StatusCode.ABORTED, ErrorClass.RETRYABLE, "UNAVAILABLE"),
        (grpc.StatusCode.INTERNAL, ErrorClass.RETRYABLE, "UNAVAILABLE"),
        (grpc.StatusCode.UNKNOWN, ErrorClass.RETRYABLE, "UNAVAILABLE"),
        (grpc.StatusCode.UNIMPLEMENTED, ErrorClass.RETRYABLE, "UNAVAILABLE"),
        (grpc.StatusCode.OUT_OF_RANGE, ErrorClass.TOO_LARGE, "UNAVAILABLE"),
        (grpc.StatusCode.INVALID_ARGUMENT, ErrorClass.FATAL, "INVALID_ARGUMENT"),
        (grpc.StatusCode.UNAUTHENTICATED, ErrorClass.FATAL, "UNAUTHENTICATED"),
        (grpc.StatusCode.PERMISSION_DENIED, ErrorClass.FATAL, "PERMISSION_DENIED"),
    ],
)
async def test_status_mapping(
    code: grpc.StatusCode, error_class: ErrorClass, grpc_code: str
) -> None:
    async with servicer_endpoint(_ScriptedServicer(code, deltas=1)) as endpoint:
        async with backend_for(endpoint) as backend:
            got, err = await collect_failure(backend, call())
    assert [c.text for c in got] == ["x"]
    assert err.error_class is error_class
    assert err.grpc_code == grpc_code
    assert f"scripted {code.name}" in err.reason


async def test_a_stream_that_ends_without_done_is_retryable() -> None:
    async with servicer_endpoint(_ScriptedServicer(None, deltas=2)) as endpoint:
        async with backend_for(endpoint) as backend:
            got, err = await collect_failure(backend, call())
            assert await backend.poll_load() is None  # no Info: no load signal
    assert [c.text for c in got] == ["x", "x"]
    assert err.error_class is ErrorClass.RETRYABLE
    assert "stream ended early" in err.reason


async def test_an_error_after_done_does_not_spoil_a_complete_answer() -> None:
    servicer = _ScriptedServicer(grpc.StatusCode.INTERNAL, deltas=2, send_done=True)
    async with servicer_endpoint(servicer) as endpoint:
        async with backend_for(endpoint) as backend:
            chunks = await collect_chunks(backend, call())
    assert chunks[-1] == Chunk(
        done=True, input_tokens=4, output_tokens=2, finish_reason=FinishReason.STOP, queue_ms=0.0
    )


class _FixedServicer(model_service_pb2_grpc.ModelServiceServicer):
    """Sends ``events`` and then, with ``hang``, keeps the stream open without a word."""

    def __init__(self, events: list[pb.ModelGenerateEvent], hang: bool = False) -> None:
        self.events = events
        self.hang = hang

    async def Generate(self, request, context):  # type: ignore[no-untyped-def]
        for event in self.events:
            yield event
        if self.hang:
            await asyncio.sleep(60)


def _delta(text: str, tokens: int) -> pb.ModelGenerateEvent:
    return pb.ModelGenerateEvent(delta=types_pb2.TextDelta(text=text, tokens=tokens))


_DONE = pb.ModelGenerateEvent(
    done=pb.ModelDone(input_tokens=4, output_tokens=6, finish_reason=types_pb2.FINISH_REASON_STOP)
)


async def test_multi_token_deltas_keep_their_token_counts() -> None:
    # A server that merged tokens (serving.model_server does while its writes are pending)
    # sends one delta for several; a delta without a count is one token.
    events = [_delta("a b c", 3), _delta(" d", 0), _delta(" e f", 2), _DONE]
    async with servicer_endpoint(_FixedServicer(events)) as endpoint:
        async with backend_for(endpoint) as backend:
            chunks = await collect_chunks(backend, call())
    assert [(c.text, c.tokens) for c in chunks[:-1]] == [("a b c", 3), (" d", 1), (" e f", 2)]
    assert chunks[-1].done and chunks[-1].output_tokens == 6


async def test_the_idle_timeout_is_per_gap_not_per_stream(model_server) -> None:
    # 10 tokens at 4 tokens/s take 2.25 s, longer than the 1.5 s idle timeout; no gap is.
    engine = ScriptedEngine(tokens_per_s=4)
    endpoint = await model_server(engine)
    async with backend_for(endpoint, timeout_s=1.5) as backend:
        chunks = await collect_chunks(backend, call(max_tokens=10))
    assert chunks[-1].done and chunks[-1].output_tokens == 10
    assert sum(c.tokens for c in chunks[:-1]) == 10
    assert engine.cancelled == []


async def test_silence_after_done_keeps_the_complete_answer() -> None:
    # The stream stays open after done: the idle timeout ends it, the answer stands.
    servicer = _FixedServicer([_delta("x", 1), _DONE], hang=True)
    async with servicer_endpoint(servicer) as endpoint:
        async with backend_for(endpoint, timeout_s=1.0) as backend:
            chunks = await collect_chunks(backend, call())
    assert [c.text for c in chunks[:-1]] == ["x"]
    assert chunks[-1].done and chunks[-1].output_tokens == 6


# --- cancellation and deadlines ----------------------------------------------------------------


async def test_cancelling_the_consumer_cancels_the_engine(model_server) -> None:
    engine = ScriptedEngine(tokens_per_s=20)
    endpoint = await model_server(engine)
    async with backend_for(endpoint) as backend:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in backend.stream(call(max_tokens=1000, request_id="cancel-me")):
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), TIMEOUT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(
            lambda: engine.cancelled == ["cancel-me"],
            "the engine to see the cancel",
            timeout_s=TIMEOUT,
        )
        await wait_until(
            lambda: engine.load().in_flight == 0, "the engine slot to free", timeout_s=TIMEOUT
        )


async def test_closing_the_iterator_cancels_the_engine(model_server) -> None:
    engine = ScriptedEngine(tokens_per_s=20)
    endpoint = await model_server(engine)
    async with backend_for(endpoint) as backend:
        stream = backend.stream(call(max_tokens=1000, request_id="close-me"))
        assert (await asyncio.wait_for(anext(stream), TIMEOUT)).text == "hello"
        await stream.aclose()  # type: ignore[attr-defined]
        await wait_until(
            lambda: engine.cancelled == ["close-me"],
            "the engine to see the cancel",
            timeout_s=TIMEOUT,
        )
        # the channel still serves the next request
        chunks = await collect_chunks(backend, call(max_tokens=2, request_id="next"))
    assert chunks[-1].done


async def test_the_deadline_becomes_the_grpc_deadline(model_server) -> None:
    engine = ScriptedEngine(ttft_ms=60_000)
    endpoint = await model_server(engine)
    async with backend_for(endpoint) as backend:
        got, err = await collect_failure(
            backend, call(request_id="late", deadline=time.monotonic() + 2.0)
        )
    assert got == []
    assert err.error_class is ErrorClass.RETRYABLE
    assert "DEADLINE_EXCEEDED" in err.reason
    await wait_until(
        lambda: engine.cancelled == ["late"], "the engine to see the deadline", timeout_s=TIMEOUT
    )


async def test_a_deadline_already_past_sends_nothing(model_server) -> None:
    engine = ScriptedEngine()
    endpoint = await model_server(engine)
    async with backend_for(endpoint) as backend:
        _, err = await collect_failure(backend, call(deadline=time.monotonic() - 1))
    assert err.error_class is ErrorClass.RETRYABLE and "deadline" in err.reason
    assert engine.started == []


async def test_a_silent_server_times_out_and_is_cancelled(model_server) -> None:
    engine = ScriptedEngine(ttft_ms=60_000)
    endpoint = await model_server(engine)
    async with backend_for(endpoint, timeout_s=2.0) as backend:
        _, err = await collect_failure(backend, call(request_id="silent"))
    assert err.error_class is ErrorClass.RETRYABLE
    assert "no event for 2 s" in err.reason
    await wait_until(
        lambda: engine.cancelled == ["silent"], "the engine to see the cancel", timeout_s=TIMEOUT
    )


# --- load and info ----------------------------------------------------------------------------


async def test_poll_load_reports_queue_plus_in_flight(model_server) -> None:
    engine = ScriptedEngine(max_concurrency=1, ttft_ms=60_000)
    endpoint = await model_server(engine)
    async with backend_for(endpoint) as backend:
        assert await backend.poll_load() == 0
        tasks = [
            asyncio.create_task(collect(backend.stream(call(request_id=f"q{i}")))) for i in range(3)
        ]
        try:
            await wait_until(
                lambda: engine.load().queue_depth == 2 and engine.load().in_flight == 1,
                "one running and two queued",
                timeout_s=TIMEOUT,
            )
            assert await backend.poll_load() == 3
            info = await backend.info()
            assert (info.queue_depth, info.in_flight, info.max_concurrency) == (2, 1, 1)
            assert (info.model, info.engine) == ("scripted", "scripted")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await wait_until(
            lambda: engine.load().queue_depth == 0, "the queue to empty", timeout_s=TIMEOUT
        )
        await wait_until(
            lambda: engine.load().in_flight == 0, "the running request to stop", timeout_s=TIMEOUT
        )
        assert await backend.poll_load() == 0


class _SlowInfoServicer(model_service_pb2_grpc.ModelServiceServicer):
    """Takes its load figure when Info arrives and answers once ``release`` is set."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def Info(self, request, context):  # type: ignore[no-untyped-def]
        answer = pb.InfoResponse(model="scripted", in_flight=1, max_concurrency=1)
        self.asked.set()
        await self.release.wait()
        return answer


async def test_a_stream_that_ends_while_the_load_poll_is_out_is_no_phantom() -> None:
    servicer = _SlowInfoServicer()
    async with servicer_endpoint(servicer) as endpoint:
        registry = BackendRegistry(PolicyConfig())
        entry = await registry.add(ModelServiceBackend(spec_config(endpoint).to_spec()))
        try:
            entry.stats.set_reported_load(0)
            entry.stats.begin()  # the router's one stream: the server counts it
            poll = asyncio.create_task(registry.poll_once())
            await asyncio.wait_for(servicer.asked.wait(), TIMEOUT)
            entry.stats.end()  # the stream ends before the answer arrives
            assert entry.stats.snapshot().reported_load == 0
            servicer.release.set()
            await asyncio.wait_for(poll, TIMEOUT)
            # Taken as it came, the figure would put the ended stream back until the next poll.
            assert entry.stats.snapshot().reported_load == 0
            assert entry.stats.snapshot().healthy
        finally:
            await registry.close()
