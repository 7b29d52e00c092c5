"""A small valid instance of a JSON Schema, deterministically (the scripted engine's tool
arguments and JSON answers).

Covers what tool and answer schemas use: ``type`` (one or a list), ``const``, ``enum``,
``properties`` / ``required`` (only the required ones are filled, plus
``minProperties``), ``items`` / ``prefixItems`` / ``minItems``, ``minLength``,
``minimum`` / ``exclusiveMinimum`` / ``maximum`` / ``multipleOf``, ``anyOf`` / ``oneOf``
(the first option), ``allOf`` (merged), ``$ref`` to ``#/$defs/...`` or
``#/definitions/...``, ``format`` (``date``, ``date-time``, ``email``, ``uri``, ``uuid``).
``pattern`` is not solved. Standard library only.
"""

from __future__ import annotations

import math
from typing import Any

_FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "a@example.com",
    "uri": "https://example.com",
    "uuid": "00000000-0000-0000-0000-000000000000",
}
_MAX_DEPTH = 32


def minimal_instance(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A small value valid against ``schema`` (``root``: where ``$ref`` resolves)."""
    root = schema if root is None else root
    if depth > _MAX_DEPTH or schema is True or not isinstance(schema, dict):
        return {}
    if "$ref" in schema:
        return minimal_instance(_resolve(root, schema["$ref"]), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            merged = {k: v for k, v in schema.items() if k != key}
            return minimal_instance({**merged, **schema[key][0]}, root, depth + 1)
    if schema.get("allOf"):
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve(root, part["$ref"]) if "$ref" in part else part
            merged = _merge(merged, part)
        return minimal_instance(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None:
        kind = "object" if "properties" in schema else "string" if "minLength" in schema else None
    if kind == "object" or kind is None:
        return _object(schema, root, depth)
    if kind == "array":
        return _array(schema, root, depth)
    if kind == "string":
        if schema.get("format") in _FORMATS:
            return _FORMATS[schema["format"]]
        return "a" * int(schema.get("minLength", 0))
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return False
    return None


def _resolve(root: Any, ref: str) -> Any:
    node = root
    if not ref.startswith("#"):
        return {}
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {**a, **b}
    if "properties" in a or "properties" in b:
        out["properties"] = {**a.get("properties", {}), **b.get("properties", {})}
    if "required" in a or "required" in b:
        out["required"] = [*a.get("required", []), *b.get("required", [])]
    return out


def _object(schema: dict[str, Any], root: Any, depth: int) -> dict[str, Any]:
    props: dict[str, Any] = schema.get("properties") or {}
    names = list(dict.fromkeys(schema.get("required") or ()))
    for name in props:
        if len(names) >= int(schema.get("minProperties", 0)):
            break
        if name not in names:
            names.append(name)
    return {n: minimal_instance(props.get(n, {}), root, depth + 1) for n in names}


def _array(schema: dict[str, Any], root: Any, depth: int) -> list[Any]:
    prefix = list(schema.get("prefixItems") or ())
    count = max(int(schema.get("minItems", 0)), 0)
    items = schema.get("items", {})
    out = [minimal_instance(p, root, depth + 1) for p in prefix[:count]]
    while len(out) < count:
        out.append(minimal_instance(items if isinstance(items, dict) else {}, root, depth + 1))
    return out


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    """0 if allowed, else the allowed value nearest to it (bounds, exclusive bounds and
    ``multipleOf`` respected)."""
    step = schema.get("multipleOf") or (1 if integer else 0)
    low, high = schema.get("minimum", -math.inf), schema.get("maximum", math.inf)
    if "exclusiveMinimum" in schema:
        low = max(low, schema["exclusiveMinimum"] + (step or 1) * 1e-9)
    if "exclusiveMaximum" in schema:
        high = min(high, schema["exclusiveMaximum"] - (step or 1) * 1e-9)
    value: float = 0 if low <= 0 <= high else (low if low > 0 else high)
    if step:
        value = math.ceil(value / step) * step if value == low else math.floor(value / step) * step
    if integer or float(value).is_integer():
        return int(value)
    return value
