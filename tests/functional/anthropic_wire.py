"""A local server speaking the Anthropic Messages API wire format (``POST /v1/messages``).

Streaming answers are Server-Sent Events with both an ``event:`` name and a JSON ``data:``
line whose ``type`` repeats it, in the order Anthropic documents:

    message_start, content_block_start, ping, content_block_delta*, content_block_stop,
    message_delta (stop_reason, cumulative usage), message_stop

An ``error`` event (``{"type": "error", "error": {"type": "overloaded_error", ...}}``) can
arrive mid-stream. HTTP errors carry ``{"type": "error", "error": {"type", "message"},
"request_id"}`` with the documented status (400 invalid_request_error, 401
authentication_error, 403 permission_error, 404 not_found_error, 413 request_too_large,
429 rate_limit_error, 500 api_error, 529 overloaded_error) and ``retry-after`` when given.

Tools: a scenario's ``tool_calls`` (``wire_calls.WireCall``) follow the text block (which is
left out when the scenario has no text) as ``tool_use`` blocks: ``content_block_start``
with ``{"type": "tool_use", "id", "name", "input": {}}``, one ``input_json_delta`` per
fragment of the arguments, ``content_block_stop``. Requests are checked as the Messages
API checks them (:func:`tool_request_error`): ``tool_choice`` and tool blocks need
``tools``, an input schema is an object, a named choice names a tool, every ``tool_use``
is answered by a ``tool_result`` in the next turn and every ``tool_result`` answers one in
the turn before. The offence is a 400 ``invalid_request_error`` in Anthropic's words.
``requests[i].body`` is what the client sent.

The official ``anthropic`` SDK is run against this server in the tests, so the server
cannot share a misreading of the format with the adapter.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

from httpwire import ChunkedWriter, Recorded, WireHTTPServer, send_whole
from wire_calls import WireCall

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Scenario:
    status: int = 200
    message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    deltas: tuple[str, ...] = ("Hello", ",", " world")
    stop_reason: str = "end_turn"
    input_tokens: int = 25
    output_tokens: int = 3
    send_message_stop: bool = True
    first_event_delay_s: float = 0.0
    delta_interval_s: float = 0.0
    #: An ``error`` event after the deltas, e.g. ("overloaded_error", "Overloaded").
    stream_error: tuple[str, str] | None = None
    cut_after: int | None = None
    #: tool_use blocks after the text (use ``stop_reason="tool_use"``).
    tool_calls: tuple[WireCall, ...] = ()


class AnthropicWire(WireHTTPServer):
    def __init__(self) -> None:
        super().__init__()
        self.scenarios: dict[str, Scenario] = {}
        self.default = Scenario()
        #: When set, requests whose key (x-api-key or bearer token) differs get 401.
        self.valid_keys: set[str] | None = None

    async def respond(
        self, request: Recorded, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if request.method != "POST" or request.path != "/v1/messages":
            await self._error(writer, 404, f"no route {request.method} {request.path}")
            request.completed.set()
            return
        body = request.body if isinstance(request.body, dict) else {}
        # The documented header is x-api-key; recent SDKs send the key as a bearer token.
        bearer = request.headers.get("authorization", "")
        key = request.headers.get("x-api-key") or bearer.removeprefix("Bearer ")
        if self.valid_keys is not None and key not in self.valid_keys:
            await self._error(writer, 401, "invalid x-api-key")
            request.completed.set()
            return
        sc = self.scenarios.get(str(body.get("model", "")), self.default)
        invalid = tool_request_error(body)
        if invalid is not None:
            await self._error(writer, 400, invalid)
        elif sc.status != 200:
            await self._error(writer, sc.status, sc.message, sc.headers)
        elif body.get("stream"):
            await self._stream(ChunkedWriter(reader, writer), sc, str(body.get("model")))
        else:
            await self._whole(writer, sc, str(body.get("model")))
        request.completed.set()

    async def _error(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        message: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        body = {
            "type": "error",
            "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
            "request_id": f"req_{uuid.uuid4().hex[:24]}",
        }
        await send_whole(
            writer,
            status,
            json.dumps(body).encode(),
            (("Content-Type", "application/json"), *headers),
        )

    def _message(self, sc: Scenario, model: str, content: list[Any]) -> dict[str, Any]:
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "content": content,
            "model": model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": sc.input_tokens, "output_tokens": 1},
        }

    async def _whole(self, writer: asyncio.StreamWriter, sc: Scenario, model: str) -> None:
        content: list[Any] = []
        if sc.deltas or not sc.tool_calls:
            content.append({"type": "text", "text": "".join(sc.deltas)})
        content += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": c.input}
            for c in sc.tool_calls
        ]
        message = self._message(sc, model, content)
        message["stop_reason"] = sc.stop_reason
        message["usage"]["output_tokens"] = sc.output_tokens
        await send_whole(
            writer, 200, json.dumps(message).encode(), (("Content-Type", "application/json"),)
        )

    async def _stream(self, out: ChunkedWriter, sc: Scenario, model: str) -> None:
        await out.head(
            200,
            (
                ("Content-Type", "text/event-stream; charset=utf-8"),
                ("Cache-Control", "no-cache"),
                ("request-id", f"req_{uuid.uuid4().hex[:24]}"),
            ),
        )

        async def send(event: str, data: dict[str, Any]) -> None:
            await out.chunk(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        if sc.first_event_delay_s:
            await out.sleep(sc.first_event_delay_s)
        await send(
            "message_start", {"type": "message_start", "message": self._message(sc, model, [])}
        )
        text_block = bool(sc.deltas) or not sc.tool_calls
        if text_block:
            await send(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        await send("ping", {"type": "ping"})
        for index, text in enumerate(sc.deltas):
            if sc.cut_after is not None and index >= sc.cut_after:
                out.abort()
                return
            if index and sc.delta_interval_s:
                await out.sleep(sc.delta_interval_s)
            await send(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
            )
        if sc.stream_error is not None:
            etype, message = sc.stream_error
            await send("error", {"type": "error", "error": {"type": etype, "message": message}})
            await out.end()
            return
        if text_block:
            await send("content_block_stop", {"type": "content_block_stop", "index": 0})
        for block, call in enumerate(sc.tool_calls, start=int(text_block)):
            opening = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            await send(
                "content_block_start",
                {"type": "content_block_start", "index": block, "content_block": opening},
            )
            for piece in call.fragments:
                delta = {"type": "input_json_delta", "partial_json": piece}
                await send(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": block, "delta": delta},
                )
            await send("content_block_stop", {"type": "content_block_stop", "index": block})
        await send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": sc.stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": sc.output_tokens},
            },
        )
        if sc.send_message_stop:
            await send("message_stop", {"type": "message_stop"})
        await out.end()


def tool_request_error(body: dict[str, Any]) -> str | None:
    """The Messages API's 400 message for a request whose tools or tool blocks it refuses."""
    tools = body.get("tools") or []
    names = [t.get("name") for t in tools if isinstance(t, dict)]
    for i, tool in enumerate(tools):
        schema = tool.get("input_schema") if isinstance(tool, dict) else None
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{i}.custom.input_schema.type: Input should be 'object'"
    choice = body.get("tool_choice")
    if choice is not None:
        if not tools:
            return "tool_choice: tool_choice may only be specified while providing tools."
        if choice.get("type") not in ("auto", "any", "tool", "none"):
            return f"tool_choice.type: Input tag {choice.get('type')!r} found is not valid"
        if choice.get("type") == "tool" and choice.get("name") not in names:
            return f"tool_choice.name: Tool {choice.get('name')!r} not found in tools"
    previous: list[str] = []
    for i, m in enumerate(body.get("messages") or ()):
        content = m.get("content")
        blocks = content if isinstance(content, list) else []
        kinds = {b.get("type") for b in blocks}
        if kinds & {"tool_use", "tool_result"} and not tools:
            return "Requests which include `tool_use` or `tool_result` blocks must define tools."
        results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
        for j, b in enumerate(blocks):
            if b.get("type") == "tool_result" and b.get("tool_use_id") not in previous:
                return (
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {b.get('tool_use_id')}. Each `tool_result` block "
                    "must have a corresponding `tool_use` block in the previous message."
                )
            if b.get("type") == "tool_use" and not isinstance(b.get("input"), dict):
                return (
                    f"messages.{i}.content.{j}.tool_use.input: Input should be a valid dictionary"
                )
        missing = [p for p in previous if p not in results]
        if missing:
            return (
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        previous = [b.get("id") for b in blocks if b.get("type") == "tool_use"]
    return None
