"""Spend budgets in Redis (``controls.budgets.store: redis``): router replicas sharing one
set of budgets (redis-py, asyncio).

Keys (prefix ``controls.budgets.redis.key_prefix``; ``<t>`` is the tenant, ``-`` for none;
``<line>`` is ``day:2025-05-01``, ``month:2025-05``, ``key:<id>:day:...``...):

==========================  ====================================================================
``<p>{<t>}/<line>``         hash: ``spent``, ``reserved`` (nano-dollars) and ``r:<id>`` per
                            reservation in flight (its amount; ``s`` once settled)
``<p>{<t>}/<line>/held``    sorted set: reservation id, scored by its deadline (unix ms)
==========================  ====================================================================

Tenant names and key ids never contain ``{``, ``}`` or ``/`` (the config and the key store
check), and ``{<t>}`` is a Redis Cluster hash tag: all of a tenant's budgets share a slot,
so one script can reserve against a tenant's and a key's budgets at once.

``reserve`` is one Lua script: release the reservations past their deadline (the
requests of a replica that died), then check every line, ``spent + reserved + amount <=
limit``, and only when all pass add ``amount`` to each line's ``reserved`` and remember it
under the reservation id. Redis runs one script at a time, so concurrent requests, on any
replica, never hold more than a budget's limit between them. ``settle`` is another: the
reservation's amount leaves ``reserved``, the actual cost joins ``spent``, and the
reservation is marked settled for a minute, so a settle sent again (its first answer
lost to a timeout) is not counted twice, and a reservation that reaches Redis after its
own release (sent as a settle of nothing) is refused. The limits travel with each call
(the config is the source of truth); keys expire two days after their period ends
(PEXPIRE, relative). Whether a reservation has expired is judged by the calling router's
clock.

A connection error or a command slower than ``timeout_s`` is StoreUnavailable naming
``budgets store redis <url without password>``; redis-py never retries a command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from router.controls.budget_rules import Line, Usage
from router.errors import ConfigError, StoreUnavailable
from router.sessions.redis import safe_url

#: A settled reservation's marker stays this long (a repeated settle finds it).
SETTLED_GRACE_MS = 60_000
#: Budget keys live this long past the end of their period.
_KEEP_MS = 2 * 86_400_000
#: Expired reservations released per line and call (the rest on the next call).
_RELEASE_BATCH = 256

# Release reservations past their deadline: KEYS[2i-1] hash, KEYS[2i] its sorted set.
_RELEASE = """
local function unreserve(h, a)
  if a ~= '0' then redis.call('hincrby', h, 'reserved', '-' .. a) end
end
local function release(h, z, now)
  local stale = redis.call('zrangebyscore', z, '-inf', now, 'LIMIT', 0, BATCH)
  for _, id in ipairs(stale) do
    local a = redis.call('hget', h, 'r:' .. id)
    if a and a ~= 's' then unreserve(h, a) end
    redis.call('hdel', h, 'r:' .. id)
    redis.call('zrem', z, id)
  end
end
""".replace("BATCH", str(_RELEASE_BATCH))

# ARGV: now_ms, deadline_ms, id, amount, then per line: limit, key lifetime ms.
# {0} when reserved; {i, spent, reserved} of the first line that cannot hold it; {-1}
# when the id was settled already (a reserve that arrives after its own release).
_RESERVE = (
    _RELEASE
    + """
local now = tonumber(ARGV[1])
local n = #KEYS / 2
for i = 1, n do release(KEYS[2 * i - 1], KEYS[2 * i], now) end
if redis.call('hget', KEYS[1], 'r:' .. ARGV[3]) == 's' then return {-1} end
local amount = tonumber(ARGV[4])
for i = 1, n do
  local v = redis.call('hmget', KEYS[2 * i - 1], 'spent', 'reserved')
  local spent = tonumber(v[1]) or 0
  local reserved = tonumber(v[2]) or 0
  if spent + reserved + amount > tonumber(ARGV[3 + 2 * i]) then
    return {i, tostring(v[1] or '0'), tostring(v[2] or '0')}
  end
end
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('hincrby', h, 'reserved', ARGV[4])
  redis.call('hincrby', h, 'r:' .. ARGV[3], ARGV[4])
  redis.call('zadd', z, ARGV[2], ARGV[3])
  redis.call('pexpire', h, ARGV[4 + 2 * i])
  redis.call('pexpire', z, ARGV[4 + 2 * i])
end
return {0}
"""
)

# ARGV: now_ms, id, actual, marker deadline ms, then per line: key lifetime ms. 1 settled now,
# 0 settled before (a repeated call: nothing changes).
_SETTLE = (
    _RELEASE
    + """
local now = tonumber(ARGV[1])
local n = #KEYS / 2
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local a = redis.call('hget', h, 'r:' .. ARGV[2])
  if a == 's' then return 0 end
  if a then unreserve(h, a) end
  redis.call('hincrby', h, 'spent', ARGV[3])
  redis.call('hset', h, 'r:' .. ARGV[2], 's')
  redis.call('zadd', z, ARGV[4], ARGV[2])
  redis.call('pexpire', h, ARGV[4 + i])
  redis.call('pexpire', z, ARGV[4 + i])
  release(h, z, now)
end
return 1
"""
)

_ERRORS = (RedisError, OSError, TimeoutError)


def _life(line: Line, now_ms: int) -> int:
    """Milliseconds a line's keys live from now (relative, by the caller's clock, like
    the expiry judgements: a router clock a little off Redis' loses nothing)."""
    return max(1000, int(line.resets_at * 1000) + _KEEP_MS - now_ms)


class RedisBudgetStore:
    def __init__(self, url: str, *, key_prefix: str, timeout_s: float) -> None:
        self.name = f"budgets store redis {safe_url(url)}"
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
                key="controls.budgets.redis.url",
            ) from None
        self._p = key_prefix
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)

    def _keys(self, tenant: str, lines: Sequence[Line]) -> list[str]:
        base = f"{self._p}{{{tenant or '-'}}}/"
        keys: list[str] = []
        for line in lines:
            keys += [base + line.key, f"{base}{line.key}/held"]
        return keys

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(self.name, f"{type(exc).__name__}: {exc}")

    async def reserve(
        self,
        tenant: str,
        lines: Sequence[Line],
        rid: str,
        amount: int,
        now_ms: int,
        deadline_ms: int,
    ) -> tuple[int, Usage] | None:
        args: list[str | int] = [now_ms, deadline_ms, rid, amount]
        for line in lines:
            args += [line.limit, _life(line, now_ms)]
        try:
            got = await self._reserve(keys=self._keys(tenant, lines), args=args)
        except _ERRORS as exc:
            raise self._unavailable(exc) from None
        index = int(got[0])
        if index == 0:
            return None
        if index < 0:
            raise StoreUnavailable(self.name, f"reservation {rid} was released already")
        return index - 1, Usage(int(float(got[1])), int(float(got[2])))

    async def settle(
        self, tenant: str, lines: Sequence[Line], rid: str, actual: int, now_ms: int
    ) -> None:
        args: list[str | int] = [now_ms, rid, actual, now_ms + SETTLED_GRACE_MS]
        args += [_life(line, now_ms) for line in lines]
        try:
            await self._settle(keys=self._keys(tenant, lines), args=args)
        except _ERRORS as exc:
            raise self._unavailable(exc) from None

    async def usage(self, tenant: str, lines: Sequence[Line], now_ms: int) -> list[Usage]:
        keys = self._keys(tenant, lines)
        try:
            pipe = self._redis.pipeline(transaction=False)
            for h in keys[0::2]:
                pipe.hmget(h, "spent", "reserved")
            rows = await pipe.execute()
        except _ERRORS as exc:
            raise self._unavailable(exc) from None
        return [Usage(int(r[0] or 0), int(r[1] or 0)) for r in rows]

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except _ERRORS as exc:
            raise self._unavailable(exc) from None

    async def close(self) -> None:
        await self._redis.aclose()
