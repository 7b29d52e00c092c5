"""Request text helpers shared by the engines: the prompt, checks, stop strings.

The prompt itself (``render_chat``: a model's own chat template, else the Gemma 3 format
``render_gemma``) lives in ``hybrid_router.prompt``, shared with the router's exact token
counts; this module turns engine records into what it reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hybrid_router.prompt import (
    END_OF_TURN,
    START_OF_TURN,
    ChatTemplate,
    chat_message,
    render_chat,
    render_gemma,
    tool_definition,
)

from serving.engines.base import (
    FORMAT_TYPES,
    ROLES,
    TOOL_CHOICE_MODES,
    EngineError,
    EngineRequest,
    Message,
    MessageLike,
    Tool,
    as_messages,
)

__all__ = [
    "END_OF_TURN",
    "START_OF_TURN",
    "STOP_STRINGS",
    "ChatTemplate",
    "chat_dicts",
    "prompt_text",
    "render_chat",
    "render_gemma",
    "tool_dicts",
]

#: Strings that end a model answer (a base model may go on to write the next turn).
STOP_STRINGS: tuple[str, ...] = (END_OF_TURN, START_OF_TURN)
#: End-of-turn markers of common chat templates: a template that writes one stops there.
TEMPLATE_MARKERS: tuple[str, ...] = (
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
)


def chat_dicts(messages: Sequence[MessageLike]) -> list[dict[str, Any]]:
    """Messages as chat templates read them (``hybrid_router.prompt.chat_message``)."""
    return [
        chat_message(
            m.role,
            m.content,
            tool_calls=((c.id, c.name, c.arguments) for c in m.tool_calls),
            tool_call_id=m.tool_call_id,
            name=m.name,
        )
        for m in as_messages(messages)
    ]


def tool_dicts(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """Tool definitions as chat templates read them."""
    return [tool_definition(t.name, t.description, t.parameters_json) for t in tools]


def prompt_text(
    messages: Sequence[MessageLike],
    tools: Sequence[Tool] = (),
    template: ChatTemplate | None = None,
    continue_final: bool = False,
) -> str:
    """The prompt (``render_chat``); raises EngineError("field: problem", "invalid")."""
    try:
        return render_chat(
            chat_dicts(messages),
            tools=tool_dicts(tools),
            template=template,
            continue_final=continue_final,
        )
    except ValueError as exc:
        raise EngineError(str(exc), "invalid") from None


def stop_strings(template: ChatTemplate | None) -> tuple[str, ...]:
    """The strings that end an answer in this prompt format: the Gemma markers without a
    template; with one, its EOS text and the known end-of-turn markers it writes."""
    if template is None or not template.source:
        return STOP_STRINGS
    found = [m for m in TEMPLATE_MARKERS if m in template.source]
    if template.eos_token and template.eos_token not in found:
        found.append(template.eos_token)
    return tuple(found)


class StopMatcher:
    """Finds stop strings in streamed text without emitting a partial match.

    ``feed`` returns the text that is safe to emit and whether a stop string was found
    (the output ends before it). Text that could be the start of a stop string is held
    back until the next piece decides; ``flush`` returns it at the end of the stream.
    """

    __slots__ = ("_held", "_stops")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        buffer = self._held + text
        found = [index for stop in self._stops if (index := buffer.find(stop)) >= 0]
        if found:
            self._held = ""
            return buffer[: min(found)], True
        keep = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:size]):
                    keep = size
                    break
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


def validate_request(request: EngineRequest) -> None:
    """Checks shared by engines; raises EngineError("field: problem", "invalid")."""
    if not request.messages:
        raise EngineError("messages: must not be empty", "invalid")
    if request.max_output_tokens <= 0:
        raise EngineError("max_output_tokens: must be > 0", "invalid")
    for index, message in enumerate(request.messages):
        _check_message(index, message)
    _check_tools(request)
    if request.temperature is not None and request.temperature < 0:
        raise EngineError("sampling.temperature: must be >= 0", "invalid")
    if request.top_p is not None and not 0 < request.top_p <= 1:
        raise EngineError("sampling.top_p: must be in (0, 1]", "invalid")


def check_fits(prompt_tokens: int, max_output_tokens: int, context_window: int) -> None:
    """Raise EngineError(..., "too_large") when prompt + max output exceed the window."""
    if prompt_tokens + max_output_tokens > context_window:
        raise EngineError(
            f"prompt {prompt_tokens} tokens + max_output_tokens {max_output_tokens} "
            f"exceed the context window of {context_window} tokens",
            "too_large",
        )


def _invalid(message: str) -> EngineError:
    return EngineError(message, "invalid")


def _check_message(index: int, message: Message) -> None:
    if message.role not in ROLES:
        raise _invalid(
            f"messages[{index}].role: unknown role {message.role!r} "
            "(expected 'system', 'user', 'assistant' or 'tool')"
        )
    if message.tool_calls and message.role != "assistant":
        raise _invalid(f"messages[{index}].tool_calls: only an assistant message calls tools")
    for n, call in enumerate(message.tool_calls):
        if not call.name:
            raise _invalid(f"messages[{index}].tool_calls[{n}].name: must not be empty")
    if message.role == "tool" and not message.tool_call_id:
        raise _invalid(f"messages[{index}].tool_call_id: a tool message names the call it answers")


def json_object(text: str, field: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object; EngineError naming ``field`` otherwise."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _invalid(f"{field}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _invalid(f"{field}: must be a JSON object, got {type(value).__name__}")
    return value


def _check_tools(request: EngineRequest) -> None:
    names = set()
    for index, tool in enumerate(request.tools):
        if not tool.name:
            raise _invalid(f"tools[{index}].name: must not be empty")
        if tool.name in names:
            raise _invalid(f"tools[{index}].name: {tool.name!r} is given twice")
        names.add(tool.name)
        if tool.parameters_json:
            json_object(tool.parameters_json, f"tools[{index}] ({tool.name}).parameters_json")
    choice = request.tool_choice
    if choice.mode not in TOOL_CHOICE_MODES:
        raise _invalid(
            f"tool_choice.mode: unknown mode {choice.mode!r} (expected one of "
            f"{', '.join(TOOL_CHOICE_MODES)})"
        )
    if choice.mode in ("required", "named") and not request.tools:
        raise _invalid(f"tool_choice: {choice.mode!r} needs tools (the request has none)")
    if choice.mode == "named" and choice.name not in names:
        raise _invalid(
            f"tool_choice.name: {choice.name!r} is not one of the request's tools "
            f"({', '.join(sorted(names))})"
        )
    fmt = request.response_format
    if fmt.type not in FORMAT_TYPES:
        raise _invalid(
            f"response_format.type: unknown type {fmt.type!r} (expected one of "
            f"{', '.join(FORMAT_TYPES)})"
        )
    if fmt.type == "json_schema":
        if not fmt.schema_json:
            raise _invalid("response_format.schema_json: required for json_schema")
        json_object(fmt.schema_json, "response_format.schema_json")
