"""router/tools/: the checks of tool definitions and formats (INVALID_ARGUMENT naming the
tool and the schema error), the capabilities a request needs, answers checked against
their schema, and tool-call fragments reassembled; and the request conversion that
applies them (router/server/convert.py)."""

from __future__ import annotations

import json

import pytest
from hybrid_router.client import make_request
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb

from router.config import PolicyConfig
from router.errors import InvalidRequest
from router.server.convert import request_from_proto
from router.tools.calls import ToolCallBuffer
from router.tools.needs import JSON_SCHEMA, TOOLS, needed
from router.tools.schema import answer_error, arguments_error
from router.types import (
    FormatType,
    Message,
    ResponseFormat,
    Role,
    ToolCall,
    ToolCallEvent,
    ToolChoiceMode,
    ToolSpec,
)

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city"],
    },
}
CFG = PolicyConfig()


def convert(**options: object) -> object:
    return request_from_proto(make_request("Weather in Oslo?", **options), CFG)


def test_a_request_with_tools_needs_the_tools_capability() -> None:
    req = convert(tools=[WEATHER], tool_choice="get_weather")
    assert TOOLS in req.capabilities and JSON_SCHEMA not in req.capabilities
    assert req.tools[0].name == "get_weather"
    assert json.loads(req.tools[0].parameters)["required"] == ["city"]
    assert req.tool_choice.mode is ToolChoiceMode.NAMED
    assert req.tool_choice.name == "get_weather"


def test_a_json_answer_needs_json_schema() -> None:
    req = convert(json_schema={"type": "object"}, validate_before_streaming=True)
    assert req.capabilities == frozenset({JSON_SCHEMA})
    assert req.response_format.type is FormatType.JSON_SCHEMA
    assert req.validate_before_streaming
    assert convert(response_format="json_object").response_format.is_json


def test_a_history_with_tool_turns_needs_tools() -> None:
    msgs = (
        Message(Role.USER, "hi"),
        Message(Role.ASSISTANT, "", (ToolCall("c1", "f", "{}"),)),
        Message(Role.TOOL, "42", tool_call_id="c1"),
    )
    assert needed((), ResponseFormat(), msgs) == frozenset({TOOLS})
    assert needed((), ResponseFormat(), msgs[:1]) == frozenset()


@pytest.mark.parametrize(
    ("pb_edit", "message"),
    [
        (
            lambda r: r.tools.add(name="get_weather", parameters_json='{"type": "array"}'),
            'tools[0] (get_weather).parameters_json: must describe an object ("type": '
            '"object"), got "array"',
        ),
        (
            lambda r: r.tools.add(name="f", parameters_json='{"type": "object", "properties": 3}'),
            "tools[0] (f).parameters_json: not a valid JSON Schema at properties: 3 is not of "
            "type 'object'",
        ),
        (
            lambda r: r.tools.add(name="f", parameters_json="{oops"),
            "tools[0] (f).parameters_json: is not JSON",
        ),
        (lambda r: r.tools.add(name="has space"), "tools[0] (has space).name: must be 1-64"),
        (
            lambda r: (r.tools.add(name="f"), r.tools.add(name="f")),
            "tools[1] (f).name: tool 'f' is defined twice",
        ),
        (
            lambda r: r.tool_choice.CopyFrom(tpb.ToolChoice(mode=tpb.TOOL_CHOICE_MODE_REQUIRED)),
            "tool_choice: required needs tools",
        ),
        (
            lambda r: (
                r.tools.add(name="f"),
                r.tool_choice.CopyFrom(tpb.ToolChoice(mode=tpb.TOOL_CHOICE_MODE_NAMED, name="g")),
            ),
            "tool_choice.name: 'g' is not one of the request's tools (f)",
        ),
        (
            lambda r: r.response_format.CopyFrom(
                tpb.ResponseFormat(type=tpb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA)
            ),
            "response_format.schema_json: RESPONSE_FORMAT_TYPE_JSON_SCHEMA needs a schema",
        ),
        (lambda r: r.response_format.CopyFrom(tpb.ResponseFormat(type=9)), "response_format.type"),
        (lambda r: r.tool_choice.CopyFrom(tpb.ToolChoice(mode=7)), "tool_choice.mode: must be"),
        (
            lambda r: setattr(r, "validate_before_streaming", True),
            "validate_before_streaming: needs a JSON response_format",
        ),
        (
            lambda r: r.messages.add(role=tpb.ROLE_TOOL, content="42"),
            "messages[1].tool_call_id: a tool message names the call it answers",
        ),
        (
            lambda r: r.messages.add(
                role=tpb.ROLE_ASSISTANT, tool_calls=[tpb.ToolCall(id="c", name="f", arguments="[]")]
            ),
            "messages[1].tool_calls[0].arguments: must be one JSON object, as text",
        ),
        (
            lambda r: r.messages.add(
                role=tpb.ROLE_USER, tool_calls=[tpb.ToolCall(id="c", name="f")]
            ),
            "messages[1].tool_calls: only an assistant message carries tool calls",
        ),
        (lambda r: r.messages.add(role=tpb.ROLE_ASSISTANT), "messages[1].content: must not be"),
    ],
)
def test_bad_tool_fields_are_invalid_argument_naming_them(pb_edit, message: str) -> None:
    pb = rpb.GenerateRequest(messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content="hi")])
    pb_edit(pb)
    with pytest.raises(InvalidRequest) as err:
        request_from_proto(pb, CFG)
    assert message in str(err.value)
    assert err.value.grpc_code == "INVALID_ARGUMENT"


def test_answers_are_checked_against_their_format() -> None:
    schema = ResponseFormat(FormatType.JSON_SCHEMA, json.dumps(WEATHER["parameters"]))
    assert answer_error('{"city": "Oslo", "days": 2}', schema) == ""
    assert answer_error('{"days": 2}', schema).startswith(
        "the answer does not match the schema: 'city' is a required property"
    )
    assert "(at days)" in answer_error('{"city": "Oslo", "days": 0}', schema)
    assert answer_error("Oslo is rainy", schema).startswith("the answer is not JSON")
    obj = ResponseFormat(FormatType.JSON_OBJECT)
    assert answer_error("[1, 2]", obj) == "the answer is JSON but not an object"
    assert answer_error("anything", ResponseFormat()) == ""


def test_tool_call_arguments_are_checked_against_the_tool() -> None:
    tools = (ToolSpec("get_weather", "", json.dumps(WEATHER["parameters"])),)
    assert arguments_error(ToolCall("c1", "get_weather", '{"city": "Oslo"}'), tools) == ""
    assert "unknown tool 'nope'" in arguments_error(ToolCall("c1", "nope", "{}"), tools)
    assert "'city' is a required property" in arguments_error(
        ToolCall("c1", "get_weather", "{}"), tools
    )
    assert "arguments are not JSON" in arguments_error(
        ToolCall("c1", "get_weather", '{"city": '), tools
    )


def test_fragments_reassemble_exactly() -> None:
    args = '{"city": "Os\\"lo", "note": "a,b}"}'
    buf = ToolCallBuffer()
    buf.add(ToolCallEvent(0, "c1", "get_weather", ""))
    buf.add(ToolCallEvent(1, "", "noop", ""))
    for i in range(0, len(args), 3):
        buf.add(ToolCallEvent(0, "", "", args[i : i + 3]))
    calls = buf.calls()
    assert calls[0] == ToolCall("c1", "get_weather", args)
    assert json.loads(calls[0].arguments)["city"] == 'Os"lo'
    assert calls[1] == ToolCall("call_1", "noop", "{}")


def test_deeply_nested_schemas_and_answers_are_refused_not_crashed() -> None:
    deep = '{"type": "object", "properties": {"a": ' * 1000 + "{}" + "}}" * 1000
    pb = rpb.GenerateRequest(
        messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content="hi")],
        tools=[tpb.ToolDefinition(name="deep", parameters_json=deep)],
    )
    with pytest.raises(InvalidRequest) as err:
        request_from_proto(pb, CFG)
    assert (
        str(err.value)
        == "tools[0] (deep).parameters_json: is nested too deeply (at most 64 levels)"
    )
    fmt = ResponseFormat(FormatType.JSON_OBJECT)
    assert answer_error("[" * 100_000 + "]" * 100_000, fmt).startswith("the answer is not JSON")
    schema = ResponseFormat(FormatType.JSON_SCHEMA, '{"type": "array"}')
    assert "nested more than 128 levels" in answer_error("[" * 500 + "]" * 500, schema)
