"""A small HTTP/1.1 server that speaks the OpenAI chat-completions wire format.

It exists for the failures a real llama.cpp server cannot be made to produce on demand
(429 with Retry-After, 5xx, 401/403, context-length bodies, an error inside the stream,
a stream cut mid-way, a slow first byte) and to observe that a client disconnect reaches
the server. It serves real SSE over real sockets (``asyncio.start_server``, chunked
transfer encoding, keep-alive), in the shape OpenAI documents:

    data: {"id": ..., "object": "chat.completion.chunk", "choices": [{"delta": ...}], ...}
    ...
    data: {... "choices": [], "usage": {...}}      (only with stream_options.include_usage)
    data: [DONE]

Each request's ``model`` picks a :class:`Scenario` (``WireServer.scenarios``); unknown
models get ``WireServer.default``. The official ``openai`` SDK is run against this server
in the tests, so the format is checked by a client we did not write.

Tools: a scenario's ``tool_calls`` (``wire_calls.WireCall``) are streamed after the content
as OpenAI streams them, a first ``delta.tool_calls`` fragment with the call's ``index``,
``id``, ``type`` and name (arguments ``""``), then one fragment per piece of the
arguments (``index`` + ``function.arguments``). Requests are checked as OpenAI checks them
(:func:`tool_request_error`): a ``tool`` message must answer a preceding assistant's
``tool_calls``, every call must be answered, ``tool_choice`` needs ``tools``, a
``json_schema`` response format needs a name and a schema. The offence is a 400 in
OpenAI's words (``invalid_request_error`` with ``param``). ``requests[i].body`` is what
the client sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from wire_calls import WireCall

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Scenario:
    """What the server answers to one chat-completions request."""

    #: HTTP status; anything but 200 sends ``{"error": error}`` (or ``raw_body``) as JSON.
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    error: dict[str, Any] | None = None
    raw_body: bytes | None = None
    #: 200: content deltas, one chunk each, then a chunk carrying ``finish_reason``.
    deltas: tuple[str, ...] = ("Hello", ",", " world")
    finish_reason: str | None = "stop"
    #: (prompt_tokens, completion_tokens), sent when the client asks with include_usage.
    usage: tuple[int, int] | None = (7, 3)
    send_done: bool = True
    #: Seconds before the status line is written.
    first_byte_delay_s: float = 0.0
    #: Seconds between content deltas.
    delta_interval_s: float = 0.0
    #: After this many deltas, close the socket without ending the chunked body.
    cut_after: int | None = None
    #: An ``{"error": ...}`` event sent after the deltas, then the body ends (no [DONE]).
    stream_error: dict[str, Any] | None = None
    #: 200 with an empty body (llama-cpp-python's answer to an oversized streamed prompt).
    empty_stream: bool = False
    #: Answer to a non-streamed request with this 400 error (llama-cpp-python's non-streamed
    #: answer to an oversized prompt); ``None``: a normal chat.completion.
    non_stream_error: dict[str, Any] | None = None
    #: Tool calls streamed after the content deltas (use ``finish_reason="tool_calls"``).
    tool_calls: tuple[WireCall, ...] = ()


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    #: Which connection carried the request (1, 2, ... in accept order).
    connection: int = 0
    #: Set when the server noticed the client went away before the response was complete.
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when the response was written completely.
    completed: asyncio.Event = field(default_factory=asyncio.Event)


class _ClientGone(Exception):
    pass


class WireServer:
    def __init__(self) -> None:
        self.scenarios: dict[str, Scenario] = {}
        self.default = Scenario()
        self.requests: list[RecordedRequest] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = 0
        self._connections = 0
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve_connection(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._connections += 1
        connection = self._connections
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                request.connection = connection
                self.requests.append(request)
                try:
                    keep_alive = await self._respond(request, reader, writer)
                except (_ClientGone, ConnectionError):
                    request.disconnected.set()
                    return
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(
        self,
        request: RecordedRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        if request.method != "POST" or request.path != "/v1/chat/completions":
            err = {"message": f"no route {request.method} {request.path}", "type": "not_found"}
            await _send_json(writer, 404, {"error": err})
            request.completed.set()
            return True
        model = str(request.body.get("model", ""))
        sc = self.scenarios.get(model, self.default)
        invalid = tool_request_error(request.body)
        if invalid is not None:
            await _send_json(writer, 400, {"error": invalid})
            request.completed.set()
            return True
        if sc.first_byte_delay_s:
            await asyncio.sleep(sc.first_byte_delay_s)
        if sc.status != 200:
            body = sc.raw_body if sc.raw_body is not None else json.dumps({"error": sc.error})
            await _send_json(writer, sc.status, body, sc.headers)
            request.completed.set()
            return True
        if not request.body.get("stream"):
            if sc.non_stream_error is not None:
                await _send_json(writer, 400, {"error": sc.non_stream_error})
            else:
                await _send_json(writer, 200, self._completion(model, sc))
            request.completed.set()
            return True
        await self._stream(request, sc, model, reader, writer)
        return True

    def _completion(self, model: str, sc: Scenario) -> dict[str, Any]:
        prompt, completion = sc.usage or (0, 0)
        return {
            "id": self._next_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": self._message(sc),
                    "logprobs": None,
                    "finish_reason": sc.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    @staticmethod
    def _message(sc: Scenario) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(sc.deltas) or None}
        if sc.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in sc.tool_calls
            ]
        return message

    def _next_id(self) -> str:
        self._seq += 1
        return f"chatcmpl-wire{self._seq}"

    async def _stream(
        self,
        request: RecordedRequest,
        sc: Scenario,
        model: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/event-stream; charset=utf-8\r\n"
            "Cache-Control: no-cache\r\n"
            "Transfer-Encoding: chunked\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in sc.headers)
            + "\r\n"
        )
        writer.write(head.encode())
        await writer.drain()
        if sc.empty_stream:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            request.completed.set()
            return
        options = request.body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        cid, created = self._next_id(), int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            payload: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                payload["usage"] = None
            return payload

        async def send(data: str) -> None:
            if reader.at_eof() or writer.is_closing():
                raise _ClientGone
            body = f"data: {data}\n\n".encode()
            writer.write(b"%x\r\n%s\r\n" % (len(body), body))
            await writer.drain()

        first = "" if sc.deltas or not sc.tool_calls else None
        await send(json.dumps(chunk({"role": "assistant", "content": first}, None)))
        for index, text in enumerate(sc.deltas):
            if sc.cut_after is not None and index >= sc.cut_after:
                writer.transport.abort()
                return
            if index and sc.delta_interval_s:
                await asyncio.sleep(sc.delta_interval_s)
            await send(json.dumps(chunk({"content": text}, None)))
        for index, call in enumerate(sc.tool_calls):
            head_fn = {"name": call.name, "arguments": ""}
            opening = {"index": index, "id": call.id, "type": "function", "function": head_fn}
            await send(json.dumps(chunk({"tool_calls": [opening]}, None)))
            for piece in call.fragments:
                part = {"index": index, "function": {"arguments": piece}}
                await send(json.dumps(chunk({"tool_calls": [part]}, None)))
        if sc.stream_error is not None:
            await send(json.dumps({"error": sc.stream_error}))
        else:
            if sc.finish_reason is not None:
                await send(json.dumps(chunk({}, sc.finish_reason)))
            if include_usage and sc.usage is not None:
                prompt, completion = sc.usage
                final = chunk({}, None)
                final["choices"] = []
                final["usage"] = {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                }
                await send(json.dumps(final))
            if sc.send_done:
                await send("[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        request.completed.set()


def _invalid(message: str, param: str | None = None) -> dict[str, Any]:
    return {"message": message, "type": "invalid_request_error", "param": param, "code": None}


def tool_request_error(body: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI's 400 error object for a request whose tools or tool turns it refuses."""
    tools = body.get("tools")
    if body.get("tool_choice") is not None and not tools:
        return _invalid(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            "tool_choice",
        )
    for i, tool in enumerate(tools or ()):
        tool = tool if isinstance(tool, dict) else {}
        fn = tool.get("function")
        if tool.get("type") != "function" or not isinstance(fn, dict) or not fn.get("name"):
            return _invalid(f"Missing required parameter: 'tools[{i}].function'.", f"tools[{i}]")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        for key in ("name", "schema"):
            if key not in spec:
                where = f"response_format.json_schema.{key}"
                return _invalid(f"Missing required parameter: '{where}'.", where)
    pending: list[str] = []
    for i, m in enumerate(body.get("messages") or ()):
        role = m.get("role")
        if role == "tool":
            if m.get("tool_call_id") not in pending:
                return _invalid(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{i}].role",
                )
            pending.remove(m["tool_call_id"])
            continue
        if pending:
            return _invalid(
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not "
                f"have response messages: {', '.join(pending)}",
                f"messages.[{i}].role",
            )
        if role == "assistant":
            pending = [c.get("id") for c in m.get("tool_calls") or ()]
    return None


async def _read_request(reader: asyncio.StreamReader) -> RecordedRequest | None:
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    data = await reader.readexactly(length) if length else b""
    body = json.loads(data) if data else {}
    return RecordedRequest(method=method, path=path, headers=headers, body=body)


async def _send_json(
    writer: asyncio.StreamWriter,
    status: int,
    body: Any,
    headers: tuple[tuple[str, str], ...] = (),
) -> None:
    data = (
        body
        if isinstance(body, bytes)
        else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
    )
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    )
    writer.write(head.encode() + data)
    await writer.drain()


@contextlib.asynccontextmanager
async def serve_wire() -> AsyncIterator[WireServer]:
    """A started WireServer on 127.0.0.1 (free port), stopped on exit."""
    server = WireServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
