"""Sessions in one SQLite file (stdlib ``sqlite3``): one router, the demo, the default.

=========  ===============================================================================
table      columns (primary key first)
=========  ===============================================================================
sessions   tenant, session_id | created_ms, updated_ms, expires_ms, ttl_s, system,
           strategy, turn_count (the next ``seq``: every turn ever appended, kept or not)
turns      tenant, session_id, seq | role, content, at_ms, backend, tool_calls (a JSON
           array, "" for none), tool_call_id, name
summaries  tenant, session_id | upto, text, backend, made_ms
=========  ===============================================================================

Writes (create, append, delete, summaries, lists that clean up) run on this store's
writer thread, which owns its connection: they are serialised, and the event loop never
waits on the file. Reads of a turn's history (``get``, ``info``, ``get_summary``) run on a
second thread with its own connection, so a turn never waits behind another turn's
append (its fsync): in WAL mode a reader sees the last committed state. The file is in WAL mode
(``synchronous=FULL``: a committed turn survives a power cut); ``append`` is one
``BEGIN IMMEDIATE`` transaction (read ``turn_count``, insert the turns from it, move the
count and the expiry, drop the turns past ``max_turns``), so two appends, even from two
processes sharing the file, land one after the other. ``seq`` only grows: after a trim the
history starts past 0.

A file made before turns kept tool calls gets the three tool columns when it is opened
(``ALTER TABLE ... ADD COLUMN``, default "": its turns read back without tool calls).

Expired sessions behave as unknown and are deleted lazily: when read, when their tenant's
sessions are listed, when their id is created again, and a sweep of up to 500 at most once
a minute on ``create``. The file and its directory are made at the first call (mode 0600 /
0700); a file that cannot be opened or written is StoreUnavailable naming it, with the
reason the operating system gave.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from router.errors import AlreadyExists, SessionNotFound, StoreUnavailable
from router.sessions.model import Session, SessionInfo, Summary, Turn, calls_from_json, calls_json
from router.sessions.store import SessionStore
from router.sessions.stores import default_sqlite_path, expired, home, new_info, require_names
from router.sessions.stores import valid_names as _valid

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    tenant TEXT NOT NULL,
    session_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    ttl_s INTEGER NOT NULL,
    system TEXT NOT NULL DEFAULT '',
    strategy TEXT NOT NULL DEFAULT '',
    turn_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, session_id)
);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires_ms);
CREATE TABLE IF NOT EXISTS turns (
    tenant TEXT NOT NULL,
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    backend TEXT NOT NULL DEFAULT '',
    tool_calls TEXT NOT NULL DEFAULT '',
    tool_call_id TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tenant, session_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS summaries (
    tenant TEXT NOT NULL,
    session_id TEXT NOT NULL,
    upto INTEGER NOT NULL,
    text TEXT NOT NULL,
    backend TEXT NOT NULL DEFAULT '',
    made_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, session_id)
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""

_INFO_COLUMNS = (
    "tenant, session_id, created_ms, updated_ms, expires_ms, ttl_s, system, strategy, turn_count"
)

#: Columns of ``turns`` added after the first schema (a file made before gets them on open).
_TURN_COLUMNS_ADDED = ("tool_calls", "tool_call_id", "name")
_TURN_COLUMNS = "seq, role, content, at_ms, backend, tool_calls, tool_call_id, name"

#: At most one sweep of expired sessions a minute, of at most this many.
_SWEEP_EVERY_MS = 60_000
_SWEEP_BATCH = 500


def _add_turn_columns(conn: sqlite3.Connection) -> None:
    """Give a ``turns`` table made before tool calls were kept its tool columns (default
    "": the turns already there have none). One transaction: two processes opening the
    same old file add them once."""

    def missing() -> list[str]:
        have = {row[1] for row in conn.execute("PRAGMA table_info(turns)")}
        return [c for c in _TURN_COLUMNS_ADDED if c not in have]

    if not missing():
        return

    def add() -> None:
        with _transaction(conn):
            for column in missing():
                conn.execute(f"ALTER TABLE turns ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")

    when_unlocked(add)


def _turn(row: Sequence[Any]) -> Turn:
    """A ``turns`` row (:data:`_TURN_COLUMNS`) as a Turn."""
    return Turn(
        role=row[1],
        content=row[2],
        at_ms=row[3],
        backend=row[4],
        seq=row[0],
        tool_calls=calls_from_json(row[5]),
        tool_call_id=row[6],
        name=row[7],
    )


def _info(row: Sequence[Any]) -> SessionInfo:
    return SessionInfo(
        tenant=row[0],
        session_id=row[1],
        created_ms=row[2],
        updated_ms=row[3],
        expires_ms=row[4],
        ttl_s=row[5],
        system=row[6],
        strategy=row[7],
        turn_count=row[8],
    )


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
    conn.execute(f"BEGIN {mode}")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (disk full, I/O)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def transaction(
    conn: sqlite3.Connection, mode: str = "IMMEDIATE"
) -> contextlib.AbstractContextManager[None]:
    """One transaction on ``conn`` (``BEGIN IMMEDIATE`` unless ``mode`` says), rolled back
    when its block raises: for other records kept in the same file
    (router/templates/backends.py)."""
    return _transaction(conn, mode)


def _purge(conn: sqlite3.Connection, tenant: str, session_id: str) -> None:
    key = (tenant, session_id)
    conn.execute("DELETE FROM turns WHERE tenant = ? AND session_id = ?", key)
    conn.execute("DELETE FROM summaries WHERE tenant = ? AND session_id = ?", key)
    conn.execute("DELETE FROM sessions WHERE tenant = ? AND session_id = ?", key)


def _purge_expired(conn: sqlite3.Connection, keys: Sequence[tuple[str, str]]) -> None:
    conn.executemany("DELETE FROM turns WHERE tenant = ? AND session_id = ?", keys)
    conn.executemany("DELETE FROM summaries WHERE tenant = ? AND session_id = ?", keys)
    conn.executemany("DELETE FROM sessions WHERE tenant = ? AND session_id = ?", keys)


def when_unlocked(step: Callable[[], T], timeout_s: float = 10.0) -> T:
    """``step()``, tried again while another connection holds the lock it needs."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def connect(
    path: Path, name: str, schema: str, *, synchronous: str = "FULL", create: bool = True
) -> sqlite3.Connection:
    """A connection to the state file ``path`` (the sessions, the ledger and the cache
    stores use it): the file and its folder made when ``create`` (mode 0600 / 0700), WAL,
    ``synchronous``, ``schema`` applied. StoreUnavailable naming ``name`` when the file
    cannot be made or is missing."""
    if create:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StoreUnavailable(name, exc.strerror or str(exc)) from None
    elif not path.is_file():
        raise StoreUnavailable(name, "no such file (the router writes it)")
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        # Switching to WAL and creating tables take locks SQLite's busy timeout does not
        # wait for: connections opening the same new file at once retry.
        when_unlocked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        when_unlocked(lambda: conn.executescript(schema))
    except BaseException:
        conn.close()
        raise
    return conn


class SqliteSessionStore(SessionStore):
    def __init__(
        self,
        path: str,
        *,
        ttl_s: int,
        max_turns: int,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        if path:
            self.path = home(env) / path[2:] if path.startswith("~/") else Path(path)
        else:
            self.path = default_sqlite_path(env)
        self.name = f"sessions store sqlite {self.path}"
        self._ttl_s = ttl_s
        self._max_turns = max(1, max_turns)
        # Two lanes, each one thread with its own connection: writes (create, append...)
        # one after the other; reads (a turn's history) beside them, never queued behind
        # an append's fsync (WAL: readers see the last committed state).
        self._writer = _Lane("sessions-sqlite")
        self._reader = _Lane("sessions-sqlite-read")
        self._next_sweep_ms = 0

    # --- plumbing (the worker thread) ---------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        conn = connect(self.path, self.name, _SCHEMA)
        try:
            _add_turn_columns(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self, lane: _Lane, fn: Callable[..., T], *args: Any) -> T:
        try:
            if lane.conn is None:
                lane.conn = self._open()
            return fn(lane.conn, *args)
        except sqlite3.Error as exc:
            # The connection may be unusable (file removed, disk full, locked): reopen next.
            conn, lane.conn = lane.conn, None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            raise StoreUnavailable(self.name, _reason(exc)) from None
        except OSError as exc:
            raise StoreUnavailable(self.name, exc.strerror or str(exc)) from None

    async def _call(self, fn: Callable[..., T], *args: Any, read: bool = False) -> T:
        lane = self._reader if read else self._writer
        loop = asyncio.get_running_loop()
        try:
            done = loop.run_in_executor(
                lane.executor, functools.partial(self._run, lane, fn, *args)
            )
        except RuntimeError as exc:  # submitted after close()
            raise StoreUnavailable(self.name, f"closed ({exc})") from None
        return await done

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on this store's worker thread and connection; errors
        are StoreUnavailable naming ``name``: for other records kept in the same file
        (router/templates/backends.py)."""
        return await self._call(fn, *args)

    # --- the interface ------------------------------------------------------------------

    async def create(self, info: SessionInfo) -> SessionInfo:
        require_names(info.tenant, info.session_id)
        return await self._call(self._create, new_info(info, self._ttl_s))

    def _create(self, conn: sqlite3.Connection, info: SessionInfo) -> SessionInfo:
        now_ms = info.created_ms
        with _transaction(conn):
            row = conn.execute(
                "SELECT expires_ms FROM sessions WHERE tenant = ? AND session_id = ?",
                (info.tenant, info.session_id),
            ).fetchone()
            if row is not None:
                if not expired(row[0], now_ms):
                    raise AlreadyExists(f"session {info.session_id!r} already exists")
                _purge(conn, info.tenant, info.session_id)
            conn.execute(
                f"INSERT INTO sessions ({_INFO_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    info.tenant,
                    info.session_id,
                    info.created_ms,
                    info.updated_ms,
                    info.expires_ms,
                    info.ttl_s,
                    info.system,
                    info.strategy,
                ),
            )
            if now_ms >= self._next_sweep_ms:
                self._next_sweep_ms = now_ms + _SWEEP_EVERY_MS
                stale = conn.execute(
                    "SELECT tenant, session_id FROM sessions WHERE expires_ms <= ? LIMIT ?",
                    (now_ms, _SWEEP_BATCH),
                ).fetchall()
                _purge_expired(conn, stale)
        return info

    async def info(self, tenant: str, session_id: str, *, now_ms: int) -> SessionInfo | None:
        if not _valid(tenant, session_id):
            return None
        return await self._call(self._info, tenant, session_id, now_ms, read=True)

    def _row(self, conn: sqlite3.Connection, tenant: str, session_id: str) -> SessionInfo | None:
        row = conn.execute(
            f"SELECT {_INFO_COLUMNS} FROM sessions WHERE tenant = ? AND session_id = ?",
            (tenant, session_id),
        ).fetchone()
        return None if row is None else _info(row)

    def _info(
        self, conn: sqlite3.Connection, tenant: str, session_id: str, now_ms: int
    ) -> SessionInfo | None:
        info = self._row(conn, tenant, session_id)
        if info is None:
            return None
        if expired(info.expires_ms, now_ms):
            with _transaction(conn):
                gone = conn.execute(
                    "SELECT 1 FROM sessions WHERE tenant = ? AND session_id = ? "
                    "AND expires_ms <= ?",
                    (tenant, session_id, now_ms),
                ).fetchone()
                if gone:
                    _purge(conn, tenant, session_id)
            return None
        return info

    async def get(self, tenant: str, session_id: str, *, now_ms: int) -> Session | None:
        if not _valid(tenant, session_id):
            return None
        return await self._call(self._get, tenant, session_id, now_ms, read=True)

    def _get(
        self, conn: sqlite3.Connection, tenant: str, session_id: str, now_ms: int
    ) -> Session | None:
        rows: Sequence[Any] = ()
        with _transaction(conn, "DEFERRED"):  # one snapshot: the row and its turns agree
            info = self._row(conn, tenant, session_id)
            if info is not None and not expired(info.expires_ms, now_ms):
                rows = conn.execute(
                    f"SELECT {_TURN_COLUMNS} FROM turns "
                    "WHERE tenant = ? AND session_id = ? ORDER BY seq",
                    (tenant, session_id),
                ).fetchall()
        if info is None:
            return None
        if expired(info.expires_ms, now_ms):
            self._info(conn, tenant, session_id, now_ms)  # purges it
            return None
        return Session(info=info, turns=tuple(_turn(r) for r in rows))

    async def list(
        self, tenant: str, *, now_ms: int, limit: int = 100, after: str = ""
    ) -> list[SessionInfo]:
        if limit <= 0 or not _valid(tenant, "x"):
            return []
        return await self._call(self._list, tenant, now_ms, limit, after)

    def _list(
        self, conn: sqlite3.Connection, tenant: str, now_ms: int, limit: int, after: str
    ) -> builtins.list[SessionInfo]:
        stale = conn.execute(
            "SELECT tenant, session_id FROM sessions WHERE tenant = ? AND expires_ms <= ? LIMIT ?",
            (tenant, now_ms, _SWEEP_BATCH),
        ).fetchall()
        if stale:
            with _transaction(conn):
                _purge_expired(conn, stale)
        rows = conn.execute(
            f"SELECT {_INFO_COLUMNS} FROM sessions WHERE tenant = ? AND session_id > ? "
            "AND expires_ms > ? ORDER BY session_id LIMIT ?",
            (tenant, after, now_ms, limit),
        ).fetchall()
        return [_info(r) for r in rows]

    async def delete(self, tenant: str, session_id: str) -> bool:
        if not _valid(tenant, session_id):
            return False
        return await self._call(self._delete, tenant, session_id)

    def _delete(self, conn: sqlite3.Connection, tenant: str, session_id: str) -> bool:
        with _transaction(conn):
            found = conn.execute(
                "SELECT 1 FROM sessions WHERE tenant = ? AND session_id = ?",
                (tenant, session_id),
            ).fetchone()
            _purge(conn, tenant, session_id)
        return found is not None

    async def append(
        self, tenant: str, session_id: str, turns: Sequence[Turn], *, now_ms: int
    ) -> int:
        if not _valid(tenant, session_id):
            raise SessionNotFound(session_id)
        return await self._call(self._append, tenant, session_id, tuple(turns), now_ms)

    def _append(
        self,
        conn: sqlite3.Connection,
        tenant: str,
        session_id: str,
        turns: tuple[Turn, ...],
        now_ms: int,
    ) -> int:
        key = (tenant, session_id)
        with _transaction(conn):
            row = conn.execute(
                "SELECT turn_count, ttl_s, expires_ms FROM sessions "
                "WHERE tenant = ? AND session_id = ?",
                key,
            ).fetchone()
            if row is None or expired(row[2], now_ms):
                raise SessionNotFound(session_id)
            count, ttl_s = row[0], row[1] or self._ttl_s
            conn.executemany(
                f"INSERT INTO turns (tenant, session_id, {_TURN_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        tenant,
                        session_id,
                        count + i,
                        t.role,
                        t.content,
                        t.at_ms or now_ms,
                        t.backend,
                        calls_json(t.tool_calls),
                        t.tool_call_id,
                        t.name,
                    )
                    for i, t in enumerate(turns)
                ],
            )
            count += len(turns)
            conn.execute(
                "UPDATE sessions SET turn_count = ?, updated_ms = ?, expires_ms = ? "
                "WHERE tenant = ? AND session_id = ?",
                (count, now_ms, now_ms + ttl_s * 1000, *key),
            )
            if count > self._max_turns:
                conn.execute(
                    "DELETE FROM turns WHERE tenant = ? AND session_id = ? AND seq < ?",
                    (*key, count - self._max_turns),
                )
        return int(count)

    async def get_summary(self, tenant: str, session_id: str) -> Summary | None:
        if not _valid(tenant, session_id):
            return None
        return await self._call(self._get_summary, tenant, session_id, read=True)

    def _get_summary(
        self, conn: sqlite3.Connection, tenant: str, session_id: str
    ) -> Summary | None:
        row = conn.execute(
            "SELECT upto, text, backend, made_ms FROM summaries "
            "WHERE tenant = ? AND session_id = ?",
            (tenant, session_id),
        ).fetchone()
        if row is None:
            return None
        return Summary(upto=row[0], text=row[1], backend=row[2], made_ms=row[3])

    async def put_summary(self, tenant: str, session_id: str, summary: Summary) -> bool:
        if not _valid(tenant, session_id):
            return False
        return await self._call(self._put_summary, tenant, session_id, summary)

    def _put_summary(
        self, conn: sqlite3.Connection, tenant: str, session_id: str, summary: Summary
    ) -> bool:
        key = (tenant, session_id)
        with _transaction(conn):
            if not conn.execute(
                "SELECT 1 FROM sessions WHERE tenant = ? AND session_id = ?", key
            ).fetchone():
                return False
            row = conn.execute(
                "SELECT upto FROM summaries WHERE tenant = ? AND session_id = ?", key
            ).fetchone()
            if row is not None and row[0] >= summary.upto:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO summaries "
                "(tenant, session_id, upto, text, backend, made_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (*key, summary.upto, summary.text, summary.backend, summary.made_ms),
            )
        return True

    async def ping(self) -> None:
        await self._call(lambda conn: conn.execute("SELECT count(*) FROM sessions").fetchone())

    async def close(self) -> None:
        for lane in (self._writer, self._reader):

            def shut(lane: _Lane = lane) -> None:
                conn, lane.conn = lane.conn, None
                if conn is not None:
                    conn.close()

            with contextlib.suppress(RuntimeError):
                await asyncio.get_running_loop().run_in_executor(lane.executor, shut)
            lane.executor.shutdown(wait=False)


class _Lane:
    """One worker thread and the connection only it uses."""

    def __init__(self, name: str) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.conn: sqlite3.Connection | None = None


def _reason(exc: sqlite3.Error) -> str:
    """sqlite3's message with its error name (``unable to open database file
    (SQLITE_CANTOPEN)``)."""
    name = getattr(exc, "sqlite_errorname", "")
    return f"{exc} ({name})" if name else str(exc)
