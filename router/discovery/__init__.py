"""Backends found at run time, beside the static ``backends[]`` of router.yaml.

``discovery.kubernetes`` watches EndpointSlices through the Kubernetes API
(router/discovery/kubernetes.py) and keeps the registry's backends current as
deployments scale or move. The ``kubernetes`` client is imported only when a source
is configured (install ``hybrid-router[k8s]``); a router without discovery never
imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from router.config import DiscoveryConfig
from router.errors import ConfigError
from router.preflight import OK, Finding, Options
from router.registry import BackendRegistry

if TYPE_CHECKING:
    from router.config import RouterConfig
    from router.discovery.kubernetes import KubernetesDiscovery

__all__ = ["preflight", "start_discovery"]


def check_kubeconfig(cfg: DiscoveryConfig) -> None:
    """ConfigError when ``discovery.kubernetes.kubeconfig`` names a file that is not there."""
    kubeconfig = cfg.kubernetes.kubeconfig
    if kubeconfig and not Path(kubeconfig).is_file():
        raise ConfigError(
            f"kubeconfig file not found: {kubeconfig}; fix the path, or leave it empty to use "
            "the pod's service account (in a pod) or ~/.kube/config",
            key="discovery.kubernetes.kubeconfig",
        )


def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``discovery``: the kubeconfig file ``serve`` would read is there (the API itself is
    reached only at start)."""
    kube = config.discovery.kubernetes
    if not kube.sources:
        return []
    try:
        check_kubeconfig(config.discovery)
    except ConfigError as exc:
        return [Finding.failed("discovery", exc)]
    where = kube.kubeconfig or "the pod's service account, else ~/.kube/config"
    return [
        Finding(
            OK,
            "discovery",
            "discovery.kubernetes",
            f"{len(kube.sources)} EndpointSlice sources; Kubernetes API through {where}",
        )
    ]


async def start_discovery(
    cfg: DiscoveryConfig,
    registry: BackendRegistry,
    *,
    environ: Mapping[str, str] | None = None,
) -> KubernetesDiscovery | None:
    """Start every configured discovery source; ``None`` when none is configured."""
    if not cfg.kubernetes.sources:
        return None
    check_kubeconfig(cfg)
    try:
        from router.discovery.kubernetes import KubernetesDiscovery
    except ImportError as exc:
        raise ConfigError(
            f"discovery.kubernetes needs the kubernetes client ({exc}); install "
            "hybrid-router[k8s] or remove discovery.kubernetes.sources",
            key="discovery.kubernetes",
        ) from None
    try:
        return await KubernetesDiscovery.start(cfg.kubernetes, registry, environ=environ)
    except ConfigError:
        raise
    except Exception as exc:  # kubeconfig missing/invalid, in-cluster token unreadable
        raise ConfigError(
            f"cannot configure the Kubernetes client: {exc}. Inside a pod the service "
            "account is used; elsewhere set discovery.kubernetes.kubeconfig or ~/.kube/config",
            key="discovery.kubernetes.kubeconfig",
        ) from None
