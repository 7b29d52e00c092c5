"""What every section shares: the strict frozen base model, the bounds every number is held
to, and validation errors in the project's own words.

Bounds (one place, so ``check`` and ``serve`` accept exactly the same configs): besides
each key's own ``ge``/``le``, every whole number is at most :data:`INT_MAX` (the widest
value the gRPC runtime's options and the protocol's 32-bit fields take); every number is
finite; a duration is at most :data:`MAX_SECONDS` (keys ending ``_s``; ``_ms`` keys in
milliseconds); any other decimal is at most :data:`MAX_NUMBER`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

#: The largest whole number a key takes: gRPC's options are C ints, the protocol's counts
#: 32-bit fields.
INT_MAX = 2**31 - 1
#: The longest duration a key takes: 30 days.
MAX_SECONDS = 30 * 24 * 3600
#: The largest other decimal (prices, ratios, weights).
MAX_NUMBER = 1e12


def _bound(name: str, value: Any) -> None:
    """Raise ValueError when ``value`` (a number, or numbers in a list or mapping) is
    outside the shared bounds for a key called ``name``."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, list | tuple):
        for item in value:
            _bound(name, item)
        return
    if isinstance(value, Mapping):
        for item in value.values():
            _bound(name, item)
        return
    if isinstance(value, int):
        if value > INT_MAX:
            raise ValueError(f"must be at most {INT_MAX} (the widest value the router takes)")
        if value < -INT_MAX:
            raise ValueError(f"must be at least {-INT_MAX}")
        if name.endswith("_s") and value > MAX_SECONDS:
            raise ValueError(f"must be at most {MAX_SECONDS} seconds (30 days)")
        if name.endswith("_ms") and value > MAX_SECONDS * 1000:
            raise ValueError(f"must be at most {MAX_SECONDS * 1000} ms (30 days)")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        if name.endswith("_s"):
            if value > MAX_SECONDS:
                raise ValueError(f"must be at most {MAX_SECONDS} seconds (30 days)")
        elif name.endswith("_ms"):
            if value > MAX_SECONDS * 1000:
                raise ValueError(f"must be at most {MAX_SECONDS * 1000} ms (30 days)")
        elif abs(value) > MAX_NUMBER:
            raise ValueError(f"must be at most {MAX_NUMBER:g}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _within_bounds(cls, value: Any, info: ValidationInfo) -> Any:
        _bound(info.field_name or "", value)
        return value


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _message(err: Mapping[str, Any]) -> str:
    """A pydantic error in the project's words: what the key must be, and what it got."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = err.get("input")
    shown = f", got {got!r}" if isinstance(got, str | int | float) and len(repr(got)) < 60 else ""
    if kind == "extra_forbidden":
        return "unknown key; check the spelling (see docs/configuration.md for allowed keys)"
    if kind == "missing":
        return "required; add it"
    if kind in ("enum", "literal_error"):
        return f"must be one of {ctx.get('expected')}{shown}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a section (key: value lines){shown}"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list (- item lines){shown}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number{shown}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number{shown}"
    if kind == "finite_number":
        return "must be a finite number"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false{shown}"
    if kind == "string_type":
        return f"must be text (quote it in YAML){shown}"
    if kind == "greater_than_equal":
        return f"must be >= {_num(ctx.get('ge'))}{shown}"
    if kind == "greater_than":
        return f"must be > {_num(ctx.get('gt'))}{shown}"
    if kind == "less_than_equal":
        return f"must be <= {_num(ctx.get('le'))}{shown}"
    if kind == "less_than":
        return f"must be < {_num(ctx.get('lt'))}{shown}"
    if kind == "string_too_short":
        return f"must be at least {_plural(ctx.get('min_length'), 'character')} long"
    if kind == "string_too_long":
        return f"must be at most {_plural(ctx.get('max_length'), 'character')} long"
    if kind == "too_short":
        return f"needs at least {_plural(ctx.get('min_length'), 'item')}"
    if kind == "too_long":
        return f"takes at most {_plural(ctx.get('max_length'), 'item')}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}{shown}"
    msg = str(err["msg"])
    # "Value error, <ours>" / "Assertion failed, <ours>": keep ours.
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation problem: the key (backends named by name), the environment variable
    that set it ("" for the file), and what the key must be."""

    key: str
    origin: str
    message: str

    def line(self) -> str:
        key = f"{self.origin} ({self.key})" if self.origin else self.key
        return f"  {key}: {self.message}"


def validation_problems(
    exc: ValidationError,
    data: Mapping[str, Any],
    origins: Mapping[str, str] | None = None,
) -> list[Problem]:
    """The problems of ``exc`` (raised validating ``data``); ``origins``: key -> the
    environment variable that set it."""
    problems = []
    for err in exc.errors():
        parts: list[str] = []
        canonical: list[str] = []
        node: Any = data
        for loc in err["loc"]:
            # Name backends by their name rather than their index.
            if isinstance(loc, int) and isinstance(node, list) and loc < len(node):
                item = node[loc]
                label = item.get("name") if isinstance(item, dict) else None
                parts.append(f"[{loc}]" + (f"({label})" if label else ""))
                canonical.append(f"[{label if label else loc}]")
                node = item
                continue
            parts.append(("." if parts else "") + str(loc))
            canonical.append(("." if canonical else "") + str(loc))
            node = node.get(loc) if isinstance(node, dict) else None
        key = "".join(parts) or "(top level)"
        problems.append(Problem(key, _origin("".join(canonical), origins or {}), _message(err)))
    return problems


def _format_validation_error(
    exc: ValidationError,
    data: Mapping[str, Any],
    origins: Mapping[str, str] | None = None,
) -> str:
    """One line per problem: ``  key: what it must be`` (``  VAR (key): ...`` for a key an
    environment variable set)."""
    return "\n".join(p.line() for p in validation_problems(exc, data, origins))


def _origin(key: str, origins: Mapping[str, str]) -> str:
    for set_key, origin in origins.items():
        if key == set_key or key.startswith((set_key + ".", set_key + "[")):
            return origin
    return ""
