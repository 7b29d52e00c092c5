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

__all__ = [
    "ENGINE_KINDS",
    "Engine",
    "EngineChunk",
    "EngineError",
    "EngineInfo",
    "EngineLoad",
    "EngineRequest",
    "create_engine",
]


def create_engine(kind: str, **options: Any) -> Engine:
    """Build an engine by kind: ``"llamacpp"`` (LlamaCppEngine) or ``"scripted"``."""
    if kind == "llamacpp":
        from serving.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(**options)
    if kind == "scripted":
        from serving.engines.scripted import ScriptedEngine

        return ScriptedEngine(**options)
    raise ValueError(f"engine: unknown kind {kind!r} (expected one of {', '.join(ENGINE_KINDS)})")
