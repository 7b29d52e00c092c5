"""Where a strategy misses what the oracle meets (``hybrid-router simulate --misses``).

Each request the oracle met and the strategy missed is put in a group: the request's
budgets (the traffic class, as far as a trace tells it), where the strategy sent it and
how it missed (``ttft``: over its TTFT budget; ``total``: over its total budget; or the
request's end: ``cut``, ``failed``, ``refused``), and where the oracle sent it. The groups,
largest first, say which decisions cost the most SLOs: a strategy that sends interactive
requests to a backend whose tail misses their TTFT budget shows as one large group.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from router.policy.planner import budget_text
from router.simulation.engine import Outcome
from router.simulation.report import meets
from router.simulation.trace import TraceRequest


@dataclass(frozen=True)
class MissGroup:
    """Requests the oracle met and the strategy missed, alike in these four columns."""

    #: The request's budgets, e.g. "ttft<=600ms total<=3000ms" ("none": no budget).
    budgets: str
    #: Where the strategy's answer came from ("-": none did).
    backend: str
    #: "ttft", "total", "ttft+total", or the request's end: "cut", "failed", "refused".
    missed: str
    #: Where the oracle sent the request.
    oracle_backend: str
    requests: int


@dataclass
class MissReport:
    strategy: str
    #: Requests the oracle met and the strategy missed (the groups' sum).
    missed: int
    #: Requests the strategy met and the oracle missed (the oracle is not the bound: a
    #: request it places may delay later ones).
    met_only_by_strategy: int
    groups: list[MissGroup] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "missed": self.missed,
            "met_only_by_strategy": self.met_only_by_strategy,
            "groups": [g.__dict__ for g in self.groups],
        }


def budgets_of(tr: TraceRequest) -> str:
    return budget_text(tr.ttft_budget_ms, tr.total_budget_ms, " ") or "none"


def how_missed(tr: TraceRequest, out: Outcome) -> str:
    """How ``out`` missed ``tr``'s SLO (``meets(tr, out)`` is False)."""
    if out.status != "ok":
        return out.status
    over = []
    if tr.ttft_budget_ms is not None and (out.ttft_ms is None or out.ttft_ms > tr.ttft_budget_ms):
        over.append("ttft")
    if tr.total_budget_ms is not None and (
        out.total_ms is None or out.total_ms > tr.total_budget_ms
    ):
        over.append("total")
    return "+".join(over)


def miss_report(
    strategy: str,
    trace: Sequence[TraceRequest],
    outcomes: Sequence[Outcome],
    oracle: Sequence[Outcome],
) -> MissReport:
    """Group the requests ``oracle`` met and ``outcomes`` missed (largest group first;
    ties by their columns, so the order is deterministic)."""
    counts: Counter[tuple[str, str, str, str]] = Counter()
    only_strategy = 0
    for tr, out, best in zip(trace, outcomes, oracle, strict=True):
        ok, oracle_ok = meets(tr, out), meets(tr, best)
        if ok and not oracle_ok:
            only_strategy += 1
        elif oracle_ok and not ok:
            counts[(budgets_of(tr), out.backend or "-", how_missed(tr, out), best.backend)] += 1
    groups = [
        MissGroup(*key, requests=n)
        for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return MissReport(strategy, sum(counts.values()), only_strategy, groups)
