"""Tools, tool choice and the answer's format for a ``GenerateRequest`` (docs/tools.md).

Tools may be given in the OpenAI shape (``{"type": "function", "function": {"name",
"description", "parameters"}}``) or flat (``{"name", "description", "parameters"}``);
``parameters`` is a JSON Schema (a dict, or JSON text). Messages of an agent loop may be
``(role, content)`` pairs or dicts in the OpenAI shape: an assistant message with
``tool_calls`` and ``role: "tool"`` messages with ``tool_call_id``. A wrong value raises
:class:`~hybrid_router.client.errors.OptionError` naming it; the router checks the
schemas themselves (INVALID_ARGUMENT naming the tool).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from hybrid_router.client.enums import RESPONSE_FORMATS, ROLES, TOOL_CHOICES
from hybrid_router.client.errors import OptionError
from hybrid_router.v1 import types_pb2 as tpb

__all__ = ["build_message", "build_response_format", "build_tool_choice", "build_tools"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _json_text(value: Any, option: str) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError as exc:
            raise OptionError(option, f"is not JSON ({exc})") from None
        return value
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise OptionError(option, f"cannot be written as JSON ({exc})") from None


def build_tools(tools: Iterable[Mapping[str, Any]]) -> list[tpb.ToolDefinition]:
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, Mapping):
            raise OptionError(f"tools[{i}]", "must be a dict with name, description, parameters")
        fn = t.get("function") if t.get("type") == "function" else t
        if not isinstance(fn, Mapping):
            raise OptionError(f"tools[{i}].function", "must be a dict with a name")
        name = fn.get("name", "")
        if not isinstance(name, str) or not _NAME.match(name):
            raise OptionError(
                f"tools[{i}].name", "must be 1-64 characters from letters, digits, _ and -"
            )
        params = _json_text(fn.get("parameters"), f"tools[{i}] ({name}).parameters")
        out.append(
            tpb.ToolDefinition(
                name=name, description=str(fn.get("description") or ""), parameters_json=params
            )
        )
    return out


def build_tool_choice(choice: str | Mapping[str, Any], tool_names: list[str]) -> tpb.ToolChoice:
    """``auto``, ``none``, ``required``, a tool's name, or OpenAI's
    ``{"type": "function", "function": {"name": ...}}``."""
    if isinstance(choice, Mapping):
        fn = choice.get("function")
        name = fn.get("name", "") if isinstance(fn, Mapping) else ""
        if not name:
            raise OptionError("tool_choice", "a dict names a function: {'function': {'name': ...}}")
        choice = name
    if not choice:
        return tpb.ToolChoice()
    if choice in TOOL_CHOICES and choice != "named":
        return tpb.ToolChoice(mode=TOOL_CHOICES[choice])  # type: ignore[arg-type]
    if choice not in tool_names:
        known = ", ".join(["auto", "none", "required", *tool_names])
        raise OptionError("tool_choice", f"{choice!r} is not one of {known}")
    return tpb.ToolChoice(mode=TOOL_CHOICES["named"], name=choice)  # type: ignore[arg-type]


def build_response_format(
    kind: str, schema: Mapping[str, Any] | str | None, name: str = "", strict: bool = False
) -> tpb.ResponseFormat:
    """``text``, ``json_object`` or ``json_schema`` (a schema alone implies it)."""
    if schema not in (None, "") and not kind:
        kind = "json_schema"
    number = RESPONSE_FORMATS.number(kind, "response_format")
    text = _json_text(schema, "json_schema")
    if kind == "json_schema" and not text:
        raise OptionError("json_schema", "response_format json_schema needs a schema")
    if text and kind != "json_schema":
        raise OptionError(
            "json_schema", f"a schema needs response_format json_schema, not {kind!r}"
        )
    return tpb.ResponseFormat(type=number, schema_json=text, name=name, strict=strict)  # type: ignore[arg-type]


def build_message(item: Any, index: int) -> tpb.ChatMessage:
    """A ``(role, content)`` pair, an OpenAI-shaped dict, or a ``ChatMessage``."""
    where = f"messages[{index}]"
    if isinstance(item, tpb.ChatMessage):
        return item
    if isinstance(item, Mapping):
        role = item.get("role", "")
        if role not in ROLES:
            raise OptionError(f"{where}.role", f"must be one of {', '.join(ROLES)}")
        calls = []
        for j, c in enumerate(item.get("tool_calls") or ()):
            fn = c.get("function", c) if isinstance(c, Mapping) else None
            if not isinstance(fn, Mapping):
                raise OptionError(f"{where}.tool_calls[{j}]", "must be a dict")
            args = fn.get("arguments", "{}")
            calls.append(
                tpb.ToolCall(
                    id=str(c.get("id", "")),
                    name=str(fn.get("name", "")),
                    arguments=_json_text(args, f"{where}.tool_calls[{j}].arguments") or "{}",
                )
            )
        return tpb.ChatMessage(
            role=ROLES[role],  # type: ignore[arg-type]
            content=str(item.get("content") or ""),
            tool_calls=calls,
            tool_call_id=str(item.get("tool_call_id") or ""),
            name=str(item.get("name") or ""),
        )
    try:
        role, content = item
    except (TypeError, ValueError):
        raise OptionError(where, "must be a (role, content) pair or a message dict") from None
    if role not in ROLES:
        raise OptionError(f"{where}.role", f"must be one of {', '.join(ROLES)}")
    return tpb.ChatMessage(role=ROLES[role], content=content)  # type: ignore[arg-type]
