"""A buffered Generate: the events of one stream folded into one :class:`Completion`."""

from __future__ import annotations

from dataclasses import dataclass, field

from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb

__all__ = ["Completion"]


@dataclass(slots=True)
class Completion:
    """The decision, the whole text, the failovers and the usage of one Generate."""

    request_id: str = ""
    decision: rpb.Decision | None = None
    text: str = ""
    usage: rpb.Usage | None = None
    failovers: list[rpb.Failover] = field(default_factory=list)
    #: Backends that went on with the answer after a failure mid-stream (continue_on_failure).
    continuations: list[rpb.Continuation] = field(default_factory=list)
    #: The tool calls of the answer, reassembled from their fragments (in index order).
    tool_calls: list[tpb.ToolCall] = field(default_factory=list)


class Gather:
    """Folds events into a Completion (text joined once, at the end)."""

    __slots__ = ("_parts", "_calls", "out")

    def __init__(self) -> None:
        self.out = Completion()
        self._parts: list[str] = []
        self._calls: dict[int, list[str]] = {}

    def add(self, ev: rpb.GenerateEvent) -> None:
        kind = ev.WhichOneof("event")
        if kind == "delta":
            self._parts.append(ev.delta.text)
        elif kind == "decision":
            self.out.decision = ev.decision
        elif kind == "failover":
            self.out.failovers.append(ev.failover)
        elif kind == "usage":
            self.out.usage = ev.usage
        elif kind == "continuation":
            self.out.continuations.append(ev.continuation)
        elif kind == "tool_call":
            tc = ev.tool_call
            # [id, name, argument fragments...]: the first id and name seen win.
            call = self._calls.setdefault(tc.index, ["", ""])
            call[0] = call[0] or tc.id
            call[1] = call[1] or tc.name
            if tc.arguments:
                call.append(tc.arguments)

    def result(self, request_id: str) -> Completion:
        self.out.text = "".join(self._parts)
        self.out.tool_calls = [
            tpb.ToolCall(id=c[0] or f"call_{i}", name=c[1], arguments="".join(c[2:]) or "{}")
            for i, c in sorted(self._calls.items())
        ]
        self.out.request_id = request_id
        return self.out
