"""The cost ledger in Redis (redis-py, asyncio): router replicas writing one ledger.

Keys (prefix ``controls.ledger.redis.key_prefix``):

==========================  ==============================================================
``<p>day:<YYYY-MM-DD>``     hash: record id -> the record as JSON (the UTC day of its time)
``<p>days``                 sorted set: the days that hold records, scored by their start
                            (unix ms)
==========================  ==============================================================

A batch is one pipeline of HSETs (one per day it spans) and a ZADD: a record is keyed by
its own id, so a batch written again after a timeout (its outcome unknown) keeps one copy
of each record. With ``retention_days`` a day's hash expires that many days after the day
ends. Reads walk the days asked for with HSCAN.

A connection error or a command slower than ``timeout_s`` is StoreUnavailable naming
``ledger store redis <url without password>``; the ledger keeps the batch and writes it
again when Redis answers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from router.controls.ledger_records import LedgerRecord, day_overlaps, day_start_ms
from router.errors import ConfigError, StoreUnavailable
from router.sessions.redis import safe_url

_ERRORS = (RedisError, OSError, TimeoutError)
_DAY_MS = 86_400_000


class RedisLedgerStore:
    def __init__(
        self, url: str, *, key_prefix: str, timeout_s: float, retention_days: int = 0
    ) -> None:
        self.name = f"ledger store redis {safe_url(url)}"
        try:
            self._redis: Any = aioredis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
            )
        except ValueError as exc:
            raise ConfigError(
                f"{safe_url(url)} is not a Redis URL ({exc}); use redis://host:6379/0",
                key="controls.ledger.redis.url",
            ) from None
        self._p = key_prefix
        self._retention_ms = retention_days * _DAY_MS

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(self.name, f"{type(exc).__name__}: {exc}")

    async def write(self, records: Sequence[LedgerRecord]) -> None:
        by_day: dict[str, dict[str, str]] = defaultdict(dict)
        for r in records:
            by_day[r.day][r.id] = r.to_json()
        try:
            pipe = self._redis.pipeline(transaction=False)
            for day, items in by_day.items():
                key = f"{self._p}day:{day}"
                pipe.hset(key, mapping=items)
                start = day_start_ms(day)
                if self._retention_ms:
                    pipe.pexpireat(key, start + _DAY_MS + self._retention_ms)
            pipe.zadd(f"{self._p}days", {day: day_start_ms(day) for day in by_day})
            await pipe.execute()
        except _ERRORS as exc:
            raise self._unavailable(exc) from None

    async def read(self, since_ms: int, until_ms: int) -> AsyncIterator[LedgerRecord]:
        """Records with ``since_ms <= at_ms < until_ms`` (by day, unordered within one)."""
        try:
            known = await self._redis.zrangebyscore(
                f"{self._p}days", since_ms - _DAY_MS, f"({until_ms}"
            )
        except _ERRORS as exc:
            raise self._unavailable(exc) from None
        for day in sorted(known):
            if not day_overlaps(day, since_ms, until_ms):
                continue
            cursor: int = 0
            while True:
                try:
                    cursor, items = await self._redis.hscan(
                        f"{self._p}day:{day}", cursor, count=1000
                    )
                except _ERRORS as exc:
                    raise self._unavailable(exc) from None
                for raw in items.values():
                    r = LedgerRecord.from_dict(json.loads(raw))
                    if since_ms <= r.at_ms < until_ms:
                        yield r
                if not cursor:
                    break

    async def close(self) -> None:
        await self._redis.aclose()
