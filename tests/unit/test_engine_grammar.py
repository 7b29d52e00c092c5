"""serving/engines/grammar.py and instances.py: what a request constrains the answer to,
llama.cpp's grammar for it, and the scripted engine's minimal valid instances."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from serving.engines.base import EngineError, EngineRequest, ResponseFormat, Tool, ToolChoice
from serving.engines.grammar import answer_schema, llama_grammar, tool_call_schema
from serving.engines.instances import minimal_instance

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WITH_DEFS = {
    "type": "object",
    "properties": {"unit": {"$ref": "#/$defs/unit"}},
    "required": ["unit"],
    "$defs": {"unit": {"enum": ["c", "f"]}},
}


def req(**kw: Any) -> EngineRequest:
    return EngineRequest("r", (("user", "x"),), 16, **kw)


def test_a_named_call_is_that_tool_with_its_own_arguments() -> None:
    request = req(
        tools=(Tool("get_weather", "", json.dumps(WEATHER)), Tool("noop")),
        tool_choice=ToolChoice("named", "get_weather"),
    )
    schema = tool_call_schema(request)
    assert schema["properties"] == {"name": {"const": "get_weather"}, "arguments": WEATHER}
    assert schema["required"] == ["name", "arguments"] and schema["additionalProperties"] is False
    jsonschema.validate({"name": "get_weather", "arguments": {"city": "Oslo"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "get_weather", "arguments": {}}, schema)


def test_required_offers_one_alternative_per_tool_and_hoists_their_defs() -> None:
    request = req(
        tools=(
            Tool("get_weather", "", json.dumps(WEATHER)),
            Tool("units", "", json.dumps(WITH_DEFS)),
        ),
        tool_choice=ToolChoice("required"),
    )
    schema = answer_schema(request)
    assert schema is not None and len(schema["anyOf"]) == 2
    assert schema["$defs"] == {"unit": {"enum": ["c", "f"]}}  # where #/$defs/unit points now
    jsonschema.validate({"name": "units", "arguments": {"unit": "c"}}, schema)
    with pytest.raises(jsonschema.ValidationError):  # arguments of the other tool
        jsonschema.validate({"name": "units", "arguments": {"city": "x"}}, schema)
    assert tool_call_schema(req(tools=(Tool("noop"),), tool_choice=ToolChoice("required")))[
        "properties"
    ]["arguments"] == {"type": "object", "properties": {}}


def test_response_formats_and_their_errors_name_the_field() -> None:
    assert answer_schema(req()) is None
    assert answer_schema(req(response_format=ResponseFormat("json_object"))) == {"type": "object"}
    fmt = ResponseFormat("json_schema", json.dumps(WEATHER))
    assert answer_schema(req(response_format=fmt)) == WEATHER
    bad = ResponseFormat("json_schema", '{"type": "object", "required": "city"}')
    with pytest.raises(EngineError, match=r"^response_format\.schema_json: not a valid JSON "
                       r"Schema at required: 'city' is not of type 'array'") as caught:  # fmt: skip
        answer_schema(req(response_format=bad))
    assert caught.value.error_class == "invalid"
    tool = Tool("t", "", '{"type": 5}')
    with pytest.raises(EngineError, match=r"^tools\[0\] \(t\)\.parameters_json: not a valid JSON"):
        answer_schema(req(tools=(tool,), tool_choice=ToolChoice("required")))
    other = {**WITH_DEFS, "$defs": {"unit": {"type": "string"}}}
    clash = (Tool("a", "", json.dumps(WITH_DEFS)), Tool("b", "", json.dumps(other)))
    with pytest.raises(EngineError, match=r"^tools\[1\] \(b\)\.parameters_json: \$defs\.unit"):
        answer_schema(req(tools=clash, tool_choice=ToolChoice("required")))


def test_llama_cpp_grammars_come_from_its_own_converter() -> None:
    pytest.importorskip("llama_cpp")
    assert llama_grammar(req()) is None
    generic = llama_grammar(req(response_format=ResponseFormat("json_object")))
    assert generic._grammar.startswith("\nroot   ::= object")  # llama.cpp's JSON grammar
    forced = llama_grammar(
        req(
            tools=(Tool("get_weather", "", json.dumps(WEATHER)),),
            tool_choice=ToolChoice("required"),
        )
    )
    gbnf = forced._grammar
    root = next(line for line in gbnf.splitlines() if line.startswith("root ::="))
    # the name first (it streams first), then the arguments
    assert root.index("name") < root.index("arguments")
    assert '"\\"get_weather\\""' in gbnf
    # JSON strings hold no raw control characters (the converter's own rule allows them)
    char = next(line for line in gbnf.splitlines() if line.startswith("char ::="))
    assert char.startswith('char ::= [^"\\\\\\x7F\\x00-\\x1F] | "\\\\"'), char


SCHEMAS: list[dict[str, Any]] = [
    WEATHER,
    WITH_DEFS,
    {"type": "object"},
    {"type": "object", "properties": {"q": {"type": "string"}}},
    {"type": "object", "minProperties": 1, "properties": {"q": {"type": "boolean"}}},
    {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 3, "maximum": 9},
            "x": {"type": "number", "exclusiveMinimum": 0.5},
            "m": {"type": "number", "multipleOf": 0.25, "minimum": 0.3},
            "neg": {"type": "integer", "maximum": -2},
            "tags": {"type": "array", "minItems": 2, "items": {"type": "string", "minLength": 2}},
            "when": {"type": "string", "format": "date-time"},
            "either": {"anyOf": [{"type": "null"}, {"type": "string"}]},
            "maybe": {"type": ["string", "null"]},
            "both": {
                "allOf": [
                    {"type": "object", "properties": {"a": {"const": 1}}, "required": ["a"]},
                    {"required": ["b"], "properties": {"b": {"type": "boolean"}}},
                ]
            },
            "tuple": {"type": "array", "prefixItems": [{"type": "integer"}], "minItems": 1},
        },
        "required": ["n", "x", "m", "neg", "tags", "when", "either", "maybe", "both", "tuple"],
    },  # fmt: skip
    {"type": "array", "items": {"type": "object"}},
    {"enum": ["red", "green"]},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_minimal_instances_are_valid(schema: dict[str, Any]) -> None:
    value = minimal_instance(schema)
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())
    assert minimal_instance(schema) == value  # deterministic
