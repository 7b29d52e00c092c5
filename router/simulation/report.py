"""Figures of one strategy's outcomes, and their ratios to the oracle's.

A request *meets its SLO* when it completed and met every latency budget it gave (TTFT
budget against its TTFT from arrival, total budget against its total from arrival); a
request without budgets meets it by completing. Attainment is the share of all requests
(refused, failed and cut requests count as misses). Latency percentiles are over the
completed requests, nearest rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from router.simulation.engine import Outcome
from router.simulation.trace import TraceRequest
from router.types import Tier

#: Time buckets of the latency-over-time series.
SERIES_BUCKETS = 60


def meets(tr: TraceRequest, out: Outcome) -> bool:
    if out.status != "ok":
        return False
    if tr.ttft_budget_ms is not None and (out.ttft_ms is None or out.ttft_ms > tr.ttft_budget_ms):
        return False
    return tr.total_budget_ms is None or (
        out.total_ms is not None and out.total_ms <= tr.total_budget_ms
    )


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    n = len(values)
    return values[min(n - 1, max(0, math.ceil(q * n) - 1))]


@dataclass
class Summary:
    strategy: str
    requests: int
    met: int
    attainment: float
    #: Among requests with a TTFT (total) budget: the share that met it.
    ttft_attainment: float | None
    total_attainment: float | None
    cost_usd: float
    #: Cost per request that met its SLO (a strategy that fails requests pays nothing for
    #: them, so its total cost alone flatters it). None when none met it.
    cost_per_met_usd: float | None
    completed: int
    refused: int
    failed: int
    cut: int
    #: Share of completed requests per tier (edge, gpu, hosted).
    tier_share: dict[str, float]
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    total_p50_ms: float | None
    total_p99_ms: float | None
    #: Ratios to the oracle (None for the oracle itself or when it has none).
    attainment_vs_oracle: float | None = None
    cost_vs_oracle: float | None = None
    #: Per time bucket: (start s, p50 total ms of the requests arriving then, attainment).
    series: list[tuple[float, float | None, float]] = field(default_factory=list)
    #: Refusal and failure reasons (first words), most common first.
    reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self, series: bool = True) -> dict[str, Any]:
        out = dict(self.__dict__)
        if not series:
            out.pop("series")
        return out


def summarize(
    name: str, trace: Sequence[TraceRequest], outcomes: Sequence[Outcome], seconds: float = 0.0
) -> Summary:
    met = 0
    ttft_n = ttft_ok = total_n = total_ok = 0
    cost = 0.0
    counts = {"ok": 0, "refused": 0, "failed": 0, "cut": 0}
    tiers: dict[str, int] = {t.value: 0 for t in (Tier.EDGE, Tier.GPU, Tier.HOSTED)}
    ttfts: list[float] = []
    totals: list[float] = []
    reasons: dict[str, int] = {}
    span = (trace[-1].at_s if trace else 0.0) or 1.0
    width = span / SERIES_BUCKETS
    buckets: list[list[float]] = [[] for _ in range(SERIES_BUCKETS + 1)]
    bucket_met = [0] * (SERIES_BUCKETS + 1)
    bucket_n = [0] * (SERIES_BUCKETS + 1)
    for tr, out in zip(trace, outcomes, strict=True):
        ok = meets(tr, out)
        met += ok
        cost += out.cost_usd
        counts[out.status] = counts.get(out.status, 0) + 1
        b = min(SERIES_BUCKETS, int(tr.at_s / width))
        bucket_n[b] += 1
        bucket_met[b] += ok
        if out.status == "ok":
            if out.tier is not None:
                tiers[out.tier.value] = tiers.get(out.tier.value, 0) + 1
            if out.ttft_ms is not None:
                ttfts.append(out.ttft_ms)
            if out.total_ms is not None:
                totals.append(out.total_ms)
                buckets[b].append(out.total_ms)
        elif out.reason:
            head = out.reason.split(":")[0] if out.status == "refused" else out.status
            reasons[head] = reasons.get(head, 0) + 1
        if tr.ttft_budget_ms is not None:
            ttft_n += 1
            ttft_ok += (
                out.status == "ok" and out.ttft_ms is not None and out.ttft_ms <= tr.ttft_budget_ms
            )
        if tr.total_budget_ms is not None:
            total_n += 1
            total_ok += (
                out.status == "ok"
                and out.total_ms is not None
                and out.total_ms <= tr.total_budget_ms
            )
    ttfts.sort()
    totals.sort()
    n = len(trace)
    done = counts["ok"]
    series = []
    for i in range(SERIES_BUCKETS + 1):
        vals = sorted(buckets[i])
        if bucket_n[i]:
            series.append((round(i * width, 3), _quantile(vals, 0.5), bucket_met[i] / bucket_n[i]))
    return Summary(
        strategy=name,
        requests=n,
        met=met,
        attainment=met / n if n else 0.0,
        ttft_attainment=ttft_ok / ttft_n if ttft_n else None,
        total_attainment=total_ok / total_n if total_n else None,
        cost_usd=cost,
        cost_per_met_usd=cost / met if met else None,
        completed=done,
        refused=counts["refused"],
        failed=counts["failed"],
        cut=counts["cut"],
        tier_share={t: (c / done if done else 0.0) for t, c in tiers.items()},
        ttft_p50_ms=_quantile(ttfts, 0.5),
        ttft_p99_ms=_quantile(ttfts, 0.99),
        total_p50_ms=_quantile(totals, 0.5),
        total_p99_ms=_quantile(totals, 0.99),
        series=series,
        reasons=dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        seconds=seconds,
    )


def against_oracle(summaries: Sequence[Summary], oracle: Summary) -> None:
    """Fill each summary's ratios to the oracle's attainment and cost."""
    for s in summaries:
        if s is oracle or s.strategy == "bound":
            continue
        s.attainment_vs_oracle = s.attainment / oracle.attainment if oracle.attainment else None
        s.cost_vs_oracle = s.cost_usd / oracle.cost_usd if oracle.cost_usd else None


def dominance(
    trace: Sequence[TraceRequest], strategy: Sequence[Outcome], oracle: Sequence[Outcome]
) -> list[str]:
    """Where ``strategy`` beats the oracle (an empty list: never). Per request: it meets the
    SLO and the oracle does not, or both meet and it costs less (beyond rounding)."""
    problems = []
    for tr, s, o in zip(trace, strategy, oracle, strict=True):
        s_ok, o_ok = meets(tr, s), meets(tr, o)
        if s_ok and not o_ok:
            problems.append(f"request {s.index}: met by {s.backend}, missed by the oracle")
        elif s_ok and o_ok and s.cost_usd < o.cost_usd * (1 - 1e-9) - 1e-15:
            problems.append(
                f"request {s.index}: {s.backend} ${s.cost_usd:.9f} < {o.backend} ${o.cost_usd:.9f}"
            )
    return problems
