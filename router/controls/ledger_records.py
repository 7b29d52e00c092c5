"""The cost ledger's record, and the sums ``hybrid-router usage`` reports (pure).

One :class:`LedgerRecord` per answered request (a cached answer too): who asked (tenant,
key id), which request, when (unix ms, the router's wall clock when the answer ended),
where it went (backend, tier), its tokens and cost (USD, as the Usage event reports it),
whether it completed, and whether the cache answered it. ``id`` is unique per record
(the request id is the caller's and may repeat), so writing a record twice keeps one.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: The ways ``usage --by`` groups records.
DIMENSIONS = ("tenant", "key", "tier", "backend", "day", "month")


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    id: str
    at_ms: int
    tenant: str
    key_id: str
    request_id: str
    backend: str
    tier: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    complete: bool
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LedgerRecord:
        return cls(
            id=str(d["id"]),
            at_ms=int(d["at_ms"]),
            tenant=str(d.get("tenant", "")),
            key_id=str(d.get("key_id", "")),
            request_id=str(d.get("request_id", "")),
            backend=str(d.get("backend", "")),
            tier=str(d.get("tier", "")),
            input_tokens=int(d.get("input_tokens", 0)),
            output_tokens=int(d.get("output_tokens", 0)),
            cost_usd=float(d.get("cost_usd", 0.0)),
            complete=bool(d.get("complete", False)),
            cached=bool(d.get("cached", False)),
        )

    @property
    def day(self) -> str:
        return utc_day(self.at_ms)


def utc_day(at_ms: int) -> str:
    """``YYYY-MM-DD`` of ``at_ms`` (unix ms), UTC."""
    return dt.datetime.fromtimestamp(at_ms / 1000.0, dt.UTC).date().isoformat()


def day_overlaps(day: str, since_ms: int, until_ms: int) -> bool:
    """Whether the UTC ``day`` (``YYYY-MM-DD``) holds any time of ``[since_ms, until_ms)``."""
    start = day_start_ms(day)
    return start < until_ms and start + 86_400_000 > since_ms


def day_start_ms(day: str) -> int:
    d = dt.date.fromisoformat(day)
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp() * 1000)


@dataclass(slots=True)
class Total:
    """The sums of one group of records."""

    group: tuple[str, ...]
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    incomplete: int = 0
    cached: int = 0

    def add(self, r: LedgerRecord) -> None:
        self.requests += 1
        self.input_tokens += r.input_tokens
        self.output_tokens += r.output_tokens
        self.cost_usd += r.cost_usd
        self.incomplete += not r.complete
        self.cached += r.cached


def _value(r: LedgerRecord, dim: str) -> str:
    if dim == "tenant":
        return r.tenant or "-"
    if dim == "key":
        return r.key_id or "-"
    if dim == "day":
        return r.day
    if dim == "month":
        return r.day[:7]
    return str(getattr(r, dim)) or "-"


def totals(records: Iterable[LedgerRecord], by: Sequence[str]) -> list[Total]:
    """Sums per group of ``by`` (dimensions from :data:`DIMENSIONS`), sorted by group; no
    ``by``: one total of everything (``group`` empty)."""
    groups: dict[tuple[str, ...], Total] = {}
    for r in records:
        key = tuple(_value(r, d) for d in by)
        t = groups.get(key)
        if t is None:
            t = groups[key] = Total(key)
        t.add(r)
    return [groups[k] for k in sorted(groups)]
