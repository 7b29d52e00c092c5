"""The mutable set of backends the router can choose from.

Backends join and leave at run time (static config at start; later the GPU,
edge and Kubernetes-discovery code add and remove them). Each entry pairs the
adapter with its live stats. A background task polls each adapter's own load
signal (``Backend.poll_load``) off the request path. With ``policy.learn_by: model``
the backends serving one model of a tier share their latency windows
(``router.stats.Samples``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from router.backends.base import Backend
from router.config import PolicyConfig
from router.errors import DuplicateBackend  # the tree's class; importable from here
from router.stats import BackendStats, Samples, samples_for
from router.types import BackendSnapshot, BackendSpec

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Entry:
    backend: Backend
    stats: BackendStats

    @property
    def spec(self) -> BackendSpec:
        return self.backend.spec


class BackendRegistry:
    def __init__(self, cfg: PolicyConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg = cfg
        self._clock = clock
        self._entries: dict[str, Entry] = {}
        self._ordered: tuple[Entry, ...] = ()
        self._poller: asyncio.Task[None] | None = None
        #: policy.learn_by: model: the windows each model's backends share (kept when the
        #: last one leaves: a replica that replaces it starts with what they learnt).
        self._samples: dict[tuple[str, str, str], Samples] = {}

    # --- membership -------------------------------------------------------------------

    async def add(self, backend: Backend) -> Entry:
        """Start the backend and make it a candidate for the next decision."""
        name = backend.name
        if name in self._entries:
            raise DuplicateBackend(f"backend {name!r} is already registered")
        await backend.start()
        samples = samples_for(backend.spec, self._cfg, self._samples)
        entry = Entry(backend, BackendStats(name, self._cfg, self._clock, samples))
        self._entries[name] = entry
        self._reorder()
        log.info("backend added: %s (%s, %s)", name, backend.spec.tier, backend.spec.kind)
        return entry

    async def remove(self, name: str) -> bool:
        """Stop offering the backend to new requests; streams already open finish."""
        entry = self._entries.pop(name, None)
        if entry is None:
            return False
        self._reorder()
        # In-flight streams hold their own reference to the adapter; close it once they end.
        asyncio.get_running_loop().create_task(self._close_when_idle(entry))
        log.info("backend removed: %s", name)
        return True

    async def _close_when_idle(self, entry: Entry, poll_s: float = 0.05) -> None:
        while entry.stats.in_flight > 0:
            await asyncio.sleep(poll_s)
        try:
            await entry.backend.close()
        except Exception:  # closing must never take the router down
            log.exception("closing backend %s failed", entry.backend.name)

    def _reorder(self) -> None:
        self._ordered = tuple(self._entries[n] for n in sorted(self._entries))

    def get(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def entries(self) -> tuple[Entry, ...]:
        return self._ordered

    def __len__(self) -> int:
        return len(self._ordered)

    def pairs(self) -> list[tuple[BackendSpec, BackendSnapshot]]:
        """(spec, live snapshot) for every backend, in name order, for the policy."""
        return [(e.backend.spec, e.stats.snapshot()) for e in self._ordered]

    # --- load polling -----------------------------------------------------------------

    def start_polling(self) -> None:
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    async def poll_once(self) -> None:
        for e in self._ordered:  # samples past policy.sample_max_age_s (off the request path)
            e.stats.expire()
        await asyncio.gather(*(self._poll_one(e) for e in self._ordered))

    @staticmethod
    async def _poll_one(entry: Entry) -> None:
        # Apply each probe's result as soon as it is in: a result held back until every
        # backend answered could overwrite a newer verdict (e.g. a device that began to
        # drain while a slower backend's probe was still running).
        # Streams that close while the probe is out are applied to its figure (the figure
        # may still count them): stats.set_reported_load.
        stats = entry.stats
        closed = stats.ends
        try:
            load = await entry.backend.poll_load()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stats.set_reported_load(None)
            stats.set_healthy(False, f"load probe failed: {exc}")
            return
        stats.set_reported_load(load, entry.backend.load_mark((stats.begins, closed)))
        stats.set_reported_prefill(entry.backend.prefill_rate())
        stats.set_healthy(True)

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("load polling failed")
            await asyncio.sleep(self._cfg.load_poll_interval_s)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        entries = list(self._entries.values())
        self._entries.clear()
        self._reorder()
        for e in entries:
            try:
                await e.backend.close()
            except Exception:
                log.exception("closing backend %s failed", e.backend.name)
