"""What a request constrains the answer to, as a JSON Schema, and llama.cpp's grammar for it.

- a forced tool call (``tool_choice`` ``required`` / ``named``): one JSON object
  ``{"name": <the tool>, "arguments": <its parameters schema>}``; with several tools
  (``required``) one alternative per tool, so the arguments always fit the named tool.
  The tools' ``$defs`` move to the root, where their ``#/$defs/...`` references point;
- ``response_format`` ``json_schema``: its schema; ``json_object``: any JSON object.

Schemas are checked with ``jsonschema`` first, so a bad one is a bad request naming the
field (``tools[0] (get_weather).parameters_json: not a valid JSON Schema: ...``).
``llama_cpp`` and ``jsonschema`` are imported when a request needs them.
"""

from __future__ import annotations

import json
from typing import Any

from serving.engines.base import EngineError, EngineRequest, Tool
from serving.engines.prompt import json_object

#: llama-cpp-python's schema converter (0.3.x) lets a JSON string hold raw control
#: characters (its ``char`` rule is ``[^"\\]``), so a constrained answer could carry a
#: literal newline or tab inside a string: not JSON. Its own ``JSON_GBNF`` and llama.cpp's
#: converter exclude them; the rule is tightened the same way (escapes stay allowed).
_LOOSE_CHAR = r'char ::= [^"\\] |'
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'

#: The order the forced call's keys are decoded in (the name first, so it streams first).
CALL_KEYS = ("name", "arguments")
_EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


def _invalid(message: str) -> EngineError:
    return EngineError(message, "invalid")


def check_schema(schema: dict[str, Any], field: str) -> None:
    """Raise EngineError naming ``field`` when ``schema`` is not a valid JSON Schema."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise _invalid(
            f"{field}: not a valid JSON Schema{f' at {where}' if where else ''}: {exc.message}"
        ) from None


def tool_parameters(index: int, tool: Tool) -> dict[str, Any]:
    """A tool's parameters schema, checked ("" = an empty object)."""
    if not tool.parameters_json:
        return dict(_EMPTY_OBJECT)
    field = f"tools[{index}] ({tool.name}).parameters_json"
    schema = json_object(tool.parameters_json, field)
    check_schema(schema, field)
    return schema


def tool_call_schema(request: EngineRequest) -> dict[str, Any]:
    """The schema of the forced call (see the module docstring)."""
    choice = request.tool_choice
    chosen = [
        (i, t)
        for i, t in enumerate(request.tools)
        if choice.mode != "named" or t.name == choice.name
    ]
    if not chosen:
        raise _invalid(f"tool_choice.name: {choice.name!r} is not one of the request's tools")
    defs: dict[str, Any] = {}
    options = []
    for index, tool in chosen:
        params = tool_parameters(index, tool)
        for key in ("$defs", "definitions"):
            for name, definition in (params.pop(key, None) or {}).items():
                if defs.setdefault(f"{key}/{name}", definition) != definition:
                    raise _invalid(
                        f"tools[{index}] ({tool.name}).parameters_json: {key}.{name} differs "
                        "from another tool's definition of that name (rename one of them)"
                    )
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": params},
                "required": list(CALL_KEYS),
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    for path, definition in defs.items():
        key, name = path.split("/", 1)
        schema.setdefault(key, {})[name] = definition
    return schema


def answer_schema(request: EngineRequest) -> dict[str, Any] | None:
    """The schema the answer must follow: a forced call's, the response format's, or None
    (``json_object``: ``{"type": "object"}``)."""
    if request.forced_tool:
        return tool_call_schema(request)
    fmt = request.response_format
    if fmt.type == "json_schema":
        schema = json_object(fmt.schema_json, "response_format.schema_json")
        check_schema(schema, "response_format.schema_json")
        return schema
    if fmt.type == "json_object":
        return {"type": "object"}
    return None


def llama_grammar(request: EngineRequest) -> Any:
    """A ``llama_cpp.LlamaGrammar`` for the request, or None when it constrains nothing.

    ``json_object`` uses llama.cpp's generic JSON grammar; a schema is converted with
    llama.cpp's own converter (``json_schema_to_gbnf``, what ``LlamaGrammar.
    from_json_schema`` calls), the forced call's keys in ``CALL_KEYS`` order."""
    schema = answer_schema(request)
    if schema is None:
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar, json_schema_to_gbnf

    if schema == {"type": "object"}:
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    field = "tools" if request.forced_tool else "response_format.schema_json"
    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema), prop_order=list(CALL_KEYS))
    except Exception as exc:  # the converter raises plain errors for what it cannot handle
        raise _invalid(
            f"{field}: llama.cpp cannot build a grammar from this schema: {exc}"
        ) from None
    return LlamaGrammar.from_string(strict_strings(gbnf), verbose=False)


def strict_strings(gbnf: str) -> str:
    """``gbnf`` with its JSON strings' ``char`` rule excluding control characters."""
    return "\n".join(
        _STRICT_CHAR + line[len(_LOOSE_CHAR) :] if line.startswith(_LOOSE_CHAR) else line
        for line in gbnf.split("\n")
    )
