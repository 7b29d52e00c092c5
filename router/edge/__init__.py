"""The router side of the edge tier: devices dial in over EdgeLink (docs/edge.md).

Modules, one concern each:

- ``devices``: device records, validation, backend spec and fleet-view conversions
- ``link``: one device's stream (outbox, requests in flight, ``link_events``)
- ``backend``: ``EdgeBackend`` (link held here) and ``RelayBackend`` (held by another replica)
- ``hub``: entries, backends in the registry, heartbeat timeout, directory sync, desired versions
- ``servicer``: ``EdgeLink.Connect`` and ``EdgeFleet.ListDevices``
- ``relay``: the replica-to-replica port (ModelService protocol)
- ``directory``: the shared device directory in Redis
- ``desired``: desired model versions (config and the S3 model store)

:func:`start_edge` is what ``router.server.app`` calls; nothing here is imported when
``edge.enabled`` is off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from router.config import RouterConfig
from router.errors import ConfigError

if TYPE_CHECKING:
    import grpc

    from router.edge.hub import EdgeHub
    from router.registry import BackendRegistry

__all__ = ["start_edge"]


def check_device_auth(config: RouterConfig) -> None:
    """``edge.device_auth: mtls`` needs TLS with client certificate verification."""
    tls = config.server.tls
    if config.edge.device_auth == "mtls" and not (tls.enabled and tls.client_ca_file):
        raise ConfigError(
            "edge.device_auth 'mtls' needs server.tls.cert_file, key_file and client_ca_file "
            "(devices present certificates signed by that CA); set them, or set "
            "edge.device_auth: none to trust device ids as sent (development only)",
            source="router.yaml",
            key="edge.device_auth",
        )


async def start_edge(
    config: RouterConfig,
    registry: BackendRegistry,
    server: grpc.aio.Server,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> EdgeHub | None:
    """Start the hub and add EdgeLink/EdgeFleet to ``server`` (not yet started); None when
    ``edge.enabled`` is off. Raises ConfigError or OSError."""
    if not config.edge.enabled:
        return None
    check_device_auth(config)
    from router.edge.hub import EdgeHub
    from router.edge.servicer import add_edge_services

    hub = EdgeHub(config.edge, registry, clock=clock)
    await hub.start()
    add_edge_services(server, hub, config.edge)
    return hub
