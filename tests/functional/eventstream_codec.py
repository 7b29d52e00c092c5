"""AWS event stream framing (``application/vnd.amazon.eventstream``), both ways.

One message, as AWS documents it (and aws-c-event-stream implements it)::

    prelude:  total length (uint32) | headers length (uint32) | prelude CRC32 (uint32)
    headers:  name length (uint8) | name | value type (uint8) | value
    payload
    message CRC32 (uint32, over everything before it)

Header value types: 0 true, 1 false (no value bytes), 2 byte, 3 int16, 4 int32, 5 int64,
6 byte array and 7 string (uint16 length, then the bytes), 8 timestamp (int64 ms),
9 uuid (16 bytes). CRC32 is the IEEE polynomial (``binascii.crc32``).

Written from that description, not taken from an SDK: the wire servers built on it
(``bedrock_wire``, ``greengrass_ipc_wire``) are checked by the real clients (botocore's
event stream parser, awscrt's event-stream RPC client), and :func:`read_message` checks
both CRCs of what those clients send.
"""

from __future__ import annotations

import asyncio
import binascii
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

TRUE, FALSE, BYTE, INT16, INT32, INT64, BYTES, STRING, TIMESTAMP, UUID = range(10)

_FIXED = {BYTE: "!b", INT16: "!h", INT32: "!i", INT64: "!q", TIMESTAMP: "!q"}
#: aws-c-event-stream's limits: a message of at most 16 MiB, headers of at most 128 KiB.
MAX_MESSAGE = 16 * 1024 * 1024
MAX_HEADERS = 128 * 1024


class FrameError(ValueError):
    """A message that is not valid event stream framing (bad CRC, bad lengths)."""


@dataclass(frozen=True)
class Header:
    name: str
    type: int
    value: Any

    @classmethod
    def string(cls, name: str, value: str) -> Header:
        return cls(name, STRING, value)

    @classmethod
    def int32(cls, name: str, value: int) -> Header:
        return cls(name, INT32, value)


@dataclass(frozen=True)
class Message:
    headers: tuple[Header, ...]
    payload: bytes

    def get(self, name: str, type_: int | None = None) -> Any:
        """The first header called ``name`` (case-insensitive) of that type; None if absent."""
        low = name.lower()
        for h in self.headers:
            if h.name.lower() == low and (type_ is None or h.type == type_):
                return h.value
        return None


def _encode_header(h: Header) -> bytes:
    name = h.name.encode()
    if not 0 < len(name) < 256:
        raise ValueError(f"header name {h.name!r}: 1 to 255 bytes")
    out = struct.pack("!B", len(name)) + name + struct.pack("!B", h.type)
    if h.type in (TRUE, FALSE):
        return out
    if h.type in _FIXED:
        return out + struct.pack(_FIXED[h.type], h.value)
    if h.type in (BYTES, STRING):
        raw = h.value.encode() if h.type == STRING else bytes(h.value)
        return out + struct.pack("!H", len(raw)) + raw
    if h.type == UUID:
        return out + (h.value.bytes if isinstance(h.value, uuid.UUID) else bytes(h.value))
    raise ValueError(f"header {h.name!r}: unknown value type {h.type}")


def encode_message(headers: Iterable[Header], payload: bytes = b"") -> bytes:
    """One framed message, both CRCs computed."""
    head = b"".join(_encode_header(h) for h in headers)
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack("!II", total, len(head))
    prelude += struct.pack("!I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + head + payload
    return message + struct.pack("!I", binascii.crc32(message) & 0xFFFFFFFF)


def decode_headers(raw: bytes) -> tuple[Header, ...]:
    out: list[Header] = []
    i = 0
    try:
        while i < len(raw):
            n = raw[i]
            name = raw[i + 1 : i + 1 + n].decode()
            i += 1 + n
            t = raw[i]
            i += 1
            if t in (TRUE, FALSE):
                out.append(Header(name, t, t == TRUE))
            elif t in _FIXED:
                fmt = _FIXED[t]
                size = struct.calcsize(fmt)
                (value,) = struct.unpack(fmt, raw[i : i + size])
                out.append(Header(name, t, value))
                i += size
            elif t in (BYTES, STRING):
                (length,) = struct.unpack("!H", raw[i : i + 2])
                data = raw[i + 2 : i + 2 + length]
                if len(data) != length:
                    raise FrameError(f"header {name!r}: value runs past the headers")
                out.append(Header(name, t, data.decode() if t == STRING else data))
                i += 2 + length
            elif t == UUID:
                out.append(Header(name, t, uuid.UUID(bytes=raw[i : i + 16])))
                i += 16
            else:
                raise FrameError(f"header {name!r}: unknown value type {t}")
    except (IndexError, struct.error, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, FrameError):
            raise
        raise FrameError(f"malformed headers: {exc}") from None
    return tuple(out)


def decode_message(frame: bytes) -> Message:
    """One whole framed message -> Message; FrameError if a CRC or a length is wrong."""
    if len(frame) < 16:
        raise FrameError(f"{len(frame)} bytes: shorter than the smallest message (16)")
    total, head_len, prelude_crc = struct.unpack("!III", frame[:12])
    if binascii.crc32(frame[:8]) & 0xFFFFFFFF != prelude_crc:
        raise FrameError("prelude CRC32 mismatch")
    if total != len(frame) or head_len > total - 16:
        raise FrameError(f"lengths: total {total}, headers {head_len}, frame {len(frame)}")
    (msg_crc,) = struct.unpack("!I", frame[-4:])
    if binascii.crc32(frame[:-4]) & 0xFFFFFFFF != msg_crc:
        raise FrameError("message CRC32 mismatch")
    return Message(decode_headers(frame[12 : 12 + head_len]), frame[12 + head_len : -4])


async def read_message(reader: asyncio.StreamReader) -> Message:
    """The next message from a stream; IncompleteReadError at EOF, FrameError if invalid.

    The prelude CRC is checked before the rest is read, as aws-c-event-stream does, so a
    corrupt length never makes the reader wait for bytes that will not come.
    """
    prelude = await reader.readexactly(12)
    total, head_len, crc = struct.unpack("!III", prelude)
    if binascii.crc32(prelude[:8]) & 0xFFFFFFFF != crc:
        raise FrameError("prelude CRC32 mismatch")
    if not 16 <= total <= MAX_MESSAGE or head_len > min(total - 16, MAX_HEADERS):
        raise FrameError(f"lengths: total {total}, headers {head_len}")
    rest = await reader.readexactly(total - 12)
    return decode_message(prelude + rest)


def corrupt(frame: bytes) -> bytes:
    """The same frame with its message CRC flipped (a fault to inject)."""
    return frame[:-4] + bytes(b ^ 0xFF for b in frame[-4:])


def string_headers(pairs: Sequence[tuple[str, str]]) -> list[Header]:
    return [Header.string(k, v) for k, v in pairs]
