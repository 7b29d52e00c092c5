"""The engine in use, swapped without failing a request.

Each request leases the current engine for its whole stream. ``swap`` points new requests
at the new engine at once; the old one is closed when its last lease ends, so requests
already decoding finish on the model they started with.

``release`` takes the request's outcome (completed, failed with an engine error, or None
for neither: cancelled, bad request) and hands it to ``on_outcome`` with the engine that
served it: the post-swap watchdog (``greengrass.sync``, ``greengrass.probation``) judges a
new version by it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from serving.engines.base import Engine, EngineError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A model as it serves: what the agent reports in Register and heartbeats."""

    name: str
    version: str
    context_window: int
    sha256: str = ""
    model_family: str = ""
    #: The artifact on disk ("" for the bundled or built-in model).
    path: str = ""


class EngineSlot:
    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._model: ModelRecord | None = None
        self._leases: dict[Engine, int] = {}
        self._retiring: set[Engine] = set()
        self._closers: set[asyncio.Task[None]] = set()
        #: Called with (engine, ok) for each request released with an outcome.
        self.on_outcome: Callable[[Engine, bool], None] | None = None

    @property
    def model(self) -> ModelRecord | None:
        return self._model

    @property
    def engine(self) -> Engine | None:
        return self._engine

    def acquire(self) -> tuple[Engine, ModelRecord]:
        """Lease the current engine; pair with ``release``. Raises EngineError (unavailable)
        while no model is loaded."""
        engine, model = self._engine, self._model
        if engine is None or model is None:
            raise EngineError("no model is loaded on this device yet", "unavailable")
        self._leases[engine] = self._leases.get(engine, 0) + 1
        return engine, model

    def release(self, engine: Engine, ok: bool | None = None) -> None:
        """End a lease. ``ok``: the request completed (True), failed with an engine error
        (False), or neither (None: cancelled by the caller, refused as invalid)."""
        if ok is not None and self.on_outcome is not None:
            try:
                self.on_outcome(engine, ok)
            except Exception:  # the watchdog must not break serving
                log.exception("recording a request outcome failed")
        left = self._leases.get(engine, 0) - 1
        if left > 0:
            self._leases[engine] = left
            return
        self._leases.pop(engine, None)
        if engine in self._retiring:
            self._close_later(engine)

    def swap(self, engine: Engine, model: ModelRecord) -> ModelRecord | None:
        """Serve new requests from ``engine`` (already started); returns the old model."""
        old_engine, old_model = self._engine, self._model
        self._engine, self._model = engine, model
        if old_engine is not None and old_engine is not engine:
            self._retiring.add(old_engine)
            if not self._leases.get(old_engine):
                self._close_later(old_engine)
        return old_model

    def _close_later(self, engine: Engine) -> None:
        self._retiring.discard(engine)
        task = asyncio.get_running_loop().create_task(_close(engine))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def close(self) -> None:
        """Close every engine (call after requests drained)."""
        engines = [e for e in (self._engine, *self._retiring) if e is not None]
        self._engine, self._model = None, None
        self._retiring.clear()
        for engine in engines:
            await _close(engine)
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)


async def _close(engine: Engine) -> None:
    try:
        await engine.close()
    except Exception:  # closing must not take the agent down
        log.exception("closing an engine failed")
