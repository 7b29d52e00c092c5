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
        if sc.status != 200:
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
        message = self._message(sc, model, [{"type": "text", "text": "".join(sc.deltas)}])
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
        await send("content_block_stop", {"type": "content_block_stop", "index": 0})
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
