"""Tools and JSON answers in the hosted providers' shapes (docs/tools.md): the request
fields, history blocks and streamed tool calls of the OpenAI-compatible, Anthropic and
Bedrock adapters, which keep the transport and errors.

OpenAI-compatible servers take tools and JSON answers natively (``tools``,
``tool_choice``, ``response_format``; streamed ``delta.tool_calls``).

Neither Anthropic's Messages API nor Bedrock's Converse API has a JSON answer mode, so both
get the **forced-tool technique**: an extra tool (the *answer tool*, named after
``response_format.name`` or ``json_answer``) whose input schema is the answer's schema, and
a tool choice that makes the model call it. The input the model streams for that tool is
the answer: :class:`ToolStream` turns its fragments into text chunks, so dispatch sees a
JSON answer like any other. :func:`plan_tools` decides what each request sends:

==========================================  ============================================
request                                     sent
==========================================  ============================================
no JSON format                              the request's tools; the choice as asked
                                            (``auto``, ``any`` for REQUIRED, ``tool`` for
                                            NAMED, ``none`` for NONE)
no JSON format, NONE, no ``none`` choice    no tools, or, when the history holds tool
(Bedrock)                                   blocks, the tools without a choice
no JSON format, no tools of its own, a      the history's tools (below), choice ``none``
history with tool calls                     (Bedrock: no choice)
JSON format, tool choice AUTO, no tools     the answer tool, forced (``tool``)
or NONE
JSON format, AUTO with tools                the tools and the answer tool, choice ``any``:
                                            the model calls a tool or answers through the
                                            answer tool, so a text answer is always JSON
JSON format, REQUIRED or NAMED              as without a format (the answer is a tool call)
==========================================  ============================================

A tool named in the history's tool calls but not among the request's tools is declared
with an open object schema: both providers refuse a history with tool blocks for tools they
were not given. An answer schema whose top-level ``type`` is not ``object`` (both providers
want an object as a tool's input) is wrapped as ``{"answer": <schema>}``; that answer is
held until it is complete and its ``answer`` member is sent as the text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from router.backends.common import estimate_tokens
from router.errors import BackendError, ErrorClass
from router.types import (
    Chunk,
    FinishReason,
    FormatType,
    InferenceRequest,
    Message,
    Role,
    ToolCall,
    ToolCallEvent,
    ToolChoiceMode,
    ToolSpec,
)

#: The answer tool's name when ``response_format.name`` is empty.
ANSWER_TOOL = "json_answer"
#: The schema of a tool without arguments (and of a tool known only from the history).
OPEN_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}
_ANSWER_DESCRIPTION = (
    "Give your final answer by calling this tool: its input is the answer{what}. Do not "
    "answer in text."
)


def parameters(tool: ToolSpec) -> dict[str, Any]:
    """A tool's JSON Schema as an object (``parameters`` was checked by router/tools)."""
    if not tool.parameters:
        return dict(OPEN_OBJECT)
    schema = json.loads(tool.parameters)
    return schema if isinstance(schema, dict) else dict(OPEN_OBJECT)


def call_input(backend: str, call: ToolCall, field: str) -> dict[str, Any]:
    """A history tool call's arguments as the object both providers want as ``input``."""
    try:
        value = json.loads(call.arguments or "{}")
    except ValueError as exc:
        value = exc
    if not isinstance(value, dict):
        raise BackendError(
            backend,
            f"{field}.arguments: not a JSON object ({value}); send the call's arguments as "
            "the model streamed them, joined",
            ErrorClass.FATAL,
            grpc_code="INVALID_ARGUMENT",
        )
    return value


@dataclass(frozen=True, slots=True)
class WireTool:
    name: str
    description: str
    schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AnswerTool:
    """The forced tool that carries a JSON answer; ``wrapped``: its input is
    ``{"answer": <the answer>}`` (a schema whose top level is not an object)."""

    name: str
    wrapped: bool = False


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """What to send: the tools, the choice (``auto``, ``any``, ``tool`` + ``choice_name``,
    ``none``; "" = send no choice) and the answer tool, if any."""

    tools: tuple[WireTool, ...] = ()
    choice: str = ""
    choice_name: str = ""
    answer: AnswerTool | None = None


def plan_tools(request: InferenceRequest, *, has_none: bool) -> ToolPlan:
    """The tools, choice and answer tool for ``request`` (see the module doc).

    ``has_none``: the provider takes a ``none`` choice (Anthropic does, Bedrock does not:
    there the tools are sent only when the history needs them, with no choice)."""
    defined = [WireTool(t.name, t.description, parameters(t)) for t in request.tools]
    names = {t.name for t in defined}
    history: list[WireTool] = []
    for m in request.messages:
        for c in m.tool_calls:
            if c.name not in names:
                names.add(c.name)
                history.append(WireTool(c.name, "", dict(OPEN_OBJECT)))
    tools = (*defined, *history)
    mode = request.tool_choice.mode
    fmt = request.response_format
    if fmt.is_json and mode in (ToolChoiceMode.AUTO, ToolChoiceMode.NONE):
        answer, spec = _answer_tool(request, names)
        if mode is ToolChoiceMode.AUTO and defined:
            return ToolPlan((*tools, spec), "any", "", answer)
        return ToolPlan((*tools, spec), "tool", answer.name, answer)
    if mode is ToolChoiceMode.REQUIRED:
        return ToolPlan(tools, "any")
    if mode is ToolChoiceMode.NAMED:
        return ToolPlan(tools, "tool", request.tool_choice.name)
    if not tools:
        return ToolPlan()
    if has_none and (mode is ToolChoiceMode.NONE or not defined):
        return ToolPlan(tools, "none")
    if mode is ToolChoiceMode.NONE or not defined:
        history_has_tools = any(m.tool_calls or m.role is Role.TOOL for m in request.messages)
        return ToolPlan(tools if history_has_tools else ())
    return ToolPlan(tools, "auto")


def _answer_tool(request: InferenceRequest, taken: set[str]) -> tuple[AnswerTool, WireTool]:
    fmt = request.response_format
    name = fmt.name or ANSWER_TOOL
    base, n = name, 1
    while name in taken:  # a request tool of the same name: keep the two apart
        n += 1
        name = f"{base[:60]}_{n}"
    if fmt.type is FormatType.JSON_SCHEMA:
        schema = json.loads(fmt.schema)
        what = " (it must match the input schema)"
    else:
        schema = {"type": "object"}
        what = " (a JSON object)"
    wrapped = not isinstance(schema, dict) or schema.get("type") != "object"
    if wrapped:
        schema = {"type": "object", "properties": {"answer": schema}, "required": ["answer"]}
        what = " (in its answer member, matching that member's schema)"
    return AnswerTool(name, wrapped), WireTool(name, _ANSWER_DESCRIPTION.format(what=what), schema)


def turns(
    messages: tuple[Message, ...],
    text: Callable[[str], dict[str, Any]],
    tool_use: Callable[[ToolCall, str], dict[str, Any]],
    tool_result: Callable[[Message], dict[str, Any]],
) -> list[dict[str, Any]]:
    """The non-system messages as ``{"role", "content": [blocks]}`` turns in a provider's
    block shapes: an assistant's tool calls become ``tool_use`` blocks after its text (no
    empty text block), a tool message becomes a ``tool_result`` block in a user turn, and
    consecutive turns of one role merge (both providers want roles to alternate)."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.role is Role.SYSTEM:
            continue
        role = "user" if m.role is Role.TOOL else m.role.value
        if m.role is Role.TOOL:
            blocks = [tool_result(m)]
        elif m.tool_calls:
            blocks = [text(m.content)] if m.content else []
            blocks += [
                tool_use(c, f"messages[{i}].tool_calls[{j}]") for j, c in enumerate(m.tool_calls)
            ]
        else:
            blocks = [text(m.content)]
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


class ToolStream:
    """A provider's streamed content blocks -> chunks: text, tool-call fragments
    (``ToolCallEvent``, calls numbered from 0 in the order they start) and the answer
    tool's input as text.

    ``start``: a tool-use block opens (the provider's block index, the call's id and name);
    ``arguments``: a fragment of a block's input JSON; ``text``: a text delta; ``end``: the
    held answer of a wrapped schema, unwrapped; ``finish``: the finish reason.
    """

    __slots__ = ("_answer", "_blocks", "_answer_blocks", "_held", "calls")

    def __init__(self, answer: AnswerTool | None) -> None:
        self._answer = answer
        self._blocks: dict[int, int] = {}
        self._answer_blocks: set[int] = set()
        self._held: list[str] = []
        #: Tool calls seen (the answer tool's not counted).
        self.calls = 0

    def text(self, text: str, tokens: int) -> Chunk | None:
        if not text or self._answer is not None:
            return None  # beside a forced answer tool, text is not part of the JSON answer
        return Chunk(text=text, tokens=tokens)

    def start(self, block: int, call_id: str, name: str) -> Chunk | None:
        if self._answer is not None and name == self._answer.name:
            self._answer_blocks.add(block)
            return None
        index = self._blocks[block] = self.calls
        self.calls += 1
        return Chunk(tool_calls=(ToolCallEvent(index, call_id, name),))

    def arguments(self, block: int, partial: str, tokens: int) -> Chunk | None:
        if not partial:
            return None
        if block in self._answer_blocks:
            assert self._answer is not None
            if self._answer.wrapped:
                self._held.append(partial)
                return None
            return Chunk(text=partial, tokens=tokens)
        index = self._blocks.get(block)
        if index is None:
            return None  # input for a block that never started as a tool call
        return Chunk(tool_calls=(ToolCallEvent(index, arguments=partial),), tokens=tokens)

    def end(self, tokens: Callable[[str], int]) -> Chunk | None:
        if not self._held:
            return None
        text = "".join(self._held)
        self._held = []
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict) and "answer" in value:
            text = json.dumps(value["answer"], ensure_ascii=False)
        return Chunk(text=text, tokens=tokens(text))  # not JSON: the router's check says so

    def finish(self, mapped: FinishReason, tool_use: bool) -> FinishReason:
        """``tool_use``: the provider stopped for tool use; that is an answer (STOP) when
        only the answer tool was called."""
        if tool_use:
            return FinishReason.TOOL_CALLS if self.calls else FinishReason.STOP
        return mapped


# --- OpenAI chat completions ---------------------------------------------------------------


def openai_tool_fields(request: InferenceRequest) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``response_format`` for a chat-completions body
    (none of them when the request has no tools and wants text)."""
    out: dict[str, Any] = {}
    if request.tools:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": parameters(t),
                },
            }
            for t in request.tools
        ]
        choice = request.tool_choice
        if choice.mode is ToolChoiceMode.NAMED:
            out["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            out["tool_choice"] = choice.mode.value  # auto, none, required
    fmt = request.response_format
    if fmt.type is FormatType.JSON_OBJECT:
        out["response_format"] = {"type": "json_object"}
    elif fmt.type is FormatType.JSON_SCHEMA:
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": fmt.name or "answer",
                "schema": json.loads(fmt.schema),
                "strict": fmt.strict,
            },
        }
    return out


def openai_message(m: Message) -> dict[str, Any]:
    """One chat-completions message: an assistant's ``tool_calls`` (content null when
    empty), a tool result's ``tool_call_id``."""
    if m.role is Role.TOOL:
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    if m.tool_calls:
        return {
            "role": m.role.value,
            "content": m.content or None,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments or "{}"},
                }
                for c in m.tool_calls
            ],
        }
    return {"role": m.role.value, "content": m.content}


class OpenAIToolDeltas:
    """Streamed ``delta.tool_calls`` -> ``ToolCallEvent``s, calls numbered from 0.

    Servers differ: OpenAI sends ``index``, ``id``, ``type`` and the name on a call's first
    fragment and ``index`` + ``function.arguments`` after; some send no ``index`` (the
    position in the list is used), repeat the id on every fragment (dropped after the
    first), or reuse an index for the next call with a new id (a new call)."""

    __slots__ = ("_ids", "_named", "_ours", "_count")

    def __init__(self) -> None:
        #: The provider's index -> our index, and the id it last carried.
        self._ours: dict[int, int] = {}
        self._ids: dict[int, str] = {}
        #: Our indexes whose name was sent.
        self._named: set[int] = set()
        self._count = 0

    def __call__(self, items: Any) -> tuple[ToolCallEvent, ...]:
        if not isinstance(items, list):
            return ()
        out: list[ToolCallEvent] = []
        for position, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            at = item["index"] if isinstance(item.get("index"), int) else position
            fn = item["function"] if isinstance(item.get("function"), dict) else {}
            call_id, name, args = (
                v if isinstance(v, str) else ""
                for v in (item.get("id"), fn.get("name"), fn.get("arguments"))
            )
            new = at not in self._ours or bool(call_id and call_id != self._ids[at])
            if new:
                self._ours[at], self._ids[at] = self._count, call_id
                self._count += 1
            ours = self._ours[at]
            named = bool(name) and ours not in self._named
            if named:
                self._named.add(ours)
            if new or named or args:
                out.append(ToolCallEvent(ours, call_id if new else "", name if named else "", args))
        return tuple(out)


# --- Anthropic Messages ------------------------------------------------------------------


def anthropic_turns(backend: str, messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """The ``messages`` of a Messages API body; a turn of one text block is a string."""

    def tool_use(call: ToolCall, field: str) -> dict[str, Any]:
        return {
            "type": "tool_use",
            "id": call.id,
            "name": call.name,
            "input": call_input(backend, call, field),
        }

    def tool_result(m: Message) -> dict[str, Any]:
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id}
        if m.content:
            block["content"] = m.content
        return block

    out = turns(messages, lambda text: {"type": "text", "text": text}, tool_use, tool_result)
    for turn in out:
        blocks = turn["content"]
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            turn["content"] = blocks[0]["text"]
    return out


def anthropic_tool_fields(plan: ToolPlan) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` of a Messages API body."""
    out: dict[str, Any] = {}
    if plan.tools:
        out["tools"] = [
            {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "input_schema": t.schema,
            }
            for t in plan.tools
        ]
    if plan.choice:
        out["tool_choice"] = {"type": plan.choice}
        if plan.choice == "tool":
            out["tool_choice"]["name"] = plan.choice_name
    return out


# --- Bedrock Converse ----------------------------------------------------------------------


def bedrock_turns(backend: str, messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """The ``messages`` of a Converse call."""

    def tool_use(call: ToolCall, field: str) -> dict[str, Any]:
        use = {"toolUseId": call.id, "name": call.name, "input": call_input(backend, call, field)}
        return {"toolUse": use}

    def tool_result(m: Message) -> dict[str, Any]:
        return {"toolResult": {"toolUseId": m.tool_call_id, "content": [{"text": m.content}]}}

    return turns(messages, lambda text: {"text": text}, tool_use, tool_result)


def bedrock_tool_config(plan: ToolPlan) -> dict[str, Any]:
    """A Converse ``toolConfig`` (``plan.tools`` is not empty)."""
    config: dict[str, Any] = {
        "tools": [
            {
                "toolSpec": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "inputSchema": {"json": t.schema},
                }
            }
            for t in plan.tools
        ]
    }
    if plan.choice == "tool":
        config["toolChoice"] = {"tool": {"name": plan.choice_name}}
    elif plan.choice in ("auto", "any"):
        config["toolChoice"] = {plan.choice: {}}
    return config


def bedrock_content(event: dict[str, Any], tools: ToolStream) -> Chunk | None:
    """A ConverseStream ``contentBlockStart`` / ``contentBlockDelta`` event as a chunk (text,
    a tool call, or a piece of the answer tool's input); None for any other event."""
    if "contentBlockStart" in event:
        body = event["contentBlockStart"]
        use = (body.get("start") or {}).get("toolUse")
        if not isinstance(use, dict):
            return None
        block = body.get("contentBlockIndex", -1)
        return tools.start(block, str(use.get("toolUseId") or ""), str(use.get("name") or ""))
    if "contentBlockDelta" not in event:
        return None
    body = event["contentBlockDelta"]
    delta = body.get("delta") or {}
    text = delta.get("text")
    if isinstance(text, str):
        return tools.text(text, estimate_tokens(text))
    use = delta.get("toolUse")
    if isinstance(use, dict) and isinstance(use.get("input"), str):
        part = use["input"]
        return tools.arguments(body.get("contentBlockIndex", -1), part, estimate_tokens(part))
    return None


def bedrock_replay(content: Any) -> list[dict[str, Any]]:
    """A Converse answer's content blocks as ConverseStream events: the text as one delta,
    each tool use as a start and its input as one fragment."""
    events: list[dict[str, Any]] = []
    text = "".join(b["text"] for b in content if isinstance(b.get("text"), str))
    if text:
        events.append({"contentBlockDelta": {"delta": {"text": text}, "contentBlockIndex": 0}})
    for index, block in enumerate(content, start=1):
        use = block.get("toolUse")
        if not isinstance(use, dict):
            continue
        start = {"toolUse": {"toolUseId": use.get("toolUseId"), "name": use.get("name")}}
        delta = {"toolUse": {"input": json.dumps(use.get("input") or {}, ensure_ascii=False)}}
        events.append({"contentBlockStart": {"start": start, "contentBlockIndex": index}})
        events.append({"contentBlockDelta": {"delta": delta, "contentBlockIndex": index}})
    return events
