"""``controls.cache:``: the response cache (docs/controls.md#response-cache).

Exact-match answers of deterministic requests (temperature 0 or a fixed seed), kept per
tenant and data class. The bounds (``max_entries``, ``max_bytes``) hold per tenant, so one
tenant's traffic never evicts another's answers; a tenant's entry in ``tenants`` overrides
them, its TTL, or turns the cache off for it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from router.config._base import _Model
from router.types import DataClass

#: A tenant name as ``auth.tenants[].name`` takes it.
TenantName = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]


class SqliteCacheConfig(_Model):
    #: The database file ("" = <state dir>/cache.sqlite3: $XDG_STATE_HOME/hybrid-router,
    #: else ~/.local/state/hybrid-router). Created at the first answer kept.
    path: str = ""


class RedisCacheConfig(_Model):
    #: redis://host:6379/0 (rediss:// for TLS), or env:VAR naming the variable holding it.
    url: str = ""
    key_prefix: str = "hybrid-router:cache:"
    #: Seconds to connect / for one command (a lookup sits before the first token).
    timeout_s: float = Field(0.5, gt=0)


class TenantCacheConfig(_Model):
    """One tenant's settings; a key left out (null) takes the section's."""

    #: False: this tenant's requests are never answered from, or kept in, the cache.
    enabled: bool = True
    ttl_s: int | None = Field(None, ge=1)
    max_entries: int | None = Field(None, ge=1)
    max_bytes: int | None = Field(None, ge=1024)


class CacheConfig(_Model):
    #: Answer deterministic requests asked before from the cache.
    enabled: bool = False
    #: Where answers live: memory (this replica, an LRU), sqlite (one file, survives a
    #: restart), redis (shared by a fleet).
    store: Literal["memory", "sqlite", "redis"] = "memory"
    sqlite: SqliteCacheConfig = SqliteCacheConfig()
    redis: RedisCacheConfig = RedisCacheConfig()
    #: Seconds an answer is served after it was kept.
    ttl_s: int = Field(3600, ge=1)
    #: Answers kept per tenant; past it the least recently used go.
    max_entries: int = Field(10_000, ge=1)
    #: Bytes of answers kept per tenant (the stored records); past it the least recently
    #: used go.
    max_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    #: A longer answer (its stored record) is not kept.
    max_entry_bytes: int = Field(1024 * 1024, ge=256)
    #: Data classes whose requests may be cached (each class apart from the others).
    data_classes: tuple[DataClass, ...] = (DataClass.PUBLIC, DataClass.INTERNAL)
    #: Tenant name -> its settings, over the ones above.
    tenants: dict[TenantName, TenantCacheConfig] = {}

    @model_validator(mode="after")
    def _check(self) -> CacheConfig:
        if self.store == "redis" and not self.redis.url:
            raise ValueError("store 'redis' needs redis.url (redis://host:6379/0)")
        bounds: list[tuple[str, int | None]] = [("max_bytes", self.max_bytes)]
        bounds += [(f"tenants.{n}.max_bytes", t.max_bytes) for n, t in self.tenants.items()]
        for where, max_bytes in bounds:
            if max_bytes is not None and self.max_entry_bytes > max_bytes:
                raise ValueError(
                    f"max_entry_bytes ({self.max_entry_bytes}) is above {where} "
                    f"({max_bytes}): no answer that size could be kept"
                )
        return self
