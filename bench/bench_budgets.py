"""Spend budgets and the cost ledger (router/controls/budgets.py, ledger.py): what they add
to TTFT, and the overspend when requests race for a budget's last dollar.

1. ``ttft``: the harness of ``bench_controls.py`` (``run_variant``: two real routers over
   one real scripted ModelService server, TTFT 0, all on one event loop in this process
   unless ``--separate``; ``--concurrency`` streams alternate between the router without
   controls, ``off``, and the one with the variant, ``on``; TTFT = call start -> first
   delta). Variants: budgets alone, the ledger alone, and both, embedded (budgets in
   memory, the ledger in an SQLite file) and on a real ``redis-server`` on loopback. The
   budgets are so large that nothing is refused. On a small shared machine ``--separate``
   is noise (processes fight for the cores); the one-loop setting is the fair one there.
2. ``race``: ``--race`` requests at once reserve $0.05 each against a daily budget with
   $1.00 left (then settle that much after a short random answer time), in memory, and on
   Redis through two budgets clients (two replicas). Reported: how many got through (20
   fit), the spend past the limit at the end, and the largest ``spent + reserved`` any
   successful reservation saw, past the limit (both must be 0).
3. ``micro``: one ``reserve`` + ``settle`` at a time, per store (``--micro`` rounds).

It measures; it asserts nothing but that every routed call completes. Usage::

    .venv/bin/python bench/bench_budgets.py                          # ~2 minutes
    .venv/bin/python bench/bench_budgets.py --concurrency 1,64 --requests 100 --race 200
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_controls import Stores, _pct, redis_server, run_variant  # noqa: E402

from router.controls.budget_memory import MemoryBudgetStore  # noqa: E402
from router.controls.budget_redis import RedisBudgetStore  # noqa: E402
from router.controls.budget_rules import NANO, BudgetTable, Limits, to_nano  # noqa: E402
from router.controls.budgets import SpendBudgets  # noqa: E402
from router.errors import BudgetExceeded  # noqa: E402
from router.security.authn import Principal  # noqa: E402
from router.types import (  # noqa: E402
    CandidateReport,
    Estimate,
    FinishReason,
    InferenceRequest,
    Message,
    Objective,
    Plan,
    Role,
    Tier,
    UsageEvent,
)

#: A budget no request of the bench reaches.
_NEVER = {"usd_per_day": 1e9, "usd_per_month": 1e9}


def variants(stores: Stores, tmp: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    def redis(prefix: str) -> dict[str, Any]:
        return {"url": stores.redis_url, "key_prefix": f"bench-{prefix}-{time.time_ns()}:"}

    sqlite = {"enabled": True, "sqlite": {"path": str(tmp / f"ledger-{uuid.uuid4().hex}.db")}}
    yield "budgets memory", {"budgets": {"default": _NEVER}}
    yield "ledger sqlite", {"ledger": sqlite}
    yield "both embedded", {"budgets": {"default": _NEVER}, "ledger": sqlite}
    yield "budgets redis", {"budgets": {"default": _NEVER, "store": "redis", "redis": redis("b")}}
    yield "ledger redis", {"ledger": {"enabled": True, "store": "redis", "redis": redis("l")}}
    yield (
        "both redis",
        {
            "budgets": {"default": _NEVER, "store": "redis", "redis": redis("b")},
            "ledger": {"enabled": True, "store": "redis", "redis": redis("l")},
        },
    )


# --- racing for the last dollar ------------------------------------------------------------

WHO = Principal(tenant="bench", key_id="")
REQUEST = InferenceRequest(
    messages=(Message(Role.USER, "hi"),), max_output_tokens=8, request_id="r"
)


def _plan(cost: float) -> Plan:
    c = CandidateReport("h", Tier.HOSTED, True, "", "", Estimate(1, 2, cost, 0, True, 1, True), 1)
    return Plan("r", Objective.CHEAPEST, ("h",), (c,), False, "bench")


def _usage(cost: float) -> UsageEvent:
    return UsageEvent("r", "h", Tier.HOSTED, 1, 8, cost, 1.0, 2.0, FinishReason.STOP, True)


def _budgets(store: Any) -> SpendBudgets:
    table = BudgetTable(default=Limits(day=100 * NANO))
    return SpendBudgets(table, store, reservation_ttl_s=900)


async def race(label: str, stores: list[Any], requests: int, cost: float) -> dict[str, Any]:
    replicas = [_budgets(s) for s in stores]
    first = replicas[0]
    r = await first.reserve(WHO, REQUEST, _plan(99.0))
    await first.settle(r, _usage(99.0))  # $1.00 left
    line = first.lines_for(WHO.tenant, WHO.key_id)
    passed = 0
    peak = 0

    async def one(i: int) -> None:
        nonlocal passed, peak
        b = replicas[i % len(replicas)]
        await asyncio.sleep(random.uniform(0, 0.002))
        try:
            held = await b.reserve(WHO, REQUEST, _plan(cost))
        except BudgetExceeded:
            return
        passed += 1
        (u,) = await b.store.usage(WHO.tenant, line, int(time.time() * 1000))
        peak = max(peak, u.spent + u.reserved)
        await asyncio.sleep(random.uniform(0, 0.01))
        await b.settle(held, _usage(cost))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    took = time.perf_counter() - t0
    (final,) = await first.store.usage(WHO.tenant, line, int(time.time() * 1000))
    return {
        "variant": label,
        "requests": requests,
        "passed": passed,
        "fit": int(to_nano(1.0) // to_nano(cost)),
        "overspend_usd": (final.spent - 100 * NANO) / NANO,
        "peak_over_usd": max(0, peak - 100 * NANO) / NANO,
        "left_reserved": final.reserved,
        "took_ms": took * 1000,
    }


async def micro(label: str, store: Any, rounds: int) -> dict[str, Any]:
    b = SpendBudgets(BudgetTable(default=Limits(day=to_nano(1e9))), store, reservation_ttl_s=900)
    reserve: list[float] = []
    settle: list[float] = []
    plan, usage = _plan(0.001), _usage(0.001)
    for _ in range(50):
        await b.settle(await b.reserve(WHO, REQUEST, plan), usage)
    for _ in range(rounds):
        t0 = time.perf_counter()
        r = await b.reserve(WHO, REQUEST, plan)
        t1 = time.perf_counter()
        await b.settle(r, usage)
        t2 = time.perf_counter()
        reserve.append((t1 - t0) * 1e6)
        settle.append((t2 - t1) * 1e6)
    return {
        "variant": label,
        "reserve_p50_us": statistics.median(reserve),
        "reserve_p90_us": _pct(reserve, 0.9),
        "settle_p50_us": statistics.median(settle),
    }


async def main_async(args: argparse.Namespace) -> None:
    concurrency = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as d, redis_server(Path(d)) as url:
        tmp = Path(d)
        stores = Stores(redis_url=url)
        print(f"python {sys.version.split()[0]}; redis-server on loopback")
        if args.requests:
            print(
                f"{'variant':<18} {'streams':>7} {'calls':>6} {'off p50':>8} {'off p90':>8} "
                f"{'on p50':>8} {'on p90':>8} {'added p50':>10}  (ms, TTFT)"
            )
            picked = {v.strip() for v in args.variants.split(",") if v.strip()}
            for label, controls in variants(stores, tmp):
                if picked and label not in picked:
                    continue
                for c in concurrency:
                    added = []
                    for _ in range(args.repeat):
                        r = await run_variant(
                            label, controls, c, args.requests, tmp, separate=args.separate
                        )
                        added.append(r["added_p50_ms"])
                        print(
                            f"{r['variant']:<18} {r['concurrency']:>7} {r['calls']:>6} "
                            f"{r['off_p50_ms']:>8.3f} {r['off_p90_ms']:>8.3f} "
                            f"{r['on_p50_ms']:>8.3f} {r['on_p90_ms']:>8.3f} "
                            f"{r['added_p50_ms']:>+10.3f}"
                        )
                    if args.repeat > 1:
                        print(f"{'':<18} {'':>7} median added p50 of {args.repeat}: "
                              f"{statistics.median(added):+.3f}")  # fmt: skip
        if args.race:
            print(
                f"\n{'race':<18} {'requests':>8} {'passed':>6} {'fit':>4} {'overspend $':>11} "
                f"{'peak over $':>11} {'reserved left':>13} {'took ms':>8}"
            )
            memory = MemoryBudgetStore()
            prefix = f"race-{time.time_ns()}:"
            redis_stores = [
                RedisBudgetStore(url, key_prefix=prefix, timeout_s=2.0) for _ in range(2)
            ]
            for label, used in (("memory", [memory]), ("redis, 2 replicas", redis_stores)):
                r = await race(label, used, args.race, 0.05)
                print(
                    f"{r['variant']:<18} {r['requests']:>8} {r['passed']:>6} {r['fit']:>4} "
                    f"{r['overspend_usd']:>11.6f} {r['peak_over_usd']:>11.6f} "
                    f"{r['left_reserved']:>13} {r['took_ms']:>8.1f}"
                )
            for s in redis_stores:
                await s.close()
        if args.micro:
            print(
                f"\n{'budgets alone':<18} {'reserve p50':>11} {'reserve p90':>11} "
                f"{'settle p50':>11}  (us)"
            )
            for label, store in (
                ("memory", MemoryBudgetStore()),
                ("redis", RedisBudgetStore(url, key_prefix=f"m-{time.time_ns()}:", timeout_s=2)),
            ):
                m = await micro(label, store, args.micro)
                await store.close()
                print(
                    f"{m['variant']:<18} {m['reserve_p50_us']:>11.1f} {m['reserve_p90_us']:>11.1f} "
                    f"{m['settle_p50_us']:>11.1f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,64", help="streams at once, comma list")
    parser.add_argument(
        "--requests", type=int, default=100, help="requests per stream (0: skip TTFT)"
    )
    parser.add_argument(
        "--variants", default="", help="TTFT variants to run, comma list of labels (default: all)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each TTFT variant")
    parser.add_argument(
        "--separate",
        action="store_true",
        help="backend and routers in their own processes (bench_controls.py --separate)",
    )
    parser.add_argument("--race", type=int, default=200, help="racing requests (0: skip)")
    parser.add_argument("--micro", type=int, default=2000, help="reserve+settle rounds (0: skip)")
    args = parser.parse_args()
    logging.getLogger("router").setLevel(logging.ERROR)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
