"""The GPU tier's capabilities: replicas report their engine's (chat, tools, json_schema)
to the load board, whose Info carries them, and the router's ray_serve adapter adds them
to the backend's configured capabilities on each poll (without Ray)."""

from __future__ import annotations

from typing import Any

from hybrid_router.v1 import model_service_pb2 as mpb
from testkit import FakeClock

from router.backends.ray_serve import RayServeBackend
from router.config import BackendConfig
from serving.ray_app.load import LoadBoard, ReplicaLoad
from serving.ray_app.settings import ModelAppArgs


def test_the_board_reports_the_replicas_capabilities() -> None:
    board = LoadBoard("gpu", clock=FakeClock())
    assert list(board.info().capabilities) == []
    caps = ("chat", "tools", "json_schema")
    board.report(ReplicaLoad("gpu#a", capacity=4, engine="vllm", capabilities=caps))
    assert list(board.info().capabilities) == list(caps)


async def test_the_ray_serve_adapter_offers_what_the_load_board_reports() -> None:
    cfg = BackendConfig(
        name="gpu", tier="gpu", kind="ray_serve", endpoint="127.0.0.1:9", model="m",
        context_window=4096, serve_application="gpu",
    )  # fmt: skip
    backend = RayServeBackend(cfg.to_spec(), application="gpu")
    answers = [
        mpb.InfoResponse(max_concurrency=4, in_flight=1, capabilities=["chat", "tools"]),
        mpb.InfoResponse(max_concurrency=4),
    ]

    async def info(metadata: Any = None) -> mpb.InfoResponse:
        assert metadata == (("application", "gpu-load"),)
        return answers.pop(0)

    backend.info = info  # type: ignore[method-assign]
    assert backend.spec.capabilities == frozenset({"chat"})
    assert await backend.poll_load() == 1
    assert backend.spec.capabilities == frozenset({"chat", "tools"})
    assert await backend.poll_load() == 0
    assert backend.spec.capabilities == frozenset({"chat"})


def test_the_vllm_tool_parser_is_an_engine_option() -> None:
    args = ModelAppArgs.model_validate(
        {"engine": "vllm", "model": {"id": "Qwen/Qwen2.5-7B-Instruct"},
         "engine_options": {"tool_parser": "hermes", "engine_kwargs": {"max_model_len": 8192}}}
    )  # fmt: skip
    assert args.engine_kwargs()["tool_parser"] == "hermes"
