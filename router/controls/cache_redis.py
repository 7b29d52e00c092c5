"""The response cache in Redis (redis-py, asyncio): router replicas sharing one cache, so
an answer one replica kept is a hit on every other.

Keys (prefix ``controls.cache.redis.key_prefix``; ``<t>`` is the tenant, ``-`` for none;
``<k>`` the cache key, ``<data class>/<sha256>``):

=====================  ==================================================================
``<p>{<t>}/a/<k>``     the answer: ``<expires_ms>\\n`` then the record; PX its TTL
``<p>{<t>}/lru``       sorted set: keys by last use (ms), least recently used first
``<p>{<t>}/exp``       sorted set: keys by expiry (ms), to drop the expired ones' bytes
``<p>{<t>}/size``      hash: key -> bytes counted against ``max_bytes``
``<p>{<t>}/bytes``     the tenant's bytes, the sum of ``size``
=====================  ==================================================================

Tenant names and keys never contain ``{``, ``}`` (tenant names are letters, digits and
``._-``; keys a data class and hex digits), so no tenant can name another's keys; ``{<t>}``
is a Redis Cluster hash tag: a tenant's keys share one slot, so the put script touches
keys of one slot only.

``put`` is one Lua script (EVALSHA, loaded again when Redis lost it): it replaces the
answer and its accounting, and when the tenant is over a bound, drops its expired answers,
then its least recently used, until within ``max_entries`` and ``max_bytes``. Redis runs one
script at a time, so replicas sharing the cache keep the bounds. ``get`` is one round trip
(GET, and ZADD XX to mark the use). Whether an answer has expired is judged from its
``expires_ms`` against the caller's clock; the key's own expiry (PX) removes it from Redis.

A connection error, or a command that takes longer than ``timeout_s``, is
StoreUnavailable naming ``cache store redis <url without password>``; commands are never
retried by the client.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from router.controls.cache_store import EXPIRED, NOT_FOUND, Bounds, CacheStore, Found, entry_bytes
from router.errors import ConfigError, StoreUnavailable
from router.sessions.redis import safe_url

# KEYS: answer, lru, exp, size, bytes. ARGV: key, value, now_ms, expires_ms, max_entries,
# max_bytes, the answers' key prefix (<p>{<t>}/a/), the entry's bytes. Live answers evicted.
_PUT = """
local now = tonumber(ARGV[3])
local base = ARGV[7]
local function drop(m)
  local n = redis.call('hget', KEYS[4], m)
  if n then
    redis.call('decrby', KEYS[5], n)
    redis.call('hdel', KEYS[4], m)
  end
  redis.call('zrem', KEYS[2], m)
  redis.call('zrem', KEYS[3], m)
  redis.call('del', base .. m)
end
drop(ARGV[1])
local life = math.max(1, tonumber(ARGV[4]) - now)
redis.call('set', KEYS[1], ARGV[2], 'PX', string.format('%d', life))
redis.call('hset', KEYS[4], ARGV[1], ARGV[8])
redis.call('incrby', KEYS[5], ARGV[8])
redis.call('zadd', KEYS[2], now, ARGV[1])
redis.call('zadd', KEYS[3], ARGV[4], ARGV[1])
for i = 2, 5 do
  local left = redis.call('pttl', KEYS[i])
  if left == -1 or (left >= 0 and left < life) then
    redis.call('pexpire', KEYS[i], string.format('%d', life))
  end
end
local maxn, maxb = tonumber(ARGV[5]), tonumber(ARGV[6])
local function over()
  return redis.call('zcard', KEYS[2]) > maxn
    or tonumber(redis.call('get', KEYS[5]) or '0') > maxb
end
if not over() then return 0 end
for _, m in ipairs(redis.call('zrangebyscore', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)) do
  drop(m)
end
local evicted = 0
while over() do
  local oldest = redis.call('zrange', KEYS[2], 0, 0)
  if #oldest == 0 or oldest[1] == ARGV[1] then break end
  drop(oldest[1])
  evicted = evicted + 1
end
return evicted
"""

#: What a failed call raises: redis-py's errors, socket errors, timeouts.
_ERRORS = (RedisError, OSError, TimeoutError)


class RedisCacheStore(CacheStore):
    def __init__(self, url: str, *, key_prefix: str, timeout_s: float) -> None:
        self.name = f"cache store redis {safe_url(url)}"
        try:
            self._redis: Any = aioredis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ConfigError(
                f"{safe_url(url)} is not a Redis URL ({exc}); use redis://host:6379/0",
                key="controls.cache.redis.url",
            ) from None
        self._p = key_prefix
        self._put = self._redis.register_script(_PUT)

    def _base(self, tenant: str) -> str:
        return f"{self._p}{{{tenant or '-'}}}"

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(self.name, f"{type(exc).__name__}: {exc}")

    async def get(self, tenant: str, key: str, *, now_ms: int) -> Found:
        base = self._base(tenant)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(f"{base}/a/{key}")
                pipe.zadd(f"{base}/lru", {key: now_ms}, xx=True)
                value, _ = await pipe.execute()
        except _ERRORS as exc:
            raise self._unavailable(exc) from None
        if value is None:
            return NOT_FOUND
        head, sep, record = bytes(value).partition(b"\n")
        if not sep or not head.isdigit():
            return NOT_FOUND  # not an answer this code wrote: never replayed
        if int(head) <= now_ms:
            return EXPIRED
        return Found(record)

    async def put(
        self,
        tenant: str,
        key: str,
        value: bytes,
        *,
        now_ms: int,
        expires_ms: int,
        bounds: Bounds,
    ) -> int:
        base = self._base(tenant)
        keys = [f"{base}/a/{key}", f"{base}/lru", f"{base}/exp", f"{base}/size", f"{base}/bytes"]
        args: list[Any] = [
            key,
            b"%d\n" % expires_ms + value,
            now_ms,
            expires_ms,
            bounds.max_entries,
            bounds.max_bytes,
            f"{base}/a/",
            entry_bytes(key, value),
        ]
        try:
            return int(await self._put(keys=keys, args=args))
        except _ERRORS as exc:
            raise self._unavailable(exc) from None

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except _ERRORS as exc:
            raise self._unavailable(exc) from None

    async def close(self) -> None:
        await self._redis.aclose()
