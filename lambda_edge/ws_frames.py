"""WebSocket frames for the router's stream: JSON, each under API Gateway's 32 KB frame
limit, deltas coalesced so a fast model does not cost one ``post_to_connection`` per token.

Frames (every one carries ``request_id``)::

    {"type": "decision", "request_id": ..., "decision": {...}}
    {"type": "delta",    "request_id": ..., "text": "...", "tokens": 3}
    {"type": "tool_call", "request_id": ..., "index": 0, "id": "call_1", "name": "get_weather",
     "arguments": "{\"city\": "}                     (id and name on a call's first frame)
    {"type": "failover", "request_id": ..., "failover": {...}}
    {"type": "usage",    "request_id": ..., "usage": {...},
     "tool_calls": [{"id", "name", "arguments"}]}                    (last on success)
    {"type": "error",    "request_id": ..., "status": "UNAVAILABLE", "http_status": 503,
     "message": "..."}                                               (last on failure)

Coalescing: the first delta goes out at once (time to first token is what a user
sees); later deltas are held until ``flush_s`` has passed since the last post, or
until the held text would fill a frame; any other event flushes them first. So a stream
costs about ``duration / flush_s`` posts however many tokens it has, and text waits at
most ``flush_s`` or one token's time, whichever is longer. Tool-call fragments coalesce
the same way, per call: the fragments of one call join into one frame's ``arguments``
(``id`` and ``name`` only on the call's first frame, "" on later ones); text, another
call or any other event flushes them first. The usage frame carries the calls
reassembled. Pure: the clock is injected.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb

from lambda_edge.payloads import (
    ToolCallJoin,
    decision_dict,
    failover_dict,
    tool_call_dict,
    usage_dict,
)

_SEP = (",", ":")


def encode(frame: dict[str, Any]) -> bytes:
    return json.dumps(frame, separators=_SEP, ensure_ascii=False).encode()


def _escaped_len(ch: str) -> int:
    return len(json.dumps(ch, ensure_ascii=False).encode()) - 2


def split_text(text: str, budget: int) -> list[str]:
    """Split ``text`` into pieces whose JSON-escaped UTF-8 size is at most ``budget``
    bytes, never inside a character."""
    if budget < 8:
        raise ValueError("budget: too small for any character")
    pieces: list[str] = []
    start = 0
    size = 0
    for i, ch in enumerate(text):
        n = 1 if (" " <= ch < "\x7f" and ch not in '"\\') else _escaped_len(ch)
        if size + n > budget:
            pieces.append(text[start:i])
            start, size = i, 0
        size += n
    if start < len(text) or not pieces:
        pieces.append(text[start:])
    return pieces


class _HeldCall:
    """Fragments of one tool call held for one frame."""

    __slots__ = ("arguments", "bytes", "id", "index", "name")

    def __init__(self, index: int, id: str, name: str) -> None:
        self.index = index
        self.id = id  # "" once the call's first frame was posted
        self.name = name
        self.arguments: list[str] = []
        self.bytes = 0


class FrameBuilder:
    def __init__(
        self,
        request_id: str,
        *,
        max_frame_bytes: int,
        flush_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.request_id = request_id
        self.max_frame_bytes = max_frame_bytes
        self.flush_s = flush_s
        self._clock = clock
        self._text: list[str] = []
        self._text_bytes = 0
        self._tokens = 0
        self._call: _HeldCall | None = None
        self._calls_seen: set[int] = set()
        self._join = ToolCallJoin()
        self._last_post: float | None = None
        self._first_text_sent = False
        # Envelope of a delta frame without its text (tokens up to 10 digits).
        empty = {"type": "delta", "request_id": request_id, "text": "", "tokens": 10**10}
        self._delta_overhead = len(encode(empty))

    def _frame(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "request_id": self.request_id, **fields}

    def _due(self) -> bool:
        return (
            not self._first_text_sent
            or self._last_post is None
            or self._clock() - self._last_post >= self.flush_s
        )

    def add(self, ev: rpb.GenerateEvent) -> list[bytes]:
        """Frames to post now for this event (maybe none: a delta being held)."""
        kind = ev.WhichOneof("event")
        if kind == "delta":
            out = self._flush_call()
            self._text.append(ev.delta.text)
            self._text_bytes += len(ev.delta.text.encode())
            self._tokens += ev.delta.tokens
            due = self._due()
            full = self._text_bytes + self._delta_overhead >= self.max_frame_bytes
            if full and not due:
                return out + self._flush_text(keep_tail=True)
            return out + (self._flush_text() if due else [])
        if kind == "tool_call":
            return self._add_call(ev.tool_call)
        out = self.flush()
        if kind == "decision":
            out.append(self.decision_frame(ev.decision))
        elif kind == "failover":
            out.append(encode(self._frame("failover", failover=failover_dict(ev.failover))))
        elif kind == "usage":
            calls = [tool_call_dict(c) for c in self._join.calls()]
            out.append(encode(self._frame("usage", usage=usage_dict(ev.usage), tool_calls=calls)))
        self._mark()
        return out

    def _add_call(self, tc: tpb.ToolCallDelta) -> list[bytes]:
        self._join.add(tc)
        out = self._flush_text()
        held = self._call
        if held is not None and held.index != tc.index:
            out += self._flush_call()
            held = None
        if held is None:
            first = tc.index not in self._calls_seen
            self._calls_seen.add(tc.index)
            held = self._call = _HeldCall(
                tc.index, (tc.id or f"call_{tc.index}") if first else "", tc.name if first else ""
            )
        elif held.id and not held.name:  # the call's first frame, still held
            held.name = tc.name
        if tc.arguments:
            held.arguments.append(tc.arguments)
            held.bytes += len(tc.arguments.encode())
        due = self._due()
        full = held.bytes + self._call_overhead(held) >= self.max_frame_bytes
        if full and not due:
            return out + self._flush_call(keep_tail=True)
        return out + (self._flush_call() if due else [])

    def _call_overhead(self, held: _HeldCall) -> int:
        empty = self._frame("tool_call", index=10**10, id=held.id, name=held.name, arguments="")
        return len(encode(empty))

    def flush(self, *, keep_tail: bool = False) -> list[bytes]:
        """Held text or tool-call fragments as frames (split to fit), or nothing.
        ``keep_tail``: post only full frames and keep holding the rest (a frame filled
        up before its time)."""
        return self._flush_text(keep_tail=keep_tail) + self._flush_call(keep_tail=keep_tail)

    def _flush_text(self, *, keep_tail: bool = False) -> list[bytes]:
        if not self._text:
            return []
        text = "".join(self._text)
        tokens = self._tokens
        self._text, self._text_bytes, self._tokens = [], 0, 0
        self._first_text_sent = True
        pieces = split_text(text, self.max_frame_bytes - self._delta_overhead)
        if keep_tail and len(pieces) > 1:
            tail = pieces.pop()
            self._text, self._text_bytes = [tail], len(tail.encode())
        frames = []
        for i, piece in enumerate(pieces):
            # The token count rides on the last piece.
            count = tokens if i == len(pieces) - 1 else 0
            frames.append(encode(self._frame("delta", text=piece, tokens=count)))
        self._mark()
        return frames

    def _flush_call(self, *, keep_tail: bool = False) -> list[bytes]:
        held = self._call
        if held is None:
            return []
        self._call = None
        args = "".join(held.arguments)
        if not args and not held.id:
            return []  # a later fragment with nothing in it
        self._first_text_sent = True
        pieces = split_text(args, self.max_frame_bytes - self._call_overhead(held))
        tail = pieces.pop() if keep_tail and len(pieces) > 1 else None
        frames = []
        for i, piece in enumerate(pieces):
            first = i == 0
            frame = self._frame(
                "tool_call",
                index=held.index,
                id=held.id if first else "",
                name=held.name if first else "",
                arguments=piece,
            )
            frames.append(encode(frame))
        if tail is not None:
            rest = self._call = _HeldCall(held.index, "", "")
            rest.arguments, rest.bytes = [tail], len(tail.encode())
        self._mark()
        return frames

    def error(self, status: str, http_status: int, message: str) -> list[bytes]:
        """Held text, then an error frame (message cut to fit)."""
        out = self.flush()
        frame = self._frame("error", status=status, http_status=http_status, message=message)
        data = encode(frame)
        if len(data) > self.max_frame_bytes:
            frame["message"] = message[: self.max_frame_bytes // 8] + "..."
            data = encode(frame)
        out.append(data)
        return out

    def decision_frame(self, d: rpb.Decision) -> bytes:
        full = self._frame("decision", decision=decision_dict(d))
        data = encode(full)
        if len(data) <= self.max_frame_bytes:
            return data
        # Many backends: keep the accepted ones, count the rest.
        body = decision_dict(d)
        body["candidates"] = [c for c in body["candidates"] if c["accepted"]]
        body["candidates_omitted"] = len(d.candidates) - len(body["candidates"])
        data = encode(self._frame("decision", decision=body))
        if len(data) <= self.max_frame_bytes:
            return data
        body = decision_dict(d, candidates=False)
        body["candidates_omitted"] = len(d.candidates)
        return encode(self._frame("decision", decision=body))

    def _mark(self) -> None:
        self._last_post = self._clock()
