"""What a session is: plain records, no I/O (the stores keep them, router/sessions/store.py).

A session belongs to one tenant: every store keys it by ``(tenant, session_id)``, so a
tenant can never name another's session (a foreign id is simply unknown). Its history is
an append-only list of turns; a turn's ``seq`` is its index, given by the store when it
is appended, so two concurrent appends can never overwrite each other: each lands whole,
in the order the store commits them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

# Session ids a caller may choose: the contract's rule, one copy (hybrid_router.client).
from hybrid_router.client.sessions import SESSION_ID_RULE, valid_session_id

from router.types import ToolCall

__all__ = [
    "SESSION_ID_RULE",
    "SLIDING",
    "STRATEGIES",
    "STRICT",
    "SUMMARIZE",
    "TURN_ROLES",
    "Session",
    "SessionInfo",
    "Summary",
    "ToolCall",
    "Turn",
    "calls_from_json",
    "calls_json",
    "calls_text",
    "new_session_id",
    "valid_session_id",
]

#: Context strategies (``sessions.strategy``, a tenant's ``context_strategy``, a request's
#: ``context_strategy``): what happens when the history does not fit a backend's window.
SLIDING = "sliding"
SUMMARIZE = "summarize"
STRICT = "strict"
STRATEGIES = (SLIDING, SUMMARIZE, STRICT)

#: The roles a stored turn has (the system prompt is the session's, not a turn).
TURN_ROLES = ("user", "assistant", "tool")


def new_session_id() -> str:
    return "s_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation.

    Tool use is stored as turns too: an assistant turn with ``tool_calls`` (its content
    may then be empty), and one ``tool`` turn per result, naming the call it answers
    (``tool_call_id``). Every store keeps the three tool fields only when set, so turns
    stored before they existed read back with them empty."""

    #: ``user``, ``assistant`` or ``tool`` (:data:`TURN_ROLES`).
    role: str
    content: str
    #: When it was appended (Unix ms).
    at_ms: int = 0
    #: The backend that answered (assistant turns).
    backend: str = ""
    #: Its index in the history; set by the store on append (-1 before).
    seq: int = -1
    #: An assistant turn's tool calls (id, tool name, arguments as JSON text).
    tool_calls: tuple[ToolCall, ...] = ()
    #: A tool turn: the call it answers (``ToolCall.id``), and the tool's name (optional).
    tool_call_id: str = ""
    name: str = ""


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


def calls_json(calls: Sequence[ToolCall]) -> str:
    """Tool calls as the stores keep them: a JSON array of ``{"id", "name", "arguments"}``
    ("" for none, so a turn without calls is stored as before they existed)."""
    if not calls:
        return ""
    return json.dumps(
        [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls],
        separators=(",", ":"),
        ensure_ascii=False,
    )


def calls_from_json(value: object) -> tuple[ToolCall, ...]:
    """What :func:`calls_json` wrote (a JSON text or the list it holds); "", None or a
    missing field (a turn stored before tool calls were kept): none. ValueError, naming
    the field, for anything else."""
    if value is None or value == "":
        return ()
    items = json.loads(value) if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError("turn.tool_calls: a stored turn's tool calls must be a JSON array")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("turn.tool_calls: each stored tool call must be a JSON object")
        out.append(
            ToolCall(
                id=str(item.get("id", "")),
                name=str(item.get("name", "")),
                arguments=str(item.get("arguments", "")) or "{}",
            )
        )
    return tuple(out)


def calls_text(calls: Sequence[ToolCall]) -> str:
    """Tool calls as plain text, one ``name(arguments)`` a line (what counting, summaries
    and backends without tools see)."""
    return "\n".join(f"{c.name}({c.arguments})" for c in calls)
