"""``hybrid_router.v1.SessionService``: create, read, list and delete the caller's sessions.

Every call acts on the caller's tenant only (the API key's; ``anonymous`` while auth is
off): another tenant's session id answers NOT_FOUND, exactly as an id never used. Errors
are the router's (router/errors.py), mapped by the one interceptor.
"""

from __future__ import annotations

import grpc
from hybrid_router.client.enums import CONTEXT_STRATEGIES, ROLES
from hybrid_router.v1 import sessions_pb2 as spb
from hybrid_router.v1 import sessions_pb2_grpc
from hybrid_router.v1 import types_pb2 as tpb

from router.errors import InvalidRequest, SessionNotFound
from router.server.context import principal_var
from router.sessions.context import ANONYMOUS, Sessions
from router.sessions.model import (
    SESSION_ID_RULE,
    SessionInfo,
    Turn,
    new_session_id,
    valid_session_id,
)
from router.tokenizers import ESTIMATE

#: ListSessions page sizes.
DEFAULT_PAGE = 100
MAX_PAGE = 1000
#: Shortest and longest TTL a caller may ask for.
MIN_TTL_S = 60
MAX_TTL_S = 30 * 86_400


def _tenant() -> str:
    return principal_var.get().tenant or ANONYMOUS


def _info_pb(info: SessionInfo) -> spb.Session:
    return spb.Session(
        session_id=info.session_id,
        created_unix_ms=info.created_ms,
        updated_unix_ms=info.updated_ms,
        expires_unix_ms=info.expires_ms,
        ttl_s=info.ttl_s,
        system=info.system,
        strategy=CONTEXT_STRATEGIES.number(info.strategy),
        turn_count=info.turn_count,
    )


def _session_id(value: str, field: str = "session_id") -> str:
    if not valid_session_id(value):
        raise InvalidRequest(field, SESSION_ID_RULE)
    return value


class SessionServicer(sessions_pb2_grpc.SessionServiceServicer):
    def __init__(self, sessions: Sessions, *, max_system_bytes: int = 1_048_576) -> None:
        self.sessions = sessions
        self._max_system_bytes = max_system_bytes

    async def CreateSession(  # noqa: N802 - gRPC method name
        self, request: spb.CreateSessionRequest, context: grpc.aio.ServicerContext
    ) -> spb.Session:
        sid = _session_id(request.session_id) if request.session_id else new_session_id()
        cfg = self.sessions.cfg
        ttl = request.ttl_s or cfg.ttl_s
        if not MIN_TTL_S <= ttl <= MAX_TTL_S:
            raise InvalidRequest("ttl_s", f"must be {MIN_TTL_S}-{MAX_TTL_S} seconds, or 0")
        if len(request.system.encode("utf-8")) > self._max_system_bytes:
            raise InvalidRequest("system", f"at most {self._max_system_bytes} bytes")
        strategy = CONTEXT_STRATEGIES.name(request.strategy)
        if request.strategy and not strategy:
            raise InvalidRequest(
                "strategy", "must be CONTEXT_STRATEGY_SLIDING, _SUMMARIZE or _STRICT"
            )
        now = self.sessions.now_ms()
        info = SessionInfo(
            tenant=_tenant(),
            session_id=sid,
            created_ms=now,
            updated_ms=now,
            expires_ms=now + ttl * 1000,
            ttl_s=ttl,
            system=request.system,
            strategy=strategy,
        )
        return _info_pb(await self.sessions.store.create(info))

    async def GetSession(  # noqa: N802
        self, request: spb.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> spb.Session:
        sid = _session_id(request.session_id)
        tenant = _tenant()
        store = self.sessions.store
        session = await store.get(tenant, sid, now_ms=self.sessions.now_ms())
        if session is None:
            raise SessionNotFound(sid)
        info = session.info
        key = (info.tenant, info.session_id, info.created_ms)
        count = self.sessions.counts.turn
        out = _info_pb(info)
        total = 0
        for t in session.turns:
            tokens = count(ESTIMATE, key, t).tokens
            total += tokens
            out.turns.append(_turn_pb(t, tokens))
        out.history_tokens = total
        summary = await store.get_summary(tenant, sid)
        out.summary_turns = summary.upto if summary is not None else 0
        return out

    async def ListSessions(  # noqa: N802
        self, request: spb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> spb.ListSessionsResponse:
        size = request.page_size or DEFAULT_PAGE
        if size > MAX_PAGE:
            raise InvalidRequest("page_size", f"at most {MAX_PAGE}")
        after = _session_id(request.page_token, "page_token") if request.page_token else ""
        infos = await self.sessions.store.list(
            _tenant(), now_ms=self.sessions.now_ms(), limit=size + 1, after=after
        )
        page = infos[:size]
        more = len(infos) > size
        return spb.ListSessionsResponse(
            sessions=[_info_pb(i) for i in page],
            next_page_token=page[-1].session_id if more and page else "",
        )

    async def DeleteSession(  # noqa: N802
        self, request: spb.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> spb.DeleteSessionResponse:
        sid = _session_id(request.session_id)
        return spb.DeleteSessionResponse(deleted=await self.sessions.store.delete(_tenant(), sid))


def _turn_pb(turn: Turn, tokens: int) -> spb.Turn:
    return spb.Turn(
        role=ROLES[turn.role],  # type: ignore[arg-type]
        content=turn.content,
        seq=turn.seq,
        at_unix_ms=turn.at_ms,
        backend=turn.backend,
        tokens=tokens,
        tool_calls=[
            tpb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in turn.tool_calls
        ],
        tool_call_id=turn.tool_call_id,
        name=turn.name,
    )
