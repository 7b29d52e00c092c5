"""The cost ledger (router/controls/ledger.py) on its real stores: an SQLite file, a real
``redis-server`` (paused for an outage, restarted) and moto's DynamoDB.

What must hold: every record written once, fields intact; a restart (close, open again)
keeps every record; while the store is down records wait in memory, new requests are
refused once the buffer is full (UNAVAILABLE naming the store), nothing is dropped, and
all of it is written when the store answers again.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import boto3
import pytest
from awsenv import aws_env  # noqa: F401 - fixture
from storeservers import RedisProcess, moto_dynamodb, own_redis  # noqa: F401 - fixtures

from router.config import parse_config
from router.controls.ledger import BufferedLedger, build_ledger, open_ledger_store
from router.controls.ledger_dynamodb import DynamoDbLedgerStore
from router.controls.ledger_records import LedgerRecord, totals
from router.controls.ledger_redis import RedisLedgerStore
from router.controls.ledger_sqlite import SqliteLedgerStore
from router.errors import LedgerBacklog, StoreUnavailable
from router.security.authn import Principal
from router.sessions.dynamodb import create_table
from router.types import FinishReason, InferenceRequest, Message, Role, Tier, UsageEvent

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z
REGION = "us-east-1"
REQUEST = InferenceRequest(
    messages=(Message(Role.USER, "hi"),), max_output_tokens=10, request_id="req"
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def usage(i: int, *, backend: str = "gpu-1", complete: bool = True) -> UsageEvent:
    return UsageEvent(
        request_id=f"req-{i}",
        backend=backend,
        tier=Tier.GPU,
        input_tokens=10 + i,
        output_tokens=20 + i,
        cost_usd=0.001 * (i + 1),
        ttft_ms=5,
        total_ms=50,
        finish_reason=FinishReason.STOP if complete else FinishReason.ERROR,
        complete=complete,
    )


async def read_all(store) -> list[LedgerRecord]:
    return [r async for r in store.read(0, 2**62)]


async def eventually(check, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    assert await check()


# --- SQLite: the default -------------------------------------------------------------------


async def test_records_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ledger.sqlite3"
    clock = Clock()
    ledger = BufferedLedger(
        SqliteLedgerStore(path), buffer_records=100, batch_records=7, clock=clock
    )
    acme = Principal("acme", "0123456789ab")
    for i in range(30):
        clock.now = T0 + i
        await ledger.record(acme, REQUEST, usage(i, complete=i != 3), cached=i == 5)
    await ledger.close()  # the router stops: the buffer is written first

    again = SqliteLedgerStore(path)  # the router starts again
    records = sorted(await read_all(again), key=lambda r: r.at_ms)
    await again.close()
    assert len(records) == 30 and len({r.id for r in records}) == 30
    r3 = records[3]
    assert (r3.tenant, r3.key_id, r3.request_id, r3.backend, r3.tier) == (
        "acme", "0123456789ab", "req-3", "gpu-1", "gpu")  # fmt: skip
    assert (r3.input_tokens, r3.output_tokens, r3.at_ms) == (13, 23, int((T0 + 3) * 1000))
    assert r3.cost_usd == pytest.approx(0.004) and not r3.complete and not r3.cached
    assert records[5].cached and records[5].complete
    (total,) = totals(records, ())
    assert total.cost_usd == pytest.approx(0.001 * sum(range(1, 31)))
    assert oct(path.stat().st_mode & 0o777) == "0o600"


async def test_writing_a_batch_again_keeps_one_copy(tmp_path: Path) -> None:
    store = SqliteLedgerStore(tmp_path / "l.sqlite3")
    rec = LedgerRecord(uuid.uuid4().hex, 1, "t", "", "r", "b", "gpu", 1, 2, 0.5, True, False)
    await store.write([rec])
    await store.write([rec])  # a retry after an unknown outcome
    assert await read_all(store) == [rec]
    await store.close()


async def test_reading_pages_through_a_time_range(tmp_path: Path) -> None:
    store = SqliteLedgerStore(tmp_path / "l.sqlite3")
    records = [
        LedgerRecord(f"{i:06d}", 1000 + i // 3, "t", "", "r", "b", "gpu", 1, 1, 0.1, True, False)
        for i in range(12_000)
    ]
    await store.write(records)
    got = [r async for r in store.read(1000, 1000 + 3000)]
    assert [r.id for r in got] == [f"{i:06d}" for i in range(9000)]
    await store.close()


async def test_an_sqlite_file_that_cannot_be_made_waits_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    ledger = BufferedLedger(
        SqliteLedgerStore(blocker / "ledger.sqlite3"), buffer_records=2, batch_records=10
    )
    await ledger.record(Principal("t"), REQUEST, usage(0), False)
    await ledger.record(Principal("t"), REQUEST, usage(1), False)
    await eventually(lambda: _true(ledger.failing != ""))
    with pytest.raises(LedgerBacklog) as err:
        ledger.admit()
    assert err.value.grpc_code == "UNAVAILABLE"
    assert err.value.message.startswith(f"ledger store sqlite {blocker / 'ledger.sqlite3'}")
    assert "2 usage records are waiting" in err.value.message
    blocker.unlink()  # the problem is fixed: the records are written
    blocker.mkdir()
    assert await ledger.flush(10)
    ledger.admit()
    await ledger.close()


async def _true(value: bool) -> bool:
    return value


# --- Redis: a fleet --------------------------------------------------------------------------


async def test_redis_outage_keeps_every_record_and_refuses_when_full(
    own_redis: RedisProcess,  # noqa: F811
) -> None:
    store = RedisLedgerStore(own_redis.url, key_prefix="ledger:", timeout_s=0.3)
    ledger = BufferedLedger(store, buffer_records=5, batch_records=3)
    who = Principal("acme", "0123456789ab")
    for i in range(3):
        await ledger.record(who, REQUEST, usage(i), False)
    assert await ledger.flush(5)

    own_redis.pause()  # the store hangs
    for i in range(3, 8):
        ledger.admit()
        await ledger.record(who, REQUEST, usage(i), False)
    await eventually(lambda: _true(bool(ledger.failing)))
    with pytest.raises(LedgerBacklog) as err:
        ledger.admit()  # a new request is refused rather than its record dropped
    assert f"ledger store redis {own_redis.url} is unavailable: 5 usage records" in (
        err.value.message
    )
    await ledger.record(who, REQUEST, usage(8), False)  # one already running still lands
    assert ledger.waiting == 6

    own_redis.resume()
    assert await ledger.flush(10)
    ledger.admit()
    await ledger.close()

    # Redis restarts (its append-only file): every record is there once.
    own_redis.stop()
    own_redis.start()
    reader = RedisLedgerStore(own_redis.url, key_prefix="ledger:", timeout_s=2)
    records = await read_all(reader)
    await reader.close()
    assert sorted(r.request_id for r in records) == [f"req-{i}" for i in range(9)]


async def test_redis_down_at_shutdown_is_logged_with_the_count(
    own_redis: RedisProcess,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RedisLedgerStore(own_redis.url, key_prefix="ledger:", timeout_s=0.2)
    ledger = BufferedLedger(store, buffer_records=10, batch_records=3, close_timeout_s=0.5)
    own_redis.pause()
    try:
        await ledger.record(Principal("t"), REQUEST, usage(0), False)
        await ledger.close()
    finally:
        own_redis.resume()
    assert "ledger: 1 records could not be written" in caplog.text


# --- DynamoDB ------------------------------------------------------------------------------


async def test_dynamodb_keeps_records_across_days_and_reads_ranges(
    aws_env: None,  # noqa: F811
    moto_dynamodb: str,  # noqa: F811
) -> None:
    table = f"ledger-{uuid.uuid4().hex[:8]}"
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_dynamodb)
    await asyncio.to_thread(create_table, client, table)
    config = parse_config(
        {
            "controls": {
                "ledger": {
                    "enabled": True,
                    "store": "dynamodb",
                    "dynamodb": {"table": table, "region": REGION, "endpoint_url": moto_dynamodb},
                }
            }
        },
        source="test",
    )
    clock = Clock()
    ledger, close = build_ledger(config.controls.ledger, config, {}, clock=clock)
    assert isinstance(ledger.store, DynamoDbLedgerStore)
    for i in range(60):  # 60 records, one an hour: four UTC days
        clock.now = T0 + i * 3600
        await ledger.record(Principal(f"t{i % 2}"), REQUEST, usage(i), False)
    await close()
    store = open_ledger_store(config.controls.ledger, {})
    everything = await read_all(store)
    day2 = [r async for r in store.read(int((T0 + 9 * 3600) * 1000), int((T0 + 33 * 3600) * 1000))]
    await store.close()
    assert sorted(r.request_id for r in everything) == sorted(f"req-{i}" for i in range(60))
    assert sorted(r.request_id for r in day2) == sorted(f"req-{i}" for i in range(9, 33))
    by = {t.group: t.requests for t in totals(everything, ("tenant", "day"))}
    assert by == {
        ("t0", "2025-06-15"): 5, ("t1", "2025-06-15"): 4,
        ("t0", "2025-06-16"): 12, ("t1", "2025-06-16"): 12,
        ("t0", "2025-06-17"): 12, ("t1", "2025-06-17"): 12,
        ("t0", "2025-06-18"): 1, ("t1", "2025-06-18"): 2,
    }  # fmt: skip


async def test_dynamodb_missing_table_is_unavailable_and_named(
    aws_env: None,  # noqa: F811
    moto_dynamodb: str,  # noqa: F811
) -> None:
    store = DynamoDbLedgerStore("no-such-table", region=REGION, endpoint_url=moto_dynamodb)
    rec = LedgerRecord("x", 1, "t", "", "r", "b", "gpu", 1, 1, 0.1, True, False)
    with pytest.raises(StoreUnavailable) as err:
        await store.write([rec])
    assert err.value.message.startswith("ledger store dynamodb table no-such-table")
    await store.close()
