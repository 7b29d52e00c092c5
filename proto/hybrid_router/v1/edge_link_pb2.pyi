from hybrid_router.v1 import model_service_pb2 as _model_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EdgeModel(_message.Message):
    __slots__ = ("name", "version", "context_window", "sha256", "model_family", "capabilities")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_FAMILY_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    context_window: int
    sha256: str
    model_family: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., context_window: _Optional[int] = ..., sha256: _Optional[str] = ..., model_family: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ...) -> None: ...

class Hardware(_message.Message):
    __slots__ = ("arch", "cpu_cores", "memory_bytes", "accelerator")
    ARCH_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    arch: str
    cpu_cores: int
    memory_bytes: int
    accelerator: str
    def __init__(self, arch: _Optional[str] = ..., cpu_cores: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., accelerator: _Optional[str] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("device_id", "site", "models", "hardware", "agent_version", "tenant", "max_concurrency")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    site: str
    models: _containers.RepeatedCompositeFieldContainer[EdgeModel]
    hardware: Hardware
    agent_version: str
    tenant: str
    max_concurrency: int
    def __init__(self, device_id: _Optional[str] = ..., site: _Optional[str] = ..., models: _Optional[_Iterable[_Union[EdgeModel, _Mapping]]] = ..., hardware: _Optional[_Union[Hardware, _Mapping]] = ..., agent_version: _Optional[str] = ..., tenant: _Optional[str] = ..., max_concurrency: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("queue_depth", "in_flight", "decode_tokens_per_s", "models", "desired_versions", "sync_status", "draining", "prefill_tokens_per_s")
    class DesiredVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DESIRED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    SYNC_STATUS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    queue_depth: int
    in_flight: int
    decode_tokens_per_s: float
    models: _containers.RepeatedCompositeFieldContainer[EdgeModel]
    desired_versions: _containers.ScalarMap[str, str]
    sync_status: str
    draining: bool
    prefill_tokens_per_s: float
    def __init__(self, queue_depth: _Optional[int] = ..., in_flight: _Optional[int] = ..., decode_tokens_per_s: _Optional[float] = ..., models: _Optional[_Iterable[_Union[EdgeModel, _Mapping]]] = ..., desired_versions: _Optional[_Mapping[str, str]] = ..., sync_status: _Optional[str] = ..., draining: _Optional[bool] = ..., prefill_tokens_per_s: _Optional[float] = ...) -> None: ...

class RequestEvent(_message.Message):
    __slots__ = ("request_id", "event")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    event: _model_service_pb2.ModelGenerateEvent
    def __init__(self, request_id: _Optional[str] = ..., event: _Optional[_Union[_model_service_pb2.ModelGenerateEvent, _Mapping]] = ...) -> None: ...

class RequestError(_message.Message):
    __slots__ = ("request_id", "error_class", "message")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    error_class: str
    message: str
    def __init__(self, request_id: _Optional[str] = ..., error_class: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class DeviceMessage(_message.Message):
    __slots__ = ("register", "heartbeat", "event", "error")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    register: Register
    heartbeat: Heartbeat
    event: RequestEvent
    error: RequestError
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., event: _Optional[_Union[RequestEvent, _Mapping]] = ..., error: _Optional[_Union[RequestError, _Mapping]] = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("router_id", "heartbeat_interval_ms", "desired_versions")
    class DesiredVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    DESIRED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    router_id: str
    heartbeat_interval_ms: int
    desired_versions: _containers.ScalarMap[str, str]
    def __init__(self, router_id: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., desired_versions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class DesiredModels(_message.Message):
    __slots__ = ("desired_versions",)
    class DesiredVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DESIRED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    desired_versions: _containers.ScalarMap[str, str]
    def __init__(self, desired_versions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("unix_ms",)
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    unix_ms: int
    def __init__(self, unix_ms: _Optional[int] = ...) -> None: ...

class RouterMessage(_message.Message):
    __slots__ = ("registered", "generate", "cancel", "desired_models", "heartbeat_ack")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    GENERATE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    DESIRED_MODELS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_ACK_FIELD_NUMBER: _ClassVar[int]
    registered: Registered
    generate: _model_service_pb2.ModelGenerateRequest
    cancel: CancelRequest
    desired_models: DesiredModels
    heartbeat_ack: HeartbeatAck
    def __init__(self, registered: _Optional[_Union[Registered, _Mapping]] = ..., generate: _Optional[_Union[_model_service_pb2.ModelGenerateRequest, _Mapping]] = ..., cancel: _Optional[_Union[CancelRequest, _Mapping]] = ..., desired_models: _Optional[_Union[DesiredModels, _Mapping]] = ..., heartbeat_ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeviceStatus(_message.Message):
    __slots__ = ("device_id", "site", "online", "backend", "models", "desired_versions", "queue_depth", "in_flight", "decode_tokens_per_s", "last_seen_unix_ms", "router_id", "sync_status", "agent_version", "hardware", "draining", "detail", "prefill_tokens_per_s")
    class DesiredVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DESIRED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    SYNC_STATUS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    site: str
    online: bool
    backend: str
    models: _containers.RepeatedCompositeFieldContainer[EdgeModel]
    desired_versions: _containers.ScalarMap[str, str]
    queue_depth: int
    in_flight: int
    decode_tokens_per_s: float
    last_seen_unix_ms: int
    router_id: str
    sync_status: str
    agent_version: str
    hardware: Hardware
    draining: bool
    detail: str
    prefill_tokens_per_s: float
    def __init__(self, device_id: _Optional[str] = ..., site: _Optional[str] = ..., online: _Optional[bool] = ..., backend: _Optional[str] = ..., models: _Optional[_Iterable[_Union[EdgeModel, _Mapping]]] = ..., desired_versions: _Optional[_Mapping[str, str]] = ..., queue_depth: _Optional[int] = ..., in_flight: _Optional[int] = ..., decode_tokens_per_s: _Optional[float] = ..., last_seen_unix_ms: _Optional[int] = ..., router_id: _Optional[str] = ..., sync_status: _Optional[str] = ..., agent_version: _Optional[str] = ..., hardware: _Optional[_Union[Hardware, _Mapping]] = ..., draining: _Optional[bool] = ..., detail: _Optional[str] = ..., prefill_tokens_per_s: _Optional[float] = ...) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices", "router_id")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[DeviceStatus]
    router_id: str
    def __init__(self, devices: _Optional[_Iterable[_Union[DeviceStatus, _Mapping]]] = ..., router_id: _Optional[str] = ...) -> None: ...
