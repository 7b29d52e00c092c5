"""The cost ledger in one SQLite file (stdlib ``sqlite3``): one router, the default.

=======  ======================================================================
table    columns (primary key first)
=======  ======================================================================
ledger   id | at_ms, tenant, key_id, request_id, backend, tier, input_tokens,
         output_tokens, cost_usd, complete, cached; indexed by at_ms
=======  ======================================================================

Writes run on this store's one writer thread, which owns its connection (the event loop
never waits on the file): a batch is one ``BEGIN IMMEDIATE`` transaction of ``INSERT OR
IGNORE`` (a batch written again after an unknown outcome keeps one copy of each record).
The file is in WAL mode with ``synchronous=FULL``: a written record survives a power cut.
With ``retention_days`` older records are deleted at most once an hour. Reads (``usage``,
the memory budgets' start) use their own connection. The file and its directory are made
at the first write (mode 0600 / 0700); a file that cannot be opened or written is
StoreUnavailable naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from router.controls.ledger_records import LedgerRecord, utc_day
from router.errors import StoreUnavailable
from router.sessions.sqlite import transaction
from router.sessions.stores import default_sqlite_path, home

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    id TEXT NOT NULL PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    key_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    backend TEXT NOT NULL,
    tier TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    complete INTEGER NOT NULL,
    cached INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_at ON ledger (at_ms);
"""
_COLUMNS = (
    "id, at_ms, tenant, key_id, request_id, backend, tier, input_tokens, output_tokens, "
    "cost_usd, complete, cached"
)
_PRUNE_EVERY_MS = 3_600_000
_READ_PAGE = 5000


def ledger_path(path: str, environ: Mapping[str, str]) -> Path:
    """``path`` (``~/`` expanded), or ``<state dir>/ledger.sqlite3`` when it is ""."""
    if path:
        return home(environ) / path[2:] if path.startswith("~/") else Path(path)
    return default_sqlite_path(environ).with_name("ledger.sqlite3")


def _row(r: LedgerRecord) -> tuple[Any, ...]:
    return (
        r.id,
        r.at_ms,
        r.tenant,
        r.key_id,
        r.request_id,
        r.backend,
        r.tier,
        r.input_tokens,
        r.output_tokens,
        r.cost_usd,
        int(r.complete),
        int(r.cached),
    )


def _record(row: Sequence[Any]) -> LedgerRecord:
    return LedgerRecord(
        id=row[0],
        at_ms=row[1],
        tenant=row[2],
        key_id=row[3],
        request_id=row[4],
        backend=row[5],
        tier=row[6],
        input_tokens=row[7],
        output_tokens=row[8],
        cost_usd=row[9],
        complete=bool(row[10]),
        cached=bool(row[11]),
    )


class SqliteLedgerStore:
    def __init__(self, path: Path, *, retention_days: int = 0, create: bool = True) -> None:
        self.path = path
        self.name = f"ledger store sqlite {path}"
        self._retention_ms = retention_days * 86_400_000
        self._create = create
        self._next_prune = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")
        self._conn: sqlite3.Connection | None = None

    # --- plumbing (the worker thread) ---------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        from router.sessions.sqlite import connect

        return connect(self.path, self.name, _SCHEMA, create=self._create)

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            if self._conn is None:
                self._conn = self._open()
            return fn(self._conn, *args)
        except sqlite3.Error as exc:
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
            done = loop.run_in_executor(self._executor, functools.partial(self._run, fn, *args))
        except RuntimeError as exc:  # submitted after close()
            raise StoreUnavailable(self.name, f"closed ({exc})") from None
        return await done

    # --- the interface ------------------------------------------------------------------

    async def write(self, records: Sequence[LedgerRecord]) -> None:
        await self._call(self._write, [_row(r) for r in records])

    def _write(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        with transaction(conn):
            conn.executemany(
                f"INSERT OR IGNORE INTO ledger ({_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        if self._retention_ms and rows:
            now = max(r[1] for r in rows)
            if now >= self._next_prune:
                self._next_prune = now + _PRUNE_EVERY_MS
                with transaction(conn):
                    conn.execute("DELETE FROM ledger WHERE at_ms < ?", (now - self._retention_ms,))

    async def read(self, since_ms: int, until_ms: int) -> AsyncIterator[LedgerRecord]:
        """Records with ``since_ms <= at_ms < until_ms``, oldest first, a page at a time."""
        after = (since_ms, "")
        while True:
            rows = await self._call(self._page, after, until_ms)
            for row in rows:
                yield _record(row)
            if len(rows) < _READ_PAGE:
                return
            after = (rows[-1][1], rows[-1][0])

    def _page(
        self, conn: sqlite3.Connection, after: tuple[int, str], until_ms: int
    ) -> list[tuple[Any, ...]]:
        return conn.execute(
            f"SELECT {_COLUMNS} FROM ledger WHERE at_ms >= ? AND at_ms < ? "
            "AND (at_ms, id) > (?, ?) ORDER BY at_ms, id LIMIT ?",
            (after[0], until_ms, after[0], after[1], _READ_PAGE),
        ).fetchall()

    async def spend_by_day(self, since_ms: int) -> list[tuple[str, str, str, int]]:
        """(tenant, key id, UTC day, cost in nano-dollars) of the answers the models gave
        (cached ones excluded) since ``since_ms``: the memory budgets' start."""
        from router.controls.budget_rules import to_nano

        def query(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                "SELECT tenant, key_id, at_ms / 86400000, sum(cost_usd) FROM ledger "
                "WHERE at_ms >= ? AND cached = 0 GROUP BY 1, 2, 3",
                (since_ms,),
            ).fetchall()

        rows = await self._call(query)
        return [(t, k, utc_day(int(d) * 86_400_000), to_nano(c)) for t, k, d, c in rows]

    async def close(self) -> None:
        def shut() -> None:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

        with contextlib.suppress(RuntimeError):
            await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=False)
