"""The one interface every session store implements, and the factory that picks one from
``sessions.store``.

=========  ===========================================================  =====================
store      for                                                          module
=========  ===========================================================  =====================
sqlite     one router and the demo: one file, no server (the default)   router.sessions.sqlite
redis      a fleet of router replicas sharing sessions                  router.sessions.redis
dynamodb   deployments that keep state in AWS (conditional writes, TTL) router.sessions.dynamodb
=========  ===========================================================  =====================

Every method is a coroutine; ``now_ms`` comes from the caller (an injectable clock). A store
that cannot be reached, or answers an error, raises :class:`~router.errors.StoreUnavailable`
naming itself (``name``): the caller gets UNAVAILABLE, and nothing the store had already
accepted is lost. An expired session behaves exactly as one that never existed.

Concurrency: :meth:`SessionStore.append` adds its turns as one contiguous run after every
turn already committed, and never overwrites one; two appends racing on one session both
land, in the order the store commits them (SQLite: a transaction; Redis: one Lua script;
DynamoDB: a conditional write on the next free ``seq``, retried on conflict).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from router.sessions.model import Session, SessionInfo, Summary, Turn


class SessionStore(abc.ABC):
    #: What errors call the store, e.g. ``sessions store sqlite /var/lib/hr/s.db``.
    name: str = "sessions store"

    @abc.abstractmethod
    async def create(self, info: SessionInfo) -> SessionInfo:
        """Store a new, empty session. AlreadyExists when ``(tenant, session_id)`` is taken
        by a live session (an expired one is replaced)."""

    @abc.abstractmethod
    async def info(self, tenant: str, session_id: str, *, now_ms: int) -> SessionInfo | None:
        """The session without its turns (``turn_count`` set); None when unknown or expired."""

    @abc.abstractmethod
    async def get(self, tenant: str, session_id: str, *, now_ms: int) -> Session | None:
        """The session with every turn in ``seq`` order; None when unknown or expired."""

    @abc.abstractmethod
    async def list(
        self, tenant: str, *, now_ms: int, limit: int = 100, after: str = ""
    ) -> list[SessionInfo]:
        """The tenant's live sessions, by ``session_id``, those after ``after`` (paging)."""

    @abc.abstractmethod
    async def delete(self, tenant: str, session_id: str) -> bool:
        """Remove the session, its turns and its summary; False when there was none."""

    @abc.abstractmethod
    async def append(
        self, tenant: str, session_id: str, turns: Sequence[Turn], *, now_ms: int
    ) -> int:
        """Append ``turns`` (their ``seq`` is ignored) as one contiguous run, move the
        expiry ``ttl_s`` past ``now_ms``; the new turn count. SessionNotFound when the
        session is unknown or expired."""

    @abc.abstractmethod
    async def get_summary(self, tenant: str, session_id: str) -> Summary | None:
        """The cached running summary, if any."""

    @abc.abstractmethod
    async def put_summary(self, tenant: str, session_id: str, summary: Summary) -> bool:
        """Keep ``summary`` unless the cached one covers as many turns or more (False then)."""

    async def ping(self) -> None:  # noqa: B027 - optional: stores that can check override it
        """Raise StoreUnavailable when the store cannot be reached (``check --probe``)."""

    async def close(self) -> None:  # noqa: B027 - stores with connections override it
        """Release connections and threads."""
