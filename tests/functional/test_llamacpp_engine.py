"""Real tokens from Gemma 3 270M (llama.cpp) through the ModelService gRPC server.

The model loads once for the module (about a second); the engine is not tied to an event
loop, so each test serves it on its own loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import jsonschema
import pytest
from hybrid_router.v1 import model_service_pb2 as pb
from hybrid_router.v1 import model_service_pb2_grpc, types_pb2
from testkit import wait_until

from serving.engines.base import EngineError, EngineRequest
from serving.engines.llamacpp import LlamaCppEngine, PromptTokenizer
from serving.engines.prompt import render_gemma
from serving.model_server import create_server

pytestmark = pytest.mark.model

N_CTX = 1024
QUESTION = (("system", "Answer briefly."), ("user", "Name three colors."))


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    engine = LlamaCppEngine(n_ctx=N_CTX, n_threads=2, seed=7)
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.close())


@pytest.fixture
async def stub(engine: LlamaCppEngine) -> AsyncIterator[model_service_pb2_grpc.ModelServiceStub]:
    server, port = await create_server(engine, "127.0.0.1:0", replica_id="edge-1")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield model_service_pb2_grpc.ModelServiceStub(channel)
    await server.stop(None)
    async with asyncio.timeout(30):  # no request may outlive its test
        while engine.load().in_flight or engine.load().queue_depth:
            await asyncio.sleep(0.05)


def generate_request(
    request_id: str, max_output_tokens: int, sampling: types_pb2.SamplingParams | None = None
) -> pb.ModelGenerateRequest:
    roles = {"system": types_pb2.ROLE_SYSTEM, "user": types_pb2.ROLE_USER}
    return pb.ModelGenerateRequest(
        request_id=request_id,
        messages=[types_pb2.ChatMessage(role=roles[r], content=c) for r, c in QUESTION],
        max_output_tokens=max_output_tokens,
        sampling=sampling or types_pb2.SamplingParams(seed=11),
    )


async def test_streams_real_tokens_with_exact_usage(
    engine: LlamaCppEngine, stub: model_service_pb2_grpc.ModelServiceStub
) -> None:
    events = [e async for e in stub.Generate(generate_request("real", 12), timeout=120)]
    *deltas, last = events
    assert all(e.WhichOneof("event") == "delta" for e in deltas)
    assert last.WhichOneof("event") == "done"
    done = last.done
    assert done.input_tokens == engine.count_tokens(QUESTION)
    assert done.input_tokens == PromptTokenizer().count(QUESTION)
    assert 1 <= done.output_tokens <= 12
    if done.finish_reason == types_pb2.FINISH_REASON_LENGTH:
        assert done.output_tokens == 12
    else:
        assert done.finish_reason == types_pb2.FINISH_REASON_STOP
    assert sum(e.delta.tokens for e in deltas) <= done.output_tokens
    assert "<end_of_turn>" not in "".join(e.delta.text for e in deltas)
    info = await stub.Info(pb.InfoRequest())
    assert (info.engine, info.model, info.model_family) == ("llamacpp", "gemma3-270m", "gemma3")
    assert (info.context_window, info.max_concurrency, info.replica_id) == (N_CTX, 1, "edge-1")
    assert info.decode_tokens_per_s > 0
    assert list(info.capabilities) == ["chat", "tools", "json_schema", "prefill"]


async def test_the_prompt_reading_rate_is_measured_and_served_in_info(
    engine: LlamaCppEngine, stub: model_service_pb2_grpc.ModelServiceStub
) -> None:
    # A prompt of a few hundred tokens: the real model reads it before its first token,
    # and the engine's moving average of that rate is what Info reports.
    long_question = (("system", "Answer briefly."), ("user", "Summarise: " + "the plant " * 150))
    request = pb.ModelGenerateRequest(
        request_id="prefill",
        messages=[
            types_pb2.ChatMessage(role=types_pb2.ROLE_SYSTEM, content=long_question[0][1]),
            types_pb2.ChatMessage(role=types_pb2.ROLE_USER, content=long_question[1][1]),
        ],
        max_output_tokens=2,
    )
    assert engine.count_tokens(long_question) >= 300
    events = [e async for e in stub.Generate(request, timeout=120)]
    assert events[-1].done.input_tokens >= 300
    rate = engine.load().prefill_tokens_per_s
    # Gemma 3 270M on two CPU threads reads hundreds to thousands of tokens a second.
    assert 50 < rate < 1_000_000, rate
    info = await stub.Info(pb.InfoRequest(), timeout=30)
    assert info.prefill_tokens_per_s == pytest.approx(rate)


def test_the_packaged_model_has_no_template_of_its_own_so_the_gemma_format_is_used(
    engine: LlamaCppEngine,
) -> None:
    # gemma-3-270m-q4_k_m.gguf carries no tokenizer.chat_template: the prompt is exactly
    # what it was before templates (tests/functional/test_gguf_chat_templates.py shows
    # Gemma 3's own template renders the same text).
    assert engine.template.source == ""
    assert engine.prompt(EngineRequest("p", QUESTION, 4)) == render_gemma(QUESTION)


ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "celsius": {"type": "integer", "minimum": -60, "maximum": 60},
        "sunny": {"type": "boolean"},
    },
    "required": ["city", "celsius", "sunny"],
}
WEATHER_TOOL = types_pb2.ToolDefinition(
    name="get_weather",
    description="Current weather for a city",
    parameters_json=json.dumps(
        {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        }
    ),
)


WEATHER_QUESTION = "What is the weather in Oslo?"


def weather_request(request_id: str, **fields: object) -> pb.ModelGenerateRequest:
    return pb.ModelGenerateRequest(
        request_id=request_id,
        messages=[types_pb2.ChatMessage(role=types_pb2.ROLE_USER, content=WEATHER_QUESTION)],
        max_output_tokens=96,
        sampling=types_pb2.SamplingParams(temperature=0.0, seed=3),
        **fields,
    )


async def test_a_json_schema_answer_from_the_real_model_parses_and_validates(
    stub: model_service_pb2_grpc.ModelServiceStub,
) -> None:
    fmt = types_pb2.ResponseFormat(
        type=types_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema_json=json.dumps(ANSWER_SCHEMA)
    )
    events = [
        e async for e in stub.Generate(weather_request("json", response_format=fmt), timeout=120)
    ]
    text = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")
    jsonschema.validate(json.loads(text), ANSWER_SCHEMA)
    assert events[-1].done.finish_reason == types_pb2.FINISH_REASON_STOP


async def test_json_strings_from_the_real_model_hold_no_raw_control_characters(
    stub: model_service_pb2_grpc.ModelServiceStub,
) -> None:
    """llama-cpp-python's schema converter lets a string hold a raw newline or tab (not
    JSON); the engine tightens its grammar. A poem invites line breaks: before the fix 2
    of 8 such answers had one (serving/engines/grammar.py)."""
    schema = {"type": "object", "properties": {"poem": {"type": "string"}}, "required": ["poem"]}
    fmt = types_pb2.ResponseFormat(
        type=types_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema_json=json.dumps(schema)
    )
    ask = (
        'Write a poem of four short lines about the sea, one line per line, as JSON {"poem": ...}.'
    )
    for seed in range(8):
        request = pb.ModelGenerateRequest(
            request_id=f"poem-{seed}",
            messages=[types_pb2.ChatMessage(role=types_pb2.ROLE_USER, content=ask)],
            max_output_tokens=60,
            sampling=types_pb2.SamplingParams(temperature=1.0, seed=seed),
            response_format=fmt,
        )
        events = [e async for e in stub.Generate(request, timeout=120)]
        text = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")
        assert text.startswith("{"), text
        assert not [c for c in text if ord(c) < 0x20], f"seed {seed}: {text!r}"


async def test_a_required_tool_call_from_the_real_model_has_valid_arguments(
    engine: LlamaCppEngine, stub: model_service_pb2_grpc.ModelServiceStub
) -> None:
    choice = types_pb2.ToolChoice(mode=types_pb2.TOOL_CHOICE_MODE_REQUIRED)
    request = weather_request("tool", tools=[WEATHER_TOOL], tool_choice=choice)
    events = [e async for e in stub.Generate(request, timeout=120)]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"tool_call"}
    first = events[0].tool_call
    assert first.name == "get_weather" and first.id.startswith("call_") and first.index == 0
    arguments = "".join(e.tool_call.arguments for e in events[:-1])
    jsonschema.validate(json.loads(arguments), json.loads(WEATHER_TOOL.parameters_json))
    assert len(events) > 3  # the arguments streamed as they decoded, not in one piece
    done = events[-1].done
    assert done.finish_reason == types_pb2.FINISH_REASON_TOOL_CALLS
    # the tools were in the prompt, and the count says so
    assert done.input_tokens > engine.count_tokens((("user", "What is the weather in Oslo?"),))


async def test_same_seed_gives_the_same_text(stub: model_service_pb2_grpc.ModelServiceStub) -> None:
    texts = []
    for attempt in range(2):
        events = [e async for e in stub.Generate(generate_request(f"s{attempt}", 8), timeout=120)]
        texts.append("".join(e.delta.text for e in events))
    assert texts[0] == texts[1]


async def test_cancel_stops_decoding_and_the_next_request_starts_at_once(
    engine: LlamaCppEngine, stub: model_service_pb2_grpc.ModelServiceStub
) -> None:
    long_call = stub.Generate(generate_request("long", 900), timeout=300)
    assert (await long_call.read()).WhichOneof("event") == "delta"
    long_call.cancel()
    # Queued right behind the cancelled one: it waits about one token (tens of ms, more on
    # a busy machine),
    # not the ~900 tokens (10 s or more) the cancelled request had left.
    events = [e async for e in stub.Generate(generate_request("after", 4), timeout=120)]
    done = events[-1].done
    assert done.output_tokens >= 1
    assert done.queue_ms < 5000.0
    assert engine.load().in_flight == 0


async def test_two_requests_queue_and_run_one_after_the_other(
    engine: LlamaCppEngine, stub: model_service_pb2_grpc.ModelServiceStub
) -> None:
    timeline: list[str] = []

    # Greedy decoding: this base model rarely ends on its own, so both run ~24 tokens.
    greedy = types_pb2.SamplingParams(temperature=0.0)

    async def run(name: str) -> pb.ModelDone:
        async for event in stub.Generate(generate_request(name, 24, greedy), timeout=120):
            timeline.append(f"{name}:{event.WhichOneof('event')}")
            if event.WhichOneof("event") == "done":
                return event.done
        raise AssertionError("stream ended without done")

    first = asyncio.create_task(run("a"))
    await wait_until(
        lambda: "a:delta" in timeline, "a's first delta", timeout_s=60.0, every_s=0.005
    )
    second = asyncio.create_task(run("b"))
    seen_queued = False
    while not (seen_queued or first.done()):  # poll gently: the decoder needs the CPU
        info = await stub.Info(pb.InfoRequest(), timeout=30)
        seen_queued = (info.queue_depth, info.in_flight) == (1, 1)
        await asyncio.sleep(0.02)
    a_done, b_done = await asyncio.gather(first, second)
    assert seen_queued, "Info never showed b waiting behind a"
    assert timeline.index("a:done") < timeline.index("b:delta")
    assert b_done.queue_ms > 0.0
    assert a_done.output_tokens >= 1 and b_done.output_tokens >= 1


async def test_too_large_counts_against_n_ctx(
    stub: model_service_pb2_grpc.ModelServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [e async for e in stub.Generate(generate_request("big", N_CTX), timeout=60)]
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert caught.value.details().startswith("too_large: prompt ")
    assert f"context window of {N_CTX} tokens" in caught.value.details()


async def test_throttled_engine_decodes_at_the_cap_and_cancels_promptly() -> None:
    slow = LlamaCppEngine(n_ctx=256, max_decode_tokens_per_s=8.0)
    try:
        stream = slow.generate(EngineRequest("slow", QUESTION, 200))
        received = (await anext(stream)).tokens
        first_at = time.monotonic()
        async for chunk in stream:
            received += chunk.tokens
            if received >= 5:
                break
        # 4 more tokens at 8/s take 0.5 s (a little less counted from the first's arrival)
        assert time.monotonic() - first_at >= 0.4
        await stream.aclose()
        # 195 tokens were left (about 24 s); the cancel frees the engine at once
        await wait_until(lambda: not slow.load().in_flight, "the engine freed", timeout_s=5)
        assert 0.0 < slow.load().decode_tokens_per_s <= 8.0 * 1.05
    finally:
        await slow.close()
    with pytest.raises(EngineError, match="engine closed"):
        await anext(slow.generate(EngineRequest("late", QUESTION, 4)))


async def test_close_ends_running_and_queued_requests_as_unavailable() -> None:
    slow = LlamaCppEngine(n_ctx=256, max_decode_tokens_per_s=8.0)
    running = slow.generate(EngineRequest("running", QUESTION, 200))
    await anext(running)
    queued = asyncio.create_task(anext(slow.generate(EngineRequest("queued", QUESTION, 4))))
    await wait_until(lambda: slow.load().queue_depth, "the second request queued", timeout_s=10)
    await asyncio.wait_for(slow.close(), timeout=10)
    for pending in (anext(running), queued):
        with pytest.raises(EngineError, match="engine closed") as caught:
            async with asyncio.timeout(10):
                await pending
        assert caught.value.error_class == "unavailable"
