"""A small incremental parser for Server-Sent Events (the WHATWG ``text/event-stream`` format).

:class:`SSEParser` is fed one line at a time (without its line terminator) and returns an
:class:`SSEEvent` when a blank line completes an event. :class:`SSEDecoder` is fed the body
as it arrives, in chunks of bytes cut anywhere, and returns the events each chunk completes:
lines end with CRLF, LF or CR (a CRLF may be split across chunks), are decoded as UTF-8
(invalid bytes replaced), and a leading byte order mark is dropped. Splitting whole chunks
with ``bytes.split`` costs a fraction of a line iterator's per-line await.

Follows https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
with one deliberate leniency: :meth:`SSEParser.flush` returns an event whose closing blank
line never arrived (the spec discards it). Some OpenAI-compatible servers end the body
right after ``data: [DONE]``; the caller decides whether an unterminated event counts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None
    retry_ms: int | None = None


class SSEParser:
    """Accumulates ``field: value`` lines into events; comments (``:``) are skipped."""

    __slots__ = ("_data", "_event", "_id", "_retry", "_has_data")

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None
        self._has_data = False

    def feed(self, line: str) -> SSEEvent | None:
        """Consume one line; return the completed event on a blank line, else ``None``."""
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None  # comment / keep-alive ping
        name, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value.isdigit():
                self._retry = int(value)
        # any other field name is ignored, as the spec requires
        return None

    def flush(self) -> SSEEvent | None:
        """At end of stream: the pending event, if a ``data`` line was seen without its
        closing blank line."""
        return self._dispatch()

    def _dispatch(self) -> SSEEvent | None:
        if not self._has_data:
            self._event = ""
            return None
        event = SSEEvent(
            data="\n".join(self._data),
            event=self._event or "message",
            id=self._id,
            retry_ms=self._retry,
        )
        self._data = []
        self._event = ""
        self._retry = None
        self._has_data = False
        # ``id`` persists across events (last event id), per the spec.
        return event


class SSEDecoder:
    """Bytes in, events out: :class:`SSEParser` over a body read in arbitrary chunks."""

    __slots__ = ("_parser", "_tail", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._parser = SSEParser()
        #: The bytes of an unterminated line.
        self._tail = b""
        #: The last chunk ended with CR: a LF opening the next one ends no new line.
        self._skip_lf = False
        self._started = False

    def feed(self, data: bytes) -> list[SSEEvent]:
        """The events completed by ``data`` (the next bytes of the body), in order."""
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        if b"\r" in data:
            self._skip_lf = data[-1:] == b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        cut = data.rfind(b"\n")
        if cut < 0:
            self._tail += data
            return []
        if self._tail:
            data = self._tail + data
            cut += len(self._tail)
        self._tail = data[cut + 1 :]
        return self._lines(data[:cut].decode("utf-8", "replace"))

    def end(self) -> list[SSEEvent]:
        """At the end of the body: the events of an unterminated last line and of a last
        event without its closing blank line (see :meth:`SSEParser.flush`)."""
        events = self._lines(self._tail.decode("utf-8", "replace")) if self._tail else []
        self._tail = b""
        event = self._parser.flush()
        if event is not None:
            events.append(event)
        return events

    def _lines(self, text: str) -> list[SSEEvent]:
        if not self._started:
            self._started = True
            if text[:1] == "\ufeff":
                text = text[1:]
        feed = self._parser.feed
        events = []
        for line in text.split("\n"):
            event = feed(line)
            if event is not None:
                events.append(event)
        return events
