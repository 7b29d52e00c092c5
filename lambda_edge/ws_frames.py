"""WebSocket frames for the router's stream: JSON, each under API Gateway's 32 KB frame
limit, deltas coalesced so a fast model does not cost one ``post_to_connection`` per token.

Frames (every one carries ``request_id``)::

    {"type": "decision", "request_id": ..., "decision": {...}}
    {"type": "delta",    "request_id": ..., "text": "...", "tokens": 3}
    {"type": "failover", "request_id": ..., "failover": {...}}
    {"type": "usage",    "request_id": ..., "usage": {...}}          (last on success)
    {"type": "error",    "request_id": ..., "status": "UNAVAILABLE", "http_status": 503,
     "message": "..."}                                               (last on failure)

Coalescing: the first delta goes out at once (time to first token is what a user
sees); later deltas are held until ``flush_s`` has passed since the last post, or
until the held text would fill a frame; any other event flushes them first. So a stream
costs about ``duration / flush_s`` posts however many tokens it has, and text waits at
most ``flush_s`` or one token's time, whichever is longer. Pure: the clock is injected.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hybrid_router.v1 import router_pb2 as rpb

from lambda_edge.payloads import decision_dict, failover_dict, usage_dict

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
        self._last_post: float | None = None
        self._first_text_sent = False
        # Envelope of a delta frame without its text (tokens up to 10 digits).
        empty = {"type": "delta", "request_id": request_id, "text": "", "tokens": 10**10}
        self._delta_overhead = len(encode(empty))

    def _frame(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "request_id": self.request_id, **fields}

    def add(self, ev: rpb.GenerateEvent) -> list[bytes]:
        """Frames to post now for this event (maybe none: a delta being held)."""
        kind = ev.WhichOneof("event")
        if kind == "delta":
            self._text.append(ev.delta.text)
            self._text_bytes += len(ev.delta.text.encode())
            self._tokens += ev.delta.tokens
            now = self._clock()
            due = (
                not self._first_text_sent
                or self._last_post is None
                or now - self._last_post >= self.flush_s
            )
            full = self._text_bytes + self._delta_overhead >= self.max_frame_bytes
            if full and not due:
                return self.flush(keep_tail=True)
            return self.flush() if due else []
        out = self.flush()
        if kind == "decision":
            out.append(self.decision_frame(ev.decision))
        elif kind == "failover":
            out.append(encode(self._frame("failover", failover=failover_dict(ev.failover))))
        elif kind == "usage":
            out.append(encode(self._frame("usage", usage=usage_dict(ev.usage))))
        self._mark()
        return out

    def flush(self, *, keep_tail: bool = False) -> list[bytes]:
        """Held text as delta frames (split to fit), or nothing. ``keep_tail``: post only
        full frames and keep holding the rest (a frame filled up before its time)."""
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
