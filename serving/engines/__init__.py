"""Model engines behind one interface (``base.Engine``); importing this needs no Ray or model."""

from __future__ import annotations

from typing import Any

from serving.engines.base import (
    Engine,
    EngineChunk,
    EngineError,
    EngineInfo,
    EngineLoad,
    EngineRequest,
)

ENGINE_KINDS = ("llamacpp", "scripted")
#: Engines that need a GPU (the Ray Serve app only; not offered by the CPU servers' CLIs).
GPU_ENGINE_KINDS = ("vllm",)

__all__ = [
    "ENGINE_KINDS",
    "GPU_ENGINE_KINDS",
    "Engine",
    "EngineChunk",
    "EngineError",
    "EngineInfo",
    "EngineLoad",
    "EngineRequest",
    "create_engine",
]


def create_engine(kind: str, **options: Any) -> Engine:
    """Build an engine by kind: ``"llamacpp"`` (LlamaCppEngine), ``"scripted"`` or
    ``"vllm"`` (VllmEngine, GPU; ``options``: ``engine_kwargs`` and the model facts)."""
    if kind == "llamacpp":
        from serving.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(**options)
    if kind == "scripted":
        from serving.engines.scripted import ScriptedEngine

        return ScriptedEngine(**options)
    if kind == "vllm":
        from serving.engines.vllm import VllmEngine

        return VllmEngine(**options)
    kinds = ", ".join((*ENGINE_KINDS, *GPU_ENGINE_KINDS))
    raise ValueError(f"engine: unknown kind {kind!r} (expected one of {kinds})")
