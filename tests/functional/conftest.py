"""Fixtures for functional tests: real grpc.aio servers on 127.0.0.1, port 0.

- ``model_server``: starts a real ModelService server (serving.model_server) over an engine.
- ``start_router``: starts a real router (router.server.app) from a config mapping.
- ``router_stub``: an InferenceRouter stub on a fresh channel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from router.config import parse_config
from router.server.app import RouterServer, create_server
from serving.engines.base import Engine
from serving.model_server import create_server as create_model_server

StartModelServer = Callable[[Engine], Awaitable[str]]
StartRouter = Callable[..., Awaitable[RouterServer]]


@pytest.fixture
async def model_server() -> AsyncIterator[StartModelServer]:
    servers: list[grpc.aio.Server] = []

    async def start(engine: Engine) -> str:
        await engine.start()
        server, port = await create_model_server(engine, "127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop(0)


@pytest.fixture
async def start_router(tmp_path: Path) -> AsyncIterator[StartRouter]:
    """Sessions live in a SQLite file under the test's tmp_path unless ``sessions`` says."""
    routers: list[RouterServer] = []

    async def start(
        backends: list[dict[str, Any]],
        *,
        policy: dict[str, Any] | None = None,
        server: dict[str, Any] | None = None,
        sessions: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
        **sections: Any,
    ) -> RouterServer:
        store = {"sqlite": {"path": str(tmp_path / f"sessions-{len(routers)}.sqlite3")}}
        cfg = parse_config(
            {
                "server": {"address": "127.0.0.1:0", "grace_period_s": 1, **(server or {})},
                "policy": {"load_poll_interval_s": 0.05, **(policy or {})},
                "backends": backends,
                "sessions": {**store, **(sessions or {})},
                **({"auth": auth} if auth else {}),
                **sections,
            },
            source="test",
        )
        router = await create_server(cfg)
        routers.append(router)
        return router

    yield start
    for router in routers:
        await router.stop(0)


@pytest.fixture
async def channel_to() -> AsyncIterator[Callable[[RouterServer], grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []

    def make(router: RouterServer) -> grpc.aio.Channel:
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{router.port}")
        channels.append(ch)
        return ch

    yield make
    for ch in channels:
        await ch.close()
