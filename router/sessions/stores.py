"""``open_store``: the session store ``sessions.store`` names, and the rules every store
shares (which names may form a key, when a session has expired, where SQLite's file goes).

Only the chosen store's module is imported (redis-py and boto3 load only when configured);
the environment is a mapping passed in and read when the store is opened, never at import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from router.errors import InvalidRequest
from router.sessions.model import SessionInfo, valid_session_id

if TYPE_CHECKING:
    from router.config import SessionsConfig
    from router.sessions.store import SessionStore

#: Tenant names a store accepts in a key: "" (no auth) or 1-128 of letters, digits, ``.``,
#: ``_``, ``:``, ``-``, starting with a letter or digit. None of the stores' separators
#: (``{``, ``}``, ``/``, ``#``) can occur in a tenant or a session id.
_TENANT = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._:-]{0,127})?")


def valid_names(tenant: str, session_id: str) -> bool:
    """Whether ``(tenant, session_id)`` may form a key. A store treats any other pair as a
    session that does not exist (reads: None, append: SessionNotFound)."""
    return bool(_TENANT.fullmatch(tenant)) and valid_session_id(session_id)


def require_names(tenant: str, session_id: str) -> None:
    """InvalidRequest naming the bad field (``create``)."""
    if not _TENANT.fullmatch(tenant):
        raise InvalidRequest("tenant", f"{tenant!r} is not a valid tenant name")
    if not valid_session_id(session_id):
        raise InvalidRequest(
            "session_id",
            f"{session_id!r} is not a valid session id: 1-128 of letters, digits, '-', '_', "
            "'.', ':', starting with a letter or digit",
        )


def expired(expires_ms: int, now_ms: int) -> bool:
    """A session is gone from its ``expires_ms`` on (every store uses this one rule)."""
    return expires_ms <= now_ms


def new_info(info: SessionInfo, default_ttl_s: int) -> SessionInfo:
    """``info`` as a store keeps it at ``create``: ``ttl_s`` defaulted, ``expires_ms`` set
    (``created_ms + ttl_s`` when 0), ``updated_ms`` at least ``created_ms``, no turns."""
    ttl_s = info.ttl_s if info.ttl_s > 0 else default_ttl_s
    expires_ms = info.expires_ms if info.expires_ms > 0 else info.created_ms + ttl_s * 1000
    return SessionInfo(
        tenant=info.tenant,
        session_id=info.session_id,
        created_ms=info.created_ms,
        updated_ms=max(info.updated_ms, info.created_ms),
        expires_ms=expires_ms,
        ttl_s=ttl_s,
        system=info.system,
        strategy=info.strategy,
        turn_count=0,
    )


def default_sqlite_path(environ: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME/hybrid-router/sessions.sqlite3``, else
    ``~/.local/state/hybrid-router/sessions.sqlite3`` (XDG: a relative value is ignored)."""
    state = environ.get("XDG_STATE_HOME", "").strip()
    if state and Path(state).is_absolute():
        base = Path(state)
    else:
        base = home(environ) / ".local" / "state"
    return base / "hybrid-router" / "sessions.sqlite3"


def home(environ: Mapping[str, str]) -> Path:
    value = environ.get("HOME", "").strip()
    return Path(value) if value else Path.home()


def open_store(cfg: SessionsConfig, environ: Mapping[str, str]) -> SessionStore:
    """The store ``cfg.store`` names, built from its section (``env:VAR`` references read
    from ``environ`` now; a bad one is a ConfigError naming the key). Nothing is reached
    yet: the first call connects (``ping`` checks)."""
    if cfg.store == "redis":
        from router.config import resolve_ref
        from router.sessions.redis import RedisSessionStore

        url = resolve_ref(
            cfg.redis.url,
            env=environ,
            key="sessions.redis.url",
            fix="set it to the Redis URL (redis://host:6379/0)",
        )
        return RedisSessionStore(
            url,
            key_prefix=cfg.redis.key_prefix,
            timeout_s=cfg.redis.timeout_s,
            ttl_s=cfg.ttl_s,
            max_turns=cfg.max_turns,
        )
    if cfg.store == "dynamodb":
        from router.sessions.dynamodb import DynamoDbSessionStore

        return DynamoDbSessionStore(
            cfg.dynamodb.table,
            region=cfg.dynamodb.region,
            endpoint_url=cfg.dynamodb.endpoint_url,
            ttl_s=cfg.ttl_s,
            max_turns=cfg.max_turns,
        )
    from router.sessions.sqlite import SqliteSessionStore

    return SqliteSessionStore(
        cfg.sqlite.path, ttl_s=cfg.ttl_s, max_turns=cfg.max_turns, environ=environ
    )
