"""Spend budgets kept in this process (``controls.budgets.store: memory``): one router.

Per (tenant, budget line) a bucket holds ``spent``, ``reserved`` and the reservations in
flight (id -> amount, deadline). Every operation runs on the event loop without awaiting
in between, so a check and its reservation are one step: two requests never both take
the last dollar. A reservation past its deadline is released (its request never settled
it); a settle after that still adds the actual cost.

Spend survives a restart through the ledger: with ``controls.ledger`` on and stored in
SQLite, the first reservation after start reads this month's settled cost back from the
ledger file (cached answers excluded), so a restart does not hand out the budget again.
Without it, the spend starts at zero when the router starts (docs/controls.md says so).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from router.controls.budget_rules import Line, Usage, fits

#: (tenant, key id, UTC day ``YYYY-MM-DD``, cost in nano-dollars) of this month's records.
SeedRows = Sequence[tuple[str, str, str, int]]
#: Buckets of periods that ended more than this long ago are dropped.
_KEEP_ENDED_S = 2 * 86_400.0
_PRUNE_EVERY_S = 600.0


@dataclass(slots=True)
class _Bucket:
    resets_at: float
    spent: int = 0
    reserved: int = 0
    #: reservation id -> [amount, deadline_ms]
    held: dict[str, list[int]] = field(default_factory=dict)
    #: The earliest deadline in ``held`` (0: none).
    next_expiry: int = 0

    def release_expired(self, now_ms: int) -> None:
        if not self.next_expiry or now_ms < self.next_expiry:
            return
        nxt = 0
        for rid, (amount, deadline) in list(self.held.items()):
            if deadline <= now_ms:
                self.reserved -= amount
                del self.held[rid]
            elif not nxt or deadline < nxt:
                nxt = deadline
        self.next_expiry = nxt


class MemoryBudgetStore:
    def __init__(self, *, seed: Callable[[float], Awaitable[SeedRows]] | None = None) -> None:
        self.name = "budgets store memory"
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._seed = seed
        self._seeded = seed is None
        self._seed_lock = asyncio.Lock()
        self._next_prune = 0.0

    def _bucket(self, tenant: str, line: Line) -> _Bucket:
        key = (tenant, line.key)
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(resets_at=line.resets_at)
        return b

    async def _ensure_seeded(self, now: float) -> None:
        if self._seeded:
            return
        async with self._seed_lock:
            if self._seeded or self._seed is None:
                return
            rows = await self._seed(now)  # StoreUnavailable: refused now, tried again next
            self._apply_seed(rows, now)
            self._seeded = True

    def _apply_seed(self, rows: SeedRows, now: float) -> None:
        from router.controls.budget_rules import periods

        (day, day_end), (month, month_end) = periods(now)
        for tenant, key_id, row_day, cost in rows:
            if not row_day.startswith(month):
                continue
            scopes = [""] + ([f"key:{key_id}:"] if key_id else [])
            for scope in scopes:
                mb = self._buckets.setdefault(
                    (tenant, f"{scope}month:{month}"), _Bucket(resets_at=month_end)
                )
                mb.spent += cost
                if row_day == day:
                    db = self._buckets.setdefault(
                        (tenant, f"{scope}day:{day}"), _Bucket(resets_at=day_end)
                    )
                    db.spent += cost

    def _prune(self, now: float) -> None:
        if now < self._next_prune:
            return
        self._next_prune = now + _PRUNE_EVERY_S
        for key in [k for k, b in self._buckets.items() if b.resets_at + _KEEP_ENDED_S < now]:
            del self._buckets[key]

    async def reserve(
        self,
        tenant: str,
        lines: Sequence[Line],
        rid: str,
        amount: int,
        now_ms: int,
        deadline_ms: int,
    ) -> tuple[int, Usage] | None:
        await self._ensure_seeded(now_ms / 1000.0)
        # From here to the end: no await, so the check and the reservation are one step.
        self._prune(now_ms / 1000.0)
        buckets = [self._bucket(tenant, line) for line in lines]
        for i, (line, b) in enumerate(zip(lines, buckets, strict=True)):
            b.release_expired(now_ms)
            usage = Usage(b.spent, b.reserved)
            if not fits(line, usage, amount):
                return i, usage
        for b in buckets:
            b.reserved += amount
            held = b.held.get(rid)
            if held is None:
                b.held[rid] = [amount, deadline_ms]
            else:
                held[0] += amount
                held[1] = deadline_ms
            if not b.next_expiry or deadline_ms < b.next_expiry:
                b.next_expiry = deadline_ms
        return None

    async def settle(
        self, tenant: str, lines: Sequence[Line], rid: str, actual: int, now_ms: int
    ) -> None:
        for line in lines:
            b = self._bucket(tenant, line)
            held = b.held.pop(rid, None)
            if held is not None:
                b.reserved -= held[0]
            b.spent += actual

    async def usage(self, tenant: str, lines: Sequence[Line], now_ms: int) -> list[Usage]:
        await self._ensure_seeded(now_ms / 1000.0)
        out = []
        for line in lines:
            b = self._bucket(tenant, line)
            b.release_expired(now_ms)
            out.append(Usage(b.spent, b.reserved))
        return out

    async def close(self) -> None:
        pass
