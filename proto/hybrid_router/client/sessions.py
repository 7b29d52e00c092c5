"""Conversation sessions (``SessionService``): the requests both clients send, checked on
the way, and the session id rule.

A session holds a conversation for a stateless caller: a ``GenerateRequest`` with
``session_id`` (:class:`~hybrid_router.client.options.RequestOptions`) sends only the new
turn, and the router adds the stored history, fitted to each backend's window. The
clients' ``create_session``, ``get_session``, ``list_sessions``, ``iter_sessions`` and
``delete_session`` build their requests here, so a wrong value raises
:class:`~hybrid_router.client.errors.OptionError` naming it before anything is sent
(``session_id: 1-128 of letters, ...``, ``strategy: 'window' is not one of sliding,
summarize, strict``). The router checks the rest (the TTL's range, the system prompt's
size) and names the field in its INVALID_ARGUMENT.
"""

from __future__ import annotations

import re

from hybrid_router.client.enums import CONTEXT_STRATEGIES
from hybrid_router.client.errors import OptionError
from hybrid_router.v1 import sessions_pb2 as spb

__all__ = [
    "SESSION_ID_RULE",
    "check_session_id",
    "create_request",
    "delete_request",
    "get_request",
    "list_request",
    "valid_session_id",
]

#: What a session id is (the router's rule: ``CreateSessionRequest.session_id``).
SESSION_ID_RULE = "1-128 of letters, digits, '-', '_', '.', ':' (starting with a letter or digit)"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_UINT32_MAX = 2**32 - 1


def valid_session_id(session_id: str) -> bool:
    """Whether the router takes ``session_id`` as a session's id."""
    return bool(_ID.fullmatch(session_id))


def check_session_id(session_id: str, option: str = "session_id") -> str:
    """``session_id`` when valid, else :class:`OptionError` naming ``option``."""
    if not valid_session_id(session_id):
        shown = f"{session_id[:40]!r}{'...' if len(session_id) > 40 else ''}"
        raise OptionError(option, f"{SESSION_ID_RULE}, got {shown}")
    return session_id


def _uint32(option: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(option, f"must be a whole number, got {value!r}")
    if value < 0:
        raise OptionError(option, f"must be >= 0, got {value!r}")
    if value > _UINT32_MAX:
        raise OptionError(option, f"must be at most {_UINT32_MAX}, got {value!r}")
    return value


def create_request(
    session_id: str = "", *, system: str = "", ttl_s: int = 0, strategy: str = ""
) -> spb.CreateSessionRequest:
    """``session_id`` "" lets the router choose one; ``ttl_s`` 0 and ``strategy`` "" leave
    the router's defaults (``sessions.ttl_s``; the tenant's, else ``sessions.strategy``)."""
    return spb.CreateSessionRequest(
        session_id=check_session_id(session_id) if session_id else "",
        ttl_s=_uint32("ttl_s", ttl_s),
        system=system,
        strategy=CONTEXT_STRATEGIES.number(strategy, "strategy"),  # type: ignore[arg-type]
    )


def get_request(session_id: str) -> spb.GetSessionRequest:
    return spb.GetSessionRequest(session_id=check_session_id(session_id))


def list_request(page_size: int = 0, page_token: str = "") -> spb.ListSessionsRequest:
    """``page_size`` 0: the router's (100); ``page_token``: the previous page's
    ``next_page_token``."""
    return spb.ListSessionsRequest(page_size=_uint32("page_size", page_size), page_token=page_token)


def delete_request(session_id: str) -> spb.DeleteSessionRequest:
    return spb.DeleteSessionRequest(session_id=check_session_id(session_id))
