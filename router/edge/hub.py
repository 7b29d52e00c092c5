"""The edge hub: devices known to this replica, their backends, and the tasks that keep
them current.

- Links (``router.server.edge_link``) ``attach``, ``heartbeat`` and ``detach``; the hub keeps
  one :class:`DeviceEntry` per device and one backend per device that holds the required
  model (``edge-<device id>``), added to and removed from the BackendRegistry at run time.
- ``sweep`` (every ~1/4 heartbeat timeout, injectable clock): a linked device without a
  heartbeat for ``edge.heartbeat_timeout_s`` goes offline and its link is closed; offline
  devices are forgotten after ``edge.forget_after_s``.
- With ``edge.directory.redis_url``: every ``sync_interval_s`` the hub writes the devices it
  holds to the directory and reads the others, which become relay backends (through the
  holder's relay port, ``router.server.relay``).
- Desired model versions (config over the model store's pointers) go to every linked
  device in ``Registered`` and, when they change, in ``DesiredModels``.

A device is a candidate only while it is online (linked somewhere, heartbeating), not
draining and holding the model: otherwise its backend is unhealthy and the policy's
health filter says why (``offline: no heartbeat for 6.0 s``, ``draining ...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from hybrid_router.v1 import edge_link_pb2 as epb

from router.backends.base import Backend
from router.backends.device_link import DeviceLink
from router.backends.edge_device import EdgeBackend
from router.backends.edge_relay import RelayBackend
from router.config import EdgeConfig, resolve_env_var
from router.edge.desired import DesiredVersions
from router.edge.devices import (
    KIND_LINK,
    KIND_RELAY,
    DeviceEntry,
    DeviceState,
    backend_name,
    backend_spec,
    serving_model,
    to_status,
    with_heartbeat,
)
from router.errors import BackendNameTaken, ConfigError, ReplicaDraining
from router.errors import LinkRefused as LinkRefused  # the tree's class; importable from here
from router.preflight import OK, Finding, Options
from router.registry import BackendRegistry
from router.server.relay import RelayServicer, RelayTls, start_relay_server
from router.stores.device_directory import RedisDirectory, resolve_url
from router.types import BackendSpec

if TYPE_CHECKING:
    from router.config import RouterConfig

log = logging.getLogger(__name__)


def relay_token(cfg: EdgeConfig, environ: Mapping[str, str]) -> str:
    """The relay port's shared token from ``edge.relay.token_env`` ("" when none is set).
    Raises ConfigError when the variable is named but empty or unset (hybrid_router.refs)."""
    if not cfg.relay.token_env:
        return ""
    return resolve_env_var(
        cfg.relay.token_env,
        env=environ,
        key="edge.relay.token_env",
        fix="set it to the relay token or remove edge.relay.token_env",
    )


def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``edge.relay.token_env``: the relay token's variable is set (:func:`relay_token`)."""
    edge = config.edge
    if not edge.enabled or not edge.relay.token_env:
        return []
    try:
        relay_token(edge, env)
    except ConfigError as exc:
        return [Finding.failed("edge.relay.token_env", exc)]
    return [
        Finding(
            OK, "edge.relay.token_env", "edge.relay.token_env", f"${edge.relay.token_env} is set"
        )
    ]


def default_router_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class EdgeHub:
    def __init__(
        self,
        cfg: EdgeConfig,
        registry: BackendRegistry,
        *,
        router_id: str = "",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.router_id = router_id or cfg.replica_id or default_router_id()
        self._clock = clock
        self._wall = wall
        self._environ = os.environ if environ is None else environ
        self.entries: dict[str, DeviceEntry] = {}
        self.desired = DesiredVersions(cfg.desired_versions, cfg.models)
        self.directory: RedisDirectory | None = None
        self.relay_address = ""
        self.relay_port = 0
        self._relay_server: object | None = None
        self._token = ""
        self._relay_tls: RelayTls | None = None
        self._released: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._lock: asyncio.Lock | None = None
        self._draining = False
        self._directory_ok_at = clock()

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining

    async def start(self) -> None:
        """Start the relay port and directory (when configured) and the background loops.
        Raises ConfigError or OSError."""
        cfg = self.cfg
        self._token = relay_token(cfg, self._environ)
        if cfg.relay.tls.enabled:
            self._relay_tls = RelayTls(cfg.relay.tls, clock=self._clock)
        if cfg.relay.address:
            servicer = RelayServicer(
                self.local_entry,
                router_id=self.router_id,
                token=self._token,
                silence_s=cfg.backend.timeout_s,
            )
            server, port = await start_relay_server(servicer, cfg.relay.address, self._relay_tls)
            self._relay_server = server
            self.relay_port = port
            self.relay_address = _advertised(cfg.relay.advertise_address, cfg.relay.address, port)
        if cfg.directory.redis_url:
            self.directory = RedisDirectory(
                resolve_url(cfg.directory.redis_url, self._environ),
                key_prefix=cfg.directory.key_prefix,
                router_id=self.router_id,
                online_ttl_s=cfg.heartbeat_timeout_s,
                forget_after_s=cfg.forget_after_s,
            )
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._every(self._sweep_interval(), self.sweep)))
        if self.directory is not None:
            self._tasks.append(
                loop.create_task(self._every(cfg.directory.sync_interval_s, self.sync_directory))
            )
        if self.desired.polls_store:
            self._tasks.append(
                loop.create_task(self._every(cfg.models.poll_interval_s, self.refresh_desired))
            )
        log.info(
            "edge: replica %s accepts device links%s",
            self.router_id,
            f"; relay port {self.relay_address}" if self.relay_address else "",
        )

    def _sweep_interval(self) -> float:
        return max(0.05, min(1.0, self.cfg.heartbeat_timeout_s / 4))

    async def _every(self, interval: float, step: Callable[[], object]) -> None:
        while True:
            try:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("edge: %s failed", getattr(step, "__name__", "task"))
            await asyncio.sleep(interval)

    async def drain(self, grace_s: float) -> None:
        """Take no new link; let requests on the links finish (up to ``grace_s``); then
        close every link (devices dial again and land on another replica)."""
        self._draining = True
        deadline = self._clock() + grace_s
        quiet = 0
        while self._clock() < deadline and quiet < 2:
            busy = any(e.link is not None and e.link.open_requests for e in self.entries.values())
            quiet = 0 if busy else quiet + 1
            await asyncio.sleep(0.05)
        for entry in list(self.entries.values()):
            if entry.link is not None:
                self._drop(entry, "router replica shutting down")
        if self.directory is not None:
            with contextlib.suppress(Exception):
                await self.sync_directory()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for entry in list(self.entries.values()):
            if entry.link is not None:
                self._drop(entry, "router stopped")
        server = self._relay_server
        self._relay_server = None
        if server is not None:
            await server.stop(0)  # type: ignore[attr-defined]
        if self.directory is not None:
            with contextlib.suppress(Exception):
                await self.directory.close()
            self.directory = None

    # --- links ----------------------------------------------------------------------------

    def local_entry(self, device_id: str) -> DeviceEntry | None:
        entry = self.entries.get(device_id)
        return entry if entry is not None and entry.link is not None else None

    def registered_message(self) -> epb.RouterMessage:
        return epb.RouterMessage(
            registered=epb.Registered(
                router_id=self.router_id,
                heartbeat_interval_ms=self.cfg.heartbeat_interval_ms,
                desired_versions=self.desired.current,
            )
        )

    async def attach(self, state: DeviceState, link: DeviceLink) -> DeviceEntry:
        """Take a new link (after its Register). Raises LinkRefused: ReplicaDraining
        (UNAVAILABLE) or BackendNameTaken (FAILED_PRECONDITION)."""
        if self._draining:
            raise ReplicaDraining()
        did = state.device_id
        entry = self.entries.get(did)
        name = backend_name(did)
        taken = self.registry.get(name)
        if taken is not None and (entry is None or taken.backend is not entry.backend):
            raise BackendNameTaken(name)
        if entry is not None and entry.link is not None:
            self._drop(entry, "replaced by a newer link from the same device")
        state = replace(
            state,
            online=True,
            router_id=self.router_id,
            relay_address=self.relay_address,
            last_seen_ms=self._now_ms(),
            desired_versions=state.desired_versions or self.desired.current,
        )
        if entry is None:
            entry = self.entries[did] = DeviceEntry(state)
        entry.state = state
        entry.link = link
        entry.last_heartbeat = self._clock()
        entry.detail = ""
        self._released.discard(did)
        await self._sync_backend(entry)
        log.info(
            "edge: device %s linked (site %r, models %s)",
            did,
            state.site,
            ", ".join(f"{m.name}@{m.version}" for m in state.models) or "none",
        )
        return entry

    async def heartbeat(self, entry: DeviceEntry, link: DeviceLink, hb: epb.Heartbeat) -> None:
        if entry.link is not link:
            return
        entry.last_heartbeat = self._clock()
        before = entry.state.models
        entry.state = with_heartbeat(entry.state, hb, self._now_ms())
        if entry.state.models != before:
            await self._sync_backend(entry)
        else:
            self._refresh_health(entry)

    def detach(self, entry: DeviceEntry, link: DeviceLink, reason: str) -> None:
        """The link's stream ended (idempotent; a newer link of the device is kept)."""
        if entry.link is link:
            self._drop(entry, reason)
        else:
            link.close(reason)

    def _drop(self, entry: DeviceEntry, reason: str) -> None:
        link = entry.link
        entry.link = None
        if link is not None:
            link.close(reason)
        entry.state = replace(entry.state, online=False, in_flight=0, queue_depth=0)
        entry.detail = f"offline: {reason}"
        self._released.add(entry.state.device_id)
        self._refresh_health(entry)

    def sweep(self) -> None:
        """Offline by heartbeat timeout; forget long-offline devices (no directory)."""
        now = self._clock()
        timeout = self.cfg.heartbeat_timeout_s
        for entry in list(self.entries.values()):
            if entry.link is not None and now - entry.last_heartbeat > timeout:
                self._drop(entry, f"no heartbeat for {now - entry.last_heartbeat:.1f} s")
        if self.directory is None:
            horizon = self._now_ms() - int(self.cfg.forget_after_s * 1000)
            for did, entry in list(self.entries.items()):
                if entry.link is None and entry.state.last_seen_ms < horizon:
                    task = asyncio.get_running_loop().create_task(self._forget(did))
                    self._background.add(task)  # a strong reference until it ends
                    task.add_done_callback(self._background.discard)

    # --- backends -------------------------------------------------------------------------

    def _lock_(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _sync_backend(self, entry: DeviceEntry) -> None:
        """Make the registry hold the right backend for ``entry`` (or none)."""
        async with self._lock_():
            state = entry.state
            model = serving_model(state, self.cfg.model)
            current = entry.backend
            if model is None:
                wanted = self.cfg.model
                entry.detail = f"does not hold model {wanted!r}" if wanted else "holds no model"
                if current is not None:
                    entry.backend = None
                    await self.registry.remove(current.name)
                return
            if entry.link is not None:
                kind, endpoint = KIND_LINK, f"link:{self.router_id}"
            elif current is not None and not state.online:
                self._refresh_health(entry)  # offline: keep the backend, unhealthy
                return
            else:
                kind, endpoint = KIND_RELAY, state.relay_address
                if not endpoint:
                    entry.detail = f"replica {state.router_id} has no relay address"
                    return
            spec = backend_spec(state, model, self.cfg, kind=kind, endpoint=endpoint)
            if current is None or current.spec != spec:
                backend = self._make_backend(spec, entry)
                if current is not None:
                    await self.registry.remove(current.name)
                entry.backend = None
                taken = self.registry.get(spec.name)
                if taken is not None:
                    entry.detail = f"backend name {spec.name!r} is taken by a configured backend"
                    log.error("edge: device %s: %s", state.device_id, entry.detail)
                    return
                await self.registry.add(backend)
                entry.backend = backend
            self._refresh_health(entry)

    def _make_backend(self, spec: BackendSpec, entry: DeviceEntry) -> Backend:
        timeout = self.cfg.backend.timeout_s
        if spec.kind == KIND_LINK:
            return EdgeBackend(spec, entry, timeout_s=timeout, clock=self._clock)
        return RelayBackend(
            spec,
            entry,
            token=self._token,
            channels=self._relay_tls,
            timeout_s=timeout,
            clock=self._clock,
        )

    def _refresh_health(self, entry: DeviceEntry) -> None:
        backend = entry.backend
        if backend is None:
            return
        reg = self.registry.get(backend.name)
        if reg is None or reg.backend is not backend:
            return
        why = entry.availability()
        stats = reg.stats
        stats.set_healthy(not why, why)
        if why:
            stats.set_reported_load(None)
        else:
            stats.set_reported_load(entry.state.load, backend.load_mark(stats.load_mark()))

    async def _forget(self, device_id: str) -> None:
        async with self._lock_():
            entry = self.entries.get(device_id)
            if entry is None or entry.link is not None:
                return
            del self.entries[device_id]
            if entry.backend is not None:
                await self.registry.remove(entry.backend.name)
        log.info("edge: forgot device %s", device_id)

    # --- shared directory -------------------------------------------------------------------

    async def sync_directory(self) -> None:
        directory = self.directory
        if directory is None:
            return
        held = [e.state for e in self.entries.values() if e.link is not None]
        released = sorted(self._released)
        held += [
            self.entries[d].state
            for d in released
            if d in self.entries and self.entries[d].link is None
        ]
        try:
            await directory.publish(held, released, self._now_ms())
            self._released.difference_update(released)
            listing = await directory.read()
        except Exception as exc:  # redis errors: keep serving local links
            stale = self._clock() - self._directory_ok_at
            log.warning("edge directory unavailable for %.1f s: %s", stale, exc)
            if stale > self.cfg.heartbeat_timeout_s:
                for entry in self.entries.values():
                    if entry.link is None and entry.state.online:
                        entry.state = replace(entry.state, online=False)
                        entry.detail = "offline: the device directory is unreachable"
                        self._refresh_health(entry)
            return
        self._directory_ok_at = self._clock()
        seen: set[str] = set()
        for state, holder in listing:
            did = state.device_id
            seen.add(did)
            known = self.entries.get(did)
            if known is not None and known.link is not None:
                continue  # this replica holds the link: its own view is the truth
            online = bool(holder) and holder != self.router_id
            remote = replace(state, online=online)
            if known is None:
                known = self.entries[did] = DeviceEntry(remote)
            known.state = remote
            known.detail = "" if online else "offline: not linked to any router replica"
            await self._sync_backend(known)
        for did, entry in list(self.entries.items()):
            if entry.link is None and did not in seen and did not in self._released:
                await self._forget(did)

    # --- desired versions -------------------------------------------------------------------

    async def refresh_desired(self) -> None:
        models = {m.name for e in self.entries.values() for m in e.state.models}
        if self.cfg.model:
            models.add(self.cfg.model)
        if await self.desired.refresh(models):
            self.push_desired()

    def push_desired(self) -> None:
        msg = epb.RouterMessage(
            desired_models=epb.DesiredModels(desired_versions=self.desired.current)
        )
        for entry in self.entries.values():
            if entry.link is not None and not entry.link.closed:
                entry.link.send(msg)
        log.info("edge: desired versions now %s", self.desired.current)

    # --- fleet view ---------------------------------------------------------------------------

    def fleet(self) -> list[epb.DeviceStatus]:
        return [
            to_status(
                e.state,
                backend=e.backend.name if e.backend is not None else "",
                detail=e.availability() or e.detail,
            )
            for _, e in sorted(self.entries.items())
        ]

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)


def _advertised(advertise: str, address: str, port: int) -> str:
    """What other replicas dial: ``advertise`` when set, else the bound host and port."""
    return advertise or f"{address.rpartition(':')[0]}:{port}"
