"""Sessions in Redis (redis-py, asyncio): router replicas sharing one set of sessions.

Keys (prefix ``sessions.redis.key_prefix``; ``<t>`` is the tenant, ``-`` for none):

==============================  ===============================================================
``<p>{<t>}/<id>/meta``          hash: created_ms, updated_ms, expires_ms, ttl_s, system,
                                strategy, turn_count (the next ``seq``)
``<p>{<t>}/<id>/turns``         list of JSON turns ``{"seq", "role", "content", "at_ms",
                                "backend"}``, oldest first, trimmed to ``max_turns``;
                                ``"tool_calls"`` (``[{"id", "name", "arguments"}]``),
                                ``"tool_call_id"`` and ``"name"`` only when set (a turn
                                stored without them has none)
``<p>{<t>}/<id>/summary``       hash: upto, text, backend, made_ms
``<p>{<t>}/sessions``           sorted set, score 0: the tenant's session ids (by id, for
                                ``list`` paging with ZRANGEBYLEX)
==============================  ===============================================================

Tenants and ids never contain ``{``, ``}`` or ``/`` (router/sessions/stores.py checks), so
no tenant or id can name another's keys. ``{<t>}`` is a Redis Cluster hash tag: a tenant's
keys share one slot, so every script below touches keys of one slot.

``append`` is one Lua script (EVALSHA, loaded again when Redis lost it): it checks the
session exists and has not expired (by the caller's clock), RPUSHes the turns with ``seq``
from ``turn_count`` on, moves the count and the expiry, trims to ``max_turns`` and moves the
keys' expiry. Redis runs one script at a time, so two appends land one after the other,
whole. Key expiry is set relative (PEXPIRE ``expires_ms - now_ms``), so a router clock a
little off Redis' cannot delete a live session; whether a session has expired is always
judged from ``expires_ms`` against the caller's ``now_ms``.

A connection error or a command that takes longer than ``timeout_s`` is StoreUnavailable
naming ``sessions store redis <url without password>``. Commands are never retried by the
client: a timed-out append may still have been applied (its outcome is unknown), but a
retry could apply it twice.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from router.errors import AlreadyExists, ConfigError, SessionNotFound, StoreUnavailable
from router.sessions.model import Session, SessionInfo, Summary, Turn, calls_from_json
from router.sessions.store import SessionStore
from router.sessions.stores import expired, new_info, require_names, valid_names

# KEYS: meta, turns, summary, index. ARGV: id, created_ms, updated_ms, expires_ms, ttl_s,
# system, strategy. 1 when created, 0 when a live session holds the id.
_CREATE = """
local now = tonumber(ARGV[2])
local exp = redis.call('hget', KEYS[1], 'expires_ms')
if exp and tonumber(exp) > now then return 0 end
redis.call('del', KEYS[1], KEYS[2], KEYS[3])
redis.call('hset', KEYS[1], 'created_ms', ARGV[2], 'updated_ms', ARGV[3],
  'expires_ms', ARGV[4], 'ttl_s', ARGV[5], 'system', ARGV[6], 'strategy', ARGV[7],
  'turn_count', '0')
local life = math.max(1, tonumber(ARGV[4]) - now)
redis.call('pexpire', KEYS[1], string.format('%d', life))
redis.call('zadd', KEYS[4], 0, ARGV[1])
local left = redis.call('pttl', KEYS[4])
if left == -1 or (left >= 0 and left < life) then
  redis.call('pexpire', KEYS[4], string.format('%d', life))
end
return 1
"""

# KEYS: meta, turns, summary, index. ARGV: now_ms, default ttl_s, max_turns, then one JSON
# object per turn (without its seq). The new turn count; -1 when unknown or expired.
_APPEND = """
local now = tonumber(ARGV[1])
local m = redis.call('hmget', KEYS[1], 'expires_ms', 'turn_count', 'ttl_s')
if not m[1] or tonumber(m[1]) <= now then return -1 end
local count = tonumber(m[2]) or 0
local ttl = tonumber(m[3])
if not ttl or ttl <= 0 then ttl = tonumber(ARGV[2]) end
local life = string.format('%d', ttl * 1000)
for i = 4, #ARGV do
  redis.call('rpush', KEYS[2],
    '{"seq":' .. string.format('%d', count) .. ',' .. string.sub(ARGV[i], 2))
  count = count + 1
end
redis.call('hset', KEYS[1], 'turn_count', string.format('%d', count), 'updated_ms', ARGV[1],
  'expires_ms', string.format('%d', now + ttl * 1000))
redis.call('ltrim', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('pexpire', KEYS[1], life)
redis.call('pexpire', KEYS[2], life)
redis.call('pexpire', KEYS[3], life)
local left = redis.call('pttl', KEYS[4])
if left == -1 or (left >= 0 and left < ttl * 1000) then
  redis.call('pexpire', KEYS[4], life)
end
return count
"""

# KEYS: meta, summary. ARGV: upto, text, backend, made_ms. 1 when kept.
_PUT_SUMMARY = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
local cur = redis.call('hget', KEYS[2], 'upto')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('hset', KEYS[2], 'upto', ARGV[1], 'text', ARGV[2], 'backend', ARGV[3],
  'made_ms', ARGV[4])
local left = redis.call('pttl', KEYS[1])
if left > 0 then redis.call('pexpire', KEYS[2], left) end
return 1
"""

# KEYS: index, then meta, turns, summary of each listed id. ARGV: now_ms, then the ids.
# Drops the index entries of sessions gone or expired (and an expired one's keys).
_CLEAN = """
local now = tonumber(ARGV[1])
for i = 2, #ARGV do
  local k = 2 + (i - 2) * 3
  local e = redis.call('hget', KEYS[k], 'expires_ms')
  if not e or tonumber(e) <= now then
    redis.call('zrem', KEYS[1], ARGV[i])
    if e then redis.call('del', KEYS[k], KEYS[k + 1], KEYS[k + 2]) end
  end
end
return 0
"""

T = TypeVar("T")

#: What a failed call raises: redis-py's errors, socket errors, timeouts.
_ERRORS = (RedisError, OSError, TimeoutError)


def safe_url(url: str) -> str:
    """``url`` without its password (and without query parameters, which may hold one)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = (f"{parts.username}@" if parts.username else "") + host
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return url.split("://", 1)[0] + "://<unparsable url>"


class RedisSessionStore(SessionStore):
    def __init__(
        self,
        url: str,
        *,
        key_prefix: str,
        timeout_s: float,
        ttl_s: int,
        max_turns: int,
    ) -> None:
        self.name = f"sessions store redis {safe_url(url)}"
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
                key="sessions.redis.url",
            ) from None
        self._p = key_prefix
        self._ttl_s = ttl_s
        self._max_turns = max(1, max_turns)
        self._create = self._redis.register_script(_CREATE)
        self._append = self._redis.register_script(_APPEND)
        self._put_summary = self._redis.register_script(_PUT_SUMMARY)
        self._clean = self._redis.register_script(_CLEAN)

    # --- keys ---------------------------------------------------------------------------

    def _base(self, tenant: str) -> str:
        return f"{self._p}{{{tenant or '-'}}}"

    def _keys(self, tenant: str, session_id: str) -> list[str]:
        """meta, turns, summary, index."""
        s = f"{self._base(tenant)}/{session_id}"
        return [f"{s}/meta", f"{s}/turns", f"{s}/summary", f"{self._base(tenant)}/sessions"]

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(self.name, f"{type(exc).__name__}: {exc}")

    @property
    def client(self) -> Any:
        """The redis-py client: for other records kept on the same server
        (router/templates/backends.py); run its commands through :meth:`call`."""
        return self._redis

    async def call(self, command: Awaitable[T]) -> T:
        """``await command`` (a command, pipeline or script of :attr:`client`); errors are
        StoreUnavailable naming ``name``."""
        try:
            return await command
        except _ERRORS as exc:
            raise self._unavailable(exc) from None

    # --- the interface ------------------------------------------------------------------

    async def create(self, info: SessionInfo) -> SessionInfo:
        require_names(info.tenant, info.session_id)
        info = new_info(info, self._ttl_s)
        args: list[str | int] = [
            info.session_id,
            info.created_ms,
            info.updated_ms,
            info.expires_ms,
            info.ttl_s,
            info.system,
            info.strategy,
        ]
        try:
            made = await self._create(keys=self._keys(info.tenant, info.session_id), args=args)
        except _ERRORS as exc:
            raise self._unavailable(exc) from None
        if not made:
            raise AlreadyExists(f"session {info.session_id!r} already exists")
        return info

    async def info(self, tenant: str, session_id: str, *, now_ms: int) -> SessionInfo | None:
        if not valid_names(tenant, session_id):
            return None
        try:
            meta = await self._redis.hgetall(self._keys(tenant, session_id)[0])
        except _ERRORS as exc:
            raise self._unavailable(exc) from None
        return _live(tenant, session_id, meta, now_ms)

    async def get(self, tenant: str, session_id: str, *, now_ms: int) -> Session | None:
        if not valid_names(tenant, session_id):
            return None
        meta_key, turns_key, _, _ = self._keys(tenant, session_id)
        try:
            pipe = self._redis.pipeline(transaction=True)  # MULTI: the count and turns agree
            pipe.hgetall(meta_key)
            pipe.lrange(turns_key, 0, -1)
            meta, raw = await pipe.execute()
        except _ERRORS as exc:
            raise self._unavailable(exc) from None
        info = _live(tenant, session_id, meta, now_ms)
        if info is None:
            return None
        return Session(info=info, turns=tuple(_turn(json.loads(item)) for item in raw))

    async def list(
        self, tenant: str, *, now_ms: int, limit: int = 100, after: str = ""
    ) -> list[SessionInfo]:
        if limit <= 0 or not valid_names(tenant, "x"):
            return []
        index = f"{self._base(tenant)}/sessions"
        out: list[SessionInfo] = []
        page = max(limit, 16)
        try:
            while len(out) < limit:
                lo = f"({after}" if after else "-"
                ids = await self._redis.zrangebylex(index, lo, "+", start=0, num=page)
                if not ids:
                    break
                pipe = self._redis.pipeline(transaction=False)
                for sid in ids:
                    pipe.hgetall(self._keys(tenant, sid)[0])
                metas = await pipe.execute()
                stale: list[str] = []
                for sid, meta in zip(ids, metas, strict=True):
                    info = _live(tenant, sid, meta, now_ms)
                    if info is None:
                        stale.append(sid)
                    elif len(out) < limit:
                        out.append(info)
                if stale:
                    keys = [index]
                    for sid in stale:
                        keys += self._keys(tenant, sid)[:3]
                    await self._clean(keys=keys, args=[now_ms, *stale])
                if len(ids) < page:
                    break
                after = ids[-1]
        except _ERRORS as exc:
            raise self._unavailable(exc) from None
        return out

    async def delete(self, tenant: str, session_id: str) -> bool:
        if not valid_names(tenant, session_id):
            return False
        meta, turns, summary, index = self._keys(tenant, session_id)
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.exists(meta)
            pipe.delete(meta, turns, summary)
            pipe.zrem(index, session_id)
            found, _, _ = await pipe.execute()
        except _ERRORS as exc:
            raise self._unavailable(exc) from None
        return bool(found)

    async def append(
        self, tenant: str, session_id: str, turns: Sequence[Turn], *, now_ms: int
    ) -> int:
        if not valid_names(tenant, session_id):
            raise SessionNotFound(session_id)
        items = [json.dumps(_turn_item(t, now_ms), separators=(",", ":")) for t in turns]
        try:
            count = await self._append(
                keys=self._keys(tenant, session_id),
                args=[now_ms, self._ttl_s, self._max_turns, *items],
            )
        except _ERRORS as exc:
            raise self._unavailable(exc) from None
        if int(count) < 0:
            raise SessionNotFound(session_id)
        return int(count)

    async def get_summary(self, tenant: str, session_id: str) -> Summary | None:
        if not valid_names(tenant, session_id):
            return None
        try:
            d = await self._redis.hgetall(self._keys(tenant, session_id)[2])
        except _ERRORS as exc:
            raise self._unavailable(exc) from None
        if not d:
            return None
        return Summary(
            upto=int(d["upto"]),
            text=d["text"],
            backend=d.get("backend", ""),
            made_ms=int(d.get("made_ms", 0)),
        )

    async def put_summary(self, tenant: str, session_id: str, summary: Summary) -> bool:
        if not valid_names(tenant, session_id):
            return False
        meta, _, key, _ = self._keys(tenant, session_id)
        try:
            kept = await self._put_summary(
                keys=[meta, key],
                args=[summary.upto, summary.text, summary.backend, summary.made_ms],
            )
        except _ERRORS as exc:
            raise self._unavailable(exc) from None
        return bool(kept)

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except _ERRORS as exc:
            raise self._unavailable(exc) from None

    async def close(self) -> None:
        await self._redis.aclose()


def _turn_item(t: Turn, now_ms: int) -> dict[str, Any]:
    """A turn as the ``turns`` list keeps it (without its seq: the append script adds it);
    the tool fields only when set."""
    d: dict[str, Any] = {
        "role": t.role,
        "content": t.content,
        "at_ms": t.at_ms or now_ms,
        "backend": t.backend,
    }
    if t.tool_calls:
        d["tool_calls"] = [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in t.tool_calls
        ]
    if t.tool_call_id:
        d["tool_call_id"] = t.tool_call_id
    if t.name:
        d["name"] = t.name
    return d


def _turn(d: dict[str, Any]) -> Turn:
    return Turn(
        role=d["role"],
        content=d["content"],
        at_ms=int(d["at_ms"]),
        backend=d.get("backend", ""),
        seq=int(d["seq"]),
        tool_calls=calls_from_json(d.get("tool_calls")),
        tool_call_id=d.get("tool_call_id", ""),
        name=d.get("name", ""),
    )


def _live(tenant: str, session_id: str, meta: dict[str, str], now_ms: int) -> SessionInfo | None:
    if not meta or "expires_ms" not in meta:
        return None
    info = SessionInfo(
        tenant=tenant,
        session_id=session_id,
        created_ms=int(meta["created_ms"]),
        updated_ms=int(meta["updated_ms"]),
        expires_ms=int(meta["expires_ms"]),
        ttl_s=int(meta["ttl_s"]),
        system=meta.get("system", ""),
        strategy=meta.get("strategy", ""),
        turn_count=int(meta.get("turn_count", 0)),
    )
    return None if expired(info.expires_ms, now_ms) else info
