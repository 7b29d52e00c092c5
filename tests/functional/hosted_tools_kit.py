"""What the hosted-tools tests share (test_hosted_tools.py, test_hosted_tools_bedrock.py):
the tools, a tool history, tool calls whose arguments are streamed in fragments that split
JSON strings and escapes, a JSON answer, a request maker and an adapter on a wire server."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from wire_calls import WireCall, split_every

from router.backends import create_backend
from router.backends.base import Backend
from router.config import BackendConfig
from router.tools.calls import ToolCallBuffer
from router.types import (
    BackendCall,
    Chunk,
    InferenceRequest,
    Message,
    ResponseFormat,
    Role,
    ToolCall,
    ToolChoice,
    ToolSpec,
)

KEY = "sk-ant-tools-test"
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "array"}},
    "required": ["city"],
}
TOOLS = (
    ToolSpec("get_weather", "Weather for a city", json.dumps(WEATHER)),
    ToolSpec("now"),  # no arguments: an open object schema
)
#: Arguments with quotes, a backslash and a \\u escape, streamed 4 characters at a time.
ARGS = json.dumps({"city": 'Oslo "Sentrum"', "note": "café \\ ok", "days": [1, 2]})
FRAGMENTS = split_every(ARGS, 4)
CALLS = (
    WireCall("call_a1", "get_weather", FRAGMENTS),
    WireCall("call_b2", "now", ("", "{", "}")),
)
HISTORY = (
    Message(Role.SYSTEM, "Be brief."),
    Message(Role.USER, "Weather in Oslo, and the time?"),
    Message(
        Role.ASSISTANT,
        "Let me look.",
        tool_calls=(
            ToolCall("call_1", "get_weather", '{"city": "Oslo"}'),
            ToolCall("call_2", "now", ""),
        ),
    ),
    Message(Role.TOOL, '{"celsius": 4.5}', tool_call_id="call_1", name="get_weather"),
    Message(Role.TOOL, "12:00", tool_call_id="call_2"),
    Message(Role.USER, "And tomorrow?"),
)
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
    "required": ["city", "celsius"],
}
ANSWER = json.dumps({"city": 'Oslo \\ "Ø"', "celsius": -4.5}, ensure_ascii=False)


AUTO = ToolChoice()
TEXT = ResponseFormat()


def call(
    *messages: Message,
    tools: tuple[ToolSpec, ...] = TOOLS,
    choice: ToolChoice = AUTO,
    fmt: ResponseFormat = TEXT,
) -> BackendCall:
    request = InferenceRequest(
        messages=messages or HISTORY,
        max_output_tokens=64,
        request_id="req-tools",
        tools=tools,
        tool_choice=choice,
        response_format=fmt,
    )
    return BackendCall(request=request)


def calls_of(chunks: list[Chunk]) -> tuple[ToolCall, ...]:
    buf = ToolCallBuffer()
    for c in chunks:
        for ev in c.tool_calls:
            buf.add(ev)
    return buf.calls()


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


EXPECTED_CALLS = (ToolCall("call_a1", "get_weather", ARGS), ToolCall("call_b2", "now", "{}"))


@contextlib.asynccontextmanager
async def adapter(kind: str, endpoint: str, model: str, **kw: Any) -> AsyncIterator[Backend]:
    fields: dict[str, Any] = {
        "name": f"{kind}-tools",
        "tier": "hosted",
        "kind": kind,
        "endpoint": endpoint,
        "model": model,
        "context_window": 200_000,
        "timeout_s": 10.0,
    }
    if kind == "anthropic":
        fields["api_key_env"] = "ANTHROPIC_TOOLS_KEY"
    if kind == "bedrock":
        fields["region"] = "us-east-1"
    fields.update(kw)
    backend = create_backend(BackendConfig(**fields), environ={"ANTHROPIC_TOOLS_KEY": KEY})
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()
