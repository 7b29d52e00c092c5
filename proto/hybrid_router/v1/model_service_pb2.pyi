from hybrid_router.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelGenerateRequest(_message.Message):
    __slots__ = ("request_id", "messages", "max_output_tokens", "sampling", "model", "tenant", "session_id", "tools", "tool_choice", "response_format", "continue_final_message")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_FINAL_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    messages: _containers.RepeatedCompositeFieldContainer[_types_pb2.ChatMessage]
    max_output_tokens: int
    sampling: _types_pb2.SamplingParams
    model: str
    tenant: str
    session_id: str
    tools: _containers.RepeatedCompositeFieldContainer[_types_pb2.ToolDefinition]
    tool_choice: _types_pb2.ToolChoice
    response_format: _types_pb2.ResponseFormat
    continue_final_message: bool
    def __init__(self, request_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_types_pb2.ChatMessage, _Mapping]]] = ..., max_output_tokens: _Optional[int] = ..., sampling: _Optional[_Union[_types_pb2.SamplingParams, _Mapping]] = ..., model: _Optional[str] = ..., tenant: _Optional[str] = ..., session_id: _Optional[str] = ..., tools: _Optional[_Iterable[_Union[_types_pb2.ToolDefinition, _Mapping]]] = ..., tool_choice: _Optional[_Union[_types_pb2.ToolChoice, _Mapping]] = ..., response_format: _Optional[_Union[_types_pb2.ResponseFormat, _Mapping]] = ..., continue_final_message: _Optional[bool] = ...) -> None: ...

class ModelDone(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "finish_reason", "queue_ms")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    finish_reason: _types_pb2.FinishReason
    queue_ms: float
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., finish_reason: _Optional[_Union[_types_pb2.FinishReason, str]] = ..., queue_ms: _Optional[float] = ...) -> None: ...

class ModelGenerateEvent(_message.Message):
    __slots__ = ("delta", "done", "tool_call")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    delta: _types_pb2.TextDelta
    done: ModelDone
    tool_call: _types_pb2.ToolCallDelta
    def __init__(self, delta: _Optional[_Union[_types_pb2.TextDelta, _Mapping]] = ..., done: _Optional[_Union[ModelDone, _Mapping]] = ..., tool_call: _Optional[_Union[_types_pb2.ToolCallDelta, _Mapping]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("model", "version", "context_window", "queue_depth", "in_flight", "max_concurrency", "decode_tokens_per_s", "engine", "replica_id", "model_family", "capabilities", "prefill_tokens_per_s")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FAMILY_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    context_window: int
    queue_depth: int
    in_flight: int
    max_concurrency: int
    decode_tokens_per_s: float
    engine: str
    replica_id: str
    model_family: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    prefill_tokens_per_s: float
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., context_window: _Optional[int] = ..., queue_depth: _Optional[int] = ..., in_flight: _Optional[int] = ..., max_concurrency: _Optional[int] = ..., decode_tokens_per_s: _Optional[float] = ..., engine: _Optional[str] = ..., replica_id: _Optional[str] = ..., model_family: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., prefill_tokens_per_s: _Optional[float] = ...) -> None: ...
