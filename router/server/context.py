"""Per-request context carried through logs: the request id in a ContextVar."""

from __future__ import annotations

import logging
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("hybrid_router_request_id", default="-")

REQUEST_ID_METADATA = "x-request-id"


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` for format strings such as ``%(request_id)s``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True
