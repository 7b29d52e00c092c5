"""Streamed tool-call fragments -> complete calls (``ToolCallEvent`` -> ``ToolCall``)."""

from __future__ import annotations

from typing import Any

from router.types import ToolCall, ToolCallEvent


def tool_call_event(delta: Any) -> ToolCallEvent:
    """A contract ``ToolCallDelta`` (ModelService, EdgeLink) as a domain fragment."""
    return ToolCallEvent(delta.index, delta.id, delta.name, delta.arguments)


class ToolCallBuffer:
    """Folds fragments by index: the first id and name seen win, arguments are joined.
    A call without an id gets ``call_<index>`` (some engines send none)."""

    __slots__ = ("_ids", "_names", "_args")

    def __init__(self) -> None:
        self._ids: dict[int, str] = {}
        self._names: dict[int, str] = {}
        self._args: dict[int, list[str]] = {}

    def add(self, ev: ToolCallEvent) -> None:
        i = ev.index
        if ev.id and not self._ids.get(i):
            self._ids[i] = ev.id
        if ev.name and not self._names.get(i):
            self._names[i] = ev.name
        self._args.setdefault(i, [])
        if ev.arguments:
            self._args[i].append(ev.arguments)

    def __len__(self) -> int:
        return len(self._args)

    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(
                id=self._ids.get(i) or f"call_{i}",
                name=self._names.get(i, ""),
                arguments="".join(self._args[i]) or "{}",
            )
            for i in sorted(self._args)
        )
