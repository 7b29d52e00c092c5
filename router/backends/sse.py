"""A small incremental parser for Server-Sent Events (the WHATWG ``text/event-stream`` format).

Fed one line at a time (without its line terminator, as ``httpx.Response.aiter_lines``
yields them), it returns an :class:`SSEEvent` when a blank line completes an event.

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
