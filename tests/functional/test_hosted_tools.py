"""Tools and JSON answers through the three hosted adapters (docs/tools.md), against the
providers' wire servers over real sockets (``openai_wire``, ``anthropic_wire``,
``bedrock_wire``; real httpx, real boto3 and botocore).

For each provider: the request body carries the tools, the choice, the format and a tool
history in the provider's shape (as the wire server received it, and as it checks it); a
tool call streamed in fragments that split JSON strings and escapes is reassembled exactly
(``ToolCallBuffer`` over the chunks) with FINISH_REASON_TOOL_CALLS; a JSON answer
round-trips (OpenAI natively, Anthropic and Bedrock through the forced answer tool); a
provider's 400 about tools is FATAL with the provider's message. Bedrock's cases are in
test_hosted_tools_bedrock.py; the official SDKs read the servers' tool streams in
test_hosted_tools_sdk.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from anthropic_wire import AnthropicWire
from anthropic_wire import Scenario as AScenario
from hosted_tools_kit import (
    ANSWER,
    ANSWER_SCHEMA,
    ARGS,
    CALLS,
    EXPECTED_CALLS,
    FRAGMENTS,
    WEATHER,
    adapter,
    call,
    calls_of,
    text_of,
)
from openai_wire import Scenario as OScenario
from openai_wire import WireServer
from testkit import collect_chunks, collect_failure
from wire_calls import WireCall, split_every

from router.backends.tool_wire import OpenAIToolDeltas, plan_tools
from router.errors import ErrorClass
from router.types import (
    FinishReason,
    FormatType,
    Message,
    ResponseFormat,
    Role,
    ToolCall,
    ToolCallEvent,
    ToolChoice,
    ToolChoiceMode,
    ToolSpec,
)


def test_the_fragments_split_strings_and_escapes() -> None:
    assert "\\u00e9" in ARGS and '\\"' in ARGS and "\\\\" in ARGS
    assert any(f.endswith("\\") for f in FRAGMENTS)  # a split inside an escape
    assert "".join(FRAGMENTS) == ARGS


@pytest.fixture
async def oa() -> AsyncIterator[WireServer]:
    server = WireServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def an() -> AsyncIterator[AnthropicWire]:
    async with AnthropicWire() as server:
        yield server  # type: ignore[misc]


# --- OpenAI-compatible ------------------------------------------------------------------------


async def test_openai_streams_tool_calls_in_fragments_and_sends_the_tools(oa: WireServer) -> None:
    oa.scenarios["m"] = OScenario(deltas=(), tool_calls=CALLS, finish_reason="tool_calls")
    choice = ToolChoice(ToolChoiceMode.REQUIRED)
    async with adapter("openai", oa.base_url, "m") as backend:
        chunks = await collect_chunks(backend, call(choice=choice))

    assert calls_of(chunks) == EXPECTED_CALLS
    events = [ev for c in chunks for ev in c.tool_calls]
    assert events[0] == ToolCallEvent(0, "call_a1", "get_weather")  # id and name first
    assert [ev.arguments for ev in events if ev.index == 0][1:] == list(FRAGMENTS)
    assert all(not ev.id and not ev.name for ev in events if ev.arguments)
    assert text_of(chunks) == ""
    assert chunks[-1].done and chunks[-1].finish_reason is FinishReason.TOOL_CALLS
    body = oa.requests[0].body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER,
            },
        },
        {
            "type": "function",
            "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
        },
    ]
    assert body["tool_choice"] == "required"
    assert "response_format" not in body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo, and the time?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "now", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 4.5}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
        {"role": "user", "content": "And tomorrow?"},
    ]


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        (ToolChoice(), "auto"),
        (ToolChoice(ToolChoiceMode.NONE), "none"),
        (ToolChoice(ToolChoiceMode.REQUIRED), "required"),
        (
            ToolChoice(ToolChoiceMode.NAMED, "now"),
            {"type": "function", "function": {"name": "now"}},
        ),
    ],
)
async def test_openai_tool_choices(oa: WireServer, choice: ToolChoice, sent: Any) -> None:
    async with adapter("openai", oa.base_url, "m") as backend:
        await collect_chunks(backend, call(Message(Role.USER, "hi"), choice=choice))
    assert oa.requests[0].body["tool_choice"] == sent


async def test_openai_an_assistant_turn_of_calls_only_has_null_content(oa: WireServer) -> None:
    turn = Message(Role.ASSISTANT, "", tool_calls=(ToolCall("c9", "now", "{}"),))
    history = (Message(Role.USER, "time?"), turn, Message(Role.TOOL, "noon", tool_call_id="c9"))
    async with adapter("openai", oa.base_url, "m") as backend:
        await collect_chunks(backend, call(*history, tools=()))
    body = oa.requests[0].body
    assert body["messages"][1]["content"] is None
    assert "tools" not in body and "tool_choice" not in body  # no tools: neither is sent


@pytest.mark.parametrize(
    ("fmt", "sent"),
    [
        (ResponseFormat(FormatType.JSON_OBJECT), {"type": "json_object"}),
        (
            ResponseFormat(FormatType.JSON_SCHEMA, json.dumps(ANSWER_SCHEMA), "weather", True),
            {
                "type": "json_schema",
                "json_schema": {"name": "weather", "schema": ANSWER_SCHEMA, "strict": True},
            },
        ),
        (
            ResponseFormat(FormatType.JSON_SCHEMA, json.dumps(ANSWER_SCHEMA)),
            {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": False},
            },
        ),
    ],
)
async def test_openai_json_answers_use_response_format(
    oa: WireServer, fmt: ResponseFormat, sent: dict[str, Any]
) -> None:
    oa.scenarios["m"] = OScenario(deltas=split_every(ANSWER, 5))
    async with adapter("openai", oa.base_url, "m") as backend:
        chunks = await collect_chunks(backend, call(Message(Role.USER, "w?"), tools=(), fmt=fmt))
    assert json.loads(text_of(chunks)) == json.loads(ANSWER)
    assert text_of(chunks) == ANSWER
    assert chunks[-1].finish_reason is FinishReason.STOP
    assert oa.requests[0].body["response_format"] == sent


async def test_openai_a_400_about_tools_is_fatal_with_the_providers_message(
    oa: WireServer,
) -> None:
    message = (
        "Invalid schema for function 'get_weather': In context=(), 'additionalProperties' "
        "is required to be supplied and to be false."
    )
    oa.scenarios["m"] = OScenario(
        status=400,
        error={"message": message, "type": "invalid_request_error", "param": "tools[0]"},
    )
    async with adapter("openai", oa.base_url, "m") as backend:
        got, err = await collect_failure(backend, call(Message(Role.USER, "w?")))
    assert got == []
    assert err.error_class is ErrorClass.FATAL and err.grpc_code == "INVALID_ARGUMENT"
    assert err.reason == f"HTTP 400: {message}"

    # A tool result that answers no call: the server's own check refuses it.
    orphan = (Message(Role.USER, "w?"), Message(Role.TOOL, "4.5", tool_call_id="call_x"))
    async with adapter("openai", oa.base_url, "ok") as backend:
        _, err = await collect_failure(backend, call(*orphan))
    assert err.error_class is ErrorClass.FATAL
    assert "messages with role 'tool' must be a response to a preceeding message" in err.reason


def test_openai_tool_deltas_even_out_servers() -> None:
    deltas = OpenAIToolDeltas()
    # No index (position used), the id repeated on every fragment (sent once).
    first = deltas([{"id": "a", "function": {"name": "f", "arguments": '{"x'}}])
    again = deltas([{"id": "a", "function": {"arguments": '": 1}'}}])
    # The same index reused with a new id: a second call.
    second = deltas([{"index": 0, "id": "b", "function": {"name": "g", "arguments": "{}"}}])
    assert first == (ToolCallEvent(0, "a", "f", '{"x'),)
    assert again == (ToolCallEvent(0, "", "", '": 1}'),)
    assert second == (ToolCallEvent(1, "b", "g", "{}"),)
    assert deltas(None) == () and deltas([{"index": 0}]) == ()


# --- Anthropic Messages ------------------------------------------------------------------------


async def test_anthropic_streams_tool_use_blocks_and_sends_the_tools(an: AnthropicWire) -> None:
    an.scenarios["m"] = AScenario(
        deltas=("Checking", "."), tool_calls=CALLS, stop_reason="tool_use"
    )
    async with adapter("anthropic", an.url, "m") as backend:
        chunks = await collect_chunks(backend, call(choice=ToolChoice(ToolChoiceMode.NAMED, "now")))

    assert text_of(chunks) == "Checking."
    assert calls_of(chunks) == EXPECTED_CALLS
    events = [ev for c in chunks for ev in c.tool_calls]
    assert events[0] == ToolCallEvent(0, "call_a1", "get_weather")
    assert [ev.arguments for ev in events if ev.index == 0][1:] == list(FRAGMENTS)
    assert chunks[-1].done and chunks[-1].finish_reason is FinishReason.TOOL_CALLS
    body = an.requests[0].body
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "now"}
    assert body["system"] == "Be brief."
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Oslo, and the time?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
                {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
            ],
        },
        {
            "role": "user",  # the two results, then the user's text: one turn
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": '{"celsius": 4.5}'},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "12:00"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        (ToolChoice(), {"type": "auto"}),
        (ToolChoice(ToolChoiceMode.NONE), {"type": "none"}),
        (ToolChoice(ToolChoiceMode.REQUIRED), {"type": "any"}),
        (ToolChoice(ToolChoiceMode.NAMED, "get_weather"), {"type": "tool", "name": "get_weather"}),
    ],
)
async def test_anthropic_tool_choices(an: AnthropicWire, choice: ToolChoice, sent: Any) -> None:
    async with adapter("anthropic", an.url, "m") as backend:
        await collect_chunks(backend, call(Message(Role.USER, "hi"), choice=choice))
    assert an.requests[0].body["tool_choice"] == sent


async def test_anthropic_a_history_of_calls_without_tools_declares_them(an: AnthropicWire) -> None:
    async with adapter("anthropic", an.url, "m") as backend:
        chunks = await collect_chunks(backend, call(tools=()))
    assert chunks[-1].finish_reason is FinishReason.STOP
    body = an.requests[0].body
    open_object = {"type": "object", "properties": {}}
    assert body["tools"] == [
        {"name": "get_weather", "input_schema": open_object},
        {"name": "now", "input_schema": open_object},
    ]
    assert body["tool_choice"] == {"type": "none"}  # the caller offered no tools


@pytest.mark.parametrize(
    ("fmt", "name", "schema"),
    [
        (
            ResponseFormat(FormatType.JSON_SCHEMA, json.dumps(ANSWER_SCHEMA), "weather"),
            "weather",
            ANSWER_SCHEMA,
        ),
        (ResponseFormat(FormatType.JSON_OBJECT), "json_answer", {"type": "object"}),
    ],
)
async def test_anthropic_json_answers_come_from_a_forced_tool(
    an: AnthropicWire, fmt: ResponseFormat, name: str, schema: dict[str, Any]
) -> None:
    an.scenarios["m"] = AScenario(
        deltas=(),
        tool_calls=(WireCall("toolu_01", name, ("", *split_every(ANSWER, 3))),),
        stop_reason="tool_use",
    )
    async with adapter("anthropic", an.url, "m") as backend:
        chunks = await collect_chunks(backend, call(Message(Role.USER, "w?"), tools=(), fmt=fmt))
    assert text_of(chunks) == ANSWER  # the tool's input is the answer's text
    assert calls_of(chunks) == ()
    assert chunks[-1].finish_reason is FinishReason.STOP
    body = an.requests[0].body
    (tool,) = body["tools"]
    assert (tool["name"], tool["input_schema"]) == (name, schema)
    assert "answer" in tool["description"]
    assert body["tool_choice"] == {"type": "tool", "name": name}


async def test_anthropic_json_answer_with_tools_lets_the_model_call_one(an: AnthropicWire) -> None:
    an.scenarios["m"] = AScenario(deltas=(), tool_calls=CALLS[:1], stop_reason="tool_use")
    fmt = ResponseFormat(FormatType.JSON_SCHEMA, json.dumps(ANSWER_SCHEMA))
    async with adapter("anthropic", an.url, "m") as backend:
        chunks = await collect_chunks(backend, call(Message(Role.USER, "w?"), fmt=fmt))
    assert calls_of(chunks) == EXPECTED_CALLS[:1]
    assert chunks[-1].finish_reason is FinishReason.TOOL_CALLS
    body = an.requests[0].body
    assert [t["name"] for t in body["tools"]] == ["get_weather", "now", "json_answer"]
    assert body["tool_choice"] == {"type": "any"}  # a tool, or the answer through its tool


async def test_anthropic_a_schema_that_is_not_an_object_is_wrapped(an: AnthropicWire) -> None:
    rivers = {"type": "array", "items": {"type": "string"}}
    wrapped = json.dumps({"answer": ["Glomma", "Tana"]})
    an.scenarios["m"] = AScenario(
        deltas=(),
        tool_calls=(WireCall("toolu_02", "json_answer", split_every(wrapped, 4)),),
        stop_reason="tool_use",
    )
    fmt = ResponseFormat(FormatType.JSON_SCHEMA, json.dumps(rivers))
    async with adapter("anthropic", an.url, "m") as backend:
        chunks = await collect_chunks(
            backend, call(Message(Role.USER, "rivers?"), tools=(), fmt=fmt)
        )
    assert json.loads(text_of(chunks)) == ["Glomma", "Tana"]
    assert an.requests[0].body["tools"][0]["input_schema"] == {
        "type": "object",
        "properties": {"answer": rivers},
        "required": ["answer"],
    }


async def test_anthropic_a_400_about_tools_is_fatal_with_the_providers_message(
    an: AnthropicWire,
) -> None:
    message = "tools.0.custom.input_schema: JSON schema is invalid - please consult https://json-schema.org"
    an.scenarios["m"] = AScenario(status=400, message=message)
    async with adapter("anthropic", an.url, "m") as backend:
        got, err = await collect_failure(backend, call(Message(Role.USER, "w?")))
    assert got == []
    assert err.error_class is ErrorClass.FATAL and err.grpc_code == "INVALID_ARGUMENT"
    assert err.reason == f"HTTP 400: invalid_request_error: {message}"

    # A result for a call the turn before did not make: the server's own check refuses it.
    orphan = (Message(Role.USER, "w?"), Message(Role.TOOL, "4.5", tool_call_id="call_x"))
    async with adapter("anthropic", an.url, "ok") as backend:
        _, err = await collect_failure(backend, call(*orphan))
    assert err.error_class is ErrorClass.FATAL
    assert "unexpected `tool_use_id` found in `tool_result` blocks: call_x" in err.reason


# --- what the forced-tool providers are sent (pure) ----------------------------------------------


def test_the_answer_tool_keeps_clear_of_the_requests_tools_and_of_tool_choices() -> None:
    fmt = ResponseFormat(FormatType.JSON_OBJECT)
    clash = (ToolSpec("json_answer"),)
    plan = plan_tools(call(tools=clash, fmt=fmt).request, has_none=True)
    assert plan.answer is not None and plan.answer.name == "json_answer_2"
    assert [t.name for t in plan.tools] == ["json_answer", "get_weather", "now", "json_answer_2"]
    assert plan.choice == "any"
    # REQUIRED or NAMED: the answer is a tool call, so no answer tool.
    for choice in (ToolChoice(ToolChoiceMode.REQUIRED), ToolChoice(ToolChoiceMode.NAMED, "now")):
        plan = plan_tools(call(choice=choice, fmt=fmt).request, has_none=False)
        assert plan.answer is None and plan.choice in ("any", "tool")
    # NONE with a format: only the answer can be called.
    plan = plan_tools(call(choice=ToolChoice(ToolChoiceMode.NONE), fmt=fmt).request, has_none=False)
    assert (plan.choice, plan.choice_name) == ("tool", "json_answer")
