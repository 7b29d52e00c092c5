"""The response cache in one SQLite file (stdlib ``sqlite3``): one replica whose answers
survive a restart.

=========  ==========================================================================
table      columns (primary key first)
=========  ==========================================================================
answers    tenant, key | value (the record), bytes (counted against max_bytes),
           expires_ms, used_ms (least recently used first: ``used_ms``, then rowid)
=========  ==========================================================================

Every call runs on this store's one thread, which owns the connection: the event loop
never waits on the file. The file is in WAL mode with ``synchronous=NORMAL`` (a cache:
a power cut may lose the last answers kept, never corrupt the file). ``put`` is one
``BEGIN IMMEDIATE`` transaction (replace, drop the tenant's expired answers, evict its
least recently used until within its bounds), so two replicas sharing the file keep the
bounds. The file and its directory are made at the first call (mode 0600 / 0700); a file
that cannot be opened or written is StoreUnavailable naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from router.controls.cache_store import EXPIRED, NOT_FOUND, Bounds, CacheStore, Found, entry_bytes
from router.errors import StoreUnavailable

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    bytes INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
);
CREATE INDEX IF NOT EXISTS answers_used ON answers (tenant, used_ms);
CREATE INDEX IF NOT EXISTS answers_expires ON answers (tenant, expires_ms);
PRAGMA user_version = 1;
"""

#: Rows read per eviction step.
_EVICT_BATCH = 64


def default_cache_path(environ: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME/hybrid-router/cache.sqlite3``, else
    ``~/.local/state/hybrid-router/cache.sqlite3`` (XDG: a relative value is ignored)."""
    from router.sessions.stores import default_sqlite_path

    return default_sqlite_path(environ).with_name("cache.sqlite3")


def _get(conn: sqlite3.Connection, tenant: str, key: str, now_ms: int) -> Found:
    row = conn.execute(
        "SELECT value, expires_ms FROM answers WHERE tenant = ? AND key = ?", (tenant, key)
    ).fetchone()
    if row is None:
        return NOT_FOUND
    if row[1] <= now_ms:
        conn.execute("DELETE FROM answers WHERE tenant = ? AND key = ?", (tenant, key))
        return EXPIRED
    conn.execute(
        "UPDATE answers SET used_ms = ? WHERE tenant = ? AND key = ?", (now_ms, tenant, key)
    )
    return Found(bytes(row[0]))


def _put(
    conn: sqlite3.Connection,
    tenant: str,
    key: str,
    value: bytes,
    now_ms: int,
    expires_ms: int,
    bounds: Bounds,
) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT OR REPLACE INTO answers (tenant, key, value, bytes, expires_ms, used_ms) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (tenant, key, value, entry_bytes(key, value), expires_ms, now_ms),
        )
        count, total = conn.execute(
            "SELECT count(*), coalesce(sum(bytes), 0) FROM answers WHERE tenant = ?", (tenant,)
        ).fetchone()
        evicted = 0
        if count > bounds.max_entries or total > bounds.max_bytes:
            n, size = conn.execute(
                "SELECT count(*), coalesce(sum(bytes), 0) FROM answers "
                "WHERE tenant = ? AND expires_ms <= ?",
                (tenant, now_ms),
            ).fetchone()
            if n:
                conn.execute(
                    "DELETE FROM answers WHERE tenant = ? AND expires_ms <= ?", (tenant, now_ms)
                )
                count -= n
                total -= size
        while count > bounds.max_entries or total > bounds.max_bytes:
            rows = conn.execute(
                "SELECT rowid, bytes FROM answers WHERE tenant = ? AND key != ? "
                "ORDER BY used_ms, rowid LIMIT ?",
                (tenant, key, _EVICT_BATCH),
            ).fetchall()
            if not rows:
                break
            drop = []
            for rowid, size in rows:
                if count <= bounds.max_entries and total <= bounds.max_bytes:
                    break
                drop.append((rowid,))
                count -= 1
                total -= size
            conn.executemany("DELETE FROM answers WHERE rowid = ?", drop)
            evicted += len(drop)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return evicted


class SqliteCacheStore(CacheStore):
    def __init__(self, path: str, *, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        if path:
            from router.sessions.stores import home

            self.path = home(env) / path[2:] if path.startswith("~/") else Path(path)
        else:
            self.path = default_cache_path(env)
        self.name = f"cache store sqlite {self.path}"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-sqlite")
        self._conn: sqlite3.Connection | None = None

    # --- plumbing (the worker thread) ---------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        from router.sessions.sqlite import connect

        return connect(self.path, self.name, _SCHEMA, synchronous="NORMAL")

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            if self._conn is None:
                self._conn = self._open()
            return fn(self._conn, *args)
        except sqlite3.Error as exc:
            # The connection may be unusable (file removed, disk full, locked): reopen next.
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            name = getattr(exc, "sqlite_errorname", "")
            raise StoreUnavailable(self.name, f"{exc} ({name})" if name else str(exc)) from None
        except OSError as exc:
            raise StoreUnavailable(self.name, exc.strerror or str(exc)) from None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._run, fn, *args)
        except RuntimeError as exc:  # the executor was shut down (closing)
            raise StoreUnavailable(self.name, str(exc)) from None

    # --- the interface ------------------------------------------------------------------

    async def get(self, tenant: str, key: str, *, now_ms: int) -> Found:
        return await self._call(_get, tenant, key, now_ms)

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
        return await self._call(_put, tenant, key, value, now_ms, expires_ms, bounds)

    async def ping(self) -> None:
        await self._call(lambda conn: conn.execute("SELECT count(*) FROM answers").fetchone())

    async def close(self) -> None:
        def shut() -> None:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

        with contextlib.suppress(RuntimeError):
            await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=False)
