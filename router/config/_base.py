"""What every section shares: the strict frozen base model and readable validation errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _format_validation_error(exc: ValidationError, data: Mapping[str, Any]) -> str:
    lines = []
    for err in exc.errors():
        parts: list[str] = []
        node: Any = data
        for loc in err["loc"]:
            # Name backends by their name rather than their index.
            if isinstance(loc, int) and isinstance(node, list) and loc < len(node):
                item = node[loc]
                label = item.get("name") if isinstance(item, dict) else None
                parts.append(f"[{loc}]" + (f"({label})" if label else ""))
                node = item
                continue
            parts.append(("." if parts else "") + str(loc))
            node = node.get(loc) if isinstance(node, dict) else None
        key = "".join(parts) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check the spelling (see docs/configuration.md for allowed keys)"
        elif err["type"] == "enum" and "ctx" in err:
            msg = f"must be one of {err['ctx'].get('expected')}"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)
