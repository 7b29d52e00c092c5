"""The response cache's stores, each against the real thing: the in-process LRU, a SQLite
file in tmp_path, a real ``redis-server``. Times are the caller's (``now_ms``)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from storeservers import RedisProcess, redis_process  # noqa: F401  (a fixture)

from router.controls.cache_redis import RedisCacheStore
from router.controls.cache_sqlite import SqliteCacheStore
from router.controls.cache_store import EXPIRED, NOT_FOUND, Bounds, CacheStore, Found
from router.controls.cache_store import MemoryCacheStore as Memory
from router.errors import StoreUnavailable

_prefixes = itertools.count()
ROOMY = Bounds(max_entries=100, max_bytes=1 << 20)


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_process: RedisProcess,  # noqa: F811
) -> AsyncIterator[CacheStore]:
    if request.param == "memory":
        made: CacheStore = Memory()
    elif request.param == "sqlite":
        made = SqliteCacheStore(str(tmp_path / "c" / "cache.sqlite3"))
    else:
        prefix = f"t{next(_prefixes)}:"
        made = RedisCacheStore(redis_process.url, key_prefix=prefix, timeout_s=2.0)
    yield made
    await made.close()


async def _put(store: CacheStore, tenant: str, key: str, value: bytes, now: int, **kw) -> int:
    kw.setdefault("expires_ms", now + 60_000)
    kw.setdefault("bounds", ROOMY)
    return await store.put(tenant, key, value, now_ms=now, **kw)


async def test_get_put_and_expiry(store: CacheStore) -> None:
    assert await store.get("", "internal/k", now_ms=1000) == NOT_FOUND
    assert await _put(store, "", "internal/k", b"answer\n1", 1000, expires_ms=61_000) == 0
    assert await store.get("", "internal/k", now_ms=60_999) == Found(b"answer\n1")
    # Replaced under the same key.
    await _put(store, "", "internal/k", b"answer 2", 2000, expires_ms=61_000)
    assert await store.get("", "internal/k", now_ms=3000) == Found(b"answer 2")
    assert await store.get("", "internal/k", now_ms=61_000) == EXPIRED


async def test_tenants_are_apart(store: CacheStore) -> None:
    await _put(store, "team-a", "public/k", b"a's", 1000)
    assert await store.get("team-b", "public/k", now_ms=1001) == NOT_FOUND
    assert await store.get("", "public/k", now_ms=1001) == NOT_FOUND
    await _put(store, "team-b", "public/k", b"b's", 1000)
    assert (await store.get("team-a", "public/k", now_ms=1002)).value == b"a's"
    assert (await store.get("team-b", "public/k", now_ms=1002)).value == b"b's"


async def test_entries_bound_evicts_the_least_recently_used(store: CacheStore) -> None:
    two = Bounds(max_entries=2, max_bytes=1 << 20)
    await _put(store, "t", "d/1", b"one", 1000, bounds=two)
    await _put(store, "t", "d/2", b"two", 1001, bounds=two)
    assert (await store.get("t", "d/1", now_ms=1002)).value == b"one"  # 2 is now the oldest
    assert await _put(store, "t", "d/3", b"three", 1003, bounds=two) == 1
    assert await store.get("t", "d/2", now_ms=1004) == NOT_FOUND
    assert (await store.get("t", "d/1", now_ms=1004)).value == b"one"
    assert (await store.get("t", "d/3", now_ms=1004)).value == b"three"
    # Another tenant's entries are not counted against t's bound, nor evicted by it.
    for i in range(3):
        await _put(store, "u", f"d/{i}", b"x", 1005 + i, bounds=two)
    assert (await store.get("t", "d/1", now_ms=1010)).value == b"one"


async def test_bytes_bound_counts_records_and_keys(store: CacheStore) -> None:
    small = Bounds(max_entries=100, max_bytes=1000)
    for i in range(4):
        await _put(store, "t", f"d/{i}", b"x" * 300, 1000 + i, bounds=small)  # 303 bytes each
    # Three fit in 1000 bytes: the first went.
    assert await store.get("t", "d/0", now_ms=2000) == NOT_FOUND
    for i in (1, 2, 3):
        assert (await store.get("t", f"d/{i}", now_ms=2000 + i)).value == b"x" * 300


async def test_expired_entries_go_before_live_ones(store: CacheStore) -> None:
    two = Bounds(max_entries=2, max_bytes=1 << 20)
    await _put(store, "t", "d/live", b"l", 1000, bounds=two, expires_ms=100_000)
    await _put(store, "t", "d/old", b"o", 1001, bounds=two, expires_ms=2000)
    # d/old has expired by now: it goes, and the older but live d/live stays.
    assert await _put(store, "t", "d/new", b"n", 3000, bounds=two) == 0
    assert (await store.get("t", "d/live", now_ms=3001)).value == b"l"
    assert (await store.get("t", "d/new", now_ms=3001)).value == b"n"


async def test_an_unwritable_sqlite_file_is_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = SqliteCacheStore(str(blocker / "cache.sqlite3"))
    with pytest.raises(StoreUnavailable) as err:
        await store.get("", "d/k", now_ms=1)
    assert str(err.value).startswith(
        f"cache store sqlite {blocker / 'cache.sqlite3'} is unavailable"
    )
    await store.close()
