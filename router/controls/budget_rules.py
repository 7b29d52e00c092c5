"""Spend budgets, the pure part: which budgets a caller has now, what a plan is estimated
to cost, whether a reservation fits, and the refusal's words. No I/O; the time is passed in
(unix seconds, UTC).

Money is counted in whole nano-dollars (1e-9 USD, :data:`NANO`) everywhere a sum is kept,
so that sums are exact in Python and in Redis (HINCRBY) alike; a cost is rounded up to
the next nano-dollar.

Periods are UTC calendar days and months: a daily budget resets at 00:00 UTC, a monthly
one at 00:00 UTC on the first of the month. A reservation counts in the period it was made
in, and so does the cost it settles to.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from router.errors import BudgetExceeded, OverBudget
from router.types import Plan

#: Nano-dollars in one USD.
NANO = 1_000_000_000
#: The wait a refusal suggests when only reservations in flight hold the budget's rest.
IN_FLIGHT_RETRY_S = 1.0


def to_nano(usd: float) -> int:
    """``usd`` in whole nano-dollars, rounded up (never negative)."""
    if not usd > 0:  # also NaN
        return 0
    return math.ceil(round(usd * NANO, 3))


def to_usd(nano: int) -> float:
    return nano / NANO


@dataclass(frozen=True, slots=True)
class Limits:
    """One tenant's (or key's) budgets in nano-dollars; None: none for that period."""

    day: int | None = None
    month: int | None = None


@dataclass(frozen=True, slots=True)
class BudgetTable:
    """Every configured budget, in nano-dollars (``controls.budgets``)."""

    default: Limits = Limits()
    tenants: Mapping[str, Limits] = field(default_factory=dict)
    keys: Mapping[str, Limits] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Line:
    """One budget a request is held to now: its store key (under the tenant's), its
    name for people, its limit and when it resets."""

    #: ``day:2025-05-01`` / ``month:2025-05`` (tenant), ``key:<id>:day:...`` (a key's).
    key: str
    #: ``tenant acme, UTC day 2025-05-01``.
    label: str
    limit: int
    #: Unix seconds when this period ends and the budget starts again from zero.
    resets_at: float


@dataclass(frozen=True, slots=True)
class Usage:
    """What a budget's store holds for one period: spent (settled) and reserved (in
    flight), nano-dollars."""

    spent: int
    reserved: int


def periods(now: float) -> tuple[tuple[str, float], tuple[str, float]]:
    """((day id, unix seconds the day ends), (month id, when the month ends)), UTC."""
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    day = t.date()
    day_end = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
    if day.month == 12:
        month_end = dt.datetime(day.year + 1, 1, 1, tzinfo=dt.UTC)
    else:
        month_end = dt.datetime(day.year, day.month + 1, 1, tzinfo=dt.UTC)
    return (
        (day.isoformat(), day_end.timestamp()),
        (f"{day.year:04d}-{day.month:02d}", month_end.timestamp()),
    )


def month_start(now: float) -> float:
    """Unix seconds at 00:00 UTC on the first of ``now``'s month."""
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    return dt.datetime(t.year, t.month, 1, tzinfo=dt.UTC).timestamp()


def limits_for(table: BudgetTable, tenant: str, key_id: str) -> tuple[Limits, Limits | None]:
    """(the tenant's budgets, the key's or None)."""
    return table.tenants.get(tenant, table.default), table.keys.get(key_id) if key_id else None


def lines(table: BudgetTable, tenant: str, key_id: str, now: float) -> tuple[Line, ...]:
    """The budgets a request of ``tenant`` with key ``key_id`` is held to at ``now``
    (empty: none)."""
    (day, day_end), (month, month_end) = periods(now)
    who = f"tenant {tenant}" if tenant else "requests without an API key"
    tenant_limits, key_limits = limits_for(table, tenant, key_id)
    out: list[Line] = []
    for scope, name, limits in (("", who, tenant_limits), (f"key:{key_id}:", f"key {key_id}",
                                                          key_limits)):  # fmt: skip
        if limits is None:
            continue
        if limits.day is not None:
            out.append(Line(f"{scope}day:{day}", f"{name}, UTC day {day}", limits.day, day_end))
        if limits.month is not None:
            out.append(
                Line(f"{scope}month:{month}", f"{name}, UTC month {month}", limits.month, month_end)
            )
    return tuple(out)


def estimate(plan: Plan, backend: str) -> int:
    """The estimated cost of sending the planned request to ``backend`` (nano-dollars):
    its candidate report's estimate; a backend without one is held to the dearest
    estimate of the plan."""
    report = plan.report(backend)
    if report is not None and report.estimate is not None:
        return to_nano(report.estimate.cost_usd)
    known = [c.estimate.cost_usd for c in plan.candidates if c.estimate is not None]
    return to_nano(max(known, default=0.0))


def fits(line: Line, usage: Usage, amount: int) -> bool:
    """The one rule, also in the Redis script: spent + reserved + amount <= limit."""
    return usage.spent + usage.reserved + amount <= line.limit


def _money(nano: int) -> str:
    usd = to_usd(nano)
    return f"${usd:.4f}" if usd < 100 else f"${usd:,.2f}"


def _when(seconds: float) -> str:
    s = max(0, int(seconds))
    if s >= 86_400:
        return f"{s // 86_400}d {s % 86_400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60}m"
    if s >= 60:
        return f"{s // 60}m {s % 60}s"
    return f"{s}s"


def iso(unix_s: float) -> str:
    return dt.datetime.fromtimestamp(unix_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def refusal(
    line: Line, usage: Usage, amount: int, now: float, *, backend: str, failover: bool = False
) -> BudgetExceeded | OverBudget:
    """The error refusing a reservation of ``amount`` that ``line`` cannot hold."""
    what = f"{backend}'s estimate" if not failover else f"failing over to {backend}, its estimate"
    if amount > line.limit:
        return OverBudget(
            line.label,
            f"budget {line.label} is {_money(line.limit)} but this request may cost up to "
            f"{_money(amount)} ({what}); lower max_output_tokens or ask for a cheaper tier",
            limit_usd=to_usd(line.limit),
        )
    left = max(0, line.limit - usage.spent)
    in_flight = usage.spent + amount <= line.limit
    if in_flight:
        wait = min(IN_FLIGHT_RETRY_S, max(0.0, line.resets_at - now))
        tail = f"requests in flight hold {_money(usage.reserved)} of it; retry in a moment"
    else:
        wait = max(0.0, line.resets_at - now)
        tail = f"it resets at {iso(line.resets_at)} (in {_when(wait)})"
    return BudgetExceeded(
        line.label,
        f"budget {line.label} is exhausted: {_money(left)} of {_money(line.limit)} left, "
        f"this request may cost up to {_money(amount)} ({what}); {tail}",
        limit_usd=to_usd(line.limit),
        left_usd=to_usd(left),
        resets_at=iso(line.resets_at),
        retry_after_s=wait,
    )
