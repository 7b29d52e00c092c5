"""The capabilities a request needs from a backend (pure): ``tools`` when it carries tool
definitions or a history with tool calls, ``json_schema`` for a JSON answer."""

from __future__ import annotations

from collections.abc import Iterable

from router.types import Message, ResponseFormat, Role, ToolSpec

#: A backend that takes tool definitions, tool-call turns and tool results.
TOOLS = "tools"
#: A backend that can be held to a JSON answer (an object, or one valid against a schema).
JSON_SCHEMA = "json_schema"
#: What a hosted adapter (openai, anthropic, bedrock) offers unless router.yaml says.
HOSTED_DEFAULT = ("chat", TOOLS, JSON_SCHEMA)


def needed(
    tools: Iterable[ToolSpec], response_format: ResponseFormat, messages: Iterable[Message]
) -> frozenset[str]:
    out: set[str] = set()
    if any(True for _ in tools) or any(m.role is Role.TOOL or m.tool_calls for m in messages):
        out.add(TOOLS)
    if response_format.is_json:
        out.add(JSON_SCHEMA)
    return frozenset(out)
