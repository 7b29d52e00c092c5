"""Greengrass IPC, optional and behind one small interface.

The agent uses two IPC operations when it runs under a nucleus with ``--ipc``:

- ``SubscribeToConfigurationUpdate`` / ``GetConfiguration`` on its own configuration, so a
  deployment that changes ``model.version`` takes effect without a restart. A component
  reads its own configuration without an authorization policy.
- ``PublishToIoTCore`` of its status (model versions, sync status) to
  ``hybrid-router/edge/<thing name>/status`` (QoS 0), so operators see devices in IoT Core
  even while no router link is up. The recipe's ``accessControl`` allows exactly this.

The AWS IoT Device SDK (``awsiotsdk``, the ``edge`` extra) is imported only here and only
with ``--ipc``. It connects to the Unix socket named by
``AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT`` with the token in ``SVCUID`` (both
set by the nucleus for the component's processes). Without them (development, most tests)
:class:`NoIpc` is used: nothing is published and the configuration is what the command
line said. The first connection is made at start and raises on failure (a refused token
included): the agent then runs without IPC.

Reconnecting: when the nucleus drops a connection that was up (it restarted without
restarting the component, a socket error, a protocol error, a corrupt frame), the SDK's
``LifecycleHandler.on_disconnect`` says so, and a reconnect thread dials again after
exponential backoff with full jitter (:class:`greengrass.backoff.Backoff`, 0.5 s doubling
to 10 s; a connection that stayed up at least that long starts the backoff over, one that
drops sooner does not, so a flapping nucleus is not hammered). Each attempt is a fresh
SDK connection; callbacks of an old one are ignored. Once back, it subscribes to
configuration updates again, reads the configuration once (a deployment made while
disconnected is not missed; an unchanged configuration is not handed over again), and
publishes the last status it was given (publishes made while down are not queued: the
latest one is sent when the connection is back). If the nucleus closes the subscription
stream while the connection stays up, the connection is closed and made again, so the
one recovery path resubscribes. One WARNING per outage when it is lost, one INFO when it
is back (with the outage's length); failed attempts log at DEBUG only. :meth:`close`
wakes the thread from its wait, closes a connection being made, and returns promptly.

Threads: the SDK answers on its own event-loop thread and runs stream callbacks on an
executor; reconnects run on their own thread. Nothing here blocks the agent's asyncio loop
after the first connection is made: the subscription and the publishes are asynchronous,
configuration reads run on one executor thread (so updates are applied in order), and
``on_update`` is handed to the loop that called :meth:`Ipc.subscribe_config` with
``call_soon_threadsafe``.

Tested against a local server speaking the IPC wire format (eventstream RPC over a Unix
socket: ``tests/functional/greengrass_ipc_wire.py``) through the real SDK, including
dropped connections and a nucleus stopped and started again on the same socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from greengrass.backoff import Backoff

log = logging.getLogger(__name__)

#: Set by the nucleus for components that may use IPC.
SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
#: The component's IPC auth token, set by the nucleus.
TOKEN_ENV = "SVCUID"
STATUS_TOPIC = "hybrid-router/edge/{thing}/status"
#: Reconnect backoff: first retry within 0.5 s, then doubling up to 10 s (full jitter).
RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 10.0
#: How long a closed subscription stream waits to learn that its connection is down too.
STREAM_CLOSED_GRACE_S = 2.0


def describe(exc: BaseException) -> str:
    """``Type: message`` (the SDK's modelled errors carry their text in ``.message``)."""
    text = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _closed_under_us(exc: BaseException) -> bool:
    """The SDK's error for an operation whose stream or connection closed: the outage is
    logged once, by the connection, not by each operation that was in flight."""
    from awsiot.eventstreamrpc import ConnectionClosedError, StreamClosedError

    return isinstance(exc, (ConnectionClosedError, StreamClosedError))


_SDK_CONNECT_ERRORS = ("failed to establish connection: %r", "connect failed: %r")


class _QuietAttempts(logging.Filter):
    """Drops the SDK's own ERROR lines ("failed to establish connection", "connect
    failed") for reconnect attempts, which are logged once per outage here instead. The
    SDK passes the connection as the record's first argument."""

    def __init__(self, ipc: GreengrassIpc) -> None:
        super().__init__()
        self._ipc = ipc

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        attempt = self._ipc._reconnect_attempt
        return not (
            attempt is not None
            and isinstance(args, tuple)
            and bool(args)
            and args[0] is attempt
            and str(record.msg).endswith(_SDK_CONNECT_ERRORS)
        )


class Ipc:
    """What the agent asks of the nucleus."""

    def subscribe_config(self, on_update: Callable[[Mapping[str, Any]], None]) -> None:
        """Call ``on_update(whole configuration)`` now and whenever a deployment changes it.

        Called on the agent's event loop; ``on_update`` runs there too. Never raises.
        """

    def publish_status(self, status: Mapping[str, Any]) -> None:
        """Best effort, does not block; never raises."""

    def close(self) -> None:
        pass


class NoIpc(Ipc):
    pass


class _Link:
    """One SDK connection to the nucleus, and what was opened on it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.client: Any = None  # GreengrassCoreIPCClientV2, once connected
        self.down = False  # on_disconnect fired (set under GreengrassIpc._cond)
        self.up_since = 0.0
        self.subscribing = False
        self.subscription: Any = None


class GreengrassIpc(Ipc):
    """The nucleus over the AWS IoT Device SDK's IPC client. The first connection blocks
    (up to ``timeout_s``) and raises on failure (a refused token included); later drops
    are reconnected in the background (see the module docstring).

    ``backoff`` and ``clock`` (monotonic seconds, for the outage length logged) are
    injectable for tests.
    """

    def __init__(
        self,
        thing_name: str,
        *,
        socket_path: str,
        auth_token: str,
        timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from awscrt.io import (
            ClientBootstrap,
            DefaultHostResolver,
            EventLoopGroup,
            SocketDomain,
            SocketOptions,
        )
        from awsiot.eventstreamrpc import MessageAmendment

        self._timeout_s = timeout_s
        self._socket_path = socket_path
        self._backoff = backoff or Backoff(RECONNECT_INITIAL_S, RECONNECT_MAX_S)
        self._clock = clock
        elg = EventLoopGroup(num_threads=1)
        self._bootstrap = ClientBootstrap(elg, DefaultHostResolver(elg))
        self._socket_options = SocketOptions()
        self._socket_options.domain = SocketDomain.Local
        self._amender = MessageAmendment.create_static_authtoken_amender(auth_token)
        self._topic = STATUS_TOPIC.format(thing=thing_name)

        # Guards everything below; notified when the connection is lost or close() runs.
        self._cond = threading.Condition()
        self._closed = False
        self._link: _Link | None = None  # None while disconnected
        self._connecting: Any = None  # the SDK connection of an attempt in progress
        self._lost_at = 0.0
        self._attempts = 0  # failed attempts in this outage
        self._last_error = ""
        self._on_update: Callable[[Mapping[str, Any]], None] | None = None
        self._last_status: dict[str, Any] | None = None
        self._last_config: Any = None
        # Held while publishing, so that a status republished after a reconnect does not
        # overtake a newer one. Never taken by SDK callbacks.
        self._publish_lock = threading.Lock()

        # The SDK connection of a reconnect attempt in progress (its errors are quiet).
        self._reconnect_attempt: Any = None
        self._quiet = _QuietAttempts(self)

        link = self._open()  # raises: the caller runs without IPC
        # One thread for stream callbacks and configuration reads: updates stay in order.
        # Shared by every connection, so reads stay in order across a reconnect too.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="greengrass-ipc")
        self._attach(link)
        if not self._install(link):
            with self._cond:
                self._mark_lost(None)
            self._log_lost("the nucleus closed the connection right after accepting it")
        logging.getLogger("awsiot.eventstreamrpc").addFilter(self._quiet)
        self._thread = threading.Thread(
            target=self._reconnect_loop, name="greengrass-ipc-reconnect", daemon=True
        )
        self._thread.start()

    @property
    def connected(self) -> bool:
        """True while a connection to the nucleus is up."""
        with self._cond:
            return self._link is not None

    # --- connection ----------------------------------------------------------------------

    def _open(self, *, quiet: bool = False) -> _Link:
        """Connect (blocks up to timeout_s); raises on failure, the connection closed.

        What awsiot.greengrasscoreipc.connect() does, keeping the connection so that a
        connect that times out (or close() during it) closes it rather than leaving it to
        finish in the background.
        """
        from awsiot.eventstreamrpc import Connection, LifecycleHandler

        conn = Connection(
            host_name=self._socket_path,
            port=0,
            bootstrap=self._bootstrap,
            socket_options=self._socket_options,
            connect_message_amender=self._amender,
        )
        link = _Link(conn)
        owner = self

        class Lifecycle(LifecycleHandler):  # type: ignore[misc]
            def on_disconnect(self, reason: Exception | None) -> None:  # the SDK's thread
                owner._disconnected(link, reason)

            def on_error(self, error: Exception) -> bool:
                log.debug("IPC connection error: %s", describe(error))
                return True  # close the connection: on_disconnect follows

        with self._cond:  # close() either comes first or sees the attempt and ends it
            if self._closed:
                raise ConnectionError("IPC closed")
            if quiet:
                self._reconnect_attempt = conn
            connected = conn.connect(Lifecycle())
            self._connecting = conn
        try:
            connected.result(self._timeout_s)
        except BaseException:
            conn.close()
            raise
        finally:
            with self._cond:
                self._connecting = None
        return link

    def _attach(self, link: _Link) -> None:
        from awsiot.greengrasscoreipc.client import GreengrassCoreIPCClient
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

        link.client = GreengrassCoreIPCClientV2(
            client=GreengrassCoreIPCClient(link.conn), executor=self._executor
        )

    def _install(self, link: _Link) -> bool:
        """Make ``link`` the current connection; False if it is already down or closed."""
        with self._cond:
            if self._closed or link.down:
                return False
            link.up_since = self._clock()
            self._link = link
            return True

    def _current(self, link: _Link) -> bool:
        with self._cond:
            return not self._closed and self._link is link

    def _disconnected(self, link: _Link, reason: Exception | None) -> None:
        with self._cond:
            link.down = True
            self._cond.notify_all()  # a stream's on_closed may be waiting to tell why
            if self._closed or self._link is not link:
                return  # close() did it, or an attempt that was never installed
            self._link = None
            self._mark_lost(link)
        self._log_lost(describe(reason) if reason is not None else "closed")

    def _mark_lost(self, link: _Link | None) -> None:  # under self._cond
        now = self._clock()
        if link is not None and now - link.up_since >= self._backoff.cap_s:
            self._backoff.reset()  # it was up a while: a new outage, retry quickly
        self._lost_at = now
        self._attempts = 0
        self._last_error = ""
        self._cond.notify_all()

    def _log_lost(self, why: str) -> None:
        log.warning(
            "lost the IPC connection to the nucleus at %s (%s); reconnecting",
            self._socket_path,
            why,
        )

    def _reconnect_loop(self) -> None:  # its own thread; never the agent's loop
        while True:
            with self._cond:
                while not self._closed and self._link is not None:
                    self._cond.wait()
                if self._closed:
                    return
                delay = self._backoff.next_delay()
                if self._cond.wait_for(lambda: self._closed, delay):
                    return
            try:
                link = self._open(quiet=True)
                self._attach(link)
            except Exception as exc:
                with self._cond:
                    self._attempts += 1
                    self._last_error = describe(exc)
                log.debug("reconnecting to the nucleus: %s", describe(exc))
                continue
            if not self._install(link):  # closed, or dropped as soon as it was made
                link.conn.close()
                with self._cond:
                    self._attempts += 1
                    self._last_error = "closed as soon as it was made"
                continue
            self._restore(link)

    def _restore(self, link: _Link) -> None:
        """Back: log it, subscribe again (then re-read), publish the last status."""
        with self._cond:
            outage = self._clock() - self._lost_at
            attempts = self._attempts + 1
            last_error = self._last_error
            on_update = self._on_update
        log.info(
            "IPC connection to the nucleus back after %.1f s (%d attempt%s%s)",
            outage,
            attempts,
            "" if attempts == 1 else "s",
            f"; the last one that failed: {last_error}" if attempts > 1 else "",
        )
        if on_update is not None:
            self._subscribe(link)
        with self._publish_lock:  # not overtaking a newer status published meanwhile
            if self._last_status is not None:
                self._publish(link, self._last_status)

    # --- configuration -------------------------------------------------------------------

    def subscribe_config(self, on_update: Callable[[Mapping[str, Any]], None]) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None

        def deliver(conf: Mapping[str, Any]) -> None:
            if loop is None:
                on_update(conf)
                return
            try:
                loop.call_soon_threadsafe(on_update, conf)
            except RuntimeError:  # the loop is closed: the agent is stopping
                pass

        with self._cond:
            if self._closed:
                return
            self._on_update = deliver
            link = self._link
        if link is not None:
            self._subscribe(link)
        # else: subscribed when the connection is back

    def _read_and_deliver(self, link: _Link) -> None:  # on the executor thread
        if not self._current(link):
            return  # a reconnect reads it again
        try:
            response = link.client.get_configuration_async(key_path=[]).result(self._timeout_s)
        except Exception as exc:
            if self._current(link) and not _closed_under_us(exc):
                log.warning("reading the component configuration failed: %s", describe(exc))
            return
        value = dict(response.value or {})
        with self._cond:
            if value == self._last_config:
                return  # one deployment changes several keys: one event each
            self._last_config = value
            deliver = self._on_update
        if deliver is not None:
            deliver(value)

    def _subscribe(self, link: _Link) -> None:
        with self._cond:
            if link.subscribing:
                return  # subscribe_config and a reconnect raced: once per connection
            link.subscribing = True

        def on_event(_event: Any) -> None:
            self._read_and_deliver(link)

        def on_error(exc: Exception) -> bool:
            if self._current(link):
                log.warning("configuration update stream: %s", describe(exc))
            return True  # close the stream

        def on_closed() -> None:  # on the executor thread
            with self._cond:
                # A dropped connection closes its streams first, then says it is down (on
                # the SDK's thread, right after): give it a moment to, so that an outage is
                # not also reported as a closed stream.
                self._cond.wait_for(lambda: link.down or self._closed, STREAM_CLOSED_GRACE_S)
            if self._current(link):
                # The nucleus ended the stream but kept the connection: make it again, so
                # that the reconnect path subscribes and reads the configuration anew.
                log.warning(
                    "the nucleus closed the configuration update stream; connecting again "
                    "to subscribe again"
                )
                link.conn.close(ConnectionError("configuration update stream closed"))

        try:
            future, operation = link.client.subscribe_to_configuration_update_async(
                key_path=[],
                on_stream_event=on_event,
                on_stream_error=on_error,
                on_stream_closed=on_closed,
            )
        except Exception as exc:
            if self._current(link):
                log.warning("subscribing to configuration updates failed: %s", describe(exc))
            return
        link.subscription = operation

        def subscribed(f: Future[Any]) -> None:  # on the SDK's thread: do not block here
            exc = f.exception()
            if exc is not None:
                if self._current(link) and not _closed_under_us(exc):
                    log.warning("subscribing to configuration updates failed: %s", describe(exc))
                return
            log.info("subscribed to component configuration updates")
            try:
                # Catch up on a change made before the subscription (since the process
                # started, or while the connection was down).
                self._executor.submit(self._read_and_deliver, link)
            except RuntimeError:  # closed meanwhile
                pass

        future.add_done_callback(subscribed)

    # --- status ----------------------------------------------------------------------------

    def publish_status(self, status: Mapping[str, Any]) -> None:
        with self._publish_lock:
            with self._cond:
                if self._closed:
                    return
                self._last_status = dict(status)
                link = self._link
            if link is not None:
                self._publish(link, self._last_status)
            # else: the latest status is published when the connection is back

    def _publish(self, link: _Link, status: Mapping[str, Any]) -> None:
        from awsiot.greengrasscoreipc.model import QOS

        try:
            future = link.client.publish_to_iot_core_async(
                topic_name=self._topic,
                qos=QOS.AT_MOST_ONCE,
                payload=json.dumps(status, sort_keys=True).encode(),
            )
        except Exception as exc:
            if self._current(link):
                log.warning("status publish to IoT Core failed: %s", describe(exc))
            return

        def done(f: Future[Any]) -> None:
            exc = f.exception()
            if exc is not None and self._current(link) and not _closed_under_us(exc):
                log.warning("status publish to %s failed: %s", self._topic, describe(exc))

        future.add_done_callback(done)

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            link, connecting = self._link, self._connecting
            self._cond.notify_all()  # wakes the reconnect thread from its backoff wait
        if connecting is not None:
            connecting.close()  # an attempt in progress fails now
        if link is not None:
            if link.subscription is not None:
                try:
                    # TERMINATE_STREAM: the nucleus drops its watcher. Wait for the stream to
                    # be closed before the executor is shut down: the SDK's client (clientv2,
                    # awsiotsdk 1.31) hands on_stream_closed to the executor and logs a
                    # traceback when it has been shut down already.
                    link.subscription.close().result(self._timeout_s)
                except Exception:
                    pass
            try:
                link.conn.close().result(self._timeout_s)
            except Exception as exc:
                log.debug("closing the IPC connection: %s", describe(exc))
        self._executor.shutdown(wait=False)
        if self._thread is not threading.current_thread():
            self._thread.join(self._timeout_s)
        logging.getLogger("awsiot.eventstreamrpc").removeFilter(self._quiet)


def connect(
    enabled: bool,
    thing_name: str,
    environ: Mapping[str, str] | None = None,
    *,
    timeout_s: float = 10.0,
    backoff: Backoff | None = None,
) -> Ipc:
    """GreengrassIpc when asked for and a nucleus is there, else NoIpc (and why)."""
    env = os.environ if environ is None else environ
    if not enabled:
        return NoIpc()
    socket_path = env.get(SOCKET_ENV, "")
    if not socket_path:
        log.warning("--ipc: no Greengrass nucleus (%s unset): IPC is off", SOCKET_ENV)
        return NoIpc()
    token = env.get(TOKEN_ENV, "")
    if not token:
        log.warning("--ipc: %s (the component's IPC token) is unset: IPC is off", TOKEN_ENV)
        return NoIpc()
    try:
        return GreengrassIpc(
            thing_name,
            socket_path=socket_path,
            auth_token=token,
            timeout_s=timeout_s,
            backoff=backoff,
        )
    except ImportError:
        log.warning("--ipc: the AWS IoT Device SDK (awsiotsdk) is not installed: IPC is off")
    except Exception as exc:
        log.warning(
            "--ipc: cannot connect to the nucleus at %s (%s; a nucleus that refuses the %s "
            "token closes the connection): IPC is off",
            socket_path,
            describe(exc),
            TOKEN_ENV,
        )
    return NoIpc()
