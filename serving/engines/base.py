"""The engine interface shared by the local ModelService server, the Ray Serve app
(GPU tier) and the Greengrass edge agent.

Imports nothing heavy (no Ray, no llama.cpp): engines load their libraries lazily.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple


class EngineError(Exception):
    """An engine could not serve a request.

    ``error_class`` tells the caller what to do: ``"invalid"`` (bad request: the field is
    named in the message), ``"too_large"`` (prompt + max_output_tokens exceed the context
    window), ``"unavailable"`` (transient: engine closed, overloaded, model swapping).
    """

    def __init__(self, message: str, error_class: str = "unavailable") -> None:
        super().__init__(message)
        self.error_class = error_class


#: What a chat engine offers (``InfoResponse.capabilities``, ``EdgeModel.capabilities``).
CHAT_CAPABILITIES: tuple[str, ...] = ("chat", "tools", "json_schema")
#: ... and "prefill": it continues an open assistant turn (continue_final_message).
PREFILL_CAPABILITIES: tuple[str, ...] = (*CHAT_CAPABILITIES, "prefill")
ROLES = ("system", "user", "assistant", "tool")
TOOL_CHOICE_MODES = ("auto", "none", "required", "named")
FORMAT_TYPES = ("text", "json_object", "json_schema")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call in the history: its id, the tool and the arguments (JSON
    object text)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    """One turn. ``role``: "system", "user", "assistant" or "tool"; an assistant turn may
    carry ``tool_calls`` (its content may then be empty), a tool turn answers the call
    ``tool_call_id`` (``name``: the tool, optional)."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""


#: A message, or a (role, content) pair (read as a message without tool fields).
MessageLike = Message | tuple[str, str]


def as_messages(messages: Iterable[MessageLike]) -> tuple[Message, ...]:
    """Messages from messages or (role, content) pairs."""
    return tuple(m if isinstance(m, Message) else Message(m[0], m[1]) for m in messages)


class Tool(NamedTuple):
    """A tool the model may call; ``parameters_json`` is its JSON Schema ("" = none)."""

    name: str
    description: str = ""
    parameters_json: str = ""


class ToolChoice(NamedTuple):
    #: "auto", "none", "required" or "named" (``name`` says which tool).
    mode: str = "auto"
    name: str = ""


class ResponseFormat(NamedTuple):
    #: "text", "json_object" or "json_schema" (``schema_json`` holds the schema).
    type: str = "text"
    schema_json: str = ""
    name: str = ""

    @property
    def is_json(self) -> bool:
        return self.type != "text"


@dataclass(frozen=True, slots=True)
class EngineRequest:
    request_id: str
    #: The conversation; (role, content) pairs are accepted and stored as ``Message``.
    messages: tuple[Message, ...]
    max_output_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = ToolChoice()
    response_format: ResponseFormat = ResponseFormat()
    #: The last message is an assistant turn the answer continues (a prefill): the output
    #: is what follows its text.
    continue_final_message: bool = False

    def __post_init__(self) -> None:
        messages: Sequence[MessageLike] = self.messages
        if any(not isinstance(m, Message) for m in messages):
            object.__setattr__(self, "messages", as_messages(messages))

    @property
    def forced_tool(self) -> bool:
        """The model must call a tool (choice ``required`` or ``named``, with tools)."""
        return bool(self.tools) and self.tool_choice.mode in ("required", "named")

    @property
    def offered_tools(self) -> tuple[Tool, ...]:
        """The tools the model sees: none with choice ``none``."""
        return () if self.tool_choice.mode == "none" else self.tools


@dataclass(frozen=True, slots=True)
class ToolCallFragment:
    """A piece of a tool call: the first of a call carries its id and name, later ones more
    of its arguments (JSON text, split anywhere). ``index``: the call's position."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class EngineChunk:
    """A piece of output: text, or one tool-call fragment. The last chunk of a request has
    ``done=True`` and the usage."""

    text: str = ""
    tokens: int = 0
    done: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    #: "stop", "length", "tool_calls" or "cancelled" (only on the last chunk).
    finish_reason: str = ""
    #: Time the request waited before decoding started, ms (only on the last chunk).
    queue_ms: float = 0.0
    tool_call: ToolCallFragment | None = None


@dataclass(frozen=True, slots=True)
class EngineInfo:
    model: str
    version: str
    context_window: int
    max_concurrency: int
    engine: str
    model_family: str = ""
    #: What the engine offers: "chat", "tools", "json_schema".
    capabilities: tuple[str, ...] = ("chat",)


@dataclass(frozen=True, slots=True)
class EngineLoad:
    #: Requests waiting for the engine.
    queue_depth: int
    #: Requests being decoded.
    in_flight: int
    #: Recent decode rate, tokens/s (0.0 = unknown).
    decode_tokens_per_s: float = 0.0
    #: Recent prompt reading rate before the first token (prefill), prompt tokens/s
    #: (0.0 = unknown).
    prefill_tokens_per_s: float = 0.0


class Engine(abc.ABC):
    """A model that streams text (and tool calls) for chat requests.

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
    def count_tokens(self, messages: Sequence[MessageLike], tools: Sequence[Tool] = ()) -> int:
        """Prompt tokens of these messages (and tool definitions) as this engine formats
        them."""

    async def start(self) -> None:
        """Load the model. Idempotent."""

    async def close(self) -> None:
        """Stop accepting work, cancel what is queued, release the model."""
