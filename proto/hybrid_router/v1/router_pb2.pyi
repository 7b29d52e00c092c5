from hybrid_router.v1 import sessions_pb2 as _sessions_pb2
from hybrid_router.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Objective(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBJECTIVE_UNSPECIFIED: _ClassVar[Objective]
    OBJECTIVE_CHEAPEST: _ClassVar[Objective]
    OBJECTIVE_FASTEST: _ClassVar[Objective]
    OBJECTIVE_WEIGHTED: _ClassVar[Objective]
    OBJECTIVE_BALANCED: _ClassVar[Objective]

class TokenCountMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOKEN_COUNT_METHOD_UNSPECIFIED: _ClassVar[TokenCountMethod]
    TOKEN_COUNT_METHOD_EXACT: _ClassVar[TokenCountMethod]
    TOKEN_COUNT_METHOD_ESTIMATE: _ClassVar[TokenCountMethod]

class CircuitState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CIRCUIT_STATE_UNSPECIFIED: _ClassVar[CircuitState]
    CIRCUIT_STATE_CLOSED: _ClassVar[CircuitState]
    CIRCUIT_STATE_OPEN: _ClassVar[CircuitState]
    CIRCUIT_STATE_HALF_OPEN: _ClassVar[CircuitState]
OBJECTIVE_UNSPECIFIED: Objective
OBJECTIVE_CHEAPEST: Objective
OBJECTIVE_FASTEST: Objective
OBJECTIVE_WEIGHTED: Objective
OBJECTIVE_BALANCED: Objective
TOKEN_COUNT_METHOD_UNSPECIFIED: TokenCountMethod
TOKEN_COUNT_METHOD_EXACT: TokenCountMethod
TOKEN_COUNT_METHOD_ESTIMATE: TokenCountMethod
CIRCUIT_STATE_UNSPECIFIED: CircuitState
CIRCUIT_STATE_CLOSED: CircuitState
CIRCUIT_STATE_OPEN: CircuitState
CIRCUIT_STATE_HALF_OPEN: CircuitState

class LatencyBudget(_message.Message):
    __slots__ = ("ttft_ms", "total_ms")
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    ttft_ms: int
    total_ms: int
    def __init__(self, ttft_ms: _Optional[int] = ..., total_ms: _Optional[int] = ...) -> None: ...

class EdgeAffinity(_message.Message):
    __slots__ = ("site", "device_id")
    SITE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    site: str
    device_id: str
    def __init__(self, site: _Optional[str] = ..., device_id: _Optional[str] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("messages", "max_output_tokens", "sampling", "latency_budget", "max_cost_usd", "data_class", "pin_tiers", "pin_backends", "exclude_tiers", "exclude_backends", "model_family", "capabilities", "edge_affinity", "request_id", "session_id", "objective", "context_strategy", "template", "template_version", "template_variables", "tools", "tool_choice", "response_format", "validate_before_streaming", "continue_on_failure")
    class TemplateVariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASS_FIELD_NUMBER: _ClassVar[int]
    PIN_TIERS_FIELD_NUMBER: _ClassVar[int]
    PIN_BACKENDS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_TIERS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_BACKENDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FAMILY_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    EDGE_AFFINITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_VARIABLES_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_BEFORE_STREAMING_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_types_pb2.ChatMessage]
    max_output_tokens: int
    sampling: _types_pb2.SamplingParams
    latency_budget: LatencyBudget
    max_cost_usd: float
    data_class: _types_pb2.DataClass
    pin_tiers: _containers.RepeatedScalarFieldContainer[_types_pb2.Tier]
    pin_backends: _containers.RepeatedScalarFieldContainer[str]
    exclude_tiers: _containers.RepeatedScalarFieldContainer[_types_pb2.Tier]
    exclude_backends: _containers.RepeatedScalarFieldContainer[str]
    model_family: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    edge_affinity: EdgeAffinity
    request_id: str
    session_id: str
    objective: Objective
    context_strategy: _sessions_pb2.ContextStrategy
    template: str
    template_version: str
    template_variables: _containers.ScalarMap[str, str]
    tools: _containers.RepeatedCompositeFieldContainer[_types_pb2.ToolDefinition]
    tool_choice: _types_pb2.ToolChoice
    response_format: _types_pb2.ResponseFormat
    validate_before_streaming: bool
    continue_on_failure: bool
    def __init__(self, messages: _Optional[_Iterable[_Union[_types_pb2.ChatMessage, _Mapping]]] = ..., max_output_tokens: _Optional[int] = ..., sampling: _Optional[_Union[_types_pb2.SamplingParams, _Mapping]] = ..., latency_budget: _Optional[_Union[LatencyBudget, _Mapping]] = ..., max_cost_usd: _Optional[float] = ..., data_class: _Optional[_Union[_types_pb2.DataClass, str]] = ..., pin_tiers: _Optional[_Iterable[_Union[_types_pb2.Tier, str]]] = ..., pin_backends: _Optional[_Iterable[str]] = ..., exclude_tiers: _Optional[_Iterable[_Union[_types_pb2.Tier, str]]] = ..., exclude_backends: _Optional[_Iterable[str]] = ..., model_family: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., edge_affinity: _Optional[_Union[EdgeAffinity, _Mapping]] = ..., request_id: _Optional[str] = ..., session_id: _Optional[str] = ..., objective: _Optional[_Union[Objective, str]] = ..., context_strategy: _Optional[_Union[_sessions_pb2.ContextStrategy, str]] = ..., template: _Optional[str] = ..., template_version: _Optional[str] = ..., template_variables: _Optional[_Mapping[str, str]] = ..., tools: _Optional[_Iterable[_Union[_types_pb2.ToolDefinition, _Mapping]]] = ..., tool_choice: _Optional[_Union[_types_pb2.ToolChoice, _Mapping]] = ..., response_format: _Optional[_Union[_types_pb2.ResponseFormat, _Mapping]] = ..., validate_before_streaming: _Optional[bool] = ..., continue_on_failure: _Optional[bool] = ...) -> None: ...

class Estimate(_message.Message):
    __slots__ = ("ttft_ms", "total_ms", "cost_usd", "queue_wait_ms", "from_priors", "prompt_tokens", "token_count_method")
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    FROM_PRIORS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_METHOD_FIELD_NUMBER: _ClassVar[int]
    ttft_ms: float
    total_ms: float
    cost_usd: float
    queue_wait_ms: float
    from_priors: bool
    prompt_tokens: int
    token_count_method: TokenCountMethod
    def __init__(self, ttft_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., cost_usd: _Optional[float] = ..., queue_wait_ms: _Optional[float] = ..., from_priors: _Optional[bool] = ..., prompt_tokens: _Optional[int] = ..., token_count_method: _Optional[_Union[TokenCountMethod, str]] = ...) -> None: ...

class CandidateReport(_message.Message):
    __slots__ = ("backend", "tier", "accepted", "rejected_by", "reason", "estimate", "rank", "meets_budget", "score", "context")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    MEETS_BUDGET_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    backend: str
    tier: _types_pb2.Tier
    accepted: bool
    rejected_by: str
    reason: str
    estimate: Estimate
    rank: int
    meets_budget: bool
    score: float
    context: _sessions_pb2.ContextFit
    def __init__(self, backend: _Optional[str] = ..., tier: _Optional[_Union[_types_pb2.Tier, str]] = ..., accepted: _Optional[bool] = ..., rejected_by: _Optional[str] = ..., reason: _Optional[str] = ..., estimate: _Optional[_Union[Estimate, _Mapping]] = ..., rank: _Optional[int] = ..., meets_budget: _Optional[bool] = ..., score: _Optional[float] = ..., context: _Optional[_Union[_sessions_pb2.ContextFit, _Mapping]] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("request_id", "backend", "tier", "fallbacks", "candidates", "objective", "budget_unmet", "explanation", "estimate", "decision_us", "session_id", "context_strategy", "session_turns", "cache")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_UNMET_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    DECISION_US_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SESSION_TURNS_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    backend: str
    tier: _types_pb2.Tier
    fallbacks: _containers.RepeatedScalarFieldContainer[str]
    candidates: _containers.RepeatedCompositeFieldContainer[CandidateReport]
    objective: Objective
    budget_unmet: bool
    explanation: str
    estimate: Estimate
    decision_us: float
    session_id: str
    context_strategy: _sessions_pb2.ContextStrategy
    session_turns: int
    cache: str
    def __init__(self, request_id: _Optional[str] = ..., backend: _Optional[str] = ..., tier: _Optional[_Union[_types_pb2.Tier, str]] = ..., fallbacks: _Optional[_Iterable[str]] = ..., candidates: _Optional[_Iterable[_Union[CandidateReport, _Mapping]]] = ..., objective: _Optional[_Union[Objective, str]] = ..., budget_unmet: _Optional[bool] = ..., explanation: _Optional[str] = ..., estimate: _Optional[_Union[Estimate, _Mapping]] = ..., decision_us: _Optional[float] = ..., session_id: _Optional[str] = ..., context_strategy: _Optional[_Union[_sessions_pb2.ContextStrategy, str]] = ..., session_turns: _Optional[int] = ..., cache: _Optional[str] = ...) -> None: ...

class Failover(_message.Message):
    __slots__ = ("from_backend", "to_backend", "reason", "attempt", "to_tier")
    FROM_BACKEND_FIELD_NUMBER: _ClassVar[int]
    TO_BACKEND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TO_TIER_FIELD_NUMBER: _ClassVar[int]
    from_backend: str
    to_backend: str
    reason: str
    attempt: int
    to_tier: _types_pb2.Tier
    def __init__(self, from_backend: _Optional[str] = ..., to_backend: _Optional[str] = ..., reason: _Optional[str] = ..., attempt: _Optional[int] = ..., to_tier: _Optional[_Union[_types_pb2.Tier, str]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "cost_usd", "backend", "tier", "ttft_ms", "total_ms", "finish_reason", "complete", "error", "tokens_estimated", "request_id", "attempts", "template", "template_version", "format_error", "tool_calls", "continued")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TOKENS_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    FORMAT_ERROR_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    CONTINUED_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    backend: str
    tier: _types_pb2.Tier
    ttft_ms: float
    total_ms: float
    finish_reason: _types_pb2.FinishReason
    complete: bool
    error: str
    tokens_estimated: bool
    request_id: str
    attempts: int
    template: str
    template_version: str
    format_error: str
    tool_calls: int
    continued: bool
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., backend: _Optional[str] = ..., tier: _Optional[_Union[_types_pb2.Tier, str]] = ..., ttft_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., finish_reason: _Optional[_Union[_types_pb2.FinishReason, str]] = ..., complete: _Optional[bool] = ..., error: _Optional[str] = ..., tokens_estimated: _Optional[bool] = ..., request_id: _Optional[str] = ..., attempts: _Optional[int] = ..., template: _Optional[str] = ..., template_version: _Optional[str] = ..., format_error: _Optional[str] = ..., tool_calls: _Optional[int] = ..., continued: _Optional[bool] = ...) -> None: ...

class GenerateEvent(_message.Message):
    __slots__ = ("decision", "delta", "failover", "usage", "tool_call", "continuation")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    CONTINUATION_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    delta: _types_pb2.TextDelta
    failover: Failover
    usage: Usage
    tool_call: _types_pb2.ToolCallDelta
    continuation: Continuation
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ..., delta: _Optional[_Union[_types_pb2.TextDelta, _Mapping]] = ..., failover: _Optional[_Union[Failover, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., tool_call: _Optional[_Union[_types_pb2.ToolCallDelta, _Mapping]] = ..., continuation: _Optional[_Union[Continuation, _Mapping]] = ...) -> None: ...

class Continuation(_message.Message):
    __slots__ = ("from_backend", "to_backend", "reason", "tokens_so_far", "to_tier", "method", "attempt")
    FROM_BACKEND_FIELD_NUMBER: _ClassVar[int]
    TO_BACKEND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TOKENS_SO_FAR_FIELD_NUMBER: _ClassVar[int]
    TO_TIER_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    from_backend: str
    to_backend: str
    reason: str
    tokens_so_far: int
    to_tier: _types_pb2.Tier
    method: str
    attempt: int
    def __init__(self, from_backend: _Optional[str] = ..., to_backend: _Optional[str] = ..., reason: _Optional[str] = ..., tokens_so_far: _Optional[int] = ..., to_tier: _Optional[_Union[_types_pb2.Tier, str]] = ..., method: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class ListBackendsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Prices(_message.Message):
    __slots__ = ("input_per_mtok_usd", "output_per_mtok_usd", "gpu_hourly_usd", "edge_per_mtok_usd", "source", "gpu_throughput_tokens_per_s", "gpu_utilization", "gpu_prefill_ratio")
    INPUT_PER_MTOK_USD_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PER_MTOK_USD_FIELD_NUMBER: _ClassVar[int]
    GPU_HOURLY_USD_FIELD_NUMBER: _ClassVar[int]
    EDGE_PER_MTOK_USD_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    GPU_THROUGHPUT_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    GPU_PREFILL_RATIO_FIELD_NUMBER: _ClassVar[int]
    input_per_mtok_usd: float
    output_per_mtok_usd: float
    gpu_hourly_usd: float
    edge_per_mtok_usd: float
    source: str
    gpu_throughput_tokens_per_s: float
    gpu_utilization: float
    gpu_prefill_ratio: float
    def __init__(self, input_per_mtok_usd: _Optional[float] = ..., output_per_mtok_usd: _Optional[float] = ..., gpu_hourly_usd: _Optional[float] = ..., edge_per_mtok_usd: _Optional[float] = ..., source: _Optional[str] = ..., gpu_throughput_tokens_per_s: _Optional[float] = ..., gpu_utilization: _Optional[float] = ..., gpu_prefill_ratio: _Optional[float] = ...) -> None: ...

class Priors(_message.Message):
    __slots__ = ("ttft_ms", "decode_tokens_per_s", "ttft_p90_ms", "prefill_tokens_per_s")
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    TTFT_P90_MS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    ttft_ms: float
    decode_tokens_per_s: float
    ttft_p90_ms: float
    prefill_tokens_per_s: float
    def __init__(self, ttft_ms: _Optional[float] = ..., decode_tokens_per_s: _Optional[float] = ..., ttft_p90_ms: _Optional[float] = ..., prefill_tokens_per_s: _Optional[float] = ...) -> None: ...

class BackendStatus(_message.Message):
    __slots__ = ("name", "tier", "kind", "endpoint", "model", "model_family", "context_window", "max_payload_bytes", "prices", "data_classes", "max_concurrency", "healthy", "circuit", "in_flight", "queue_depth", "ttft_p50_ms", "ttft_p90_ms", "decode_tokens_per_s", "error_rate", "requests", "failures", "from_priors", "capabilities", "site", "device_id", "detail", "last_error", "last_error_unix_ms", "priors", "decode_from_priors", "prefill_tokens_per_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FAMILY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    MAX_PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASSES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    TTFT_P50_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_P90_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    FROM_PRIORS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PRIORS_FIELD_NUMBER: _ClassVar[int]
    DECODE_FROM_PRIORS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    tier: _types_pb2.Tier
    kind: str
    endpoint: str
    model: str
    model_family: str
    context_window: int
    max_payload_bytes: int
    prices: Prices
    data_classes: _containers.RepeatedScalarFieldContainer[_types_pb2.DataClass]
    max_concurrency: int
    healthy: bool
    circuit: CircuitState
    in_flight: int
    queue_depth: int
    ttft_p50_ms: float
    ttft_p90_ms: float
    decode_tokens_per_s: float
    error_rate: float
    requests: int
    failures: int
    from_priors: bool
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    site: str
    device_id: str
    detail: str
    last_error: str
    last_error_unix_ms: int
    priors: Priors
    decode_from_priors: bool
    prefill_tokens_per_s: float
    def __init__(self, name: _Optional[str] = ..., tier: _Optional[_Union[_types_pb2.Tier, str]] = ..., kind: _Optional[str] = ..., endpoint: _Optional[str] = ..., model: _Optional[str] = ..., model_family: _Optional[str] = ..., context_window: _Optional[int] = ..., max_payload_bytes: _Optional[int] = ..., prices: _Optional[_Union[Prices, _Mapping]] = ..., data_classes: _Optional[_Iterable[_Union[_types_pb2.DataClass, str]]] = ..., max_concurrency: _Optional[int] = ..., healthy: _Optional[bool] = ..., circuit: _Optional[_Union[CircuitState, str]] = ..., in_flight: _Optional[int] = ..., queue_depth: _Optional[int] = ..., ttft_p50_ms: _Optional[float] = ..., ttft_p90_ms: _Optional[float] = ..., decode_tokens_per_s: _Optional[float] = ..., error_rate: _Optional[float] = ..., requests: _Optional[int] = ..., failures: _Optional[int] = ..., from_priors: _Optional[bool] = ..., capabilities: _Optional[_Iterable[str]] = ..., site: _Optional[str] = ..., device_id: _Optional[str] = ..., detail: _Optional[str] = ..., last_error: _Optional[str] = ..., last_error_unix_ms: _Optional[int] = ..., priors: _Optional[_Union[Priors, _Mapping]] = ..., decode_from_priors: _Optional[bool] = ..., prefill_tokens_per_s: _Optional[float] = ...) -> None: ...

class ListBackendsResponse(_message.Message):
    __slots__ = ("backends",)
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    backends: _containers.RepeatedCompositeFieldContainer[BackendStatus]
    def __init__(self, backends: _Optional[_Iterable[_Union[BackendStatus, _Mapping]]] = ...) -> None: ...
