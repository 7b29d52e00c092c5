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
line said.

Threads: the SDK answers on its own event-loop thread and runs stream callbacks on an
executor. Nothing here blocks the agent's asyncio loop after the connection is made:
the subscription and the publishes are asynchronous, configuration reads run on one
executor thread (so updates are applied in order), and ``on_update`` is handed to the
loop that called :meth:`Ipc.subscribe_config` with ``call_soon_threadsafe``.

Tested against a local server speaking the IPC wire format (eventstream RPC over a Unix
socket: ``tests/functional/greengrass_ipc_wire.py``) through the real SDK.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

#: Set by the nucleus for components that may use IPC.
SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
#: The component's IPC auth token, set by the nucleus.
TOKEN_ENV = "SVCUID"
STATUS_TOPIC = "hybrid-router/edge/{thing}/status"


def describe(exc: BaseException) -> str:
    """``Type: message`` (the SDK's modelled errors carry their text in ``.message``)."""
    text = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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


class GreengrassIpc(Ipc):
    """The nucleus over the AWS IoT Device SDK's IPC client. Connecting blocks (up to
    ``timeout_s``) and raises on failure (a refused token included)."""

    def __init__(
        self,
        thing_name: str,
        *,
        socket_path: str,
        auth_token: str,
        timeout_s: float = 10.0,
    ) -> None:
        from awscrt.io import (
            ClientBootstrap,
            DefaultHostResolver,
            EventLoopGroup,
            SocketDomain,
            SocketOptions,
        )
        from awsiot.eventstreamrpc import Connection, LifecycleHandler, MessageAmendment
        from awsiot.greengrasscoreipc.client import GreengrassCoreIPCClient
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

        self._timeout_s = timeout_s
        # What awsiot.greengrasscoreipc.connect() does, keeping the connection so that a
        # connect that times out can be closed rather than left to finish in the background.
        elg = EventLoopGroup(num_threads=1)
        options = SocketOptions()
        options.domain = SocketDomain.Local
        connection = Connection(
            host_name=socket_path,
            port=0,
            bootstrap=ClientBootstrap(elg, DefaultHostResolver(elg)),
            socket_options=options,
            connect_message_amender=MessageAmendment.create_static_authtoken_amender(auth_token),
        )
        try:
            connection.connect(LifecycleHandler()).result(timeout_s)
        except BaseException:
            connection.close()
            raise
        client = GreengrassCoreIPCClient(connection)
        # One thread for stream callbacks and configuration reads: updates stay in order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="greengrass-ipc")
        self._client: Any = GreengrassCoreIPCClientV2(client=client, executor=self._executor)
        self._topic = STATUS_TOPIC.format(thing=thing_name)
        self._closed = False
        self._lock = threading.Lock()
        self._subscription: Any = None
        self._last_config: Any = None

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

        def read_and_deliver() -> None:  # on the executor thread
            if self._closed:
                return
            try:
                response = self._client.get_configuration_async(key_path=[]).result(self._timeout_s)
            except Exception as exc:
                if not self._closed:
                    log.warning("reading the component configuration failed: %s", describe(exc))
                return
            value = dict(response.value or {})
            with self._lock:
                if value == self._last_config:
                    return  # one deployment changes several keys: one event each
                self._last_config = value
            deliver(value)

        def on_event(_event: Any) -> None:
            read_and_deliver()

        def on_error(exc: Exception) -> bool:
            log.warning("configuration update stream: %s", describe(exc))
            return True  # close the stream

        def on_closed() -> None:
            if not self._closed:
                log.warning("the nucleus closed the configuration update stream")

        try:
            future, operation = self._client.subscribe_to_configuration_update_async(
                key_path=[],
                on_stream_event=on_event,
                on_stream_error=on_error,
                on_stream_closed=on_closed,
            )
        except Exception as exc:
            log.warning("subscribing to configuration updates failed: %s", describe(exc))
            return
        self._subscription = operation

        def subscribed(f: Future[Any]) -> None:  # on the SDK's thread: do not block here
            exc = f.exception()
            if exc is not None:
                log.warning("subscribing to configuration updates failed: %s", describe(exc))
                return
            log.info("subscribed to component configuration updates")
            try:
                # Catch up on a change made between the process start and the subscription.
                self._executor.submit(read_and_deliver)
            except RuntimeError:  # closed meanwhile
                pass

        future.add_done_callback(subscribed)

    # --- status ----------------------------------------------------------------------------

    def publish_status(self, status: Mapping[str, Any]) -> None:
        from awsiot.greengrasscoreipc.model import QOS

        if self._closed:
            return
        try:
            future = self._client.publish_to_iot_core_async(
                topic_name=self._topic,
                qos=QOS.AT_MOST_ONCE,
                payload=json.dumps(status, sort_keys=True).encode(),
            )
        except Exception as exc:
            log.warning("status publish to IoT Core failed: %s", describe(exc))
            return

        def done(f: Future[Any]) -> None:
            exc = f.exception()
            if exc is not None and not self._closed:
                log.warning("status publish to %s failed: %s", self._topic, describe(exc))

        future.add_done_callback(done)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._subscription is not None:
            try:
                # TERMINATE_STREAM: the nucleus drops its watcher. Wait for the stream to be
                # closed before the executor is shut down: the SDK's client (clientv2,
                # awsiotsdk 1.31) hands on_stream_closed to the executor and logs a traceback
                # when it has been shut down already.
                self._subscription.close().result(self._timeout_s)
            except Exception:
                pass
        try:
            self._client.close(executor_wait=False).result(self._timeout_s)
        except Exception as exc:
            log.debug("closing the IPC connection: %s", describe(exc))


def connect(
    enabled: bool,
    thing_name: str,
    environ: Mapping[str, str] | None = None,
    *,
    timeout_s: float = 10.0,
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
            thing_name, socket_path=socket_path, auth_token=token, timeout_s=timeout_s
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
