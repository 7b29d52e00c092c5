"""EndpointSlices -> backend configs: a pure function, no Kubernetes client needed.

Slices are plain dicts in the API's JSON shape (``discovery.k8s.io/v1``), as they
arrive on the wire from a list or a watch. An endpoint counts when its
``conditions.ready`` is true or absent (the API says nil means ready); a terminating
endpoint is not ready, so it stops receiving new requests while its open streams end.

Two ways to turn endpoints into backends (``backend_per``):

- ``endpoint``: one backend per ready address, named ``<source>-<pod name>`` (the
  address when the slice gives no pod). The router balances across pods itself, which
  suits one-model-per-pod servers (vLLM, llama.cpp): gRPC keeps one HTTP/2 connection
  per backend, so a ClusterIP Service alone would pin a router replica to one pod.
- ``service``: one backend per Service (the slice's ``kubernetes.io/service-name``
  label), reached by its cluster DNS name while it has at least one ready endpoint.
  This suits Ray Serve, whose proxies already spread requests over every replica.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from router.config import BackendConfig, KubernetesSourceConfig

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_MAX_NAME = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def backend_name(prefix: str, suffix: str) -> str:
    """``<prefix>-<suffix>`` as a valid backend name (64 chars max, hashed when longer)."""
    clean = _UNSAFE.sub("-", suffix).strip("-.") or "x"
    name = f"{prefix}-{clean}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: _MAX_NAME - 9]}-{digest}"


def _is_ready(endpoint: Mapping[str, Any]) -> bool:
    conditions = endpoint.get("conditions") or {}
    return conditions.get("ready") is not False and conditions.get("terminating") is not True


def _port(slice_: Mapping[str, Any], port_name: str) -> int | None:
    ports = [p for p in slice_.get("ports") or () if isinstance(p, Mapping)]
    if port_name:
        ports = [p for p in ports if p.get("name") == port_name]
    elif len(ports) != 1:
        return None  # ambiguous without a port name
    if not ports or not isinstance(ports[0].get("port"), int):
        return None
    return int(ports[0]["port"])


def _host(address: str, address_type: str) -> str:
    return f"[{address}]" if address_type == "IPv6" or ":" in address else address


def _endpoint(source: KubernetesSourceConfig, host: str, port: int) -> str:
    kind = str(source.backend.get("kind", "model_service"))
    if kind == "openai":
        return f"http://{host}:{port}{source.openai_base_path}"
    return f"{host}:{port}"


def unusable_slices(
    source: KubernetesSourceConfig, slices: Iterable[Mapping[str, Any]]
) -> list[str]:
    """Names of slices with no port to call (wrong or ambiguous ``port_name``)."""
    return [
        str((s.get("metadata") or {}).get("name", "?"))
        for s in slices
        if (s.get("endpoints") or ()) and _port(s, source.port_name) is None
    ]


def desired_backends(
    source: KubernetesSourceConfig,
    slices: Iterable[Mapping[str, Any]],
    namespace: str,
) -> dict[str, BackendConfig]:
    """Backend name -> config for every ready endpoint (or Service) in ``slices``."""
    found: dict[str, BackendConfig] = {}
    for slice_ in sorted(slices, key=lambda s: str((s.get("metadata") or {}).get("name", ""))):
        port = _port(slice_, source.port_name)
        if port is None:
            continue
        meta = slice_.get("metadata") or {}
        address_type = str(slice_.get("addressType", "IPv4"))
        ready = [
            e for e in slice_.get("endpoints") or () if isinstance(e, Mapping) and _is_ready(e)
        ]
        if source.backend_per == "service":
            service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
            if not service or not ready:
                continue
            ns = meta.get("namespace") or namespace
            name = backend_name(source.name, service)
            host = f"{service}.{ns}.svc"
            found.setdefault(name, source.backend_config(name, _endpoint(source, host, port)))
            continue
        for endpoint in ready:
            addresses = endpoint.get("addresses") or ()
            if not addresses:
                continue
            address = str(addresses[0])  # the API allows several; all are fungible
            target = endpoint.get("targetRef") or {}
            name = backend_name(source.name, str(target.get("name") or address))
            host = _host(address, address_type)
            found.setdefault(name, source.backend_config(name, _endpoint(source, host, port)))
    return found
