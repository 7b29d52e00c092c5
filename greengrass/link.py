"""The device's end of EdgeLink: dial out, register, heartbeat, serve, reconnect.

One session = one ``EdgeLink.Connect`` stream:

1. send ``Register`` (device id, site, models with versions and windows, hardware);
2. wait for ``Registered`` (router id, heartbeat interval, desired versions);
3. heartbeat every interval (load, in flight, tokens/s, versions, sync status); the router
   answers each with ``HeartbeatAck``; hearing nothing for three intervals (at least 5 s)
   means the link is dead (NAT dropped it, router gone) and the session ends;
4. ``generate`` -> the runner streams events back; ``cancel`` -> the runner cancels;
   ``desired_models`` -> the sync manager.

Between sessions: exponential backoff with jitter (``greengrass.backoff``), reset after a
session that registered. Requests of a lost session are cancelled (the router has already
failed them over or ended them). ``close()`` ends the stream cleanly (half-close).

Each dial opens a new channel with the credentials of that moment: ``credentials`` may be
a callable (the agent's ``DeviceCredentials``), called before every dial, so a rotated
device certificate is used from the next reconnect on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import grpc
from hybrid_router.v1 import edge_link_pb2 as epb
from hybrid_router.v1 import edge_link_pb2_grpc

from greengrass.backoff import Backoff
from greengrass.runner import RequestRunner

log = logging.getLogger(__name__)

#: Keepalive pings only while the link carries no data for a minute: heartbeats usually
#: keep NAT mappings and load balancers alive, and a server's default ping policy holds.
CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
)


#: The shortest silence from the router taken as a dead link (short intervals in tests
#: must not turn a busy moment into a reconnect).
MIN_SILENCE_S = 5.0


class LinkError(Exception):
    pass


class EdgeLinkClient:
    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | Callable[[], grpc.ChannelCredentials | None] | None,
        register: Callable[[], epb.Register],
        heartbeat: Callable[[], epb.Heartbeat],
        runner: RequestRunner,
        on_desired: Callable[[dict[str, str]], None],
        backoff: Backoff,
        server_name: str = "",
        register_timeout_s: float = 10.0,
        default_heartbeat_s: float = 2.0,
        on_registered: Callable[[str], None] | None = None,
        sleep: Callable[[float], object] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._target = target
        self._credentials = credentials
        self._register = register
        self._heartbeat = heartbeat
        self._runner = runner
        self._on_desired = on_desired
        self.backoff = backoff
        self._register_timeout_s = register_timeout_s
        self._heartbeat_s = default_heartbeat_s
        self._on_registered = on_registered
        self._sleep = sleep
        self._clock = clock
        options: list[tuple[str, int | str]] = list(CHANNEL_OPTIONS)
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self._options: Sequence[tuple[str, int | str]] = options
        self._outbox: asyncio.Queue[epb.DeviceMessage] | None = None
        self._call: grpc.aio.StreamStreamCall | None = None
        self._stopping = False
        self.router_id = ""
        self.sessions = 0
        self.registered = False

    # --- used by the agent ----------------------------------------------------------------

    def send(self, msg: epb.DeviceMessage) -> None:
        """Queue a message on the current session (dropped when there is none)."""
        if self._outbox is not None:
            self._outbox.put_nowait(msg)

    def nudge(self) -> None:
        """Send a heartbeat now (after a model switch, when draining)."""
        if self._outbox is not None and self.registered:
            self.send(epb.DeviceMessage(heartbeat=self._heartbeat()))

    async def run(self, stop: asyncio.Event) -> None:
        """Sessions until ``stop`` is set, with backoff between them."""
        while not stop.is_set():
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._stopping:
                    log.warning("edge link to %s: %s", self._target, exc)
            if stop.is_set() or self._stopping:
                return
            delay = self.backoff.next_delay()
            log.info("edge link: dialing again in %.2f s", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def close(self, timeout_s: float = 2.0) -> None:
        """End the current session: half-close, so the router sees the device leave."""
        self._stopping = True
        call, outbox = self._call, self._outbox
        if call is not None and not call.done():
            if outbox is not None:  # let queued messages (the draining heartbeat) go first
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(outbox.join(), timeout_s / 2)
            with contextlib.suppress(Exception):
                await call.done_writing()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout_s):
                    while not call.done():
                        await asyncio.sleep(0.02)
            if not call.done():
                call.cancel()

    # --- one session ----------------------------------------------------------------------

    def _channel(self) -> grpc.aio.Channel:
        creds = self._credentials() if callable(self._credentials) else self._credentials
        if creds is None:
            return grpc.aio.insecure_channel(self._target, options=self._options)
        return grpc.aio.secure_channel(self._target, creds, options=self._options)

    async def _session(self) -> None:
        self.sessions += 1
        self.registered = False
        async with self._channel() as channel:
            call = edge_link_pb2_grpc.EdgeLinkStub(channel).Connect()
            self._call = call
            outbox: asyncio.Queue[epb.DeviceMessage] = asyncio.Queue()
            tasks: list[asyncio.Task[None]] = []
            try:
                await call.write(epb.DeviceMessage(register=self._register()))
                try:
                    async with asyncio.timeout(self._register_timeout_s):
                        first = await call.read()
                except TimeoutError:
                    raise LinkError(
                        f"no answer to register within {self._register_timeout_s:g} s"
                    ) from None
                if first is grpc.aio.EOF or first.WhichOneof("message") != "registered":
                    raise LinkError("the router did not answer register with registered")
                reg = first.registered
                self.router_id = reg.router_id
                if reg.heartbeat_interval_ms:
                    self._heartbeat_s = reg.heartbeat_interval_ms / 1000.0
                self.registered = True
                self.backoff.reset()
                self._outbox = outbox
                log.info("edge link: registered with router %s", reg.router_id)
                if reg.desired_versions:
                    self._on_desired(dict(reg.desired_versions))
                if self._on_registered is not None:
                    self._on_registered(reg.router_id)
                loop = asyncio.get_running_loop()
                tasks.append(loop.create_task(self._write(call, outbox)))
                tasks.append(loop.create_task(self._beat(outbox)))
                await self._read(call, tasks)
            except grpc.aio.AioRpcError as exc:
                raise LinkError(f"{exc.code().name}: {exc.details()}") from None
            finally:
                self._outbox = None
                self._call = None
                self.registered = False
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                if not self._stopping:
                    self._runner.cancel_all()
                if not call.done():
                    call.cancel()

    async def _read(self, call: grpc.aio.StreamStreamCall, tasks: list[asyncio.Task[None]]) -> None:
        while True:
            silence = max(3 * self._heartbeat_s + 1.0, MIN_SILENCE_S)
            try:
                async with asyncio.timeout(silence):
                    msg = await call.read()
            except TimeoutError:
                raise LinkError(f"nothing from the router for {silence:g} s") from None
            if msg is grpc.aio.EOF:
                if self._stopping:
                    return
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise LinkError(f"writing failed: {task.exception()}")
                raise LinkError("the router closed the link")
            kind = msg.WhichOneof("message")
            if kind == "generate":
                self._runner.start(msg.generate, self.send)
            elif kind == "cancel":
                self._runner.cancel(msg.cancel.request_id)
            elif kind == "desired_models":
                self._on_desired(dict(msg.desired_models.desired_versions))
            elif kind == "heartbeat_ack":
                pass  # hearing it is the point
            else:
                log.warning("edge link: unexpected %s from the router", kind)

    async def _write(
        self, call: grpc.aio.StreamStreamCall, outbox: asyncio.Queue[epb.DeviceMessage]
    ) -> None:
        while True:
            msg = await outbox.get()
            try:
                await call.write(msg)
            finally:
                outbox.task_done()

    async def _beat(self, outbox: asyncio.Queue[epb.DeviceMessage]) -> None:
        while True:
            outbox.put_nowait(epb.DeviceMessage(heartbeat=self._heartbeat()))
            await self._sleep(self._heartbeat_s)  # type: ignore[misc]
