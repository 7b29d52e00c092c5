"""Where the response cache keeps answers: the one interface of its stores, the in-process
LRU (the default), and ``open_cache_store`` for the store ``controls.cache.store`` names.

=========  ====================================================  =============================
store      for                                                   module
=========  ====================================================  =============================
memory     one replica: an LRU in this process (the default)     here
sqlite     one replica whose answers survive a restart           router.controls.cache_sqlite
redis      a fleet of replicas sharing one cache                 router.controls.cache_redis
=========  ====================================================  =============================

Every store holds opaque records (bytes) under ``(tenant, key)``, each with an expiry, and
bounds each tenant apart (``max_entries``, ``max_bytes``: the least recently used go
first), so one tenant's traffic never evicts another's answers. Times come from the
caller (``now_ms``, an injectable clock); an answer is gone from its ``expires_ms`` on.
A store that cannot be reached raises :class:`~router.errors.StoreUnavailable` naming
itself; the cache then answers from the models (router/controls/cache.py).

Only the chosen store's module is imported (redis-py only with ``store: redis``); the
environment is read when the store is opened, never at import.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.config.cache import CacheConfig


@dataclass(frozen=True, slots=True)
class Bounds:
    """How much one tenant may keep."""

    max_entries: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class Found:
    """What :meth:`CacheStore.get` found: the record, or why there is none."""

    value: bytes | None
    #: The key was there but its time had passed (it is deleted).
    expired: bool = False


NOT_FOUND = Found(None)
EXPIRED = Found(None, True)


def entry_bytes(key: str, value: bytes) -> int:
    """What an entry counts against ``max_bytes``: its record and its key."""
    return len(value) + len(key)


class CacheStore(abc.ABC):
    #: What errors call the store, e.g. ``cache store redis redis://cache:6379/0``.
    name: str = "cache store"

    @abc.abstractmethod
    async def get(self, tenant: str, key: str, *, now_ms: int) -> Found:
        """The record under ``(tenant, key)`` unless it expired (then deleted); a hit makes
        it the tenant's most recently used."""

    @abc.abstractmethod
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
        """Keep ``value`` (replacing one under the key), then drop the tenant's expired
        entries and its least recently used ones until it is within ``bounds``; how many
        live entries were evicted."""

    async def ping(self) -> None:  # noqa: B027 - optional: stores that can check override it
        """Raise StoreUnavailable when the store cannot be reached."""

    async def close(self) -> None:  # noqa: B027 - stores with connections override it
        """Release connections and threads."""


class _Lru:
    __slots__ = ("entries", "bytes")

    def __init__(self) -> None:
        #: key -> (record, expires_ms, counted bytes), least recently used first.
        self.entries: OrderedDict[str, tuple[bytes, int, int]] = OrderedDict()
        self.bytes = 0


class MemoryCacheStore(CacheStore):
    """An LRU per tenant in this process (lost with it). Not thread-safe: the router calls
    it from its one event loop."""

    def __init__(self) -> None:
        self.name = "cache store memory"
        self._tenants: dict[str, _Lru] = {}

    async def get(self, tenant: str, key: str, *, now_ms: int) -> Found:
        lru = self._tenants.get(tenant)
        entry = lru.entries.get(key) if lru is not None else None
        if entry is None:
            return NOT_FOUND
        assert lru is not None
        if entry[1] <= now_ms:
            del lru.entries[key]
            lru.bytes -= entry[2]
            return EXPIRED
        lru.entries.move_to_end(key)
        return Found(entry[0])

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
        lru = self._tenants.get(tenant)
        if lru is None:
            lru = self._tenants[tenant] = _Lru()
        entries = lru.entries
        old = entries.pop(key, None)
        if old is not None:
            lru.bytes -= old[2]
        size = entry_bytes(key, value)
        entries[key] = (value, expires_ms, size)
        lru.bytes += size
        if len(entries) <= bounds.max_entries and lru.bytes <= bounds.max_bytes:
            return 0
        for k in [k for k, e in entries.items() if e[1] <= now_ms]:
            lru.bytes -= entries.pop(k)[2]
        evicted = 0
        while len(entries) > bounds.max_entries or lru.bytes > bounds.max_bytes:
            _, (_, _, size) = entries.popitem(last=False)
            lru.bytes -= size
            evicted += 1
        return evicted

    def count(self, tenant: str) -> tuple[int, int]:
        """The tenant's entries and bytes (tests, benchmarks)."""
        lru = self._tenants.get(tenant)
        return (len(lru.entries), lru.bytes) if lru is not None else (0, 0)


def open_cache_store(cfg: CacheConfig, environ: Mapping[str, str]) -> CacheStore:
    """The store ``cfg.store`` names (``env:VAR`` references read from ``environ`` now; a
    bad one is a ConfigError naming the key). Nothing is reached yet."""
    if cfg.store == "redis":
        from router.config import resolve_ref
        from router.controls.cache_redis import RedisCacheStore

        url = resolve_ref(
            cfg.redis.url,
            env=environ,
            key="controls.cache.redis.url",
            fix="set it to the Redis URL (redis://host:6379/0)",
        )
        return RedisCacheStore(url, key_prefix=cfg.redis.key_prefix, timeout_s=cfg.redis.timeout_s)
    if cfg.store == "sqlite":
        from router.controls.cache_sqlite import SqliteCacheStore

        return SqliteCacheStore(cfg.sqlite.path, environ=environ)
    return MemoryCacheStore()
