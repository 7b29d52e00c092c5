"""The cost ledger in one DynamoDB table (boto3): deployments that keep their state in AWS.

The table has the sessions table's layout (partition key ``pk``, sort key ``sk``, both
strings; TTL attribute ``expires``), so ``router.sessions.dynamodb.create_table`` and the
commands in docs/sessions.md make one; it may be the sessions table itself (no key below
can be a session's).

=================================  ==================================  ======================
pk                                 sk                                  item
=================================  ==================================  ======================
``ledger#<YYYY-MM-DD>#<shard>``    ``<at_ms, 13 digits>#<id>``         one record; shard 0-7
                                                                       from its id
``ledger#days``                    ``<YYYY-MM-DD>``                    a day holding records
=================================  ==================================  ======================

A day is spread over eight partitions so that a fleet's writes do not all land on one.
Writes are BatchWriteItem puts of at most 25 items (unprocessed items are sent again,
with short jittered sleeps): a record's key is its own, so writing it twice keeps one.
With ``retention_days`` each item's ``expires`` is that many days after its day ends.

Every call runs in this store's worker threads; a connection error or an error answer is
StoreUnavailable naming ``ledger store dynamodb table <name>``.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from hybrid_router.refs import quiet_botocore_bodies

from router.controls.ledger_records import LedgerRecord, day_overlaps, day_start_ms
from router.errors import StoreUnavailable
from router.sessions.dynamodb import query_all

T = TypeVar("T")
Item = dict[str, dict[str, Any]]

SHARDS = 8
_BATCH = 25
_TRIES = 8
_DAY_MS = 86_400_000
_DAYS_PK = "ledger#days"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float | int) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(int(value))}


def _shard(record_id: str) -> int:
    return zlib.crc32(record_id.encode()) % SHARDS


def _item(r: LedgerRecord, expires: int) -> Item:
    item: Item = {
        "pk": _s(f"ledger#{r.day}#{_shard(r.id)}"),
        "sk": _s(f"{r.at_ms:013d}#{r.id}"),
        "id": _s(r.id),
        "at_ms": _n(r.at_ms),
        "tenant": _s(r.tenant),
        "key_id": _s(r.key_id),
        "request_id": _s(r.request_id),
        "backend": _s(r.backend),
        "tier": _s(r.tier),
        "input_tokens": _n(r.input_tokens),
        "output_tokens": _n(r.output_tokens),
        "cost_usd": _n(float(r.cost_usd)),
        "complete": {"BOOL": r.complete},
        "cached": {"BOOL": r.cached},
    }
    if expires:
        item["expires"] = _n(expires)
    return item


def _record(item: Item) -> LedgerRecord:
    def s(name: str) -> str:
        v = item.get(name)
        return str(v["S"]) if v else ""

    def n(name: str) -> str:
        v = item.get(name)
        return str(v["N"]) if v else "0"

    return LedgerRecord(
        id=s("id"),
        at_ms=int(n("at_ms")),
        tenant=s("tenant"),
        key_id=s("key_id"),
        request_id=s("request_id"),
        backend=s("backend"),
        tier=s("tier"),
        input_tokens=int(n("input_tokens")),
        output_tokens=int(n("output_tokens")),
        cost_usd=float(n("cost_usd")),
        complete=bool(item.get("complete", {}).get("BOOL", False)),
        cached=bool(item.get("cached", {}).get("BOOL", False)),
    )


class DynamoDbLedgerStore:
    def __init__(
        self,
        table: str,
        *,
        region: str,
        endpoint_url: str,
        retention_days: int = 0,
        timeout_s: float = 5.0,
        max_attempts: int = 3,
    ) -> None:

        import botocore.exceptions

        self.name = f"ledger store dynamodb table {table}"
        self._table = table
        self._retention_ms = retention_days * _DAY_MS
        quiet_botocore_bodies()
        from router.sessions.dynamodb import dynamodb_client

        self._client: Any = dynamodb_client(
            "controls.ledger.dynamodb",
            "the ledger table",
            region=region,
            endpoint_url=endpoint_url,
            timeout_s=timeout_s,
            max_attempts=max_attempts,
            pool=4,
        )
        self._client_error = botocore.exceptions.ClientError
        self._boto_error = botocore.exceptions.BotoCoreError
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ledger-dynamodb")
        self._days_known: set[str] = set()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            done = loop.run_in_executor(self._executor, functools.partial(self._guard, fn, *args))
        except RuntimeError as exc:  # submitted after close()
            raise StoreUnavailable(self.name, f"closed ({exc})") from None
        return await done

    def _guard(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except self._client_error as exc:
            err = exc.response.get("Error", {})
            code = err.get("Code", "")
            problem = f"{code}: {err.get('Message', '')}".strip(": ")
            if code == "ResourceNotFoundException":
                problem += " (does the table exist in this region? docs/sessions.md creates it)"
            raise StoreUnavailable(self.name, problem or str(exc)) from None
        except (self._boto_error, OSError) as exc:
            raise StoreUnavailable(self.name, f"{type(exc).__name__}: {exc}") from None

    # --- writing ------------------------------------------------------------------------

    async def write(self, records: Sequence[LedgerRecord]) -> None:
        await self._call(self._write, list(records))

    def _write(self, records: list[LedgerRecord]) -> None:
        items: list[Item] = []
        for r in records:
            expires = 0
            if self._retention_ms:
                expires = (day_start_ms(r.day) + _DAY_MS + self._retention_ms) // 1000
            items.append(_item(r, expires))
        for day in sorted({r.day for r in records} - self._days_known):
            items.append({"pk": _s(_DAYS_PK), "sk": _s(day)})
        for i in range(0, len(items), _BATCH):
            self._batch(items[i : i + _BATCH])
        self._days_known |= {r.day for r in records}

    def _batch(self, items: list[Item]) -> None:
        requests: list[dict[str, Any]] = [{"PutRequest": {"Item": it}} for it in items]
        for attempt in range(_TRIES):
            got = self._client.batch_write_item(RequestItems={self._table: requests})
            requests = got.get("UnprocessedItems", {}).get(self._table, [])
            if not requests:
                return
            time.sleep(random.uniform(0, 0.01 * 2 ** min(attempt, 6)))
        raise StoreUnavailable(self.name, f"{len(requests)} items kept being throttled")

    # --- reading ------------------------------------------------------------------------

    async def read(self, since_ms: int, until_ms: int) -> AsyncIterator[LedgerRecord]:
        """Records with ``since_ms <= at_ms < until_ms`` (day by day, ordered within a
        partition)."""
        days = await self._call(self._days, since_ms, until_ms)
        for day in days:
            for shard in range(SHARDS):
                items = await self._call(self._query, day, shard, since_ms, until_ms)
                for item in items:
                    yield _record(item)

    def _days(self, since_ms: int, until_ms: int) -> list[str]:
        known = sorted(_str_sk(i) for i in query_all(self._client, self._table, _DAYS_PK))
        return [d for d in known if day_overlaps(d, since_ms, until_ms)]

    def _query(self, day: str, shard: int, since_ms: int, until_ms: int) -> list[Item]:
        pk = f"ledger#{day}#{shard}"
        return query_all(
            self._client,
            self._table,
            pk,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :a AND :b",
            ExpressionAttributeValues={
                ":pk": _s(pk),
                ":a": _s(f"{max(since_ms, 0):013d}"),
                ":b": _s(f"{max(until_ms - 1, 0):013d}#~"),
            },
        )

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def _str_sk(item: Item) -> str:
    return str(item["sk"]["S"])
