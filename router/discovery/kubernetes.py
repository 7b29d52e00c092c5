"""Watch EndpointSlices through the Kubernetes API and keep the registry's backends current.

One :class:`SourceWatcher` per ``discovery.kubernetes.sources[]`` entry runs the
list-then-watch protocol with the ``kubernetes`` client's asyncio API
(``kubernetes.aio``):

1. **list** the slices matching the label selector; note the list's ``resourceVersion``;
2. **watch** from that version (``allowWatchBookmarks``, a server-side
   ``timeoutSeconds``); apply every ADDED / MODIFIED / DELETED event; a BOOKMARK only
   moves the version on; when the server ends the watch, watch again from the last
   version seen;
3. **410 Gone** (the version is too old, e.g. after the API server compacted its
   history or restarted): list again from scratch, then watch;
4. any other failure (API server restarting or unreachable, 5xx, 401/403 from RBAC)
   is logged with what to do, and retried after an exponential backoff with jitter.
   Backends found so far stay in place meanwhile: pods keep serving while the API
   server is away, and the circuit breakers handle the ones that really went.

After each change the source's desired backends (router/discovery/slices.py) are
compared with the ones it added before: new ones are added to the registry, vanished
ones removed (they take no new requests; open streams finish: see
``BackendRegistry.remove``), changed ones replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from router.backends import create_backend
from router.config import BackendConfig, KubernetesDiscoveryConfig, KubernetesSourceConfig
from router.discovery.slices import desired_backends, unusable_slices
from router.errors import DuplicateBackend
from router.registry import BackendRegistry

log = logging.getLogger(__name__)

#: Where a pod finds its own namespace (service account mount).
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
RESOURCE = "endpointslices.discovery.k8s.io"

Sleep = Callable[[float], Awaitable[None]]


def resolve_namespace(configured: str, sa_file: Path = SA_NAMESPACE_FILE) -> str:
    """The namespace to watch: as configured, else the pod's own, else ``default``."""
    if configured:
        return configured
    with contextlib.suppress(OSError):
        own = sa_file.read_text(encoding="utf-8").strip()
        if own:
            return own
    return "default"


async def load_api_client(cfg: KubernetesDiscoveryConfig, environ: Mapping[str, str]) -> Any:
    """An ``kubernetes.aio`` ApiClient: kubeconfig file, in-cluster account, or ~/.kube/config."""
    from kubernetes.aio import client, config

    conf = client.Configuration()
    if cfg.kubeconfig:
        await config.load_kube_config(config_file=cfg.kubeconfig, client_configuration=conf)
    elif environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=conf)
    else:
        await config.load_kube_config(client_configuration=conf)
    return client.ApiClient(configuration=conf)


def _api_message(exc: Any) -> str:
    """The API server's own message from an ApiException body (a Status object)."""
    body = getattr(exc, "body", None)
    if body:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            message = json.loads(body).get("message")
            if message:
                return str(message)
    return str(getattr(exc, "reason", "") or exc).strip()


class SourceWatcher:
    """List/watch one source's EndpointSlices and reconcile its backends in the registry."""

    def __init__(
        self,
        source: KubernetesSourceConfig,
        cfg: KubernetesDiscoveryConfig,
        registry: BackendRegistry,
        api_client: Any,
        namespace: str,
        *,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        from kubernetes.aio import client

        self.source = source
        self._cfg = cfg
        self._registry = registry
        self._api = client.DiscoveryV1Api(api_client)
        self._serialize = api_client.sanitize_for_serialization
        self.namespace = namespace
        self._sleep = sleep
        self._rand = rand
        self._slices: dict[str, dict[str, Any]] = {}
        self._current: dict[str, BackendConfig] = {}
        self._warned_ports: set[str] = set()
        self.synced = asyncio.Event()
        self.lists = 0  # full lists done (1 at start, +1 per 410 or failed resume)
        self._label = f"discovery[{source.name}]"

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(sorted(self._current))

    # --- the list/watch loop ------------------------------------------------------------

    async def run(self) -> None:
        from kubernetes.aio.client.exceptions import ApiException

        delay = self._cfg.backoff_initial_s
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._list()
                version = await self._watch(version)
                delay = self._cfg.backoff_initial_s
                continue
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:
                    log.info(
                        "%s: watch expired (410 Gone: %s); listing %s again",
                        self._label,
                        _api_message(exc),
                        RESOURCE,
                    )
                    version = None
                    continue
                self._log_api_error(exc, delay)
            except Exception as exc:  # connection refused/reset, timeouts, bad JSON
                log.warning(
                    "%s: Kubernetes API server unreachable or failing (%s: %s); keeping the "
                    "%d backends found so far; retrying in %.1fs",
                    self._label,
                    type(exc).__name__,
                    exc,
                    len(self._current),
                    delay,
                )
            await self._sleep(delay * (0.8 + 0.4 * self._rand()))
            delay = min(delay * 2, self._cfg.backoff_max_s)

    def _log_api_error(self, exc: Any, delay: float) -> None:
        status, message = exc.status, _api_message(exc)
        where = f"{RESOURCE} in namespace {self.namespace!r}"
        if status == 403:
            log.error(
                "%s: permission denied to list/watch %s (403 Forbidden: %s). The router's "
                "service account needs get, list and watch on endpointslices in API group "
                "discovery.k8s.io in that namespace (Helm chart: rbac.create=true, or add a "
                "Role and RoleBinding). Keeping %d backends; retrying in %.1fs",
                self._label,
                where,
                message,
                len(self._current),
                delay,
            )
        elif status == 401:
            log.error(
                "%s: the API server rejected the router's credentials (401 Unauthorized: %s); "
                "check the service account token or discovery.kubernetes.kubeconfig. "
                "Retrying in %.1fs",
                self._label,
                message,
                delay,
            )
        else:
            log.warning(
                "%s: API error on %s (HTTP %s: %s); retrying in %.1fs",
                self._label,
                where,
                status,
                message,
                delay,
            )

    async def _list(self) -> str:
        resp = await self._api.list_namespaced_endpoint_slice(
            namespace=self.namespace,
            label_selector=self.source.label_selector,
            _request_timeout=self._cfg.request_timeout_s,
        )
        self.lists += 1
        self._slices = {}
        for item in resp.items or ():
            raw = self._serialize(item)
            self._slices[raw["metadata"]["name"]] = raw
        version = str(resp.metadata.resource_version or "0") if resp.metadata else "0"
        log.info(
            "%s: listed %d EndpointSlices (%s, namespace %r, selector %r) at version %s",
            self._label,
            len(self._slices),
            RESOURCE,
            self.namespace,
            self.source.label_selector,
            version,
        )
        await self.apply()
        self.synced.set()
        return version

    async def _watch(self, version: str) -> str:
        from kubernetes.aio import watch

        timeout = self._cfg.watch_timeout_s
        w = watch.Watch()
        async with w.stream(
            self._api.list_namespaced_endpoint_slice,
            namespace=self.namespace,
            label_selector=self.source.label_selector,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _request_timeout=timeout + self._cfg.request_timeout_s,
        ) as stream:
            async for event in stream:
                kind, raw = event["type"], event["raw_object"]
                if kind == "BOOKMARK":
                    continue
                name = raw["metadata"]["name"]
                log.debug("%s: %s EndpointSlice %s", self._label, kind, name)
                if kind in ("ADDED", "MODIFIED"):
                    self._slices[name] = raw
                elif kind == "DELETED":
                    self._slices.pop(name, None)
                await self.apply()
        return str(w.resource_version or version)

    # --- reconcile ------------------------------------------------------------------------

    async def apply(self) -> None:
        """Make the registry hold exactly this source's desired backends."""
        slices = list(self._slices.values())
        for name in unusable_slices(self.source, slices):
            if name not in self._warned_ports:
                self._warned_ports.add(name)
                log.warning(
                    "%s: EndpointSlice %s has no port %s; set discovery.kubernetes.sources[]"
                    ".port_name to one of its port names",
                    self._label,
                    name,
                    repr(self.source.port_name) if self.source.port_name else "(several ports)",
                )
        desired = desired_backends(self.source, slices, self.namespace)
        for name in sorted(self._current.keys() - desired.keys()):
            del self._current[name]
            await self._registry.remove(name)
            log.info("%s: backend %s gone (no ready endpoint)", self._label, name)
        for name, bcfg in sorted(desired.items()):
            old = self._current.get(name)
            if old == bcfg:
                continue
            if old is not None:
                del self._current[name]
                await self._registry.remove(name)
            try:
                await self._registry.add(create_backend(bcfg))
            except DuplicateBackend:
                log.error(
                    "%s: a backend named %s already exists (static config or another source); "
                    "endpoint %s is not used. Rename the source or the static backend",
                    self._label,
                    name,
                    bcfg.endpoint,
                )
                continue
            except Exception:
                log.exception("%s: cannot add backend %s (%s)", self._label, name, bcfg.endpoint)
                continue
            self._current[name] = bcfg
            log.info("%s: backend %s at %s", self._label, name, bcfg.endpoint)

    async def remove_all(self) -> None:
        for name in sorted(self._current):
            await self._registry.remove(name)
        self._current.clear()


class KubernetesDiscovery:
    """All sources of ``discovery.kubernetes``: one API client, one task per source."""

    def __init__(self, watchers: list[SourceWatcher], api_client: Any) -> None:
        self.watchers = watchers
        self._api_client = api_client
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(
        cls,
        cfg: KubernetesDiscoveryConfig,
        registry: BackendRegistry,
        *,
        environ: Mapping[str, str] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> KubernetesDiscovery:
        """Connect, start every watch, and wait up to ``initial_sync_timeout_s`` for lists."""
        env = os.environ if environ is None else environ
        api_client = await load_api_client(cfg, env)
        default_ns = resolve_namespace(cfg.namespace)
        watchers = [
            SourceWatcher(s, cfg, registry, api_client, s.namespace or default_ns, sleep=sleep)
            for s in cfg.sources
        ]
        disc = cls(watchers, api_client)
        loop = asyncio.get_running_loop()
        disc._tasks = [
            loop.create_task(w.run(), name=f"discovery-{w.source.name}") for w in watchers
        ]
        if cfg.initial_sync_timeout_s > 0 and watchers:
            waits = [asyncio.ensure_future(w.synced.wait()) for w in watchers]
            _, pending = await asyncio.wait(waits, timeout=cfg.initial_sync_timeout_s)
            for fut in pending:
                fut.cancel()
            for w in watchers:
                if not w.synced.is_set():
                    log.warning(
                        "discovery[%s]: no EndpointSlice list within %.1fs; serving without its "
                        "backends until the API server answers (see the errors above)",
                        w.source.name,
                        cfg.initial_sync_timeout_s,
                    )
        return disc

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._api_client.close()
