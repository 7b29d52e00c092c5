"""HTTP/1.1 plumbing shared by the provider wire servers (``bedrock_wire``, ``anthropic_wire``).

Real sockets (``asyncio.start_server`` on 127.0.0.1, port 0), keep-alive, request bodies
by Content-Length, responses either whole (Content-Length) or chunked, and a record of each
request with events for "the client went away" and "the response was written completely".
Subclasses implement :meth:`WireHTTPServer.respond`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    424: "Failed Dependency",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    529: "Site Overloaded",
}


class ClientGone(Exception):
    """The client closed the connection before the response was complete."""


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw_body: bytes = b""
    connection: int = 0
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    completed: asyncio.Event = field(default_factory=asyncio.Event)


class ChunkedWriter:
    """Writes one chunked response body, noticing a client that went away."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def head(self, status: int, headers: tuple[tuple[str, str], ...]) -> None:
        lines = [
            f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
            *(f"{k}: {v}" for k, v in headers),
        ]
        self._writer.write(("\r\n".join([*lines, "Transfer-Encoding: chunked", "", ""])).encode())
        await self._writer.drain()

    async def chunk(self, data: bytes) -> None:
        if self._reader.at_eof() or self._writer.is_closing():
            raise ClientGone
        self._writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self._writer.drain()

    async def end(self) -> None:
        self._writer.write(b"0\r\n\r\n")
        await self._writer.drain()

    def abort(self) -> None:
        """Drop the connection mid-body (no terminating chunk)."""
        self._writer.transport.abort()

    async def sleep(self, seconds: float) -> None:
        """Sleep, but notice a client that hangs up meanwhile."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            if self._reader.at_eof() or self._writer.is_closing():
                raise ClientGone
            await asyncio.sleep(min(0.02, max(0.0, end - loop.time())))


class WireHTTPServer:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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

    async def __aenter__(self) -> WireHTTPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def respond(
        self, request: Recorded, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        raise NotImplementedError

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        connection = self._connections
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    return
                request.connection = connection
                self.requests.append(request)
                try:
                    await self.respond(request, reader, writer)
                except (ClientGone, ConnectionError):
                    request.disconnected.set()
                    return
                if writer.is_closing():
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> Recorded | None:
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
    try:
        body = json.loads(data) if data else {}
    except ValueError:
        body = None
    return Recorded(method=method, path=path, headers=headers, body=body, raw_body=data)


async def send_whole(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    headers: tuple[tuple[str, str], ...] = (),
) -> None:
    lines = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
        *(f"{k}: {v}" for k, v in headers),
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    writer.write("\r\n".join(lines).encode() + body)
    await writer.drain()
