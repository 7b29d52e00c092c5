"""Spend budgets (router/controls/budgets.py) on their real stores: in process, and a real
``redis-server`` shared by two "replicas". The clock is injected; the Redis scripts judge
expiry by it too.

The racing test sends 200 requests at once for the last dollar of a budget: the spend
may never pass the limit (each request's actual cost equals its estimate here, so the
only possible overspend would be a race), and exactly as many requests as fit get through.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from pathlib import Path

import pytest
from storeservers import RedisProcess, own_redis, redis_process  # noqa: F401  (fixtures)

from router.config import parse_config
from router.controls.budget_memory import MemoryBudgetStore
from router.controls.budget_redis import RedisBudgetStore
from router.controls.budget_rules import NANO, BudgetTable, Limits, to_nano
from router.controls.budgets import SpendBudgets, build_budgets
from router.controls.ledger_records import LedgerRecord
from router.controls.ledger_sqlite import SqliteLedgerStore
from router.errors import BudgetExceeded, OverBudget, StoreUnavailable
from router.security.authn import Principal
from router.types import (
    CandidateReport,
    Estimate,
    FailoverEvent,
    FinishReason,
    InferenceRequest,
    Message,
    Objective,
    Plan,
    Role,
    Tier,
    UsageEvent,
)

ACME = Principal(tenant="acme", key_id="0123456789ab")
REQUEST = InferenceRequest(
    messages=(Message(Role.USER, "hi"),), max_output_tokens=10, request_id="req-1"
)


class Clock:
    def __init__(self, iso: str) -> None:
        self.now = dt.datetime.fromisoformat(iso).replace(tzinfo=dt.UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def plan(**costs: float) -> Plan:
    candidates = tuple(
        CandidateReport(
            backend=name,
            tier=Tier.HOSTED,
            accepted=True,
            rejected_by="",
            reason="",
            estimate=Estimate(10, 100, cost, 0, True, 10, True),
            rank=i + 1,
        )
        for i, (name, cost) in enumerate(costs.items())
    )
    return Plan("r", Objective.CHEAPEST, tuple(costs), candidates, False, "test")


def usage(cost: float, backend: str = "h") -> UsageEvent:
    return UsageEvent(
        request_id="r",
        backend=backend,
        tier=Tier.HOSTED,
        input_tokens=10,
        output_tokens=10,
        cost_usd=cost,
        ttft_ms=1,
        total_ms=2,
        finish_reason=FinishReason.STOP,
        complete=True,
    )


def budgets(store, clock, *, day=None, month=None, keys=None, ttl_s=900.0) -> SpendBudgets:
    table = BudgetTable(
        default=Limits(
            day=None if day is None else to_nano(day),
            month=None if month is None else to_nano(month),
        ),
        keys={k: Limits(day=to_nano(v)) for k, v in (keys or {}).items()},
    )
    return SpendBudgets(table, store, reservation_ttl_s=ttl_s, clock=clock)


async def spend(b: SpendBudgets, cost: float, principal: Principal = ACME) -> None:
    r = await b.reserve(principal, REQUEST, plan(h=cost))
    await b.settle(r, usage(cost))


async def spent(b: SpendBudgets, principal: Principal = ACME) -> list[tuple[int, int]]:
    return [(u.spent, u.reserved) for _, u in await b.usage(principal.tenant, principal.key_id)]


@pytest.fixture(params=["memory", "redis"])
async def store_kind(request, redis_process: RedisProcess):  # noqa: F811
    """A fresh store of each kind (Redis: its own key prefix on the module's server)."""
    made = []

    def make():
        if request.param == "memory":
            s = MemoryBudgetStore()
        else:
            s = RedisBudgetStore(
                redis_process.url, key_prefix=f"t-{uuid.uuid4().hex[:8]}:", timeout_s=2.0
            )
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()


# --- exhaustion and reset -----------------------------------------------------------------


async def test_a_daily_budget_runs_out_and_resets_at_midnight_utc(store_kind) -> None:
    clock = Clock("2025-05-01T21:30:00")
    b = budgets(store_kind(), clock, day=1.0)
    await spend(b, 0.4)
    await spend(b, 0.4)
    with pytest.raises(BudgetExceeded) as err:
        await b.reserve(ACME, REQUEST, plan(h=0.4))
    assert "budget tenant acme, UTC day 2025-05-01 is exhausted: $0.2000 of $1.0000 left" in (
        err.value.message
    )
    assert "it resets at 2025-05-02T00:00:00Z (in 2h 30m)" in err.value.message
    assert err.value.retry_after_s == 2.5 * 3600
    # A cheaper request still fits what is left.
    await spend(b, 0.2)
    assert await spent(b) == [(NANO, 0)]
    clock.now += 2.5 * 3600  # 00:00 UTC
    await spend(b, 0.4)
    assert await spent(b) == [(to_nano(0.4), 0)]


async def test_a_monthly_budget_spans_days_and_resets_on_the_first(store_kind) -> None:
    clock = Clock("2025-04-29T12:00:00")
    b = budgets(store_kind(), clock, day=1.0, month=1.5)
    await spend(b, 0.9)
    clock.now += 86_400  # 04-30: a new day, the same month
    with pytest.raises(BudgetExceeded) as err:
        await b.reserve(ACME, REQUEST, plan(h=0.9))
    assert "UTC month 2025-04" in err.value.message and "2025-05-01T00:00:00Z" in err.value.message
    clock.now += 86_400  # 05-01
    await spend(b, 0.9)


async def test_a_key_budget_is_held_besides_its_tenants(store_kind) -> None:
    b = budgets(store_kind(), Clock("2025-05-01T10:00:00"), day=10.0, keys={ACME.key_id: 1.0})
    await spend(b, 0.8)
    other_key = Principal(tenant="acme", key_id="ba9876543210")
    with pytest.raises(BudgetExceeded) as err:
        await b.reserve(ACME, REQUEST, plan(h=0.5))
    assert err.value.budget == "key 0123456789ab, UTC day 2025-05-01"
    await spend(b, 5.0, other_key)  # the tenant's budget still has room for another key
    assert await spent(b) == [(to_nano(5.8), 0), (to_nano(0.8), 0)]


async def test_a_request_dearer_than_the_whole_budget_is_out_of_range(store_kind) -> None:
    b = budgets(store_kind(), Clock("2025-05-01T10:00:00"), day=1.0)
    with pytest.raises(OverBudget):
        await b.reserve(ACME, REQUEST, plan(h=1.5))


async def test_no_usage_releases_the_reservation_and_a_dearer_answer_is_charged(
    store_kind,
) -> None:
    b = budgets(store_kind(), Clock("2025-05-01T10:00:00"), day=1.0)
    r = await b.reserve(ACME, REQUEST, plan(h=0.6))
    assert await spent(b) == [(0, to_nano(0.6))]
    await b.settle(r, None)  # failed before any model answered: nothing spent
    assert await spent(b) == [(0, 0)]
    r = await b.reserve(ACME, REQUEST, plan(h=0.6))
    await b.settle(r, usage(0.7))  # the estimate was low (inexact token count): charged
    assert await spent(b) == [(to_nano(0.7), 0)]


async def test_a_reservation_never_settled_is_released_at_its_deadline(store_kind) -> None:
    clock = Clock("2025-05-01T10:00:00")
    b = budgets(store_kind(), clock, day=1.0, ttl_s=60)
    lost = await b.reserve(ACME, REQUEST, plan(h=0.9))  # its replica dies: never settled
    assert lost is not None
    with pytest.raises(BudgetExceeded) as err:
        await b.reserve(ACME, REQUEST, plan(h=0.5))
    assert err.value.retry_after_s == 1.0  # only a reservation in flight is in the way
    clock.now += 61
    r = await b.reserve(ACME, REQUEST, plan(h=0.5))
    await b.settle(r, usage(0.5))
    assert await spent(b) == [(to_nano(0.5), 0)]


async def test_failover_to_a_dearer_fallback_grows_the_reservation(store_kind) -> None:
    b = budgets(store_kind(), Clock("2025-05-01T10:00:00"), day=1.0)
    p = plan(edge=0.1, hosted=0.6)
    first = await b.reserve(ACME, REQUEST, p)
    await b.failover(first, FailoverEvent("edge", "hosted", Tier.HOSTED, "down", 2))
    assert await spent(b) == [(0, to_nano(0.6))]
    second = await b.reserve(ACME, REQUEST, p)  # 0.1 still fits beside it
    with pytest.raises(BudgetExceeded) as err:
        await b.failover(second, FailoverEvent("edge", "hosted", Tier.HOSTED, "down", 2))
    assert "failing over to hosted, its estimate" in err.value.message
    await b.settle(second, None)
    await b.settle(first, usage(0.55, "hosted"))
    assert await spent(b) == [(to_nano(0.55), 0)]


# --- racing requests ------------------------------------------------------------------------


async def _race(replicas: list[SpendBudgets], requests: int, cost: float) -> tuple[int, int]:
    """``requests`` at once over ``replicas``: (how many got through, peak nano-dollars
    held: spent + reserved, as each reservation saw it)."""
    passed = 0
    peak = 0
    line_of = replicas[0].lines_for(ACME.tenant, ACME.key_id)[0]

    async def one(i: int) -> None:
        nonlocal passed, peak
        b = replicas[i % len(replicas)]
        await asyncio.sleep(random.uniform(0, 0.002))
        try:
            r = await b.reserve(ACME, REQUEST, plan(h=cost))
        except BudgetExceeded:
            return
        passed += 1
        (u,) = await b.store.usage(ACME.tenant, (line_of,), 0)
        peak = max(peak, u.spent + u.reserved)
        await asyncio.sleep(random.uniform(0, 0.01))  # the answer streams
        await b.settle(r, usage(cost))

    await asyncio.gather(*(one(i) for i in range(requests)))
    return passed, peak


async def test_200_racing_requests_never_overspend_the_last_dollar(store_kind) -> None:
    clock = Clock("2025-05-01T10:00:00")
    store = store_kind()
    replicas = [budgets(store, clock, day=100.0)]
    twin = _twin(store) if isinstance(store, RedisBudgetStore) else None
    if twin is not None:  # a second replica on the same Redis
        replicas.append(budgets(twin, clock, day=100.0))
    try:
        await spend(replicas[0], 99.0)
        passed, peak = await _race(replicas, 200, 0.05)
        (final,) = await spent(replicas[0])
    finally:
        if twin is not None:
            await twin.close()
    overspend = final[0] - 100 * NANO
    assert passed == 20, passed  # $1.00 / $0.05
    assert final == (100 * NANO, 0) and overspend == 0
    assert peak <= 100 * NANO


def _twin(store: RedisBudgetStore) -> RedisBudgetStore:
    """Another client on the same Redis and key prefix (another router replica)."""
    url = store._redis.connection_pool.connection_kwargs
    return RedisBudgetStore(
        f"redis://{url['host']}:{url['port']}/0", key_prefix=store._p, timeout_s=2.0
    )


# --- Redis specifics ------------------------------------------------------------------------


async def test_redis_settle_sent_twice_counts_once(redis_process: RedisProcess) -> None:  # noqa: F811
    store = RedisBudgetStore(redis_process.url, key_prefix="twice:", timeout_s=2.0)
    try:
        b = budgets(store, Clock("2025-05-01T10:00:00"), day=1.0)
        r = await b.reserve(ACME, REQUEST, plan(h=0.3))
        await b.settle(r, usage(0.3))
        await b.settle(r, usage(0.3))  # a retry after a lost answer
        assert await spent(b) == [(to_nano(0.3), 0)]
    finally:
        await store.close()


async def test_redis_down_refuses_reservations_and_settles_later(
    own_redis: RedisProcess,  # noqa: F811
) -> None:
    store = RedisBudgetStore(own_redis.url, key_prefix="down:", timeout_s=0.3)
    try:
        b = budgets(store, Clock("2025-05-01T10:00:00"), day=1.0)
        r = await b.reserve(ACME, REQUEST, plan(h=0.3))
        own_redis.pause()
        with pytest.raises(StoreUnavailable) as err:
            await b.reserve(ACME, REQUEST, plan(h=0.3))
        assert err.value.message.startswith(f"budgets store redis {own_redis.url} is unavailable")
        await b.settle(r, usage(0.25))  # not taken now: tried again in the background
        own_redis.resume()
        for _ in range(100):
            if await spent(b) == [(to_nano(0.25), 0)]:
                break
            await asyncio.sleep(0.05)
        assert await spent(b) == [(to_nano(0.25), 0)]
    finally:
        own_redis.resume()
        await b.close()


# --- the embedded store reads its month back from the ledger ---------------------------------


async def test_memory_budgets_start_from_the_sqlite_ledger_after_a_restart(tmp_path: Path) -> None:
    clock = Clock("2025-05-20T10:00:00")
    path = tmp_path / "ledger.sqlite3"
    ledger = SqliteLedgerStore(path)
    day_ms = 86_400_000
    now_ms = int(clock.now * 1000)

    def rec(at_ms: int, cost: float, cached: bool = False, tenant: str = "acme") -> LedgerRecord:
        return LedgerRecord(uuid.uuid4().hex, at_ms, tenant, ACME.key_id, "r", "h", "hosted",
                            1, 1, cost, True, cached)  # fmt: skip

    await ledger.write(
        [
            rec(now_ms - 1000, 0.25),  # today
            rec(now_ms - 3 * day_ms, 0.5),  # this month
            rec(now_ms - 25 * day_ms, 7.0),  # last month: not counted
            rec(now_ms - 2000, 3.0, cached=True),  # served from the cache: not spent
            rec(now_ms - 2000, 1.0, tenant="other"),
        ]
    )
    await ledger.close()
    config = parse_config(
        {
            "controls": {
                "ledger": {"enabled": True, "sqlite": {"path": str(path)}},
                "budgets": {"default": {"usd_per_day": 1, "usd_per_month": 2}},
            }
        },
        source="test",
    )
    b, close = build_budgets(config.controls.budgets, config, {}, clock=clock)
    try:
        # Read back: today $0.25 of $1, this month $0.75 of $2.
        assert await spent(b) == [(to_nano(0.25), 0), (to_nano(0.75), 0)]
        r = await b.reserve(ACME, REQUEST, plan(h=0.75))
        await b.settle(r, usage(0.75))
        clock.now += 86_400  # a new day; $0.50 left this month
        with pytest.raises(BudgetExceeded) as err:
            await b.reserve(ACME, REQUEST, plan(h=0.6))
        assert err.value.budget == "tenant acme, UTC month 2025-05"
    finally:
        await close()


# --- start-up checks (hybrid-router check, serve) ---------------------------------------------


async def test_preflight_describes_warns_and_probes(redis_process: RedisProcess) -> None:  # noqa: F811
    from router import preflight
    from router.controls.budgets import preflight as budgets_preflight
    from router.controls.ledger import preflight as ledger_preflight

    config = parse_config(
        {
            "controls": {
                "budgets": {
                    "default": {"usd_per_day": 5},
                    "tenants": {"acme": {"usd_per_month": 9}},
                },
                "ledger": {"enabled": True, "store": "redis", "redis": {"url": "env:LEDGER_URL"}},
            }
        },
        source="test",
    )
    found = await preflight.run([budgets_preflight, ledger_preflight], config, {}, probe=False)
    assert [(f.level, f.key) for f in found] == [
        ("ok", "controls.budgets"),
        ("warn", "controls.budgets"),  # auth off: only default applies
        ("warn", "controls.budgets.store"),  # memory, no SQLite ledger: starts from zero
        ("fail", "controls.ledger.redis.url"),
    ]
    assert found[0].message == (
        "default $5/day; tenant acme $9/month (UTC days and months; store memory)"
    )
    assert "LEDGER_URL" in found[3].message
    found = await preflight.run(
        [ledger_preflight], config, {"LEDGER_URL": redis_process.url}, probe=True
    )
    assert [f.level for f in found] == ["ok", "ok"]
    assert found[1].message == f"ledger store redis {redis_process.url} answers"


async def test_preflight_fails_an_sqlite_ledger_that_cannot_be_written(tmp_path: Path) -> None:
    from router import preflight
    from router.controls.ledger import preflight as ledger_preflight

    (tmp_path / "file").write_text("")
    config = parse_config(
        {
            "controls": {
                "ledger": {"enabled": True, "sqlite": {"path": str(tmp_path / "file/l.db")}}
            }
        },
        source="test",
    )
    (finding,) = await preflight.run([ledger_preflight], config, {})
    assert finding.level == "fail" and finding.key == "controls.ledger.sqlite.path"
    assert "is not a directory" in finding.message
