"""OpenAI-compatible ``POST /v1/chat/completions``: request model and the response, stream
chunk and error shapes, so any OpenAI client can call the router through Lambda.

``model`` picks how the router may route: ``auto`` (or ``hybrid-router``) lets it decide;
``tier/<hosted|gpu|edge>``, ``backend/<name>`` and ``family/<name>`` pin it. Router
options that OpenAI has no field for go in an extra ``hybrid_router`` object (the OpenAI
SDKs send it with ``extra_body=``). Unknown OpenAI parameters are ignored; the ones whose
meaning we cannot honour (``n`` > 1, the legacy ``functions``, ``parallel_tool_calls:
false``, and ``stream: true`` where the front-end answers buffered) are refused with a
400 naming them.

Tools and structured output are OpenAI's: ``tools`` (function tools), ``tool_choice``,
``response_format`` (``json_object``, ``json_schema`` with ``name``/``schema``/
``strict``), assistant messages with ``tool_calls`` and ``role: "tool"`` messages; the
answer's calls come back as ``message.tool_calls`` (``content`` null when there is no
text) with ``finish_reason: "tool_calls"``, or streamed as ``delta.tool_calls``
fragments. ``hybrid_router.validate_before_streaming`` holds a JSON answer until the
router checked it (docs/tools.md); ``hybrid_router.format_error`` in the answer says why
it does not fit the format ("" when it does).

Sessions: the ``X-Session-Id`` header (``default_headers=`` / ``extra_headers=`` in the
SDKs) or ``hybrid_router.session_id`` names a conversation the router keeps; ``messages``
then hold only the new turn(s). ``hybrid_router.context_strategy`` overrides the
session's strategy. A top-level ``session_id`` / ``context_strategy`` is refused (naming
where they go) rather than ignored, since ignoring it would silently drop the session.

The buffered HTTP function answers a ``chat.completion``; the streaming function
(lambda_edge.stream_server) answers ``chat.completion.chunk`` objects as Server-Sent Events
(:func:`chunk`), the same fields OpenAI streams.
"""

from __future__ import annotations

from typing import Any, Literal

from hybrid_router.client import (
    BACKEND_TIERS,
    CONTEXT_STRATEGIES,
    SESSION_ID_RULE,
    TIERS,
    Completion,
    OptionError,
    make_request,
    valid_session_id,
)
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationInfo, field_validator

from lambda_edge.payloads import (
    MAX_TOOL_CALLS,
    MAX_TOOLS,
    EdgeAffinity,
    LatencyBudget,
    ResponseFormatIn,
    SessionId,
    StrategyName,
    TierName,
    ToolCallIn,
    ToolDef,
    check_tool_call_id,
    check_tool_calls,
    check_tool_choice,
    check_validate_before_streaming,
    tool_choice_name,
)

AUTO_MODELS = frozenset({"auto", "hybrid-router"})
MODEL_FORMS = "'auto', 'tier/<hosted|gpu|edge>', 'backend/<name>' or 'family/<name>'"
#: The header naming a session (HTTP API events carry it lower-cased).
SESSION_HEADER = "X-Session-Id"
_SESSION_PLACES = f"hybrid_router.session_id (extra_body) or the {SESSION_HEADER} header"


class UnsupportedParameter(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    tool_calls: list[ToolCallIn] | None = Field(None, max_length=MAX_TOOL_CALLS)
    tool_call_id: str | None = Field(None, max_length=128, validate_default=True)
    name: str | None = Field(None, max_length=64)
    content: str | list[TextPart] | None = None

    @field_validator("tool_calls")
    @classmethod
    def _calls_on_assistant(cls, value: list[ToolCallIn] | None, info: ValidationInfo) -> Any:
        check_tool_calls(value, info)
        return value

    @field_validator("tool_call_id")
    @classmethod
    def _call_id_on_tool(cls, value: str | None, info: ValidationInfo) -> str | None:
        check_tool_call_id(value, info)
        return value

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)

    def as_option(self) -> dict[str, Any]:
        """The message as ``make_request`` takes it (``developer`` is sent as system; a
        user's ``name``, a participant's in OpenAI, is not the router's and is dropped)."""
        role = "system" if self.role == "developer" else self.role
        out: dict[str, Any] = {"role": role, "content": self.text()}
        if self.tool_calls:
            out["tool_calls"] = [c.as_option() for c in self.tool_calls]
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        if self.name and role == "tool":
            out["name"] = self.name
        return out


class RouterOptions(BaseModel):
    """The ``hybrid_router`` extension object."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    data_class: Literal["public", "internal", "restricted"] | None = None
    latency_budget: LatencyBudget = LatencyBudget()
    max_cost_usd: float | None = Field(None, ge=0)
    objective: Literal["cheapest", "fastest", "weighted", "balanced"] | None = None
    pin_tiers: list[TierName] = Field(default_factory=list)
    pin_backends: list[str] = Field(default_factory=list)
    exclude_tiers: list[TierName] = Field(default_factory=list)
    exclude_backends: list[str] = Field(default_factory=list)
    capabilities: list[str] = Field(default_factory=list)
    edge_affinity: EdgeAffinity = EdgeAffinity()
    session_id: SessionId | None = None
    context_strategy: StrategyName | None = None
    #: Hold a JSON answer until the router checked it; an invalid one fails over.
    validate_before_streaming: StrictBool = False


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    model: str = Field(min_length=1)
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=1024)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = 1
    tools: list[ToolDef] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: str | None = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    response_format: ResponseFormatIn | None = None
    hybrid_router: RouterOptions = RouterOptions()
    # Not OpenAI's: refused with a pointer to where they go (check_supported).
    session_id: Any = None
    context_strategy: Any = None

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _choice_name(cls, value: Any) -> Any:
        return tool_choice_name(value)

    @field_validator("tool_choice")
    @classmethod
    def _choice_of_the_tools(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "tools" in info.data:  # else the tools have their own error
            check_tool_choice(value, info.data["tools"])
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def check_supported(self, *, streaming: bool = False) -> None:
        """``streaming``: the front-end can answer ``stream: true`` (the streaming
        function); the buffered one refuses it, naming where to stream from."""
        if self.stream and not streaming:
            raise UnsupportedParameter(
                "stream",
                "streaming is not offered on this endpoint; send stream=false, or stream "
                "from the streaming Function URL (StreamFunctionUrl) or the WebSocket API",
            )
        if self.n not in (None, 1):
            raise UnsupportedParameter("n", "only n=1 is supported")
        if self.functions:
            raise UnsupportedParameter(
                "functions", "the legacy functions API is not supported; send them as tools"
            )
        if self.parallel_tool_calls is False:
            raise UnsupportedParameter(
                "parallel_tool_calls",
                "false is not supported: the router cannot hold a model to one call per "
                "answer; leave it out (or send true) and run the calls in order",
            )
        try:
            check_validate_before_streaming(
                self.hybrid_router.validate_before_streaming, self.response_format
            )
        except ValueError as exc:
            param = "hybrid_router.validate_before_streaming"
            raise UnsupportedParameter(param, str(exc)) from None
        if self.session_id is not None:
            raise UnsupportedParameter("session_id", f"send it as {_SESSION_PLACES}")
        if self.context_strategy is not None:
            raise UnsupportedParameter(
                "context_strategy", "send it as hybrid_router.context_strategy (extra_body)"
            )

    def session(self, header: str | None = None) -> str:
        """The session: the ``X-Session-Id`` header's, else ``hybrid_router.session_id``,
        else "" (none). Both given must agree."""
        body = self.hybrid_router.session_id or ""
        value = (header or "").strip()
        if not value:
            return body
        if not valid_session_id(value):
            raise UnsupportedParameter(SESSION_HEADER, f"must be {SESSION_ID_RULE}")
        if body and body != value:
            raise UnsupportedParameter(
                SESSION_HEADER, "differs from hybrid_router.session_id; send one of them"
            )
        return value

    def to_proto(
        self, *, request_id: str, streaming: bool = False, session_header: str | None = None
    ) -> rpb.GenerateRequest:
        """``session_header``: the request's ``X-Session-Id`` header, if any."""
        self.check_supported(streaming=streaming)
        o = self.hybrid_router
        session_id = self.session(session_header)
        if o.context_strategy and not session_id:
            raise UnsupportedParameter(
                "hybrid_router.context_strategy", f"applies to a session: give {_SESSION_PLACES}"
            )
        pin_tiers = list(o.pin_tiers)
        pin_backends = list(o.pin_backends)
        family = ""
        model = self.model.strip()
        if model not in AUTO_MODELS:
            kind, sep, value = model.partition("/")
            if not sep or not value:
                raise UnsupportedParameter("model", f"{model!r} is not routable: use {MODEL_FORMS}")
            if kind == "tier":
                if value not in BACKEND_TIERS:
                    raise UnsupportedParameter("model", f"unknown tier {value!r}: {MODEL_FORMS}")
                pin_tiers.append(value)  # type: ignore[arg-type]
            elif kind == "backend":
                pin_backends.append(value)
            elif kind == "family":
                family = value
            else:
                raise UnsupportedParameter("model", f"{model!r} is not routable: use {MODEL_FORMS}")
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        fmt = self.response_format
        try:
            return make_request(
                messages=[m.as_option() for m in self.messages],
                max_output_tokens=self.max_completion_tokens or self.max_tokens or 0,
                temperature=self.temperature,
                top_p=self.top_p,
                seed=self.seed,
                stop=stop,
                ttft_budget_ms=o.latency_budget.ttft_ms,
                total_budget_ms=o.latency_budget.total_ms,
                max_cost_usd=o.max_cost_usd,
                data_class=o.data_class or "",
                pin_tiers=pin_tiers,
                pin_backends=pin_backends,
                exclude_tiers=o.exclude_tiers,
                exclude_backends=o.exclude_backends,
                model_family=family,
                capabilities=o.capabilities,
                site=o.edge_affinity.site,
                device_id=o.edge_affinity.device_id,
                request_id=request_id,
                objective=o.objective or "",
                session_id=session_id,
                context_strategy=o.context_strategy or "",
                tools=[t.as_option() for t in self.tools or ()],
                tool_choice=self.tool_choice or "",
                validate_before_streaming=o.validate_before_streaming,
                **(fmt.as_options() if fmt is not None else {}),
            )
        except OptionError as exc:  # what the models let through: named all the same
            raise UnsupportedParameter(exc.option, exc.problem) from None


_FINISH = {
    tpb.FINISH_REASON_LENGTH: "length",
    tpb.FINISH_REASON_TOOL_CALLS: "tool_calls",
}


def finish_reason(usage: rpb.Usage | None) -> str:
    """OpenAI's finish reason: ``length`` when the output limit stopped the model,
    ``tool_calls`` when the answer calls tools, else ``stop``."""
    return _FINISH.get(usage.finish_reason, "stop") if usage else "stop"


def tool_call_body(c: tpb.ToolCall) -> dict[str, Any]:
    """A whole call as OpenAI's ``message.tool_calls[]`` has it."""
    return {
        "id": c.id,
        "type": "function",
        "function": {"name": c.name, "arguments": c.arguments},
    }


def usage_body(usage: rpb.Usage | None) -> dict[str, int]:
    prompt_tokens = usage.input_tokens if usage else 0
    completion_tokens = usage.output_tokens if usage else 0
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def router_extension(
    request_id: str,
    usage: rpb.Usage | None,
    decision: rpb.Decision | None,
    failovers: int,
    backend: str,
) -> dict[str, Any]:
    """The ``hybrid_router`` object: what OpenAI's shape has no field for (with a session,
    its id, the strategy applied and its turns before this one)."""
    out: dict[str, Any] = {
        "request_id": request_id,
        "backend": backend,
        "tier": TIERS.name(usage.tier) if usage else "",
        "cost_usd": usage.cost_usd if usage else 0.0,
        "explanation": decision.explanation if decision else "",
        "failovers": failovers,
        "tokens_estimated": usage.tokens_estimated if usage else False,
        # Why the answer misses the JSON format or a tool's parameters ("" when it fits).
        "format_error": usage.format_error if usage else "",
    }
    if decision is not None and decision.session_id:
        out.update(
            session_id=decision.session_id,
            context_strategy=CONTEXT_STRATEGIES.name(decision.context_strategy),
            session_turns=decision.session_turns,
        )
    return out


def completion_response(c: Completion, *, created: int) -> dict[str, Any]:
    usage = c.usage
    backend = usage.backend if usage else (c.decision.backend if c.decision else "")
    return {
        "id": completion_id(c.request_id),
        "object": "chat.completion",
        "created": created,
        "model": backend,
        "choices": [
            {
                "index": 0,
                "message": message_body(c),
                "logprobs": None,
                "finish_reason": finish_reason(usage),
            }
        ],
        "usage": usage_body(usage),
        "system_fingerprint": None,
        "hybrid_router": router_extension(
            c.request_id, usage, c.decision, len(c.failovers), backend
        ),
    }


def message_body(c: Completion) -> dict[str, Any]:
    """``choices[0].message``: ``content`` is null when the answer only calls tools (as
    OpenAI's is); ``tool_calls`` only when there are some."""
    content = c.text if c.text or not c.tool_calls else None
    out: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if c.tool_calls:
        out["tool_calls"] = [tool_call_body(t) for t in c.tool_calls]
    return out


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def chunk(
    request_id: str,
    *,
    created: int,
    model: str,
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    with_usage: bool = False,
    extension: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``. ``delta=None`` with ``usage``: the usage-only chunk
    (empty ``choices``) that ``stream_options.include_usage`` asks for; ``with_usage``:
    the other chunks carry ``"usage": null`` then, as OpenAI's do."""
    out: dict[str, Any] = {
        "id": completion_id(request_id),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None or with_usage:
        out["usage"] = usage
    if extension is not None:
        out["hybrid_router"] = extension
    return out


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
}


def error_body(status: int, message: str, *, param: str | None, code: str) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "server_error"),
            "param": param,
            "code": code.lower(),
        }
    }
