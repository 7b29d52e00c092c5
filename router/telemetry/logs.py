"""Structured logs: the per-request line and the JSON formatter.

Every RPC of ours ends with one record on the ``router.requests`` logger whose message is
a :class:`RequestLine`. In JSON mode (:class:`JsonFormatter`) its fields become top-level
keys of the line; in text mode it renders as ``key=value`` pairs. Nothing here formats a
line unless the record is emitted.

What a request line holds: ids, tenant, method, status, sizes, the decision, the serving
backend, timings, tokens, cost, failovers. Never prompt or completion text (unless
``telemetry.logs.content`` is switched on for debugging), never an API key or a provider
credential: the authenticator and adapters never put them into messages, and this module
only writes the fields it is given.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from router.server.context import request_id_var

REQUEST_LOGGER = "router.requests"


class RequestLine:
    """A log message made of fields; ``str()`` renders them as ``key=value``."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        parts = ["request"]
        for k, v in self.fields.items():
            if isinstance(v, dict | list):
                v = json.dumps(v, separators=(",", ":"), ensure_ascii=False)
            elif isinstance(v, float):
                v = f"{v:.3f}".rstrip("0").rstrip(".")
            parts.append(f"{k}={v}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and the fields
    of a :class:`RequestLine` at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
        }
        msg = record.msg
        if isinstance(msg, RequestLine):
            entry["message"] = "request"
            entry.update(msg.fields)
        else:
            entry["message"] = record.getMessage()
            rid = request_id_var.get()
            if rid != "-":
                entry["request_id"] = rid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
