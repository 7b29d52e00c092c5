"""A buffered Generate: the events of one stream folded into one :class:`Completion`."""

from __future__ import annotations

from dataclasses import dataclass, field

from hybrid_router.v1 import router_pb2 as rpb

__all__ = ["Completion"]


@dataclass(slots=True)
class Completion:
    """The decision, the whole text, the failovers and the usage of one Generate."""

    request_id: str = ""
    decision: rpb.Decision | None = None
    text: str = ""
    usage: rpb.Usage | None = None
    failovers: list[rpb.Failover] = field(default_factory=list)


class Gather:
    """Folds events into a Completion (text joined once, at the end)."""

    __slots__ = ("_parts", "out")

    def __init__(self) -> None:
        self.out = Completion()
        self._parts: list[str] = []

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

    def result(self, request_id: str) -> Completion:
        self.out.text = "".join(self._parts)
        self.out.request_id = request_id
        return self.out
