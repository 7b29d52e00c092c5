"""A local server speaking Bedrock Runtime's Converse / ConverseStream wire format.

``POST /model/{modelId}/converse-stream`` answers ``200`` with
``Content-Type: application/vnd.amazon.eventstream`` and a chunked body of binary event
stream messages, each framed as AWS documents it:

    total length (uint32) | headers length (uint32) | prelude CRC32 (uint32)
    headers: name length (uint8) | name | value type (uint8, 7 = string) |
             value length (uint16) | value
    payload (JSON)
    message CRC32 (uint32, over everything before it)

Events carry ``:message-type: event``, ``:event-type`` (``messageStart``,
``contentBlockDelta``, ``contentBlockStop``, ``messageStop``, ``metadata``) and
``:content-type: application/json``; modelled exceptions inside the stream carry
``:message-type: exception`` and ``:exception-type`` (``throttlingException``,
``modelStreamErrorException``...). Errors before the stream are ordinary rest-json errors:
an HTTP status, ``x-amzn-ErrorType: <Code>:<namespace>`` and ``{"message": ...}``.

Tools: a scenario's ``tool_calls`` (``wire_calls.WireCall``) follow the text block (left out
when the scenario has no text), each as a ``contentBlockStart`` with
``start.toolUse`` (``toolUseId``, ``name``), one ``contentBlockDelta`` with
``delta.toolUse.input`` per fragment of the arguments, and a ``contentBlockStop``; Converse
answers them as ``toolUse`` content blocks with the parsed ``input``. Requests are checked
as Converse checks them (:func:`tool_request_error`): tool blocks need a ``toolConfig``,
``toolChoice`` is one of ``auto`` / ``any`` / ``tool`` naming a defined tool, roles
alternate, every ``toolUse`` is answered by a ``toolResult`` in the next turn and no turn
has more results than the turn before had calls. The offence is a 400
``ValidationException`` in Bedrock's words. ``requests[i].body`` is what the client sent.

The encoder (``eventstream_codec``, shared with ``greengrass_ipc_wire``) is written from
that description, not taken from botocore (which only decodes); the tests point a real
boto3 ``bedrock-runtime`` client at this server, so botocore's parser checks every frame
and error this server sends.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

from eventstream_codec import encode_message, string_headers
from httpwire import ChunkedWriter, Recorded, WireHTTPServer, send_whole
from wire_calls import WireCall


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One ``application/vnd.amazon.eventstream`` message (string headers)."""
    return encode_message(string_headers(list(headers.items())), payload)


def event_frame(event_type: str, body: dict[str, Any]) -> bytes:
    # Bedrock pads events with a "p" field of varying length (it hides token sizes);
    # clients must ignore members they do not know.
    payload = json.dumps({**body, "p": "abcdefghij"[: len(event_type) % 10]}).encode()
    return encode_frame(
        {
            ":event-type": event_type,
            ":content-type": "application/json",
            ":message-type": "event",
        },
        payload,
    )


def exception_frame(exception_type: str, message: str) -> bytes:
    return encode_frame(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps({"message": message}).encode(),
    )


@dataclass(frozen=True)
class Scenario:
    """What the server answers to one Converse(Stream) call."""

    #: Non-200: a rest-json error with this code and message.
    status: int = 200
    error_code: str = ""
    message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    deltas: tuple[str, ...] = ("Hello", ",", " world")
    stop_reason: str = "end_turn"
    #: (inputTokens, outputTokens) in the metadata event; None: no metadata event.
    usage: tuple[int, int] | None = (12, 3)
    send_message_stop: bool = True
    #: Seconds after the headers before the first event (a slow first token).
    first_event_delay_s: float = 0.0
    delta_interval_s: float = 0.0
    #: A modelled exception event after the deltas instead of messageStop, e.g.
    #: ("modelStreamErrorException", "...").
    stream_exception: tuple[str, str] | None = None
    #: After this many deltas, drop the connection mid-body.
    cut_after: int | None = None
    #: Seconds before the response status line (a slow service).
    first_byte_delay_s: float = 0.0
    #: toolUse blocks after the text (use ``stop_reason="tool_use"``).
    tool_calls: tuple[WireCall, ...] = ()


class BedrockWire(WireHTTPServer):
    def __init__(self) -> None:
        super().__init__()
        self.scenarios: dict[str, Scenario] = {}
        self.default = Scenario()

    def model_id(self, request: Recorded) -> str:
        parts = request.path.split("/")
        return urllib.parse.unquote(parts[2]) if len(parts) > 3 else ""

    async def respond(
        self, request: Recorded, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        parts = request.path.split("/")
        if request.method != "POST" or len(parts) != 4 or parts[1] != "model":
            await self._error(writer, 404, "UnknownOperationException", "no such operation")
            request.completed.set()
            return
        sc = self.scenarios.get(self.model_id(request), self.default)
        if sc.first_byte_delay_s:
            await asyncio.sleep(sc.first_byte_delay_s)
        invalid = tool_request_error(request.body if isinstance(request.body, dict) else {})
        if invalid is not None:
            await self._error(writer, 400, "ValidationException", invalid)
        elif sc.status != 200:
            await self._error(writer, sc.status, sc.error_code, sc.message, sc.headers)
        elif parts[3] == "converse":
            await self._converse(writer, sc)
        elif parts[3] == "converse-stream":
            await self._stream(ChunkedWriter(reader, writer), sc)
        else:
            await self._error(writer, 404, "UnknownOperationException", "no such operation")
        request.completed.set()

    async def _error(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        code: str,
        message: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        await send_whole(
            writer,
            status,
            json.dumps({"message": message}).encode(),
            (
                ("Content-Type", "application/json"),
                ("x-amzn-RequestId", str(uuid.uuid4())),
                (
                    "x-amzn-ErrorType",
                    f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                ),
                *headers,
            ),
        )

    async def _converse(self, writer: asyncio.StreamWriter, sc: Scenario) -> None:
        body: dict[str, Any] = {
            "output": {"message": {"role": "assistant", "content": self._content(sc)}},
            "stopReason": sc.stop_reason,
            "usage": {
                "inputTokens": (sc.usage or (0, 0))[0],
                "outputTokens": (sc.usage or (0, 0))[1],
                "totalTokens": sum(sc.usage or (0, 0)),
            },
            "metrics": {"latencyMs": 42},
        }
        await send_whole(
            writer,
            200,
            json.dumps(body).encode(),
            (("Content-Type", "application/json"), ("x-amzn-RequestId", str(uuid.uuid4()))),
        )

    @staticmethod
    def _content(sc: Scenario) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        if sc.deltas or not sc.tool_calls:
            content.append({"text": "".join(sc.deltas)})
        for c in sc.tool_calls:
            content.append({"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.input}})
        return content

    async def _stream(self, out: ChunkedWriter, sc: Scenario) -> None:
        await out.head(
            200,
            (
                ("Content-Type", "application/vnd.amazon.eventstream"),
                ("x-amzn-RequestId", str(uuid.uuid4())),
            ),
        )
        if sc.first_event_delay_s:
            await out.sleep(sc.first_event_delay_s)
        await out.chunk(event_frame("messageStart", {"role": "assistant"}))
        for index, text in enumerate(sc.deltas):
            if sc.cut_after is not None and index >= sc.cut_after:
                out.abort()
                return
            if index and sc.delta_interval_s:
                await out.sleep(sc.delta_interval_s)
            await out.chunk(
                event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}})
            )
        if sc.stream_exception is not None:
            await out.chunk(exception_frame(*sc.stream_exception))
            await out.end()
            return
        text_block = bool(sc.deltas) or not sc.tool_calls
        if text_block:
            await out.chunk(event_frame("contentBlockStop", {"contentBlockIndex": 0}))
        for block, call in enumerate(sc.tool_calls, start=int(text_block)):
            start = {"toolUse": {"toolUseId": call.id, "name": call.name}}
            await out.chunk(
                event_frame("contentBlockStart", {"start": start, "contentBlockIndex": block})
            )
            for piece in call.fragments:
                delta = {"toolUse": {"input": piece}}
                await out.chunk(
                    event_frame("contentBlockDelta", {"delta": delta, "contentBlockIndex": block})
                )
            await out.chunk(event_frame("contentBlockStop", {"contentBlockIndex": block}))
        if sc.send_message_stop:
            await out.chunk(event_frame("messageStop", {"stopReason": sc.stop_reason}))
        if sc.usage is not None:
            i, o = sc.usage
            usage = {"inputTokens": i, "outputTokens": o, "totalTokens": i + o}
            await out.chunk(event_frame("metadata", {"usage": usage, "metrics": {"latencyMs": 42}}))
        await out.end()


def tool_request_error(body: dict[str, Any]) -> str | None:
    """Converse's ValidationException message for a request whose tools or tool blocks it
    refuses."""
    config = body.get("toolConfig")
    names = []
    if config is not None:
        for i, tool in enumerate(config.get("tools") or ()):
            spec = tool.get("toolSpec") or {}
            if not isinstance((spec.get("inputSchema") or {}).get("json"), dict):
                return f"toolConfig.tools.{i}.toolSpec.inputSchema: a json schema is required"
            names.append(spec.get("name"))
        choice = config.get("toolChoice")
        if choice is not None:
            if len(choice) != 1 or next(iter(choice)) not in ("auto", "any", "tool"):
                return "toolConfig.toolChoice: exactly one of auto, any or tool"
            if "tool" in choice and choice["tool"].get("name") not in names:
                return (
                    f"toolConfig.toolChoice.tool.name: {choice['tool'].get('name')} is not "
                    "a tool in toolConfig.tools"
                )
    previous: list[str] = []
    role = ""
    for i, m in enumerate(body.get("messages") or ()):
        if m.get("role") == role:
            return (
                "A conversation must alternate between user and assistant roles. Make sure "
                "the conversation alternates between user and assistant roles and try again."
            )
        role = m.get("role")
        blocks = m.get("content") or []
        uses = [b["toolUse"]["toolUseId"] for b in blocks if "toolUse" in b]
        results = [b["toolResult"]["toolUseId"] for b in blocks if "toolResult" in b]
        if (uses or results) and config is None:
            return (
                "The toolConfig field must be defined when using toolUse and toolResult "
                "content blocks."
            )
        if len(results) > len(previous):
            return (
                f"The number of toolResult blocks at messages.{i}.content exceeds the number "
                "of toolUse blocks of previous turn."
            )
        missing = [p for p in previous if p not in results]
        if missing:
            return (
                f"Expected toolResult blocks at messages.{i}.content for the following Ids: "
                + ", ".join(missing)
            )
        previous = uses
    return None
