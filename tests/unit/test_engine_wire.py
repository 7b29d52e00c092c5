"""serving/engines/wire.py with tools: the ModelService request's tool fields and messages
-> engine records, and tool-call chunks -> ``tool_call`` events (pure)."""

from __future__ import annotations

import pytest
from hybrid_router.v1 import model_service_pb2 as mpb
from hybrid_router.v1 import types_pb2 as tpb

from serving.engines.base import (
    EngineChunk,
    Message,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolCallFragment,
    ToolChoice,
)
from serving.engines.wire import BadRequest, event_for, to_engine_request


def proto() -> mpb.ModelGenerateRequest:
    return mpb.ModelGenerateRequest(
        request_id="r",
        messages=[
            tpb.ChatMessage(role=tpb.ROLE_USER, content="Weather?"),
            tpb.ChatMessage(
                role=tpb.ROLE_ASSISTANT,
                tool_calls=[
                    tpb.ToolCall(id="c1", name="get_weather", arguments='{"city": "Oslo"}')
                ],
            ),
            tpb.ChatMessage(
                role=tpb.ROLE_TOOL, content="4.5", tool_call_id="c1", name="get_weather"
            ),
        ],
        max_output_tokens=8,
        tools=[tpb.ToolDefinition(name="get_weather", description="d", parameters_json="{}")],
        tool_choice=tpb.ToolChoice(mode=tpb.TOOL_CHOICE_MODE_NAMED, name="get_weather"),
        response_format=tpb.ResponseFormat(
            type=tpb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema_json='{"type": "object"}', name="a"
        ),
    )


def test_tool_fields_and_messages_become_engine_records() -> None:
    request = to_engine_request(proto())
    assert request.messages == (
        Message("user", "Weather?"),
        Message("assistant", "", (ToolCall("c1", "get_weather", '{"city": "Oslo"}'),)),
        Message("tool", "4.5", tool_call_id="c1", name="get_weather"),
    )
    assert request.tools == (Tool("get_weather", "d", "{}"),)
    assert request.tool_choice == ToolChoice("named", "get_weather")
    assert request.response_format == ResponseFormat("json_schema", '{"type": "object"}', "a")
    assert request.forced_tool and request.offered_tools == request.tools


def test_defaults_are_auto_and_text() -> None:
    request = to_engine_request(mpb.ModelGenerateRequest(request_id="r", max_output_tokens=1))
    assert (request.tools, request.tool_choice, request.response_format) == (
        (),
        ToolChoice("auto"),
        ResponseFormat("text"),
    )
    assert not request.forced_tool and not request.response_format.is_json


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("tool_choice", "tool_choice.mode: unknown mode 99"),
        ("response_format", "response_format.type: unknown type 99"),
        ("role", "messages[0].role: must be system, user, assistant or tool"),
    ],
)
def test_unknown_enum_values_are_bad_requests_naming_the_field(field: str, message: str) -> None:
    request = proto()
    if field == "tool_choice":
        request.tool_choice.mode = 99  # type: ignore[assignment]
    elif field == "response_format":
        request.response_format.type = 99  # type: ignore[assignment]
    else:
        request.messages[0].role = 99  # type: ignore[assignment]
    with pytest.raises(BadRequest, match=rf"^{message.replace('[', '.').replace(']', '.')}"):
        to_engine_request(request)


def test_tool_call_chunks_are_tool_call_events_and_finish_tool_calls() -> None:
    event = event_for(EngineChunk(tool_call=ToolCallFragment(1, "c", "f", '{"a"')))
    assert event.WhichOneof("event") == "tool_call"
    assert event.tool_call == tpb.ToolCallDelta(index=1, id="c", name="f", arguments='{"a"')
    done = event_for(EngineChunk(done=True, output_tokens=3, finish_reason="tool_calls"))
    assert done.done.finish_reason == tpb.FINISH_REASON_TOOL_CALLS
