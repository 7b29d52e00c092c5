"""The ModelService gRPC server over the scripted engine, on 127.0.0.1 port 0.

Checks what a client sees: event order, usage, the status and message for each engine
error class, cancellation and deadlines reaching the engine, Info, health and drain, and
the ``python -m serving.model_server`` process (READY line, SIGTERM).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from hybrid_router.v1 import model_service_pb2 as pb
from hybrid_router.v1 import model_service_pb2_grpc, types_pb2
from testkit import collect, wait_until

from serving.engines.base import (
    Engine,
    EngineChunk,
    EngineInfo,
    EngineLoad,
    EngineRequest,
)
from serving.engines.scripted import ScriptedEngine
from serving.model_server import SERVICE_NAME, create_server, drain

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    engine: Any  # a ScriptedEngine, except in the test that says otherwise
    stub: model_service_pb2_grpc.ModelServiceStub
    health: health_pb2_grpc.HealthStub
    health_servicer: health.aio.HealthServicer
    server: grpc.aio.Server
    port: int


async def serve(
    engine: Engine, *, coalesce: bool = True, channel_options: tuple[tuple[str, Any], ...] = ()
) -> AsyncIterator[Served]:
    health_servicer = health.aio.HealthServicer()
    server, port = await create_server(
        engine,
        "127.0.0.1:0",
        health_servicer=health_servicer,
        replica_id="replica-1",
        coalesce=coalesce,
    )
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options)
    try:
        yield Served(
            engine=engine,
            stub=model_service_pb2_grpc.ModelServiceStub(channel),
            health=health_pb2_grpc.HealthStub(channel),
            health_servicer=health_servicer,
            server=server,
            port=port,
        )
    finally:
        await channel.close()
        await server.stop(None)
        await engine.close()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async for value in serve(ScriptedEngine(model_name="scripted-8k", context_window=64)):
        yield value


@pytest.fixture
async def slow() -> AsyncIterator[Served]:
    """One slot, 20 tokens/s: long enough to cancel, queue behind, or drain."""
    async for value in serve(ScriptedEngine(max_concurrency=1, tokens_per_s=20)):
        yield value


def generate_request(
    request_id: str = "req-1",
    text: str = "alpha beta gamma",
    max_output_tokens: int = 4,
    role: int = types_pb2.ROLE_USER,
    **fields: object,
) -> pb.ModelGenerateRequest:
    return pb.ModelGenerateRequest(
        request_id=request_id,
        messages=[types_pb2.ChatMessage(role=role, content=text)],
        max_output_tokens=max_output_tokens,
        **fields,
    )


async def test_generate_streams_deltas_then_one_done_with_usage(served: Served) -> None:
    events = [e async for e in served.stub.Generate(generate_request(max_output_tokens=4))]
    kinds = [e.WhichOneof("event") for e in events]
    # Deltas that arrive while a write is pending are merged: 1 to 4 delta messages.
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"delta"}
    assert "".join(e.delta.text for e in events[:-1]) == "alpha beta gamma alpha"
    assert all(e.delta.tokens == len(e.delta.text.split()) for e in events[:-1])
    done = events[-1].done
    assert done.input_tokens == served.engine.count_tokens((("user", "alpha beta gamma"),))
    assert done.output_tokens == 4
    assert done.finish_reason == types_pb2.FINISH_REASON_LENGTH
    assert done.queue_ms >= 0.0


async def test_without_coalescing_every_engine_chunk_is_a_message() -> None:
    async for served in serve(ScriptedEngine(), coalesce=False):
        events = [e async for e in served.stub.Generate(generate_request(max_output_tokens=30))]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["delta"] * 30 + ["done"]
    assert all(e.delta.tokens == 1 for e in events[:-1])


async def test_a_slow_reader_gets_merged_deltas_with_the_text_intact() -> None:
    # 600 tokens of 2,000 characters against a small fixed HTTP/2 window: a client that does
    # not read makes the server's writes wait, and the engine's chunks merge meanwhile.
    word = "x" * 2000
    engine = ScriptedEngine(context_window=4096)
    async for served in serve(engine, channel_options=(("grpc.http2.bdp_probe", 0),)):
        call = served.stub.Generate(generate_request(text=word, max_output_tokens=600))
        await asyncio.sleep(1.5)  # the engine runs on while we do not read
        events = [e async for e in call]
    deltas = [e.delta for e in events if e.WhichOneof("event") == "delta"]
    assert events[-1].done.output_tokens == 600
    assert "".join(d.text for d in deltas) == " ".join([word] * 600)
    assert sum(d.tokens for d in deltas) == 600
    assert all(d.tokens == len(d.text.split()) for d in deltas)
    assert len(deltas) < 600  # merged while the reader was away
    assert engine.cancelled == []


async def test_sampling_stop_strings_reach_the_engine(served: Served) -> None:
    request = generate_request(
        max_output_tokens=10, sampling=types_pb2.SamplingParams(stop=["gamma"])
    )
    events = [e async for e in served.stub.Generate(request)]
    assert "".join(e.delta.text for e in events[:-1]) == "alpha beta "
    assert events[-1].done.finish_reason == types_pb2.FINISH_REASON_STOP


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (generate_request(max_output_tokens=0), "max_output_tokens: must be > 0"),
        (pb.ModelGenerateRequest(max_output_tokens=4), "messages: must not be empty"),
        (
            generate_request(role=types_pb2.ROLE_UNSPECIFIED),
            "messages[0].role: must be system, user, assistant or tool",
        ),
        (
            generate_request(role=types_pb2.ROLE_TOOL),
            "messages[0].tool_call_id: a tool message names the call it answers",
        ),
        (
            generate_request(
                tool_choice=types_pb2.ToolChoice(mode=types_pb2.TOOL_CHOICE_MODE_REQUIRED)
            ),
            "tool_choice: 'required' needs tools (the request has none)",
        ),
        (
            generate_request(
                response_format=types_pb2.ResponseFormat(
                    type=types_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema_json="[]"
                )
            ),
            "response_format.schema_json: must be a JSON object",
        ),
        (
            generate_request(sampling=types_pb2.SamplingParams(top_p=1.5)),
            "sampling.top_p: must be in (0, 1]",
        ),
        (generate_request(model="other-model"), "model: this server holds 'scripted-8k'"),
    ],
    ids=[
        "max_output_tokens",
        "messages",
        "role",
        "tool_message",
        "tool_choice",
        "schema",
        "top_p",
        "model",
    ],
)
async def test_bad_requests_are_invalid_argument_naming_the_field(
    served: Served, request_: pb.ModelGenerateRequest, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [e async for e in served.stub.Generate(request_)]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(message)
    assert served.engine.started == []


async def test_prompt_too_large_is_out_of_range_with_too_large_prefix(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [e async for e in served.stub.Generate(generate_request(max_output_tokens=60))]
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert caught.value.details().startswith(
        "too_large: prompt 10 tokens + max_output_tokens 60 exceed the context window of 64"
    )


async def test_matching_model_name_is_accepted(served: Served) -> None:
    events = [e async for e in served.stub.Generate(generate_request(model="scripted-8k"))]
    assert events[-1].WhichOneof("event") == "done"


@pytest.mark.parametrize(
    ("error_class", "code"),
    [
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT),
        ("too_large", grpc.StatusCode.OUT_OF_RANGE),
        ("unavailable", grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_engine_failures_before_first_token_map_to_statuses(
    served: Served, error_class: str, code: grpc.StatusCode
) -> None:
    served.engine.fail_before_first_token = error_class
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [e async for e in served.stub.Generate(generate_request())]
    assert caught.value.code() == code
    assert "scripted failure before the first token" in caught.value.details()


async def test_failure_after_first_token_ends_the_stream_unavailable(served: Served) -> None:
    served.engine.fail_after_tokens = 2
    events = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in served.stub.Generate(generate_request(max_output_tokens=10)):
            events.append(event)
    assert "".join(e.delta.text for e in events) == "alpha beta"
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "scripted failure after 2 tokens"


async def test_client_cancel_stops_the_engine(slow: Served) -> None:
    call = slow.stub.Generate(generate_request("doomed", max_output_tokens=1000))
    assert (await call.read()).delta.text == "alpha"
    assert call.cancel()
    await wait_until(
        lambda: slow.engine.cancelled == ["doomed"], "the engine to see the client cancel"
    )
    await wait_until(lambda: slow.engine.load().in_flight == 0, "the engine slot to free")
    # the slot is free again: the next request runs
    events = [e async for e in slow.stub.Generate(generate_request("next"))]
    assert events[-1].done.output_tokens == 4


async def test_deadline_reaches_the_engine(slow: Served) -> None:
    call = slow.stub.Generate(generate_request("late", max_output_tokens=1000), timeout=0.5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [e async for e in call]
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_until(
        lambda: slow.engine.cancelled == ["late"], "the engine to see the deadline cancel"
    )


async def test_info_describes_the_engine(served: Served) -> None:
    info = await served.stub.Info(pb.InfoRequest())
    assert info.model == "scripted-8k"
    assert info.version == "1"
    assert info.context_window == 64
    assert info.max_concurrency == 8
    assert info.engine == "scripted"
    assert info.model_family == "scripted"
    assert info.replica_id == "replica-1"
    assert (info.queue_depth, info.in_flight) == (0, 0)
    assert list(info.capabilities) == ["chat", "tools", "json_schema", "prefill"]


async def test_info_reports_live_queue_and_rate(slow: Served) -> None:
    running = slow.stub.Generate(generate_request("a", max_output_tokens=1000))
    await running.read()
    queued = slow.stub.Generate(generate_request("b", max_output_tokens=2))
    queued_events = asyncio.create_task(collect(queued))
    await wait_until(lambda: slow.engine.load().queue_depth == 1, "b queued behind a")
    info = await slow.stub.Info(pb.InfoRequest())
    assert (info.queue_depth, info.in_flight) == (1, 1)
    assert info.decode_tokens_per_s == 20.0
    running.cancel()
    done = (await queued_events)[-1].done
    assert done.output_tokens == 2
    assert done.queue_ms > 0.0


async def _read_all(call: grpc.aio.UnaryStreamCall) -> list[pb.ModelGenerateEvent]:
    """The rest of a stream already read with ``read()`` (the two styles do not mix)."""
    events = []
    while (event := await call.read()) is not grpc.aio.EOF:
        events.append(event)
    return events


class BrokenEngine(Engine):
    """An engine with a bug: generate raises something that is not an EngineError."""

    info = EngineInfo("broken", "0", 128, 1, "scripted")

    def load(self) -> EngineLoad:
        return EngineLoad(queue_depth=0, in_flight=0)

    def count_tokens(self, messages: tuple[tuple[str, str], ...]) -> int:
        return 1

    async def _generate(self, request: EngineRequest) -> AsyncIterator[EngineChunk]:
        yield EngineChunk(text="partial", tokens=1)
        raise KeyError("secret detail")

    def generate(self, request: EngineRequest) -> AsyncIterator[EngineChunk]:
        return self._generate(request)


async def test_unexpected_engine_errors_are_internal_with_a_generic_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async for served in serve(BrokenEngine()):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            [e async for e in served.stub.Generate(generate_request("bug-1"))]
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert caught.value.details() == "internal error in the model server"
        assert "secret" not in caught.value.details()
        assert "bug-1" in caplog.text and "KeyError" in caplog.text
        # the server keeps serving
        assert (await served.stub.Info(pb.InfoRequest())).model == "broken"


async def test_health_is_serving_for_the_server_and_the_service(served: Served) -> None:
    for service in ("", SERVICE_NAME):
        response = await served.health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_drain_reports_not_serving_and_lets_streams_finish(slow: Served) -> None:
    watch = slow.health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    stream = slow.stub.Generate(generate_request("inflight", max_output_tokens=6))
    first = await stream.read()
    draining = asyncio.create_task(drain(slow.server, slow.health_servicer, grace_s=30))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    rest = await _read_all(stream)
    assert [first, *rest][-1].done.output_tokens == 6
    watch.cancel()
    await draining
    assert slow.engine.cancelled == []


async def test_process_prints_ready_serves_and_drains_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "serving.model_server",
        "--engine",
        "scripted",
        "--port",
        "0",
        "--model-name",
        "proc-model",
        "--tokens-per-s",
        "20",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=60)).decode()
        word, port = line.split()
        assert word == "READY" and int(port) > 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            assert (await stub.Info(pb.InfoRequest())).model == "proc-model"
            stream = stub.Generate(generate_request(max_output_tokens=10), timeout=60)
            assert (await stream.read()).WhichOneof("event") == "delta"
            process.send_signal(signal.SIGTERM)  # the stream in flight may finish
            rest = await _read_all(stream)
            assert rest[-1].done.output_tokens == 10
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
        assert await process.stdout.read() == b""  # READY is the only line on stdout
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_process_rejects_bad_arguments_with_usage() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "serving.model_server",
        "--engine",
        "nope",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    assert b"invalid choice: 'nope'" in stderr


async def test_a_taken_port_fails_instead_of_being_shared(served: Served) -> None:
    with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{served.port}"):
        await create_server(ScriptedEngine(), f"127.0.0.1:{served.port}")


async def test_process_exits_1_with_the_reason_when_the_model_cannot_load(
    tmp_path: Path,
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "serving.model_server",
        "--engine",
        "llamacpp",
        "--model-path",
        str(tmp_path / "missing.gguf"),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    assert stdout == b""
    assert b"cannot load the model" in stderr and b"missing.gguf" in stderr
