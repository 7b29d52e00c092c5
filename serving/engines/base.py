"""The engine interface shared by the local ModelService server, the Ray Serve app
(GPU tier) and the Greengrass edge agent.

Imports nothing heavy (no Ray, no llama.cpp): engines load their libraries lazily.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from dataclasses import dataclass


class EngineError(Exception):
    """An engine could not serve a request.

    ``error_class`` tells the caller what to do: ``"invalid"`` (bad request: the field is
    named in the message), ``"too_large"`` (prompt + max_output_tokens exceed the context
    window), ``"unavailable"`` (transient: engine closed, overloaded, model swapping).
    """

    def __init__(self, message: str, error_class: str = "unavailable") -> None:
        super().__init__(message)
        self.error_class = error_class


@dataclass(frozen=True, slots=True)
class EngineRequest:
    request_id: str
    #: (role, content) pairs; roles are "system", "user", "assistant".
    messages: tuple[tuple[str, str], ...]
    max_output_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EngineChunk:
    """A piece of output. The last chunk of a request has ``done=True`` and the usage."""

    text: str = ""
    tokens: int = 0
    done: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    #: "stop", "length" or "cancelled" (only on the last chunk).
    finish_reason: str = ""
    #: Time the request waited before decoding started, ms (only on the last chunk).
    queue_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class EngineInfo:
    model: str
    version: str
    context_window: int
    max_concurrency: int
    engine: str
    model_family: str = ""


@dataclass(frozen=True, slots=True)
class EngineLoad:
    #: Requests waiting for the engine.
    queue_depth: int
    #: Requests being decoded.
    in_flight: int
    #: Recent decode rate, tokens/s (0.0 = unknown).
    decode_tokens_per_s: float = 0.0


class Engine(abc.ABC):
    """A model that streams text for chat requests.

    ``generate`` yields chunks as tokens are produced; closing the iterator (or cancelling
    the task consuming it) must stop decoding promptly and free the engine for the next
    request.
    """

    @property
    @abc.abstractmethod
    def info(self) -> EngineInfo: ...

    @abc.abstractmethod
    def generate(self, request: EngineRequest) -> AsyncGenerator[EngineChunk, None]: ...

    @abc.abstractmethod
    def load(self) -> EngineLoad: ...

    @abc.abstractmethod
    def count_tokens(self, messages: tuple[tuple[str, str], ...]) -> int:
        """Prompt tokens of these messages as this engine formats them."""

    async def start(self) -> None:
        """Load the model. Idempotent."""

    async def close(self) -> None:
        """Stop accepting work, cancel what is queued, release the model."""
