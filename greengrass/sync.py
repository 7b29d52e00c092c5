"""Keep the model at the desired version: download, verify, install, load, smoke-test,
switch; keep the previous version and roll back to it.

Desired version, by precedence: the router's (``Registered`` / ``DesiredModels`` over the
link), else the component configuration's ``model.version`` (at start, or a live update
through Greengrass IPC). Empty: keep what runs.

A switch to version V of model N:

1. V already installed (e.g. a rollback to the previous version): re-verify its sha256.
   Else read ``<prefix>/N/V/manifest.json``; refuse when the agent is older than its
   ``min_agent_version`` or its format does not suit the engine; check free disk
   (artifact size + ``minFreeDiskMb``); stream the artifact to ``.incoming/V.part``
   (any earlier partial file is discarded: an interrupted download restarts cleanly);
   verify size and sha256 (a mismatch deletes the file: a corrupt artifact is never
   loaded); rename into place.
2. Load it in a new engine and smoke-test it (a short generation) while the current
   engine keeps serving.
3. Swap (``greengrass.slot``: requests in flight finish on the old engine), record
   current/previous in state.json, remove older versions, heartbeat the new version.

Any failure in 1-2 keeps the current version serving, records the reason (reported in
heartbeats' ``sync_status``) and retries V only after ``retry_s`` or when the desired
version changes. At start, the current version is loaded; if it fails, the previous one
(rollback), then the bundled model.

After a swap, V is on probation (``greengrass.probation``, ``probation.*``): the slot
reports each request's engine outcome; if V fails more than ``maxErrorRate`` of at least
``minRequests`` requests within ``seconds``, the model it replaced is loaded, smoke-tested
and swapped back in (requests in flight finish on V), and V is marked failed like any
failed sync (``state.failed``; retried only after ``retry_s`` or when the desired version
changes), with ``sync_status`` "rolled back <model> from V to U: 6 of 8 requests failed in
probation".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from greengrass import AGENT_VERSION
from greengrass.config import AgentConfig, probation_policy
from greengrass.engines import build_engine, bundled_model, smoke_test
from greengrass.manifest import ManifestError, version_at_least
from greengrass.probation import Probation, ProbationPolicy, Verdict
from greengrass.s3 import S3ModelSource, StoreError
from greengrass.slot import EngineSlot, ModelRecord
from greengrass.store import ModelStore, VerifyError
from serving.engines.base import Engine, EngineError

log = logging.getLogger(__name__)

RETRY_S = 300.0
_FORMATS = {"llamacpp": "gguf", "scripted": "scripted"}


class SyncFailed(Exception):
    pass


class ModelSync:
    def __init__(
        self,
        cfg: AgentConfig,
        store: ModelStore,
        slot: EngineSlot,
        source: S3ModelSource | None,
        *,
        build: Callable[[AgentConfig, ModelRecord], Engine] = build_engine,
        smoke: Callable[[Engine, float], Awaitable[None]] = smoke_test,
        on_switch: Callable[[], None] = lambda: None,
        free_bytes: Callable[[], int] | None = None,
        agent_version: str = AGENT_VERSION,
        retry_s: float = RETRY_S,
        clock: Callable[[], float] = time.monotonic,
        probation: ProbationPolicy | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.model_name
        self.store = store
        self.slot = slot
        self.source = source
        self._build = build
        self._smoke = smoke
        self.on_switch = on_switch
        self._free = free_bytes or store.free_bytes
        self._agent_version = agent_version
        self._retry_s = retry_s
        self._clock = clock
        self._config_desired = cfg.desired_version
        self._router_desired: dict[str, str] = {}
        self._retry_at: dict[str, float] = {}
        self._wake: asyncio.Event | None = None
        self.status = "starting"
        # The post-swap watchdog: the version on probation, its engine, what it replaced.
        self._policy = probation or probation_policy(cfg)
        self.probation: Probation | None = None
        self._probation_engine: Engine | None = None
        self._rollback_to: ModelRecord | None = None
        #: (version, status) after a failed rollback: kept while that version serves, so
        #: the heartbeat goes on saying why instead of "ok".
        self._held_status: tuple[str, str] | None = None
        self._verdict: Verdict | None = None
        slot.on_outcome = self._on_outcome

    # --- desired version ------------------------------------------------------------------

    @property
    def desired(self) -> str:
        return self._router_desired.get(self.name) or self._config_desired

    def desired_versions(self) -> dict[str, str]:
        d = self.desired
        return {self.name: d} if d else {}

    def set_router_desired(self, versions: dict[str, str]) -> None:
        before = self.desired
        self._router_desired = dict(versions)
        if self.desired != before:
            log.info("desired %s version from the router: %s", self.name, self.desired)
            self._retry_at.pop(self.desired, None)
        self.wake()

    def set_config_desired(self, version: str) -> None:
        self._config_desired = version
        self.wake()

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # --- start ------------------------------------------------------------------------------

    async def load_initial(self) -> None:
        """Serve the current version (else the previous, else the bundled model)."""
        removed = self.store.clean_incoming()
        if removed:
            log.info("discarded %d interrupted download(s)", len(removed))
        state = self.store.state(self.name)
        for version in (state.current, state.previous):
            if not version:
                continue
            record = await asyncio.to_thread(self.store.installed, self.name, version)
            if record is None:
                log.warning("installed %s %s is missing or corrupt", self.name, version)
                continue
            try:
                await self._activate(record)
            except SyncFailed as exc:
                self._record_failure(version, str(exc))
                continue
            if version != state.current:
                log.warning("rolled back %s to %s at start", self.name, version)
            return
        bundled = bundled_model(self.cfg)
        if bundled is not None:
            try:
                await self._activate(bundled, remember=False)
                return
            except SyncFailed as exc:
                log.error("bundled model failed: %s", exc)
        self.status = f"no {self.name} model yet: waiting for a desired version"

    # --- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, poll_s: float = 30.0) -> None:
        self._wake = asyncio.Event()
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("model sync failed unexpectedly")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll_s)

    async def reconcile(self) -> None:
        if self._verdict is not None:
            await self._roll_back(self._verdict)
            return
        probation = self.probation
        if probation is not None and probation.verdict is None and not probation.open:
            log.info(
                "%s %s passed its probation (%d of %d requests failed)",
                self.name,
                probation.version,
                probation.failed,
                probation.total,
            )
            self._end_probation()
        want = self.desired
        model = self.slot.model
        current = model.version if model is not None else ""
        if not want or want == current:
            held = self._held_status
            if held is not None and held[0] == current:
                self.status = held[1]
            elif current:
                self.status = f"ok: {self.name} {current}"
            return
        due = self._retry_at.get(want)
        if due is not None and self._clock() < due:
            return
        try:
            await self.switch_to(want)
        except SyncFailed as exc:
            self._record_failure(want, str(exc))
            log.error("model %s %s: %s (still serving %s)", self.name, want, exc, current)

    def _record_failure(self, version: str, reason: str, status: str = "") -> None:
        self._retry_at[version] = self._clock() + self._retry_s
        model = self.slot.model
        serving = f"; serving {model.version}" if model is not None else ""
        self.status = status or f"failed {self.name} {version}: {reason}{serving}"
        state = self.store.state(self.name)
        state.failed[version] = reason[:300]
        self.store.save_state(self.name, state)
        self.on_switch()  # report the failure now

    async def switch_to(self, version: str) -> None:
        """Install (if needed), load, smoke-test and serve ``version``. Raises SyncFailed."""
        record = await asyncio.to_thread(self.store.installed, self.name, version)
        if record is None:
            record = await self._download(version)
        await self._activate(record)

    async def _download(self, version: str) -> ModelRecord:
        source = self.source
        if source is None:
            raise SyncFailed("no model store configured (modelStore.bucket)")
        try:
            manifest = await asyncio.to_thread(source.manifest, self.name, version)
        except (StoreError, ManifestError) as exc:
            raise SyncFailed(str(exc)) from None
        if not version_at_least(self._agent_version, manifest.min_agent_version):
            raise SyncFailed(
                f"needs agent >= {manifest.min_agent_version} (this agent is "
                f"{self._agent_version}): deploy a newer component version first"
            )
        expected = _FORMATS[self.cfg.engine]
        if manifest.format != expected:
            raise SyncFailed(
                f"artifact format {manifest.format!r} does not suit the {self.cfg.engine} "
                f"engine (needs {expected!r})"
            )
        reserve = self.cfg.min_free_disk_mb * 1024 * 1024
        free = self._free()
        if free < manifest.size + reserve:
            raise SyncFailed(
                f"not enough disk: {manifest.size} bytes + {self.cfg.min_free_disk_mb} MiB "
                f"reserve needed, {free} free"
            )
        part = self.store.incoming(self.name, version)
        total = manifest.size

        def progress(done: int) -> None:
            self.status = f"downloading {self.name} {version}: {done}/{total} bytes"

        progress(0)
        log.info("downloading %s %s (%d bytes)", self.name, version, total)
        try:
            await asyncio.to_thread(source.download, manifest, part, progress=progress)
            record = await asyncio.to_thread(self.store.install, manifest, part)
        except StoreError as exc:
            part.unlink(missing_ok=True)
            raise SyncFailed(str(exc)) from None
        except VerifyError as exc:
            raise SyncFailed(f"rejected the artifact: {exc}") from None
        return record

    async def _activate(
        self,
        record: ModelRecord,
        *,
        remember: bool = True,
        watch: bool = True,
        notify: bool = True,
    ) -> None:
        """Load, smoke-test and swap in ``record``; ``watch``: put it on probation when it
        replaces another model. Raises SyncFailed (nothing changes)."""
        self.status = f"loading {record.name} {record.version}"
        try:
            engine = self._build(self.cfg, record)
        except EngineError as exc:
            self._discard(record)
            raise SyncFailed(f"cannot load: {exc}") from None
        try:
            await engine.start()
            await self._smoke(engine, self.cfg.smoke_timeout_s)
        except EngineError as exc:
            with contextlib.suppress(Exception):
                await engine.close()
            self._discard(record)
            raise SyncFailed(str(exc)) from None
        except BaseException:
            with contextlib.suppress(Exception):
                await engine.close()
            raise
        old = self.slot.swap(engine, record)
        self._end_probation()
        if watch and self._policy.enabled and old is not None and old.version != record.version:
            self.probation = Probation(record.version, old.version, self._policy, clock=self._clock)
            self._probation_engine = engine
            self._rollback_to = old
        if remember:
            state = self.store.state(self.name)
            if old is not None and old.path and old.version != record.version:
                state.previous = old.version
            state.current = record.version
            state.failed.pop(record.version, None)
            self.store.save_state(self.name, state)
            self.store.prune(self.name, {state.current, state.previous} - {""})
        self._retry_at.pop(record.version, None)
        self._held_status = None
        self.status = f"ok: {record.name} {record.version}"
        log.info(
            "serving %s %s%s",
            record.name,
            record.version,
            f" (was {old.version})" if old is not None else "",
        )
        if notify:
            self.on_switch()

    # --- the post-swap watchdog -------------------------------------------------------------

    def _on_outcome(self, engine: Engine, ok: bool) -> None:
        """A request's outcome on ``engine`` (called by the slot on release)."""
        probation = self.probation
        if probation is None or engine is not self._probation_engine:
            return
        verdict = probation.record(ok)
        if verdict is not None:
            self._verdict = verdict
            self.wake()  # the sync loop rolls back

    def _end_probation(self) -> None:
        self.probation = None
        self._probation_engine = None
        self._rollback_to = None
        self._verdict = None

    async def _roll_back(self, verdict: Verdict) -> None:
        """Swap back to the model the failing version replaced; mark it failed."""
        target = self._rollback_to
        self._end_probation()
        model = self.slot.model
        bad = verdict.version
        if target is None or model is None or model.version != bad:
            return  # something else was swapped in meanwhile
        log.warning(
            "%s %s failed its probation (%s): rolling back to %s",
            self.name,
            bad,
            verdict.reason,
            target.version,
        )
        try:
            record = target
            if target.path:
                installed = await asyncio.to_thread(self.store.installed, self.name, target.version)
                if installed is None:
                    raise SyncFailed(f"{target.version} is missing or corrupt on disk")
                record = installed
            await self._activate(record, remember=bool(target.path), watch=False, notify=False)
        except SyncFailed as exc:
            log.error(
                "%s %s: rollback to %s failed (%s); still serving %s",
                self.name,
                bad,
                target.version,
                exc,
                bad,
            )
            self.status = (
                f"{self.name} {bad}: {verdict.reason}, but the rollback to {target.version} "
                f"failed: {exc}; serving {bad}"
            )
            self._held_status = (bad, self.status)
            self.on_switch()
            return
        if not target.path:  # back on the bundled model: a restart must not load ``bad``
            state = self.store.state(self.name)
            if state.current == bad:
                state.current = ""
                self.store.save_state(self.name, state)
                self.store.prune(self.name, {state.previous} - {""})
        status = f"rolled back {self.name} from {bad} to {target.version}: {verdict.reason}"
        self._record_failure(bad, status, status)

    def _discard(self, record: ModelRecord) -> None:
        """Remove a freshly installed version that failed (never the current or previous)."""
        if not record.path:
            return
        state = self.store.state(self.name)
        if record.version not in (state.current, state.previous):
            self.store.remove(record.name, record.version)
