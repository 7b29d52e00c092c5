"""Kubernetes discovery end to end: the real ``kubernetes`` client (asyncio API) against a
local server speaking the API's list/watch protocol, a real router, real ModelService
servers on loopback addresses standing in for pods. Backends appear, change and vanish
in the router's ListBackends; requests reach them; a backend that goes away finishes its
open stream.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from k8s_api import FakeKubeAPI, endpoint_slice
from rtutil import collect, kinds, stub_for, text_of, user_request
from testkit import wait_until

from router.config import parse_config
from router.errors import ConfigError
from router.server.app import RouterServer, create_server
from serving.engines.scripted import ScriptedEngine
from serving.model_server import create_server as create_model_server

NS = "gpu"
SELECTOR = "kubernetes.io/service-name=llama-serve-svc"
POD_A = ("llama-pod-a", "127.0.0.1")
POD_B = ("llama-pod-b", "127.0.0.2")


#: How long a change in the API server may take to reach the router.
WAIT_S = 15.0


@pytest.fixture
async def kube_api() -> AsyncIterator[FakeKubeAPI]:
    api = FakeKubeAPI()
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
async def pods() -> AsyncIterator[tuple[int, dict[str, ScriptedEngine]]]:
    """Two ModelService servers on the same port at 127.0.0.1 and 127.0.0.2, like two pods."""
    servers: list[grpc.aio.Server] = []
    engines: dict[str, ScriptedEngine] = {}
    port = 0
    for pod, address in (POD_A, POD_B):
        engine = ScriptedEngine(tokens_per_s=25)  # answers are max_output_tokens long
        await engine.start()
        server, port = await create_model_server(engine, f"{address}:{port}")
        await server.start()
        servers.append(server)
        engines[pod] = engine
    yield port, engines
    for server in servers:
        await server.stop(0)


def slice_with(port: int, *pods: tuple[str, str, bool], **kw: Any) -> dict[str, Any]:
    return endpoint_slice("llama-serve-svc-x7k2p", "llama-serve-svc", list(pods), port=port, **kw)


@pytest.fixture
async def router_for(
    kube_api: FakeKubeAPI, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[RouterServer]]]:
    routers: list[RouterServer] = []

    async def start(k8s: dict[str, Any] | None = None, **source: Any) -> RouterServer:
        cfg = parse_config(
            {
                "server": {"address": "127.0.0.1:0", "grace_period_s": 1},
                "policy": {"load_poll_interval_s": 0.05},
                "discovery": {
                    "kubernetes": {
                        "kubeconfig": str(kube_api.kubeconfig(tmp_path)),
                        "namespace": NS,
                        "backoff_initial_s": 0.05,
                        "backoff_max_s": 0.2,
                        "initial_sync_timeout_s": 10,
                        **(k8s or {}),
                        "sources": [
                            {
                                "name": "gpu-llama",
                                "label_selector": SELECTOR,
                                "port_name": "grpc",
                                "backend": {
                                    "model": "scripted",
                                    "model_family": "scripted",
                                    "context_window": 8192,
                                    "data_classes": ["public", "internal", "restricted"],
                                    "priors": {"ttft_ms": 50, "decode_tokens_per_s": 100},
                                },
                                **source,
                            }
                        ],
                    }
                },
            },
            source="test",
        )
        router = await create_server(cfg)
        routers.append(router)
        return router

    yield start
    for router in routers:
        await router.stop(0)


async def listed(router: RouterServer) -> dict[str, rpb.BackendStatus]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as ch:
        resp = await stub_for(ch).ListBackends(rpb.ListBackendsRequest(), timeout=10)
    return {b.name: b for b in resp.backends}


async def generate(router: RouterServer, text: str = "alpha beta") -> list[rpb.GenerateEvent]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as ch:
        call = stub_for(ch).Generate(user_request(text, max_output_tokens=4), timeout=20)
        return await collect(call)


def names(router: RouterServer) -> set[str]:
    return {e.spec.name for e in router.registry.entries()}


async def test_backends_appear_change_and_vanish_in_list_backends(
    kube_api: FakeKubeAPI, pods: Any, router_for: Any
) -> None:
    port, engines = pods
    kube_api.put(slice_with(port, (*POD_A, True)))

    router = await router_for()

    backends = await listed(router)
    assert set(backends) == {"gpu-llama-llama-pod-a"}
    a = backends["gpu-llama-llama-pod-a"]
    assert a.tier == tpb.TIER_GPU and a.kind == "model_service"
    assert a.endpoint == f"127.0.0.1:{port}" and a.context_window == 8192
    events = await generate(router)
    assert events[0].decision.backend == "gpu-llama-llama-pod-a"
    assert text_of(events) == "alpha beta alpha beta" and kinds(events)[-1] == "usage"

    # ADDED pod: a MODIFIED slice with a second ready endpoint.
    kube_api.put(slice_with(port, (*POD_A, True), (*POD_B, True)))
    await wait_until(
        lambda: len(names(router)) == 2, "both pods listed as backends", timeout_s=WAIT_S
    )
    backends = await listed(router)
    assert backends["gpu-llama-llama-pod-b"].endpoint == f"127.0.0.2:{port}"

    # A bookmark moves the version on and changes nothing.
    kube_api.bookmark()
    # pod-a terminating (not ready): it stops receiving traffic.
    kube_api.put(slice_with(port, (*POD_A, False), (*POD_B, True), terminating=("llama-pod-a",)))
    await wait_until(
        lambda: names(router) == {"gpu-llama-llama-pod-b"},
        "only pod-b listed as a backend",
        timeout_s=WAIT_S,
    )
    assert set(await listed(router)) == {"gpu-llama-llama-pod-b"}
    events = await generate(router, "gamma")
    assert events[0].decision.backend == "gpu-llama-llama-pod-b"
    assert engines["llama-pod-b"].started, "the request reached the pod-b server"

    # DELETED slice: no discovered backend left.
    kube_api.delete(NS, "llama-serve-svc-x7k2p")
    await wait_until(lambda: not names(router), "no discovered backend left", timeout_s=WAIT_S)
    assert await listed(router) == {}
    watches = [r for r in kube_api.requests if r.get("watch") == "true"]
    assert watches and all(r["allowWatchBookmarks"] == "true" for r in watches)
    assert all(r["labelSelector"] == SELECTOR for r in kube_api.requests)


async def test_watch_expiry_410_relists_and_catches_up(
    kube_api: FakeKubeAPI, pods: Any, router_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    port, _ = pods
    kube_api.put(slice_with(port, (*POD_A, True)))
    router = await router_for()
    watcher = router.discovery.watchers[0]  # type: ignore[union-attr]
    await wait_until(
        lambda: kube_api.watching == 1, "the router to watch the API server", timeout_s=WAIT_S
    )
    assert watcher.lists == 1

    caplog.set_level(logging.INFO, logger="router.discovery")
    # The watch ends and the history is compacted; a change lands before the router
    # resumes (same tick: the closed stream never carries it). Resuming gets 410 Gone.
    kube_api.compact()
    kube_api.put(slice_with(port, (*POD_B, True)))

    await wait_until(
        lambda: names(router) == {"gpu-llama-llama-pod-b"},
        "only pod-b listed as a backend",
        timeout_s=WAIT_S,
    )
    assert watcher.lists == 2
    assert "watch expired (410 Gone" in caplog.text
    events = await generate(router)
    assert events[0].decision.backend == "gpu-llama-llama-pod-b"


async def test_api_server_restart_keeps_backends_and_resumes(
    kube_api: FakeKubeAPI, pods: Any, router_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    port, _ = pods
    kube_api.put(slice_with(port, (*POD_A, True)))
    router = await router_for()
    await wait_until(
        lambda: kube_api.watching == 1, "the router to watch the API server", timeout_s=WAIT_S
    )
    caplog.set_level(logging.WARNING, logger="router.discovery")

    await kube_api.stop()  # the API server goes away
    await wait_until(
        lambda: "unreachable" in caplog.text, "the API-server-unreachable warning", timeout_s=WAIT_S
    )
    # Pods keep serving while the API server is down: the backend stays and takes traffic.
    assert names(router) == {"gpu-llama-llama-pod-a"}
    events = await generate(router)
    assert events[0].decision.backend == "gpu-llama-llama-pod-a"
    assert "keeping the 1 backends found so far" in caplog.text

    kube_api.put(slice_with(port, (*POD_A, True), (*POD_B, True)))  # changed meanwhile
    await kube_api.start()  # back, same port
    await wait_until(
        lambda: len(names(router)) == 2, "both pods listed as backends", timeout_s=WAIT_S
    )
    assert set(await listed(router)) == {"gpu-llama-llama-pod-a", "gpu-llama-llama-pod-b"}


async def test_rbac_denial_is_logged_with_the_fix_and_recovers(
    kube_api: FakeKubeAPI, pods: Any, router_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    port, _ = pods
    kube_api.put(slice_with(port, (*POD_A, True)))
    kube_api.deny()
    caplog.set_level(logging.WARNING, logger="router.discovery")

    # A denied router still starts after initial_sync_timeout_s (serving static backends).
    router = await router_for(k8s={"initial_sync_timeout_s": 0.5})
    await wait_until(
        lambda: "permission denied" in caplog.text,
        "the permission-denied warning",
        timeout_s=WAIT_S,
    )
    assert names(router) == set()
    denial = next(r.getMessage() for r in caplog.records if "permission denied" in r.getMessage())
    assert "403 Forbidden" in denial and 'cannot list resource "endpointslices"' in denial
    assert "get, list and watch on endpointslices" in denial and "discovery.k8s.io" in denial
    assert "rbac.create=true" in denial and f"namespace '{NS}'" in denial

    kube_api.deny(False)  # the Role is fixed
    await wait_until(
        lambda: names(router) == {"gpu-llama-llama-pod-a"},
        "only pod-a listed as a backend",
        timeout_s=WAIT_S,
    )


async def test_vanishing_backend_finishes_its_open_stream(
    kube_api: FakeKubeAPI, pods: Any, router_for: Any
) -> None:
    port, engines = pods
    kube_api.put(slice_with(port, (*POD_A, True)))
    router = await router_for()

    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as ch:
        call = stub_for(ch).Generate(user_request("one two", max_output_tokens=30), timeout=30)
        first = [await call.read(), await call.read()]
        assert kinds(first) == ["decision", "delta"]
        assert first[0].decision.backend == "gpu-llama-llama-pod-a"

        kube_api.put(slice_with(port, (*POD_B, True)))  # pod-a leaves mid-stream
        await wait_until(
            lambda: names(router) == {"gpu-llama-llama-pod-b"},
            "only pod-b listed as a backend",
            timeout_s=WAIT_S,
        )
        assert set(await listed(router)) == {"gpu-llama-llama-pod-b"}

        rest = []
        while (event := await call.read()) is not grpc.aio.EOF:
            rest.append(event)
    assert kinds(rest)[-1] == "usage"
    usage = rest[-1].usage
    assert usage.complete and usage.backend == "gpu-llama-llama-pod-a"
    assert usage.output_tokens == 30
    assert await call.code() == grpc.StatusCode.OK

    events = await generate(router)
    assert events[0].decision.backend == "gpu-llama-llama-pod-b"


async def test_service_mode_one_backend_per_service(
    kube_api: FakeKubeAPI, pods: Any, router_for: Any
) -> None:
    port, _ = pods
    kube_api.put(slice_with(port, (*POD_A, True), (*POD_B, True)))
    kube_api.put(
        endpoint_slice("other-svc-1", "other-svc", [("o", "127.0.0.3", True)], port=port)
    )  # not selected
    router = await router_for(backend_per="service")

    backends = await listed(router)
    assert set(backends) == {"gpu-llama-llama-serve-svc"}
    assert backends["gpu-llama-llama-serve-svc"].endpoint == f"llama-serve-svc.{NS}.svc:{port}"

    kube_api.put(slice_with(port, (*POD_A, False), (*POD_B, False)))  # no ready proxy left
    await wait_until(lambda: not names(router), "no discovered backend left", timeout_s=WAIT_S)


def test_static_router_never_imports_the_kubernetes_client() -> None:
    code = (
        "import asyncio, sys\n"
        "from router.config import parse_config\n"
        "from router.server.app import create_server\n"
        "async def main():\n"
        "    s = await create_server(parse_config({'server': {'address': '127.0.0.1:0'}}))\n"
        "    await s.stop(0)\n"
        "asyncio.run(main())\n"
        "print('kubernetes' in sys.modules)\n"
    )

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )

    assert out.stdout.strip().splitlines()[-1] == "False"


async def test_unusable_kubeconfig_refuses_to_start_with_the_fix(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "server": {"address": "127.0.0.1:0"},
            "discovery": {
                "kubernetes": {
                    "kubeconfig": str(tmp_path / "missing-kubeconfig"),
                    "sources": [
                        {
                            "name": "gpu",
                            "label_selector": SELECTOR,
                            "backend": {"model": "m", "context_window": 4096},
                        }
                    ],
                }
            },
        }
    )

    with pytest.raises(ConfigError) as err:
        await create_server(cfg)

    message = str(err.value)
    assert "discovery.kubernetes.kubeconfig" in message
    assert f"kubeconfig file not found: {tmp_path / 'missing-kubeconfig'}" in message
    bad = tmp_path / "bad-kubeconfig"
    bad.write_text("apiVersion: v1\nkind: Config\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot configure the Kubernetes client"):
        await create_server(
            parse_config(
                cfg.model_dump(mode="json")
                | {
                    "discovery": {
                        "kubernetes": {
                            **cfg.discovery.kubernetes.model_dump(mode="json"),
                            "kubeconfig": str(bad),
                        }
                    }
                }
            )
        )
