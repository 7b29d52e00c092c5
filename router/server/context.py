"""Per-request context in ContextVars: the request id (logs) and the caller (auth)."""

from __future__ import annotations

import logging
from contextvars import ContextVar

from router.security.authn import ANONYMOUS, Principal

request_id_var: ContextVar[str] = ContextVar("hybrid_router_request_id", default="-")
#: The authenticated caller of the current RPC (set by router.server.auth).
principal_var: ContextVar[Principal] = ContextVar("hybrid_router_principal", default=ANONYMOUS)

REQUEST_ID_METADATA = "x-request-id"


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` for format strings such as ``%(request_id)s``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True
