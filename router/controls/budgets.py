"""Spend budgets: USD per UTC day and per UTC month, per tenant and per API key
(``controls.budgets``, docs/controls.md#spend-budgets).

Around one Generate (router/controls/pipeline.py):

1. **reserve**, after the decision and before any model is called: the plan's estimated
   cost for its primary (the policy prices ``max_output_tokens`` of output, so it is an
   upper bound when the prompt's token count is exact) is reserved against every budget
   the caller has: the tenant's (``tenants.<name>``, else ``default``) and the key's
   (``keys.<id>``), daily and monthly. The check and the reservation are one atomic
   step in the store (:mod:`budget_memory`, :mod:`budget_redis`): ``spent + reserved +
   amount <= limit``. When one budget cannot hold it the request is refused
   (RESOURCE_EXHAUSTED ``BudgetExceeded`` naming the budget, what is left and when it
   resets, with the retry delay; OUT_OF_RANGE ``OverBudget`` when the estimate exceeds
   the budget's whole limit) and no model is called.
2. **failover**: before a fallback is called, a dearer fallback grows the reservation to
   its own estimate (refused like a reservation when that does not fit: the request
   ends there); a cheaper one keeps it.
3. **settle**, when the request ends (done, failed or cancelled): the reservation is
   released and the actual cost (Usage) is added to the spend; no Usage: nothing spent,
   except when the caller went away (dispatch sends no Usage then, although a model may
   have worked): the reservation's estimate is spent.

So concurrent requests, on one replica or many sharing Redis, never spend more than a
budget beyond what their reservations under-estimated. A reservation carries a deadline
(``reservation_ttl_s``): one never settled (its replica died) is released by the next
request after it. A settle the store did not take is sent again in the background for
up to :data:`SETTLE_RETRY_S` (the Redis store ignores a repeat), then logged as lost; a
reservation whose answer was lost (a timeout: the store may still apply it) is released
the same way. A store that cannot be reached refuses reservations (UNAVAILABLE naming
it): budgets are held, not skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from router.controls.budget_rules import (
    BudgetTable,
    Limits,
    Line,
    Usage,
    estimate,
    lines,
    month_start,
    refusal,
    to_nano,
    to_usd,
)
from router.errors import StoreUnavailable
from router.telemetry.observer import observer_var
from router.types import ContinuationEvent, FailoverEvent, InferenceRequest, Plan, UsageEvent

if TYPE_CHECKING:
    from router.config import RouterConfig
    from router.config.budgets import BudgetLimitsConfig, BudgetsConfig
    from router.preflight import Finding, Options
    from router.security.authn import Principal

log = logging.getLogger(__name__)

#: How long a settle the store did not take is tried again (below the Redis store's
#: settled-marker grace, so a repeat is always recognised).
SETTLE_RETRY_S = 30.0


class BudgetStore(Protocol):
    name: str

    async def reserve(
        self,
        tenant: str,
        lines: tuple[Line, ...],
        rid: str,
        amount: int,
        now_ms: int,
        deadline_ms: int,
    ) -> tuple[int, Usage] | None:
        """None when ``amount`` is reserved under ``rid`` on every line (added to what
        ``rid`` holds already); else (index, usage) of the first line that cannot."""
        ...

    async def settle(
        self, tenant: str, lines: tuple[Line, ...], rid: str, actual: int, now_ms: int
    ) -> None: ...

    async def usage(self, tenant: str, lines: tuple[Line, ...], now_ms: int) -> list[Usage]: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class Reservation:
    tenant: str
    lines: tuple[Line, ...]
    rid: str
    plan: Plan
    #: Nano-dollars held now, and for which backend's estimate.
    amount: int
    backend: str
    deadline_ms: int


class SpendBudgets:
    """The ``Budgets`` control of the pipeline."""

    def __init__(
        self,
        table: BudgetTable,
        store: BudgetStore,
        *,
        reservation_ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.store = store
        self._ttl_ms = int(reservation_ttl_s * 1000)
        self._clock = clock
        self._retries: set[asyncio.Task[None]] = set()

    def lines_for(self, tenant: str, key_id: str) -> tuple[Line, ...]:
        """The budgets a caller is held to now."""
        return lines(self.table, tenant, key_id, self._clock())

    async def reserve(
        self, principal: Principal, request: InferenceRequest, plan: Plan
    ) -> Reservation | None:
        now = self._clock()
        held = lines(self.table, principal.tenant, principal.key_id, now)
        if not held:
            return None
        amount = estimate(plan, plan.primary)
        rid = uuid.uuid4().hex
        now_ms = int(now * 1000)
        reservation = Reservation(
            principal.tenant, held, rid, plan, amount, plan.primary, now_ms + self._ttl_ms
        )
        try:
            await self._reserve(reservation, amount, now, plan.primary, failover=False)
        except StoreUnavailable:
            # The store may still apply it (a command that timed out): release it later.
            self._settle_in_background(reservation, 0)
            raise
        return reservation

    async def failover(
        self, reservation: Reservation, event: FailoverEvent | ContinuationEvent
    ) -> None:
        amount = estimate(reservation.plan, event.to_backend)
        extra = amount - reservation.amount
        if extra > 0:
            await self._reserve(reservation, extra, self._clock(), event.to_backend, failover=True)
            reservation.amount = amount
        reservation.backend = event.to_backend

    async def _reserve(
        self, r: Reservation, amount: int, now: float, backend: str, *, failover: bool
    ) -> None:
        obs = observer_var.get()
        try:
            refused = await self.store.reserve(
                r.tenant, r.lines, r.rid, amount, int(now * 1000), r.deadline_ms
            )
        except StoreUnavailable:
            obs.control("budget", "store_unavailable")
            raise
        if refused is not None:
            index, usage = refused
            obs.control("budget", "refused")
            raise refusal(r.lines[index], usage, amount, now, backend=backend, failover=failover)
        obs.control("budget", "grown" if failover else "reserved")

    async def settle(
        self, reservation: Reservation, usage: UsageEvent | None, *, cancelled: bool = False
    ) -> None:
        """Release the reservation and spend the actual cost. No Usage: nothing spent,
        unless the caller went away (``cancelled``): dispatch then sends no Usage although
        a model may have worked, so the reservation's estimate (an upper bound) is spent.
        Never raises: a settle the store does not take now is tried again later."""
        if usage is not None:
            actual = to_nano(usage.cost_usd)
        elif cancelled:
            actual = reservation.amount
            observer_var.get().control("budget", "cancelled_charged")
        else:
            actual = 0
        try:
            await self._settle(reservation, actual)
        except StoreUnavailable as exc:
            observer_var.get().control("budget", "settle_deferred")
            log.warning(
                "budgets: settling %s of tenant %r later: %s",
                reservation.rid,
                reservation.tenant,
                exc.message,
            )
            self._settle_in_background(reservation, actual)

    def _settle_in_background(self, reservation: Reservation, actual: int) -> None:
        task = asyncio.get_running_loop().create_task(self._settle_later(reservation, actual))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _settle(self, r: Reservation, actual: int) -> None:
        await self.store.settle(r.tenant, r.lines, r.rid, actual, int(self._clock() * 1000))

    async def _settle_later(self, r: Reservation, actual: int) -> None:
        give_up = time.monotonic() + SETTLE_RETRY_S
        delay = 0.1
        while True:
            await asyncio.sleep(delay)
            try:
                await self._settle(r, actual)
            except StoreUnavailable as exc:
                if time.monotonic() + delay > give_up:
                    log.error(
                        "budgets: %s of tenant %r (%s USD) not settled: %s; its reservation "
                        "is released at its deadline, the cost stays in the ledger only",
                        r.rid,
                        r.tenant,
                        f"{to_usd(actual):.6f}",
                        exc.message,
                    )
                    return
                delay = min(delay * 2, 5.0)
                continue
            log.info("budgets: %s of tenant %r settled after a retry", r.rid, r.tenant)
            return

    async def usage(self, tenant: str, key_id: str) -> list[tuple[Line, Usage]]:
        """Each budget the caller has now, with its spent and reserved nano-dollars."""
        held = self.lines_for(tenant, key_id)
        got = await self.store.usage(tenant, held, int(self._clock() * 1000))
        return list(zip(held, got, strict=True))

    async def close(self) -> None:
        retries = list(self._retries)
        if retries:
            _, pending = await asyncio.wait(retries, timeout=1.0)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.store.close()


def _limits(cfg: BudgetLimitsConfig) -> Limits:
    return Limits(
        day=None if cfg.usd_per_day is None else to_nano(cfg.usd_per_day),
        month=None if cfg.usd_per_month is None else to_nano(cfg.usd_per_month),
    )


def table_of(cfg: BudgetsConfig) -> BudgetTable:
    return BudgetTable(
        default=_limits(cfg.default),
        tenants={name: _limits(b) for name, b in cfg.tenants.items()},
        keys={key: _limits(b) for key, b in cfg.keys.items()},
    )


async def _seed_from_sqlite(path: Path, now: float) -> list[tuple[str, str, str, int]]:
    """This month's settled cost per tenant, key and day from the SQLite ledger file."""
    from router.controls.ledger_sqlite import SqliteLedgerStore

    if not path.is_file():
        return []
    store = SqliteLedgerStore(path, create=False)
    try:
        return await store.spend_by_day(int(month_start(now) * 1000))
    finally:
        await store.close()


def build_budgets(
    cfg: BudgetsConfig,
    config: RouterConfig,
    environ: Mapping[str, str],
    *,
    clock: Callable[[], float] = time.time,
) -> tuple[SpendBudgets, Callable[[], Awaitable[None]]]:
    """The budgets ``controls.budgets`` sets, on its store (nothing is reached yet)."""
    store: Any
    if cfg.store == "redis":
        from router.controls.budget_redis import RedisBudgetStore

        url = _redis_url(cfg, environ)
        store = RedisBudgetStore(
            url, key_prefix=cfg.redis.key_prefix, timeout_s=cfg.redis.timeout_s
        )
    else:
        from router.controls.budget_memory import MemoryBudgetStore

        ledger = config.controls.ledger
        seed = None
        if ledger.enabled and ledger.store == "sqlite":
            from router.controls.ledger_sqlite import ledger_path

            seed = functools.partial(_seed_from_sqlite, ledger_path(ledger.sqlite.path, environ))
        store = MemoryBudgetStore(seed=seed)
    budgets = SpendBudgets(
        table_of(cfg), store, reservation_ttl_s=cfg.reservation_ttl_s, clock=clock
    )
    return budgets, budgets.close


# --- start-up check (router/preflight.py) ------------------------------------------------------

SECTION = "controls.budgets"


def _redis_url(cfg: BudgetsConfig, environ: Mapping[str, str]) -> str:
    from router.config import resolve_ref

    return resolve_ref(
        cfg.redis.url,
        env=environ,
        key=f"{SECTION}.redis.url",
        fix="set it to the Redis URL (redis://host:6379/0)",
    )


def _usd(limits: BudgetLimitsConfig) -> str:
    parts = []
    if limits.usd_per_day is not None:
        parts.append(f"${limits.usd_per_day:g}/day")
    if limits.usd_per_month is not None:
        parts.append(f"${limits.usd_per_month:g}/month")
    return ", ".join(parts) or "none"


def describe(cfg: BudgetsConfig) -> str:
    """One line: the budgets and the store (``check`` shows it)."""
    parts = [f"default {_usd(cfg.default)}"]
    parts += [f"tenant {name} {_usd(b)}" for name, b in sorted(cfg.tenants.items())]
    if cfg.keys:
        parts.append(f"{len(cfg.keys)} key budget(s)")
    return f"{'; '.join(parts)} (UTC days and months; store {cfg.store})"


async def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``controls.budgets``: the budgets (one ``ok`` row), tenants ``auth.tenants`` lacks,
    budgets that auth being off makes moot, memory budgets that start from zero, the Redis
    URL's variable; with ``--probe``, a PING to Redis."""
    from router.preflight import OK, WARN, Finding

    cfg = config.controls.budgets
    if not cfg.enabled:
        return []
    findings = [Finding(OK, SECTION, SECTION, describe(cfg))]
    unknown = sorted(set(cfg.tenants) - {t.name for t in config.auth.tenants})
    if unknown and config.auth.configured:
        findings.append(
            Finding(
                WARN,
                SECTION,
                f"{SECTION}.tenants",
                f"budgets for tenants auth.tenants does not define: {', '.join(unknown)}",
                "fix the names, or add the tenants under auth.tenants",
            )
        )
    if not config.auth.configured and (cfg.tenants or cfg.keys):
        findings.append(
            Finding(
                WARN,
                SECTION,
                SECTION,
                f"auth is off: every caller is one tenant without a key, so only "
                f"{SECTION}.default applies",
                "configure auth keys to hold tenants and keys to their own budgets",
            )
        )
    ledger = config.controls.ledger
    if cfg.store == "memory" and not (ledger.enabled and ledger.store == "sqlite"):
        findings.append(
            Finding(
                WARN,
                f"{SECTION}.store",
                f"{SECTION}.store",
                "budgets kept in memory start from zero spend whenever the router starts",
                "turn on controls.ledger with store sqlite (its month is read back at start), "
                "or use store redis",
            )
        )
    if cfg.store == "redis":
        from router.controls.budget_redis import RedisBudgetStore
        from router.controls.redis_check import redis_findings

        findings += await redis_findings(
            SECTION,
            cfg.redis.url,
            lambda: _redis_url(cfg, env),
            lambda url, timeout_s: RedisBudgetStore(
                url, key_prefix=cfg.redis.key_prefix, timeout_s=timeout_s
            ),
            opts,
        )
    return findings
