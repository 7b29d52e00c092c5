from hybrid_router.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContextStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTEXT_STRATEGY_UNSPECIFIED: _ClassVar[ContextStrategy]
    CONTEXT_STRATEGY_SLIDING: _ClassVar[ContextStrategy]
    CONTEXT_STRATEGY_SUMMARIZE: _ClassVar[ContextStrategy]
    CONTEXT_STRATEGY_STRICT: _ClassVar[ContextStrategy]
CONTEXT_STRATEGY_UNSPECIFIED: ContextStrategy
CONTEXT_STRATEGY_SLIDING: ContextStrategy
CONTEXT_STRATEGY_SUMMARIZE: ContextStrategy
CONTEXT_STRATEGY_STRICT: ContextStrategy

class Turn(_message.Message):
    __slots__ = ("role", "content", "seq", "at_unix_ms", "backend", "tokens", "tool_calls", "tool_call_id", "name")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    role: _types_pb2.Role
    content: str
    seq: int
    at_unix_ms: int
    backend: str
    tokens: int
    tool_calls: _containers.RepeatedCompositeFieldContainer[_types_pb2.ToolCall]
    tool_call_id: str
    name: str
    def __init__(self, role: _Optional[_Union[_types_pb2.Role, str]] = ..., content: _Optional[str] = ..., seq: _Optional[int] = ..., at_unix_ms: _Optional[int] = ..., backend: _Optional[str] = ..., tokens: _Optional[int] = ..., tool_calls: _Optional[_Iterable[_Union[_types_pb2.ToolCall, _Mapping]]] = ..., tool_call_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "created_unix_ms", "updated_unix_ms", "expires_unix_ms", "ttl_s", "system", "strategy", "turn_count", "turns", "history_tokens", "summary_turns")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TURN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_TURNS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    created_unix_ms: int
    updated_unix_ms: int
    expires_unix_ms: int
    ttl_s: int
    system: str
    strategy: ContextStrategy
    turn_count: int
    turns: _containers.RepeatedCompositeFieldContainer[Turn]
    history_tokens: int
    summary_turns: int
    def __init__(self, session_id: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., updated_unix_ms: _Optional[int] = ..., expires_unix_ms: _Optional[int] = ..., ttl_s: _Optional[int] = ..., system: _Optional[str] = ..., strategy: _Optional[_Union[ContextStrategy, str]] = ..., turn_count: _Optional[int] = ..., turns: _Optional[_Iterable[_Union[Turn, _Mapping]]] = ..., history_tokens: _Optional[int] = ..., summary_turns: _Optional[int] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("session_id", "ttl_s", "system", "strategy")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    ttl_s: int
    system: str
    strategy: ContextStrategy
    def __init__(self, session_id: _Optional[str] = ..., ttl_s: _Optional[int] = ..., system: _Optional[str] = ..., strategy: _Optional[_Union[ContextStrategy, str]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "next_page_token")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    next_page_token: str
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class ContextFit(_message.Message):
    __slots__ = ("turns_kept", "turns_dropped", "turns_summarized", "tokens_kept", "tokens_dropped", "summary_used", "note")
    TURNS_KEPT_FIELD_NUMBER: _ClassVar[int]
    TURNS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    TURNS_SUMMARIZED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_KEPT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_USED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    turns_kept: int
    turns_dropped: int
    turns_summarized: int
    tokens_kept: int
    tokens_dropped: int
    summary_used: bool
    note: str
    def __init__(self, turns_kept: _Optional[int] = ..., turns_dropped: _Optional[int] = ..., turns_summarized: _Optional[int] = ..., tokens_kept: _Optional[int] = ..., tokens_dropped: _Optional[int] = ..., summary_used: _Optional[bool] = ..., note: _Optional[str] = ...) -> None: ...
