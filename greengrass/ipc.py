"""Greengrass IPC, optional and behind one small interface.

The agent uses two IPC operations when it runs under a nucleus with ``--ipc``:

- ``SubscribeToConfigurationUpdate`` / ``GetConfiguration`` on its own configuration, so a
  deployment that changes ``model.version`` (or ``site``) takes effect without a restart.
  A component reads its own configuration without an authorization policy.
- ``PublishToIoTCore`` of its status (model versions, sync status) to
  ``hybrid-router/edge/<thing name>/status`` (QoS 0), so operators see devices in IoT Core
  even while no router link is up. The recipe's ``accessControl`` allows exactly this.

The AWS IoT Device SDK (``awsiotsdk``, the ``edge`` extra) is imported only here and only
with ``--ipc``. Without a nucleus (development, tests) :class:`NoIpc` is used: nothing is
published and the configuration is what the command line said. Nothing here can be
tested without a nucleus; it is kept small for that reason.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

#: Set by the nucleus for components that may use IPC.
SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
STATUS_TOPIC = "hybrid-router/edge/{thing}/status"


class Ipc:
    """What the agent asks of the nucleus."""

    def subscribe_config(self, on_update: Callable[[Mapping[str, Any]], None]) -> None:
        """Call ``on_update(whole configuration)`` whenever the deployment changes it."""

    def publish_status(self, status: Mapping[str, Any]) -> None:
        """Best effort; never raises."""

    def close(self) -> None:
        pass


class NoIpc(Ipc):
    pass


class GreengrassIpc(Ipc):
    def __init__(self, thing_name: str) -> None:
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

        self._client: Any = GreengrassCoreIPCClientV2()
        self._topic = STATUS_TOPIC.format(thing=thing_name)

    def subscribe_config(self, on_update: Callable[[Mapping[str, Any]], None]) -> None:
        client = self._client

        def handler(_event: Any) -> None:
            try:
                value = client.get_configuration(key_path=[]).value
                on_update(value or {})
            except Exception:
                log.exception("reading the updated component configuration failed")

        client.subscribe_to_configuration_update(key_path=[], on_stream_event=handler)

    def publish_status(self, status: Mapping[str, Any]) -> None:
        from awsiot.greengrasscoreipc.model import QOS

        try:
            self._client.publish_to_iot_core(
                topic_name=self._topic, qos=QOS.AT_MOST_ONCE, payload=json.dumps(status).encode()
            )
        except Exception as exc:
            log.debug("status publish to IoT Core failed: %s", exc)

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:
            pass


def connect(enabled: bool, thing_name: str, environ: Mapping[str, str] | None = None) -> Ipc:
    """GreengrassIpc when asked for and a nucleus is there, else NoIpc (and why)."""
    env = os.environ if environ is None else environ
    if not enabled:
        return NoIpc()
    if not env.get(SOCKET_ENV):
        log.warning("--ipc: no Greengrass nucleus (%s unset): IPC is off", SOCKET_ENV)
        return NoIpc()
    try:
        return GreengrassIpc(thing_name)
    except ImportError:
        log.warning("--ipc: the AWS IoT Device SDK (awsiotsdk) is not installed: IPC is off")
    except Exception as exc:
        log.warning("--ipc: cannot connect to the nucleus (%s): IPC is off", exc)
    return NoIpc()
