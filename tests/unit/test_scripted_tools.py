"""ScriptedEngine with tools and JSON answers: deterministic calls with minimal valid
arguments in several fragments, minimal valid JSON answers, and the request checks."""

from __future__ import annotations

import json

import jsonschema
import pytest
from testkit import collect

from serving.engines.base import (
    CHAT_CAPABILITIES,
    EngineError,
    EngineRequest,
    Message,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)
from serving.engines.scripted import FRAGMENT_CHARS, ScriptedEngine, call_id

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 3},
        "days": {"type": "integer", "minimum": 1},
    },
    "required": ["city", "days"],
}
TOOLS = (Tool("get_weather", "Weather for a city", json.dumps(WEATHER)), Tool("noop"))


def request(
    text: str = "Weather in Oslo?", max_output_tokens: int = 64, **kw: object
) -> EngineRequest:
    return EngineRequest("r1", (Message("user", text),), max_output_tokens, **kw)  # type: ignore[arg-type]


def calls(chunks: list) -> dict[int, tuple[str, str, str]]:  # type: ignore[type-arg]
    out: dict[int, tuple[str, str, str]] = {}
    for c in chunks:
        if c.tool_call is not None:
            f = c.tool_call
            cid, name, args = out.get(f.index, ("", "", ""))
            out[f.index] = (cid or f.id, name or f.name, args + f.arguments)
    return out


async def test_a_required_choice_calls_the_first_tool_with_valid_arguments_in_fragments() -> None:
    engine = ScriptedEngine()
    chunks = await collect(
        engine.generate(request(tools=TOOLS, tool_choice=ToolChoice("required")))
    )
    *pieces, done = chunks
    assert all(c.text == "" and c.tokens == 1 for c in pieces)
    ((cid, name, arguments),) = calls(pieces).values()
    assert (cid, name) == (call_id("r1", 0), "get_weather") and cid.startswith("call_")
    assert json.loads(arguments) == {"city": "aaa", "days": 1}
    jsonschema.validate(json.loads(arguments), WEATHER)
    assert pieces[0].tool_call.arguments == "" and pieces[0].tool_call.id == cid
    assert len(pieces) == 1 + -(-len(arguments) // FRAGMENT_CHARS) >= 3
    assert (done.finish_reason, done.output_tokens) == ("tool_calls", len(pieces))
    assert done.input_tokens == engine.count_tokens(request().messages, TOOLS)
    again = await collect(
        ScriptedEngine().generate(request(tools=TOOLS, tool_choice=ToolChoice("required")))
    )
    assert again[:-1] == pieces  # deterministic


async def test_a_named_choice_calls_that_tool() -> None:
    chunks = await collect(
        ScriptedEngine().generate(request(tools=TOOLS, tool_choice=ToolChoice("named", "noop")))
    )
    assert calls(chunks)[0][1:] == ("noop", "{}")


async def test_auto_calls_a_tool_the_user_names_and_answers_a_tool_result_with_text() -> None:
    engine = ScriptedEngine(reply_tokens=3)
    named = await collect(engine.generate(request("use get_weather for Oslo", tools=TOOLS)))
    assert calls(named)[0][1] == "get_weather" and named[-1].finish_reason == "tool_calls"
    plain = await collect(engine.generate(request("hello there", tools=TOOLS)))
    assert calls(plain) == {} and "".join(c.text for c in plain) == "hello there hello"
    history = (
        Message("user", "use get_weather"),
        Message("assistant", "", (ToolCall("call_1", "get_weather", '{"city": "Oslo"}'),)),
        Message("tool", "4.5 degrees", tool_call_id="call_1"),
    )
    answer = await collect(engine.generate(EngineRequest("r2", history, 8, tools=TOOLS)))
    assert calls(answer) == {} and answer[-1].finish_reason == "stop"
    assert "".join(c.text for c in answer) == "4.5 degrees 4.5"
    none = await collect(
        engine.generate(request("use get_weather", tools=TOOLS, tool_choice=ToolChoice("none")))
    )
    assert calls(none) == {}


async def test_json_answers_are_minimal_valid_instances_in_pieces() -> None:
    fmt = ResponseFormat("json_schema", json.dumps(WEATHER))
    *pieces, done = await collect(ScriptedEngine().generate(request(response_format=fmt)))
    text = "".join(c.text for c in pieces)
    jsonschema.validate(json.loads(text), WEATHER)
    assert len(pieces) > 1 and all(len(c.text) <= FRAGMENT_CHARS for c in pieces)
    assert (done.finish_reason, done.output_tokens) == ("stop", len(pieces))
    obj = await collect(
        ScriptedEngine().generate(request(response_format=ResponseFormat("json_object")))
    )
    assert "".join(c.text for c in obj) == "{}"


async def test_a_long_call_is_cut_at_max_output_tokens() -> None:
    chunks = await collect(
        ScriptedEngine().generate(
            request(max_output_tokens=2, tools=TOOLS, tool_choice=ToolChoice("required"))
        )
    )
    assert chunks[-1].finish_reason == "length" and chunks[-1].output_tokens == 2


def test_tools_and_tool_calls_count_toward_the_prompt() -> None:
    engine = ScriptedEngine()
    plain = engine.count_tokens((("user", "one two"),))
    assert plain == 2 + 4 + 3
    assert (
        engine.count_tokens((("user", "one two"),), (Tool("f", "does a thing"),)) == plain + 4 + 4
    )
    history = (Message("assistant", "", (ToolCall("c", "f", '{"a": 1}'),)),)
    assert engine.count_tokens(history) == 3 + 4 + 3


def test_the_engine_offers_tools_and_json() -> None:
    assert ScriptedEngine().info.capabilities == (*CHAT_CAPABILITIES, "prefill")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (request(tool_choice=ToolChoice("required")), "tool_choice: 'required' needs tools"),
        (
            request(tools=TOOLS, tool_choice=ToolChoice("named", "x")),
            "tool_choice.name: 'x' is not one",
        ),
        (
            request(tools=TOOLS, tool_choice=ToolChoice("sometimes")),
            "tool_choice.mode: unknown mode",
        ),
        (request(tools=(Tool("f"), Tool("f"))), "tools[1].name: 'f' is given twice"),
        (
            request(tools=(Tool("f", "", "[1]"),)),
            "tools[0] (f).parameters_json: must be a JSON object",
        ),
        (
            request(response_format=ResponseFormat("yaml")),
            "response_format.type: unknown type 'yaml'",
        ),
        (
            request(response_format=ResponseFormat("json_schema")),
            "response_format.schema_json: required",
        ),
        (
            request(response_format=ResponseFormat("json_schema", "{")),
            "response_format.schema_json: not JSON",
        ),
        (
            request(response_format=ResponseFormat("json_schema", '{"type": 3}')),
            "response_format.schema_json: not a valid JSON Schema",
        ),
        (
            EngineRequest("r", (Message("tool", "4"),), 4),
            "messages[0].tool_call_id: a tool message names the call it answers",
        ),
        (
            EngineRequest("r", (Message("user", "x", (ToolCall("c", "f", "{}"),)),), 4),
            "messages[0].tool_calls: only an assistant message calls tools",
        ),
    ],
)
async def test_bad_tool_requests_are_invalid_naming_the_field(
    bad: EngineRequest, message: str
) -> None:
    with pytest.raises(EngineError) as caught:
        await collect(ScriptedEngine().generate(bad))
    assert caught.value.error_class == "invalid"
    assert str(caught.value).startswith(message)
