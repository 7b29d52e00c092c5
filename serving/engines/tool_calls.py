"""A model's decoded text -> what an engine emits: text, or tool-call fragments.

:class:`Answer` is fed the text as it decodes and returns ``EngineChunk`` pieces (no token
counts: the engine adds them). Three modes, by the request:

- **forced** (``tool_choice`` ``required`` or ``named``): the text is the JSON object
  ``{"name": ..., "arguments": {...}}`` that the engine's constrained decoding produces
  (llama.cpp grammar, vLLM structured outputs; :mod:`serving.engines.grammar`). The call's
  first fragment (id, name) goes out when the name is complete, and the arguments stream
  as they decode, up to the end of their object (``complete`` turns true there).
- **auto** (tools offered, choice ``auto``): text streams until it looks like a tool call:
  output that starts with ``{``, a code fence or ``<tool_call>`` (Hermes / Qwen / ChatML
  templates), or a ``<tool_call>`` tag later on, is held until the answer ends. Then
  :func:`parse_tool_calls` decides: calls of the request's tools (each call's id and name,
  then its arguments in one fragment), or the held text after all.
- **text**: the text as it comes.

Request stop strings (and the format's text stops) cut text answers as ``StopMatcher``
does; a forced call is never cut (its grammar decides where it ends).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from serving.engines.base import EngineChunk, EngineRequest, ToolCallFragment
from serving.engines.prompt import StopMatcher

TOOL_CALL_OPEN = "<tool_call>"
_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|\Z)", re.DOTALL)
_FENCE = re.compile(r"\A```(?:json)?\s*(.*?)\s*(?:```)?\s*\Z", re.DOTALL)
_NAME = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
_ARGS_KEY = re.compile(r'\s*,\s*"arguments"\s*:')


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _text(text: str) -> EngineChunk:
    return EngineChunk(text=text)


def _fragment(index: int, call_id: str = "", name: str = "", arguments: str = "") -> EngineChunk:
    return EngineChunk(tool_call=ToolCallFragment(index, call_id, name, arguments))


def call_chunks(
    index: int, call_id: str, name: str, arguments: str, piece_chars: int = 0
) -> list[EngineChunk]:
    """One complete call as fragments: id and name first, then the arguments (in pieces of
    ``piece_chars`` characters; 0: one piece)."""
    out = [_fragment(index, call_id, name)]
    size = piece_chars or max(len(arguments), 1)
    for start in range(0, len(arguments), size):
        out.append(_fragment(index, arguments=arguments[start : start + size]))
    return out


def parse_tool_calls(text: str, names: Sequence[str]) -> tuple[list[tuple[str, str]], str] | None:
    """Tool calls written in ``text``: ``<tool_call>{...}</tool_call>`` blocks, or one bare
    JSON object (or a list of them, optionally in a code fence) with ``name`` and
    ``arguments`` (or ``parameters``). Returns ([(name, arguments JSON)], the text outside
    the calls) or None when ``text`` is not calls of the tools in ``names``."""
    if TOOL_CALL_OPEN in text:
        candidates = _BLOCK.findall(text)
        rest = _BLOCK.sub("", text).strip()
    else:
        stripped = text.strip()
        fenced = _FENCE.match(stripped) if stripped.startswith("```") else None
        stripped = fenced.group(1) if fenced else stripped
        try:
            value, end = json.JSONDecoder().raw_decode(stripped)
        except ValueError:
            return None
        candidates, rest = [value], stripped[end:].strip()
    objects: list[Any] = []
    for candidate in candidates:
        if isinstance(candidate, str):
            try:
                candidate = json.loads(candidate)
            except ValueError:
                return None
        objects += candidate if isinstance(candidate, list) else [candidate]
    calls = []
    for obj in objects:
        if not isinstance(obj, dict) or obj.get("name") not in names:
            return None
        args = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                return None
        if not isinstance(args, dict):
            return None
        calls.append((str(obj["name"]), json.dumps(args, ensure_ascii=False)))
    return (calls, rest) if calls else None


class _JsonValueEnd:
    """Finds where one JSON value ends in text fed piece by piece."""

    __slots__ = ("started", "done", "_depth", "_in_string", "_escape")

    def __init__(self) -> None:
        self.started = False
        self.done = False
        self._depth = 0
        self._in_string = False
        self._escape = False

    def feed(self, text: str) -> int:
        """How many characters of ``text`` belong to the value (all, until it ends)."""
        for i, ch in enumerate(text):
            if not self.started:
                if ch.isspace():
                    continue
                self.started = True
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
                    if self._depth == 0:
                        self.done = True
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif self._depth == 0 and ch in ",}]":  # a bare scalar ended before this
                self.done = True
                return i
            elif ch in "}]":
                self._depth -= 1
                self.done = self._depth == 0
            if self.done:
                return i + 1
        return len(text)


class _Forced:
    """The constrained ``{"name": ..., "arguments": ...}`` object -> one call, streamed."""

    def __init__(self, call_id: str) -> None:
        self._id = call_id
        self._buf = ""
        self._pos = 0
        self._state = "name"
        self._value = _JsonValueEnd()
        self._sent_arguments = False
        self.calls = 0

    @property
    def complete(self) -> bool:
        return self._state == "done"

    def feed(self, text: str) -> list[EngineChunk]:
        self._buf += text
        out: list[EngineChunk] = []
        if self._state == "name":
            match = _NAME.search(self._buf)
            if match is None:
                return out
            out.append(_fragment(0, self._id, json.loads(f'"{match.group(1)}"')))
            self.calls = 1
            self._pos, self._state = match.end(), "key"
        if self._state == "key":
            match = _ARGS_KEY.match(self._buf, self._pos)
            if match is None:
                return out
            self._pos, self._state = match.end(), "arguments"
        if self._state == "arguments":
            rest = self._buf[self._pos :]
            used = self._value.feed(rest)
            self._pos += used
            piece = rest[:used] if self._sent_arguments else rest[:used].lstrip()
            if piece:
                self._sent_arguments = True
                out.append(_fragment(0, arguments=piece))
            if self._value.done:
                self._state = "done"
        return out

    def finish(self) -> list[EngineChunk]:
        return []


class _Auto:
    """Text until it looks like a tool call; then held and parsed at the end."""

    def __init__(self, names: Sequence[str], call_id: Callable[[], str]) -> None:
        self._names = names
        self._call_id = call_id
        self._mode = "undecided"
        self._buf = ""
        self.calls = 0

    def feed(self, text: str) -> list[EngineChunk]:
        self._buf += text
        if self._mode == "held":
            return []
        if self._mode == "undecided":
            head = self._buf.lstrip()
            if not head:
                return []
            if head.startswith(("{", "[", "```", TOOL_CALL_OPEN)):
                self._mode = "held"
                return []
            if TOOL_CALL_OPEN.startswith(head):
                return []
            self._mode = "text"
        at = self._buf.find(TOOL_CALL_OPEN)
        if at >= 0:
            out, self._buf, self._mode = self._buf[:at], self._buf[at:], "held"
            return [_text(out)] if out else []
        longest = min(len(TOOL_CALL_OPEN) - 1, len(self._buf))
        keep = next((n for n in range(longest, 0, -1) if self._buf.endswith(TOOL_CALL_OPEN[:n])), 0)
        out = self._buf[: len(self._buf) - keep]
        self._buf = self._buf[len(self._buf) - keep :]
        return [_text(out)] if out else []

    def finish(self) -> list[EngineChunk]:
        held, self._buf = self._buf, ""
        if self._mode != "held":
            return [_text(held)] if held else []
        parsed = parse_tool_calls(held, self._names)
        if parsed is None:
            return [_text(held)] if held else []
        calls, rest = parsed
        out = [_text(rest)] if rest else []
        for index, (name, arguments) in enumerate(calls):
            out += call_chunks(index, self._call_id(), name, arguments)
        self.calls = len(calls)
        return out


class _Text:
    calls = 0

    def feed(self, text: str) -> list[EngineChunk]:
        return [_text(text)] if text else []

    def finish(self) -> list[EngineChunk]:
        return []


class Answer:
    """One request's output shaping (see the module docstring)."""

    def __init__(
        self,
        request: EngineRequest,
        stops: tuple[str, ...] = (),
        *,
        call_id: Callable[[], str] = new_call_id,
    ) -> None:
        self.forced = request.forced_tool
        self._matcher = StopMatcher(() if self.forced else (*request.stop, *stops))
        self._mode: _Forced | _Auto | _Text
        if self.forced:
            self._mode = _Forced(call_id())
        elif request.offered_tools:
            self._mode = _Auto([t.name for t in request.offered_tools], call_id)
        else:
            self._mode = _Text()

    @property
    def calls(self) -> int:
        """Tool calls emitted so far."""
        return self._mode.calls

    @property
    def complete(self) -> bool:
        """A forced call's arguments have ended: nothing more is needed."""
        return isinstance(self._mode, _Forced) and self._mode.complete

    def feed(self, text: str) -> tuple[list[EngineChunk], bool]:
        """Pieces to emit now, and whether a stop string ended the answer."""
        safe, stopped = self._matcher.feed(text)
        return self._mode.feed(safe), stopped

    def finish(self) -> list[EngineChunk]:
        """The rest, at the end of the answer (held text, parsed calls)."""
        return self._mode.feed(self._matcher.flush()) + self._mode.finish()

    def finish_reason(self, finish: str) -> str:
        """``tool_calls`` for an answer that ended normally with calls."""
        return "tool_calls" if finish == "stop" and self.calls else finish


def with_tokens(pieces: list[EngineChunk], tokens: int) -> list[EngineChunk]:
    """``pieces`` with ``tokens`` on the first one."""
    if pieces and tokens:
        first = pieces[0]
        pieces[0] = EngineChunk(text=first.text, tokens=tokens, tool_call=first.tool_call)
    return pieces
