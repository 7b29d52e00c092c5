"""What a session is: plain records, no I/O (the stores keep them, router/sessions/store.py).

A session belongs to one tenant: every store keys it by ``(tenant, session_id)``, so a
tenant can never name another's session (a foreign id is simply unknown). Its history is
an append-only list of turns; a turn's ``seq`` is its index, given by the store when it
is appended, so two concurrent appends can never overwrite each other: each lands whole,
in the order the store commits them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

# Session ids a caller may choose: the contract's rule, one copy (hybrid_router.client).
from hybrid_router.client.sessions import SESSION_ID_RULE, valid_session_id

__all__ = [
    "SESSION_ID_RULE",
    "SLIDING",
    "STRATEGIES",
    "STRICT",
    "SUMMARIZE",
    "Session",
    "SessionInfo",
    "Summary",
    "Turn",
    "new_session_id",
    "valid_session_id",
]

#: Context strategies (``sessions.strategy``, a tenant's ``context_strategy``, a request's
#: ``context_strategy``): what happens when the history does not fit a backend's window.
SLIDING = "sliding"
SUMMARIZE = "summarize"
STRICT = "strict"
STRATEGIES = (SLIDING, SUMMARIZE, STRICT)


def new_session_id() -> str:
    return "s_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation."""

    #: ``user`` or ``assistant`` (the system prompt is the session's, not a turn).
    role: str
    content: str
    #: When it was appended (Unix ms).
    at_ms: int = 0
    #: The backend that answered (assistant turns).
    backend: str = ""
    #: Its index in the history; set by the store on append (-1 before).
    seq: int = -1


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session without its history."""

    tenant: str
    session_id: str
    created_ms: int
    updated_ms: int
    #: Unix ms after which the session is gone (each append moves it ``ttl_s`` on).
    expires_ms: int
    ttl_s: int
    #: The system prompt sent before the history ("" for none).
    system: str = ""
    #: The session's strategy ("" = the tenant's, else ``sessions.strategy``).
    strategy: str = ""
    turn_count: int = 0


@dataclass(frozen=True, slots=True)
class Session:
    info: SessionInfo
    turns: tuple[Turn, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Summary:
    """A running summary of the turns ``[0, upto)`` of a session, made by ``backend``."""

    upto: int
    text: str
    backend: str = ""
    made_ms: int = 0
