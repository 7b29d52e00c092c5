"""Checks of tool definitions, response formats and answers against JSON Schemas.

Requests: :func:`check_tools` and :func:`check_format` raise ``InvalidRequest`` naming the
tool (``tools[1] (get_weather).parameters_json: not a valid JSON Schema: ...``).
Answers: :func:`answer_error` and :func:`arguments_error` return why an answer does not
fit ("" when it does); dispatch puts that in ``Usage.format_error`` or, with
``validate_before_streaming``, fails the backend over.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from router.errors import InvalidRequest
from router.types import FormatType, ResponseFormat, ToolCall, ToolChoiceMode, ToolSpec

MAX_TOOLS = 128
#: Nesting of objects and arrays a schema may have (jsonschema validates recursively).
MAX_DEPTH = 64
MAX_SCHEMA_BYTES = 65_536
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@functools.lru_cache(maxsize=256)
def _validator(schema_text: str) -> Any:
    """A compiled validator for a schema already checked by :func:`parse_schema`."""
    import jsonschema

    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def _depth(value: Any) -> int:
    """Nesting depth of JSON containers, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v)
    return deepest


def _loads(text: str) -> Any:
    """JSON of an answer; ValueError also for input nested beyond the parser's recursion."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_schema(text: str, field: str) -> dict[str, Any]:
    """``text`` as a JSON Schema object; InvalidRequest naming ``field`` otherwise."""
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise InvalidRequest(field, f"at most {MAX_SCHEMA_BYTES} bytes of JSON Schema")
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(field, f"is not JSON ({exc})") from None
    except RecursionError:
        raise InvalidRequest(field, f"is nested too deeply (at most {MAX_DEPTH} levels)") from None
    if not isinstance(schema, dict):
        raise InvalidRequest(field, 'must be a JSON Schema object, e.g. {"type": "object"}')
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    if _depth(schema) > MAX_DEPTH:
        raise InvalidRequest(field, f"is nested too deeply (at most {MAX_DEPTH} levels)")
    try:
        cls.check_schema(schema)
    except RecursionError:
        raise InvalidRequest(field, f"is nested too deeply (at most {MAX_DEPTH} levels)") from None
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        at = f" at {where}" if where else ""
        raise InvalidRequest(field, f"not a valid JSON Schema{at}: {exc.message}") from None
    return schema


def check_tools(tools: tuple[ToolSpec, ...], field: str = "tools") -> None:
    if len(tools) > MAX_TOOLS:
        raise InvalidRequest(field, f"at most {MAX_TOOLS} tools per request")
    seen: set[str] = set()
    for i, t in enumerate(tools):
        label = f"{field}[{i}]" + (f" ({t.name})" if t.name else "")
        if not NAME.match(t.name):
            raise InvalidRequest(
                f"{label}.name", "must be 1-64 characters from letters, digits, _ and -"
            )
        if t.name in seen:
            raise InvalidRequest(f"{label}.name", f"tool {t.name!r} is defined twice")
        seen.add(t.name)
        if len(t.description) > 4096:
            raise InvalidRequest(f"{label}.description", "at most 4096 characters")
        if t.parameters:
            schema = parse_schema(t.parameters, f"{label}.parameters_json")
            if schema.get("type", "object") != "object":
                raise InvalidRequest(
                    f"{label}.parameters_json",
                    f'must describe an object ("type": "object"), got '
                    f"{json.dumps(schema.get('type'))}",
                )


def check_choice(mode: ToolChoiceMode, name: str, tools: tuple[ToolSpec, ...]) -> None:
    if mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.NAMED) and not tools:
        raise InvalidRequest("tool_choice", f"{mode.value} needs tools")
    if mode is ToolChoiceMode.NAMED:
        names = [t.name for t in tools]
        if name not in names:
            raise InvalidRequest(
                "tool_choice.name",
                f"{name!r} is not one of the request's tools ({', '.join(names)})",
            )
    elif name:
        raise InvalidRequest("tool_choice.name", "applies to TOOL_CHOICE_MODE_NAMED only")


def check_format(fmt: ResponseFormat) -> None:
    if fmt.type is FormatType.JSON_SCHEMA:
        if not fmt.schema:
            raise InvalidRequest(
                "response_format.schema_json", "RESPONSE_FORMAT_TYPE_JSON_SCHEMA needs a schema"
            )
        parse_schema(fmt.schema, "response_format.schema_json")
    elif fmt.schema:
        raise InvalidRequest(
            "response_format.schema_json", "applies to RESPONSE_FORMAT_TYPE_JSON_SCHEMA only"
        )
    if fmt.name and not NAME.match(fmt.name):
        raise InvalidRequest(
            "response_format.name", "must be 1-64 characters from letters, digits, _ and -"
        )


def _schema_error(value: Any, schema_text: str) -> str:
    from jsonschema.exceptions import best_match

    if _depth(value) > 2 * MAX_DEPTH:
        return f"nested more than {2 * MAX_DEPTH} levels deep"
    try:
        err = best_match(_validator(schema_text).iter_errors(value))
    except RecursionError:
        return "too deeply nested to check"
    if err is None:
        return ""
    where = "/".join(str(p) for p in err.absolute_path)
    return f"{err.message}" + (f" (at {where})" if where else "")


def answer_error(text: str, fmt: ResponseFormat) -> str:
    """Why ``text`` is not an answer in ``fmt`` ("" when it is, or for text)."""
    if not fmt.is_json:
        return ""
    try:
        value = _loads(text)
    except ValueError as exc:
        return f"the answer is not JSON ({exc})"
    if fmt.type is FormatType.JSON_OBJECT:
        return "" if isinstance(value, dict) else "the answer is JSON but not an object"
    err = _schema_error(value, fmt.schema)
    return f"the answer does not match the schema: {err}" if err else ""


def arguments_error(call: ToolCall, tools: tuple[ToolSpec, ...]) -> str:
    """Why a tool call does not fit the request's tools ("" when it does)."""
    spec = next((t for t in tools if t.name == call.name), None)
    if spec is None:
        return f"tool call {call.id}: unknown tool {call.name!r}"
    try:
        value = _loads(call.arguments or "{}")
    except ValueError as exc:
        return f"tool call {call.id} ({call.name}): arguments are not JSON ({exc})"
    if not isinstance(value, dict):
        return f"tool call {call.id} ({call.name}): arguments are not a JSON object"
    if spec.parameters:
        err = _schema_error(value, spec.parameters)
        if err:
            return f"tool call {call.id} ({call.name}): {err}"
    return ""


def tools_text(tools: tuple[ToolSpec, ...]) -> str:
    """The tool definitions as one text, for token counts and payload sizes (what every
    adapter sends, give or take its own wrapping)."""
    return "\n".join(f"{t.name}\n{t.description}\n{t.parameters}" for t in tools)
