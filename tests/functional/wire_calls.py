"""Tool calls the provider wire servers (``openai_wire``, ``anthropic_wire``, ``bedrock_wire``)
stream: each call's arguments are sent as the given fragments, in order, so a test can split
JSON anywhere (inside a string, inside an escape) and check that it is joined exactly."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WireCall:
    """One tool call a scenario answers with: its id, the tool's name, and its arguments
    (a JSON object as text) as the fragments the server streams."""

    id: str
    name: str
    fragments: tuple[str, ...] = ("{}",)

    @property
    def arguments(self) -> str:
        return "".join(self.fragments)

    @property
    def input(self) -> Any:
        """The arguments parsed (the non-streaming answers carry them whole)."""
        return json.loads(self.arguments or "{}")


def split_every(text: str, size: int) -> tuple[str, ...]:
    """``text`` in pieces of ``size`` characters (splits land inside strings and escapes)."""
    return tuple(text[i : i + size] for i in range(0, len(text), size))
