"""The cost ledger: every request's usage and cost, kept (``controls.ledger``,
docs/controls.md#cost-ledger).

When a request ends with a Usage (answered, failed after the first token, cancelled, or
served from the cache), :meth:`BufferedLedger.record` appends one
:class:`~router.controls.ledger_records.LedgerRecord` to an in-memory buffer and returns:
the answer never waits for the store. One background task writes the buffer to the
store in batches of ``batch_records``, oldest first, and removes records only once the
store took them.

When the store is slow or down the records wait in the buffer, and the task tries again
(50 ms, doubling to 2 s). Nothing is dropped: once ``buffer_records`` records wait,
:meth:`admit` refuses new requests before they start (UNAVAILABLE, ``LedgerBacklog``
naming the store) until the store takes the backlog; a request already running still
adds its record. At shutdown :meth:`close` writes what the buffer holds (for up to
``close_timeout_s``); what it could not write is logged with its count.

Stores (:func:`open_ledger_store`): SQLite (:mod:`ledger_sqlite`, the default), Redis
(:mod:`ledger_redis`), DynamoDB (:mod:`ledger_dynamodb`); only the configured one's client
library is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from router.controls.ledger_records import LedgerRecord
from router.errors import ConfigError, LedgerBacklog, StoreUnavailable
from router.telemetry.observer import observer_var
from router.types import InferenceRequest, UsageEvent

if TYPE_CHECKING:
    from router.config import RouterConfig
    from router.config.ledger import LedgerConfig
    from router.preflight import Finding, Options
    from router.security.authn import Principal

log = logging.getLogger(__name__)

#: Waits between tries while the store fails: the first, and the longest.
_FIRST_RETRY_S = 0.05
_LONGEST_RETRY_S = 2.0


class LedgerStore(Protocol):
    name: str

    async def write(self, records: Sequence[LedgerRecord]) -> None:
        """Keep ``records`` (a record written twice is kept once); StoreUnavailable when
        the store did not take them (then none or some may be kept)."""
        ...

    def read(self, since_ms: int, until_ms: int) -> AsyncIterator[LedgerRecord]: ...

    async def close(self) -> None: ...


class BufferedLedger:
    """The ``Ledger`` control of the pipeline: a bounded buffer and its writer task."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        buffer_records: int,
        batch_records: int,
        close_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._capacity = buffer_records
        self._batch = batch_records
        self._close_timeout_s = close_timeout_s
        self._clock = clock
        self._buffer: deque[LedgerRecord] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: The store's problem while writes fail ("" when they pass).
        self.failing = ""
        #: Records the store has taken since start.
        self.written = 0

    @property
    def waiting(self) -> int:
        """Records in the buffer, not yet taken by the store."""
        return len(self._buffer)

    def admit(self) -> None:
        if len(self._buffer) < self._capacity:
            return
        observer_var.get().control("ledger", "refused")
        raise LedgerBacklog(
            self.store.name,
            len(self._buffer),
            self.failing or "the store takes them slower than requests end",
            retry_after_s=1.0,
        )

    async def record(
        self, principal: Principal, request: InferenceRequest, usage: UsageEvent, cached: bool
    ) -> None:
        self.keep(
            LedgerRecord(
                id=uuid.uuid4().hex,
                at_ms=int(self._clock() * 1000),
                tenant=principal.tenant,
                key_id=principal.key_id,
                request_id=usage.request_id or request.request_id,
                backend=usage.backend,
                tier=str(usage.tier),
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_usd=usage.cost_usd,
                complete=usage.complete,
                cached=cached,
            )
        )

    def keep(self, record: LedgerRecord) -> None:
        """Buffer ``record`` for the writer (always: admission was checked before)."""
        self._buffer.append(record)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._writer())
        self._wake.set()

    async def _writer(self) -> None:
        delay = 0.0
        while True:
            if not self._buffer:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(itertools.islice(self._buffer, self._batch))
            try:
                await self.store.write(batch)
            except Exception as exc:  # StoreUnavailable, or a bug: keep the records
                problem = exc.message if isinstance(exc, StoreUnavailable) else repr(exc)
                if not self.failing:
                    log.warning(
                        "ledger: %s; %d records wait in memory and are written when it answers",
                        problem,
                        len(self._buffer),
                        exc_info=not isinstance(exc, StoreUnavailable),
                    )
                self.failing = problem
                delay = min(max(delay * 2, _FIRST_RETRY_S), _LONGEST_RETRY_S)
                await asyncio.sleep(delay)
                continue
            for _ in batch:
                self._buffer.popleft()
            self.written += len(batch)
            if self.failing:
                log.info("ledger: %s takes records again", self.store.name)
                self.failing = ""
            delay = 0.0

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until the buffer is written (True), or ``timeout_s`` passed (False)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._buffer:
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._writer())
            self._wake.set()
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def close(self) -> None:
        """Write what the buffer holds (up to ``close_timeout_s``), stop, close the store."""
        self._closing = True
        flushed = await self.flush(self._close_timeout_s)
        if not flushed:
            log.error(
                "ledger: %d records could not be written to %s before shutdown (%s)",
                len(self._buffer),
                self.store.name,
                self.failing or "too slow",
            )
        task, self._task = self._task, None
        if task is not None:
            self._wake.set()
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.close()


def open_ledger_store(cfg: LedgerConfig, environ: Mapping[str, str], *, create: bool = True) -> Any:
    """The store ``cfg.store`` names (``env:VAR`` references read from ``environ`` now;
    a bad one is a ConfigError naming the key). Nothing is reached yet. ``create``: an
    SQLite file is made at the first write (False: it must exist, for reading)."""
    if cfg.store == "redis":
        from router.controls.ledger_redis import RedisLedgerStore

        url = _redis_url(cfg, environ)
        return RedisLedgerStore(
            url,
            key_prefix=cfg.redis.key_prefix,
            timeout_s=cfg.redis.timeout_s,
            retention_days=cfg.retention_days,
        )
    if cfg.store == "dynamodb":
        from router.controls.ledger_dynamodb import DynamoDbLedgerStore

        return DynamoDbLedgerStore(
            cfg.dynamodb.table,
            region=cfg.dynamodb.region,
            endpoint_url=cfg.dynamodb.endpoint_url,
            retention_days=cfg.retention_days,
        )
    from router.controls.ledger_sqlite import SqliteLedgerStore, ledger_path

    return SqliteLedgerStore(
        ledger_path(cfg.sqlite.path, environ), retention_days=cfg.retention_days, create=create
    )


def build_ledger(
    cfg: LedgerConfig,
    config: RouterConfig,
    environ: Mapping[str, str],
    *,
    clock: Callable[[], float] = time.time,
) -> tuple[BufferedLedger, Callable[[], Awaitable[None]]]:
    """The ledger ``controls.ledger`` sets, on its store (nothing is reached yet)."""
    ledger = BufferedLedger(
        open_ledger_store(cfg, environ),
        buffer_records=cfg.buffer_records,
        batch_records=cfg.batch_records,
        close_timeout_s=cfg.close_timeout_s,
        clock=clock,
    )
    return ledger, ledger.close


# --- start-up check (router/preflight.py) ------------------------------------------------------

SECTION = "controls.ledger"


def _redis_url(cfg: LedgerConfig, environ: Mapping[str, str]) -> str:
    from router.config import resolve_ref

    return resolve_ref(
        cfg.redis.url,
        env=environ,
        key=f"{SECTION}.redis.url",
        fix="set it to the Redis URL (redis://host:6379/0)",
    )


def _writable(path: Path) -> str:
    """ "" when ``path`` (a file) can be written or made; else why not."""
    if path.exists():
        return "" if os.access(path, os.W_OK) else "the file is not writable"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    return "" if os.access(parent, os.W_OK | os.X_OK) else f"{parent} is not writable"


async def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``controls.ledger``: where records go (an SQLite file that can be written, the Redis
    URL's variable, the DynamoDB region); with ``--probe``, the store answers a read."""
    from router.preflight import FAIL, OK, WARN, Finding

    cfg = config.controls.ledger
    if not cfg.enabled:
        return []
    if cfg.store == "sqlite":
        from router.controls.ledger_sqlite import ledger_path

        key = f"{SECTION}.sqlite.path"
        path = ledger_path(cfg.sqlite.path, env)
        problem = _writable(path)
        if problem:
            return [
                Finding(
                    FAIL,
                    SECTION,
                    key,
                    f"ledger file {path}: {problem}",
                    "set controls.ledger.sqlite.path to a writable place",
                )
            ]
        return [Finding(OK, SECTION, key, f"records go to {path}")]
    key = f"{SECTION}.{cfg.store}"
    try:
        if cfg.store == "redis":
            _redis_url(cfg, env)
        store = open_ledger_store(cfg, env)
    except ConfigError as exc:
        return [Finding.failed(SECTION, exc, key)]
    findings = [Finding(OK, SECTION, key, f"records go to {store.name}")]
    try:
        if opts.probe:
            try:
                async for _ in store.read(0, 1):
                    break
                findings.append(Finding(OK, key, key, f"{store.name} answers"))
            except StoreUnavailable as exc:
                findings.append(
                    Finding(WARN, key, key, exc.message, "start it or fix the settings")
                )
    finally:
        await store.close()
    return findings
