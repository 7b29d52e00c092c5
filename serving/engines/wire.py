"""The ModelService wire format to and from the engines' records.

One conversion for every place that serves an engine: the ModelService server
(``serving.model_server``), the Ray Serve replica (``serving.ray_app``) and the edge agent
(``greengrass.runner``, which wraps the same events in ``DeviceMessage``).
"""

from __future__ import annotations

import uuid

from hybrid_router.v1 import model_service_pb2 as mpb
from hybrid_router.v1 import types_pb2 as tpb

from serving.engines.base import (
    EngineChunk,
    EngineError,
    EngineRequest,
    Message,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)

_ROLES = {
    tpb.ROLE_SYSTEM: "system",
    tpb.ROLE_USER: "user",
    tpb.ROLE_ASSISTANT: "assistant",
    tpb.ROLE_TOOL: "tool",
}
_FINISH = {
    "stop": tpb.FINISH_REASON_STOP,
    "length": tpb.FINISH_REASON_LENGTH,
    "cancelled": tpb.FINISH_REASON_CANCELLED,
    "tool_calls": tpb.FINISH_REASON_TOOL_CALLS,
}
_CHOICES = {
    tpb.TOOL_CHOICE_MODE_UNSPECIFIED: "auto",
    tpb.TOOL_CHOICE_MODE_AUTO: "auto",
    tpb.TOOL_CHOICE_MODE_NONE: "none",
    tpb.TOOL_CHOICE_MODE_REQUIRED: "required",
    tpb.TOOL_CHOICE_MODE_NAMED: "named",
}
_FORMATS = {
    tpb.RESPONSE_FORMAT_TYPE_UNSPECIFIED: "text",
    tpb.RESPONSE_FORMAT_TYPE_TEXT: "text",
    tpb.RESPONSE_FORMAT_TYPE_JSON_OBJECT: "json_object",
    tpb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: "json_schema",
}


class BadRequest(EngineError):
    """A request field is invalid; the message names it (``error_class`` ``invalid``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "invalid")


def to_engine_request(request: mpb.ModelGenerateRequest) -> EngineRequest:
    """Proto -> EngineRequest; raises BadRequest naming the field."""
    messages = []
    for index, message in enumerate(request.messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise BadRequest(f"messages[{index}].role: must be system, user, assistant or tool")
        messages.append(
            Message(
                role,
                message.content,
                tuple(ToolCall(c.id, c.name, c.arguments) for c in message.tool_calls),
                message.tool_call_id,
                message.name,
            )
        )
    choice = _CHOICES.get(request.tool_choice.mode)
    if choice is None:
        raise BadRequest(
            f"tool_choice.mode: unknown mode {request.tool_choice.mode} (expected auto, none, "
            "required or named)"
        )
    fmt = request.response_format
    fmt_type = _FORMATS.get(fmt.type)
    if fmt_type is None:
        raise BadRequest(
            f"response_format.type: unknown type {fmt.type} (expected text, json_object or "
            "json_schema)"
        )
    sampling = request.sampling
    return EngineRequest(
        request_id=request.request_id or uuid.uuid4().hex,
        messages=tuple(messages),
        max_output_tokens=request.max_output_tokens,
        temperature=sampling.temperature if sampling.HasField("temperature") else None,
        top_p=sampling.top_p if sampling.HasField("top_p") else None,
        top_k=sampling.top_k if sampling.HasField("top_k") else None,
        seed=sampling.seed if sampling.HasField("seed") else None,
        stop=tuple(sampling.stop),
        tools=tuple(Tool(t.name, t.description, t.parameters_json) for t in request.tools),
        tool_choice=ToolChoice(choice, request.tool_choice.name),
        response_format=ResponseFormat(fmt_type, fmt.schema_json, fmt.name),
        continue_final_message=request.continue_final_message,
    )


def event_for(chunk: EngineChunk) -> mpb.ModelGenerateEvent:
    """The ModelService event for an engine chunk (``delta``, ``tool_call``, or ``done``
    with usage)."""
    if chunk.tool_call is not None:
        f = chunk.tool_call
        return mpb.ModelGenerateEvent(
            tool_call=tpb.ToolCallDelta(index=f.index, id=f.id, name=f.name, arguments=f.arguments)
        )
    if chunk.done:
        return mpb.ModelGenerateEvent(
            done=mpb.ModelDone(
                input_tokens=chunk.input_tokens,
                output_tokens=chunk.output_tokens,
                finish_reason=_FINISH.get(chunk.finish_reason, tpb.FINISH_REASON_UNSPECIFIED),
                queue_ms=chunk.queue_ms,
            )
        )
    return mpb.ModelGenerateEvent(delta=tpb.TextDelta(text=chunk.text, tokens=chunk.tokens))
