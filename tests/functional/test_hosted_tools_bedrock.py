"""Tools and JSON answers through the Bedrock adapter (real boto3 and botocore) against the
Bedrock wire server: the ``toolConfig`` and a tool history in Converse's shape, ``toolUse``
streamed in fragments (and replayed from Converse) reassembled exactly, the choice NONE
that Converse lacks, a JSON answer through the forced answer tool, a ValidationException
about tools as FATAL with its message. The other providers: test_hosted_tools.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from anthropic_wire import AnthropicWire
from awsenv import aws_env  # noqa: F401  (fixture)
from bedrock_wire import BedrockWire
from bedrock_wire import Scenario as BScenario
from hosted_tools_kit import (
    ANSWER,
    ANSWER_SCHEMA,
    CALLS,
    EXPECTED_CALLS,
    FRAGMENTS,
    HISTORY,
    WEATHER,
    adapter,
    call,
    calls_of,
    text_of,
)
from testkit import collect_chunks, collect_failure
from wire_calls import WireCall, split_every

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
)

pytestmark = pytest.mark.usefixtures("aws_env")


@pytest.fixture
async def an() -> AsyncIterator[AnthropicWire]:
    async with AnthropicWire() as server:
        yield server  # type: ignore[misc]


@pytest.fixture
async def br() -> AsyncIterator[BedrockWire]:
    async with BedrockWire() as server:
        yield server  # type: ignore[misc]


# --- Bedrock Converse --------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [True, False])
async def test_bedrock_streams_tool_use_and_sends_the_tool_config(
    br: BedrockWire, streaming: bool
) -> None:
    br.scenarios["m"] = BScenario(deltas=("Checking.",), tool_calls=CALLS, stop_reason="tool_use")
    async with adapter("bedrock", br.url, "m", streaming=streaming) as backend:
        chunks = await collect_chunks(backend, call())

    assert text_of(chunks) == "Checking."
    got = calls_of(chunks)
    if streaming:
        assert got == EXPECTED_CALLS
    else:  # Converse answers the input parsed: the same JSON, serialised again
        assert [(c.id, c.name, json.loads(c.arguments)) for c in got] == [
            (c.id, c.name, json.loads(c.arguments)) for c in EXPECTED_CALLS
        ]
    events = [ev for c in chunks for ev in c.tool_calls]
    assert events[0] == ToolCallEvent(0, "call_a1", "get_weather")
    if streaming:
        assert [ev.arguments for ev in events if ev.index == 0][1:] == list(FRAGMENTS)
    assert chunks[-1].done and chunks[-1].finish_reason is FinishReason.TOOL_CALLS
    req = br.requests[0]
    assert req.path.endswith("/converse-stream" if streaming else "/converse")
    assert req.body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "inputSchema": {"json": WEATHER},
                }
            },
            {
                "toolSpec": {
                    "name": "now",
                    "inputSchema": {"json": {"type": "object", "properties": {}}},
                }
            },
        ],
        "toolChoice": {"auto": {}},
    }
    assert req.body["system"] == [{"text": "Be brief."}]
    assert req.body["messages"] == [
        {"role": "user", "content": [{"text": "Weather in Oslo, and the time?"}]},
        {
            "role": "assistant",
            "content": [
                {"text": "Let me look."},
                {
                    "toolUse": {
                        "toolUseId": "call_1",
                        "name": "get_weather",
                        "input": {"city": "Oslo"},
                    }
                },
                {"toolUse": {"toolUseId": "call_2", "name": "now", "input": {}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": '{"celsius": 4.5}'}]}},
                {"toolResult": {"toolUseId": "call_2", "content": [{"text": "12:00"}]}},
                {"text": "And tomorrow?"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        (ToolChoice(ToolChoiceMode.REQUIRED), {"any": {}}),
        (ToolChoice(ToolChoiceMode.NAMED, "now"), {"tool": {"name": "now"}}),
    ],
)
async def test_bedrock_tool_choices(br: BedrockWire, choice: ToolChoice, sent: Any) -> None:
    async with adapter("bedrock", br.url, "m") as backend:
        await collect_chunks(backend, call(Message(Role.USER, "hi"), choice=choice))
    assert br.requests[0].body["toolConfig"]["toolChoice"] == sent


async def test_bedrock_choice_none_sends_tools_only_for_a_tool_history(br: BedrockWire) -> None:
    none = ToolChoice(ToolChoiceMode.NONE)
    async with adapter("bedrock", br.url, "m") as backend:
        await collect_chunks(backend, call(Message(Role.USER, "hi"), choice=none))
        await collect_chunks(backend, call(choice=none))
    assert "toolConfig" not in br.requests[0].body  # the model cannot call what it lacks
    config = br.requests[1].body["toolConfig"]  # Bedrock wants it beside tool blocks
    assert [t["toolSpec"]["name"] for t in config["tools"]] == ["get_weather", "now"]
    assert "toolChoice" not in config  # Converse has no "none"


@pytest.mark.parametrize("streaming", [True, False])
async def test_bedrock_json_answers_come_from_a_forced_tool(
    br: BedrockWire, streaming: bool
) -> None:
    br.scenarios["m"] = BScenario(
        deltas=(),
        tool_calls=(WireCall("tooluse_9", "weather", split_every(ANSWER, 3)),),
        stop_reason="tool_use",
    )
    fmt = ResponseFormat(FormatType.JSON_SCHEMA, json.dumps(ANSWER_SCHEMA), "weather")
    async with adapter("bedrock", br.url, "m", streaming=streaming) as backend:
        chunks = await collect_chunks(backend, call(Message(Role.USER, "w?"), tools=(), fmt=fmt))
    # Streamed: the fragments as sent; replayed from Converse: the same JSON, re-serialised.
    assert json.loads(text_of(chunks)) == json.loads(ANSWER)
    if streaming:
        assert text_of(chunks) == ANSWER
    assert calls_of(chunks) == ()
    assert chunks[-1].finish_reason is FinishReason.STOP
    config = br.requests[0].body["toolConfig"]
    (tool,) = config["tools"]
    assert tool["toolSpec"]["name"] == "weather"
    assert tool["toolSpec"]["inputSchema"] == {"json": ANSWER_SCHEMA}
    assert config["toolChoice"] == {"tool": {"name": "weather"}}


async def test_bedrock_a_validation_error_about_tools_is_fatal_with_its_message(
    br: BedrockWire,
) -> None:
    message = (
        "This model doesn't support the toolConfig.toolChoice.any field. Remove "
        "toolConfig.toolChoice.any and try again."
    )
    br.scenarios["m"] = BScenario(status=400, error_code="ValidationException", message=message)
    async with adapter("bedrock", br.url, "m") as backend:
        got, err = await collect_failure(backend, call(Message(Role.USER, "w?")))
    assert got == []
    assert err.error_class is ErrorClass.FATAL and err.grpc_code == "INVALID_ARGUMENT"
    assert err.reason == f"ValidationException: {message}"

    # A call without its result in the next turn: the server's own check refuses it.
    unanswered = HISTORY[:3] + (Message(Role.USER, "never mind"),)
    async with adapter("bedrock", br.url, "ok") as backend:
        _, err = await collect_failure(backend, call(*unanswered))
    assert err.error_class is ErrorClass.FATAL
    assert (
        "Expected toolResult blocks at messages.2.content for the following Ids: call_1, call_2"
        in err.reason
    )


# --- every adapter: bad arguments in the history ------------------------------------------------


@pytest.mark.parametrize("kind", ["anthropic", "bedrock"])
async def test_history_arguments_that_are_not_an_object_are_refused_naming_the_field(
    an: AnthropicWire, br: BedrockWire, kind: str
) -> None:
    bad = Message(Role.ASSISTANT, "", tool_calls=(ToolCall("c1", "now", "[1, 2]"),))
    url = an.url if kind == "anthropic" else br.url
    async with adapter(kind, url, "m") as backend:
        _, err = await collect_failure(backend, call(Message(Role.USER, "hi"), bad))
    assert err.error_class is ErrorClass.FATAL and err.grpc_code == "INVALID_ARGUMENT"
    assert err.reason.startswith("messages[1].tool_calls[0].arguments: not a JSON object")
    assert (an.requests if kind == "anthropic" else br.requests) == []
