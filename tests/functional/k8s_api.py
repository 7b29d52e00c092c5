"""A local HTTP server that speaks the Kubernetes list/watch protocol for EndpointSlices.

It stands in for the API server (which cannot run here) and implements what the real
one does on the wire for ``/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices``:

- list: an ``EndpointSliceList`` with ``metadata.resourceVersion``; equality label
  selectors (``a=b,c==d``) filter the items;
- watch (``?watch=true&resourceVersion=N``): newline-delimited JSON events
  (``ADDED``/``MODIFIED``/``DELETED`` with the full object) for every change after
  ``N``, then live changes, ``BOOKMARK`` events when ``allowWatchBookmarks`` is set,
  the stream ending after ``timeoutSeconds``;
- a resource version older than the compacted history: an ``ERROR`` event carrying a
  ``Status`` with code 410 (``Expired``), as the real server sends;
- RBAC denial: HTTP 403 with a ``Status`` body; a restart: every connection dropped and
  the port closed until :meth:`start` runs again.

Tests drive it with :meth:`put`, :meth:`delete`, :meth:`bookmark`, :meth:`compact`,
:meth:`deny`, :meth:`stop`, and read :attr:`requests`.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

from aiohttp import web

PREFIX = "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"


def endpoint_slice(
    name: str,
    service: str,
    endpoints: list[tuple[str, str, bool]],
    *,
    port: int,
    port_name: str = "grpc",
    namespace: str = "gpu",
    labels: dict[str, str] | None = None,
    terminating: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An EndpointSlice object: endpoints as (pod name, address, ready)."""
    return {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service, **(labels or {})},
        },
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [addr],
                "conditions": {
                    "ready": ready,
                    "serving": ready,
                    "terminating": pod in terminating,
                },
                "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace},
                "nodeName": "node-1",
            }
            for pod, addr, ready in endpoints
        ],
    }


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, _, value = term.replace("==", "=").partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


class FakeKubeAPI:
    def __init__(self) -> None:
        self.version = 100
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        #: (resourceVersion, event type, object) for every change; compaction trims it.
        self.history: list[tuple[int, str, dict[str, Any]]] = []
        self.oldest = self.version  # oldest version a watch may resume from
        self.requests: list[dict[str, str]] = []
        self.denied = False
        self._watchers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, port: int = 0) -> int:
        app = web.Application()
        app.router.add_get(PREFIX, self._handle)
        self._runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=0.5, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port or self.port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.port = sock.getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Drop every watch and close the port (an API server restart or outage)."""
        for q in list(self._watchers):
            q.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def kubeconfig(self, directory: Path, namespace: str = "gpu") -> Path:
        path = directory / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}
                    ],
                    "users": [{"name": "router", "user": {"token": "test-token"}}],
                    "contexts": [
                        {
                            "name": "fake",
                            "context": {
                                "cluster": "fake",
                                "user": "router",
                                "namespace": namespace,
                            },
                        }
                    ],
                    "current-context": "fake",
                }
            ),
            encoding="utf-8",
        )
        return path

    # --- changes --------------------------------------------------------------------------

    def _record(self, kind: str, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        snapshot = copy.deepcopy(obj)
        self.history.append((self.version, kind, snapshot))
        for q in self._watchers:
            q.put_nowait({"type": kind, "object": snapshot})

    def put(self, obj: dict[str, Any]) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        kind = "MODIFIED" if key in self.objects else "ADDED"
        self.objects[key] = copy.deepcopy(obj)
        self._record(kind, self.objects[key])

    def delete(self, namespace: str, name: str) -> None:
        obj = self.objects.pop((namespace, name))
        self._record("DELETED", obj)

    def bookmark(self) -> None:
        self.version += 1
        for q in self._watchers:
            q.put_nowait(
                {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": "EndpointSlice",
                        "apiVersion": "discovery.k8s.io/v1",
                        "metadata": {"resourceVersion": str(self.version)},
                    },
                }
            )

    def compact(self, *, close_watches: bool = True) -> None:
        """Forget the history (etcd compaction): resuming from an older version gets 410."""
        self.version += 1
        self.oldest = self.version
        self.history.clear()
        if close_watches:
            for q in list(self._watchers):
                q.put_nowait(None)

    def deny(self, denied: bool = True) -> None:
        self.denied = denied

    @property
    def watching(self) -> int:
        return len(self._watchers)

    # --- HTTP ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        q = dict(request.query)
        self.requests.append({"namespace": namespace, **q})
        if self.denied:
            return web.json_response(
                _status(
                    403,
                    "Forbidden",
                    'endpointslices.discovery.k8s.io is forbidden: User "system:serviceaccount:'
                    f'router:hybrid-router" cannot list resource "endpointslices" in API group '
                    f'"discovery.k8s.io" in the namespace "{namespace}"',
                ),
                status=403,
            )
        if request.headers.get("Authorization") != "Bearer test-token":
            return web.json_response(_status(401, "Unauthorized", "Unauthorized"), status=401)
        selector = q.get("labelSelector", "")

        def visible(obj: dict[str, Any]) -> bool:
            meta = obj["metadata"]
            return meta["namespace"] == namespace and _matches(meta.get("labels", {}), selector)

        if q.get("watch") not in ("true", "1", "True"):
            items = [copy.deepcopy(o) for o in self.objects.values() if visible(o)]
            return web.json_response(
                {
                    "kind": "EndpointSliceList",
                    "apiVersion": "discovery.k8s.io/v1",
                    "metadata": {"resourceVersion": str(self.version)},
                    "items": items,
                }
            )
        return await self._watch(request, q, visible)

    async def _watch(
        self, request: web.Request, q: dict[str, str], visible: Any
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)

        async def send(event: dict[str, Any]) -> None:
            await resp.write(json.dumps(event).encode() + b"\n")

        since = int(q.get("resourceVersion") or self.version)
        if since < self.oldest:
            await send(
                {
                    "type": "ERROR",
                    "object": _status(
                        410, "Expired", f"too old resource version: {since} ({self.oldest})"
                    ),
                }
            )
            await resp.write_eof()
            return resp
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            for version, kind, obj in self.history:
                if version > since and visible(obj):
                    await send({"type": kind, "object": obj})
            bookmarks = q.get("allowWatchBookmarks") in ("true", "1", "True")
            loop = asyncio.get_running_loop()
            end = loop.time() + float(q.get("timeoutSeconds") or 1800)
            while (left := end - loop.time()) > 0:
                try:
                    event = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
                if event is None:
                    break
                if event["type"] == "BOOKMARK":
                    if bookmarks:
                        await send(event)
                elif visible(event["object"]):
                    await send(event)
            await resp.write_eof()
        except ConnectionResetError:
            pass
        finally:
            self._watchers.discard(queue)
        return resp
