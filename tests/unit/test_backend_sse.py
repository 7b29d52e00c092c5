"""router.backends.sse: the chunk decoder gives the line parser's events however the body
is cut (line terminators, UTF-8 sequences and CRLF pairs split across chunks)."""

from __future__ import annotations

import random

import pytest

from router.backends.sse import SSEDecoder, SSEEvent, SSEParser

BODY = (
    "\ufeff: keep-alive\r\n"
    "event: message_start\r\n"
    'data: {"a": "h\u00e9llo \u4e16\u754c \U0001f600"}\r\n'
    "\r\n"
    "data: line one\n"
    "data: line two\n"
    "id: 7\n"
    "\n"
    "event: ping\rdata: {}\r\r"
    "retry: 250\n"
    "data: [DONE]\n"
    "\n"
    "data: tail without its blank line"
)


def by_lines(body: str) -> list[SSEEvent]:
    """The reference: the body split on CRLF, LF or CR, fed line by line."""
    parser = SSEParser()
    text = body.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    events = [e for e in map(parser.feed, text.split("\n")) if e is not None]
    tail = parser.flush()
    return events + ([tail] if tail is not None else [])


def decoded(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [e for chunk in chunks for e in decoder.feed(chunk)]
    return events + decoder.end()


def test_whole_body_in_one_chunk() -> None:
    events = decoded([BODY.encode()])
    assert events == by_lines(BODY)
    assert [e.event for e in events] == ["message_start", "message", "ping", "message", "message"]
    assert events[1] == SSEEvent(data="line one\nline two", id="7")
    assert events[3].retry_ms == 250 and events[-1].data == "tail without its blank line"


@pytest.mark.parametrize("seed", range(40))
def test_any_cut_gives_the_same_events(seed: int) -> None:
    raw = BODY.encode()
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(raw)), rng.randint(1, 30)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert decoded(chunks) == by_lines(BODY)


def test_byte_by_byte() -> None:
    raw = BODY.encode()
    assert decoded([raw[i : i + 1] for i in range(len(raw))]) == by_lines(BODY)


def test_a_crlf_split_across_chunks_ends_one_line() -> None:
    assert decoded([b"data: a\r", b"\n\r", b"\n"]) == [SSEEvent(data="a")]
    # a CR alone ends the line at once: the event is not held back for the next chunk
    decoder = SSEDecoder()
    assert decoder.feed(b"data: b\r\r") == [SSEEvent(data="b")]
    assert decoder.feed(b"\ndata: c\n\n") == [SSEEvent(data="c")]


def test_invalid_utf8_is_replaced() -> None:
    assert decoded([b"data: \xff\xfe ok\n\n"]) == [SSEEvent(data="\ufffd\ufffd ok")]
