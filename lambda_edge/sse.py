"""Server-Sent Events for the streaming server (lambda_edge.stream_server): the router's
stream as OpenAI ``chat.completion.chunk`` events, or as the router's own events. Pure:
events in, bytes out.

Both formatters see the events *after* the first token (or the stream's end): the server
holds the decision and any failovers until then, so that a request failing before its
first token gets a plain HTTP error status. So by the first chunk the backend that answers
is known (failover happens only before the first token).

OpenAI (``OpenAIStream``), as OpenAI streams it::

    data: {"object": "chat.completion.chunk", ..., "choices": [{"delta": {"role": "assistant"}}]}
    data: {..., "choices": [{"delta": {"content": "Hello"}, "finish_reason": null}]}
    data: {..., "choices": [{"delta": {}, "finish_reason": "stop"}], "hybrid_router": {...}}
    data: {..., "choices": [], "usage": {...}}          (stream_options.include_usage only)
    data: [DONE]

An answer that calls tools streams ``delta.tool_calls`` as OpenAI does: a call's first
fragment carries ``index``, ``id``, ``type`` and ``function.name`` (with ``function.
arguments`` ""), later ones ``index`` and more ``function.arguments``; the finish reason
is ``tool_calls``. When a call comes first, the role rides on its first chunk (``content``
null), as in OpenAI's stream.

After the first chunk a failure is ``data: {"error": {...}}`` (OpenAI's error shape, which
the OpenAI SDKs raise as an APIError) and no ``[DONE]``.

Router events (``RouterEventStream``): ``event: <type>`` and the WebSocket frames' JSON
(``{"type", "request_id", ...}``: decision, delta, tool_call, failover, usage, error);
usage is last on success (with the reassembled ``tool_calls``), error on failure.
"""

from __future__ import annotations

import json
from typing import Any

from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb

from lambda_edge.openai_compat import (
    chunk,
    error_body,
    finish_reason,
    router_extension,
    usage_body,
)
from lambda_edge.payloads import (
    ToolCallJoin,
    decision_dict,
    failover_dict,
    tool_call_delta_dict,
    tool_call_dict,
    usage_dict,
)

_SEP = (",", ":")
DONE = b"data: [DONE]\n\n"


def event(data: dict[str, Any], name: str | None = None) -> bytes:
    """One SSE event: an optional ``event:`` line and one ``data:`` line of compact JSON
    (JSON escapes newlines, so one line always suffices)."""
    line = b"data: " + json.dumps(data, separators=_SEP, ensure_ascii=False).encode() + b"\n\n"
    return (b"event: " + name.encode() + b"\n" + line) if name else line


class Tracker:
    """What the stream has said so far: the decision, failovers, the backend now
    answering, the usage, the text's length, the tool calls."""

    def __init__(self) -> None:
        self.decision: rpb.Decision | None = None
        self.failovers: list[rpb.Failover] = []
        self.usage: rpb.Usage | None = None
        self.chars = 0
        self.deltas = 0
        self.calls = ToolCallJoin()

    @property
    def backend(self) -> str:
        if self.usage is not None and self.usage.backend:
            return self.usage.backend
        if self.failovers:
            return self.failovers[-1].to_backend
        return self.decision.backend if self.decision is not None else ""

    def see(self, ev: rpb.GenerateEvent) -> str:
        kind = ev.WhichOneof("event") or ""
        if kind == "decision":
            self.decision = ev.decision
        elif kind == "failover":
            self.failovers.append(ev.failover)
        elif kind == "usage":
            self.usage = ev.usage
        elif kind == "delta":
            self.chars += len(ev.delta.text)
            self.deltas += 1
        elif kind == "tool_call":
            self.calls.add(ev.tool_call)
        return kind


class OpenAIStream:
    def __init__(
        self, request_id: str, *, created: int, include_usage: bool, tracker: Tracker
    ) -> None:
        self.request_id = request_id
        self.created = created
        self.include_usage = include_usage
        self.t = tracker
        self._started = False
        self._calls: set[int] = set()  # the calls whose first fragment was sent

    def _chunk(self, **fields: Any) -> bytes:
        return event(
            chunk(
                self.request_id,
                created=self.created,
                model=self.t.backend,
                with_usage=self.include_usage,
                **fields,
            )
        )

    def add(self, ev: rpb.GenerateEvent, kind: str) -> list[bytes]:
        """Chunks for one event (``kind``: what Tracker.see returned for it). Decision,
        failover and usage have no chunk of their own (usage is sent at the end)."""
        if kind == "tool_call":
            return self._tool_call(ev.tool_call)
        if kind != "delta":
            return []
        out = self._start()
        if ev.delta.text:
            out.append(self._chunk(delta={"content": ev.delta.text}))
        return out

    def _tool_call(self, tc: tpb.ToolCallDelta) -> list[bytes]:
        call: dict[str, Any]
        if tc.index not in self._calls:
            self._calls.add(tc.index)
            call = {
                "index": tc.index,
                "id": tc.id or f"call_{tc.index}",
                "type": "function",
                "function": {"name": tc.name, "arguments": tc.arguments},
            }
        elif tc.arguments:
            call = {"index": tc.index, "function": {"arguments": tc.arguments}}
        else:
            return []
        if self._started:
            return [self._chunk(delta={"tool_calls": [call]})]
        self._started = True
        role = {"role": "assistant", "content": None, "refusal": None}
        return [self._chunk(delta={**role, "tool_calls": [call]})]

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        return [self._chunk(delta={"role": "assistant", "content": "", "refusal": None})]

    def end(self) -> list[bytes]:
        """The stream ended well: finish reason, usage (when asked for), ``[DONE]``."""
        u = self.t.usage
        out = self._start()
        ext = router_extension(
            self.request_id, u, self.t.decision, len(self.t.failovers), self.t.backend
        )
        out.append(self._chunk(delta={}, finish=finish_reason(u), extension=ext))
        if self.include_usage:
            out.append(self._chunk(delta=None, usage=usage_body(u)))
        out.append(DONE)
        return out

    def error(self, code: str, http_status: int, message: str) -> list[bytes]:
        return [event(error_body(http_status, message, param=None, code=code))]


class RouterEventStream:
    def __init__(self, request_id: str, *, tracker: Tracker) -> None:
        self.request_id = request_id
        self.t = tracker

    def _frame(self, kind: str, **fields: Any) -> bytes:
        return event({"type": kind, "request_id": self.request_id, **fields}, kind)

    def add(self, ev: rpb.GenerateEvent, kind: str) -> list[bytes]:
        if kind == "delta":
            return [self._frame("delta", text=ev.delta.text, tokens=ev.delta.tokens)]
        if kind == "tool_call":
            return [self._frame("tool_call", **tool_call_delta_dict(ev.tool_call))]
        if kind == "decision":
            return [self._frame("decision", decision=decision_dict(ev.decision))]
        if kind == "failover":
            return [self._frame("failover", failover=failover_dict(ev.failover))]
        if kind == "usage":
            calls = [tool_call_dict(c) for c in self.t.calls.calls()]
            return [self._frame("usage", usage=usage_dict(ev.usage), tool_calls=calls)]
        return []

    def end(self) -> list[bytes]:
        return []  # the usage event was the last

    def error(self, code: str, http_status: int, message: str) -> list[bytes]:
        return [self._frame("error", status=code, http_status=http_status, message=message)]
