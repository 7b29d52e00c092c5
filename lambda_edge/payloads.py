"""JSON bodies of the HTTP, WebSocket and SQS front-ends (pydantic), and their conversion.

One request shape (:class:`GenerateBody`) serves ``POST /v1/generate``, ``POST /v1/route``,
a WebSocket message and an SQS job. Validation errors name the field
(``messages[0].content: Field required``); the router validates the rest (limits, names)
and its INVALID_ARGUMENT message names the field too.

Sessions: ``session_id`` names a conversation the router keeps (the messages are then
only the new turn; an unknown id starts a session in the key's tenant) and
``context_strategy`` (``sliding``, ``summarize``, ``strict``) overrides its strategy for
this request; without a session it is refused, except in a WebSocket message, where the
connection's own session applies (:class:`WsRequest`, lambda_edge.websocket).

Tools and JSON answers (docs/tools.md, docs/lambda.md#tools-and-json-answers): ``tools``
(flat ``{name, description, parameters}`` or OpenAI's ``{"type": "function", "function":
{...}}``), ``tool_choice`` (``auto``, ``none``, ``required``, a tool's name, or OpenAI's
``{"type": "function", "function": {"name"}}``), ``response_format`` (OpenAI's shape:
``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``, or the type
alone), ``validate_before_streaming``; messages may carry an assistant's ``tool_calls``
(``{id, name, arguments}``, or OpenAI's shape) and ``role: "tool"`` results with
``tool_call_id``. The same models serve the OpenAI-compatible route
(lambda_edge.openai_compat). Answers carry the reassembled calls as ``{id, name,
arguments}`` (:func:`tool_call_dict`, :class:`ToolCallJoin`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Literal

from hybrid_router.client import (
    CONTEXT_STRATEGIES,
    FINISH_REASONS,
    OBJECTIVES,
    SESSION_ID_RULE,
    TIERS,
    make_request,
    valid_session_id,
)
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import sessions_pb2 as spb
from hybrid_router.v1 import types_pb2 as tpb
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

TierName = Literal["hosted", "gpu", "edge"]
#: The router's context strategies (``hybrid_router.client.CONTEXT_STRATEGIES``).
StrategyName = Literal["sliding", "summarize", "strict"]
_ID = r"^[A-Za-z0-9._:-]{1,128}$"


def check_session_id(value: str) -> str:
    """A session id the router takes (SESSION_ID_RULE), else a validation error."""
    if not valid_session_id(value):
        raise ValueError("must be " + SESSION_ID_RULE)
    return value


#: ``session_id`` in a body: 1-128 of letters, digits, ``-_.:``, starting with a letter
#: or digit (the router's rule, checked here so a bad id is a 400 naming the field).
SessionId = Annotated[str, AfterValidator(check_session_id)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: The router's roles (``hybrid_router.client.ROLES``).
RoleName = Literal["system", "user", "assistant", "tool"]
#: The modes of a tool choice (``hybrid_router.client.TOOL_CHOICES`` but ``named``: a
#: tool's name names one).
TOOL_CHOICE_MODES = ("auto", "none", "required")
#: A tool's name, as every provider takes it (the router's rule).
TOOL_NAME = r"^[A-Za-z0-9_-]{1,64}$"
ToolName = Annotated[str, Field(pattern=TOOL_NAME)]
MAX_TOOLS = 128
MAX_TOOL_CALLS = 128


def _empty(value: Any) -> bool:
    """Left out of a dump when empty, so a body without tools dumps (and hashes, for the
    jobs' idempotency) as it did before tools existed."""
    return not value


def _unwrap_function(value: Any, what: str) -> Any:
    """OpenAI's ``{"type": "function", "function": {...}}`` -> the inner object (other
    keys of the wrapper kept, for ``id``); anything else unchanged."""
    if isinstance(value, dict) and ("function" in value or "type" in value):
        kind = value.get("type", "function")
        if kind != "function":
            raise ValueError(f"type {kind!r}: only function {what} are supported")
        inner = value.get("function")
        if not isinstance(inner, dict):
            raise ValueError('{"type": "function"} needs "function": {"name": ...}')
        rest = {k: v for k, v in value.items() if k not in ("type", "function")}
        return {**rest, **inner}
    return value


class ToolDef(_Strict):
    """A tool the model may call: ``{name, description, parameters}`` (a JSON Schema of
    the arguments) or OpenAI's ``{"type": "function", "function": {...}}``. OpenAI's
    ``strict`` is accepted and has no effect: the router checks every call's arguments
    against ``parameters`` (``usage.format_error``)."""

    name: ToolName
    description: str = Field("", max_length=4096)
    parameters: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _openai_shape(cls, value: Any) -> Any:
        value = _unwrap_function(value, "tools")
        if isinstance(value, dict) and "strict" in value:
            value = {k: v for k, v in value.items() if k != "strict"}
        return value

    def as_option(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        if self.parameters is not None:
            out["parameters"] = self.parameters
        return out


class ToolCallIn(_Strict):
    """A call the model made, sent back in an assistant message of the history:
    ``{id, name, arguments}`` (arguments: a JSON object, or its text) or OpenAI's
    ``{"id", "type": "function", "function": {"name", "arguments"}}``."""

    id: str = Field(min_length=1, max_length=128)
    name: ToolName
    arguments: str | dict[str, Any] = "{}"

    @model_validator(mode="before")
    @classmethod
    def _openai_shape(cls, value: Any) -> Any:
        return _unwrap_function(value, "tool calls")

    @field_validator("arguments")
    @classmethod
    def _one_object(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(value, str):
            try:
                parsed = json.loads(value or "{}")
            except (ValueError, RecursionError):
                parsed = None
            if not isinstance(parsed, dict):
                raise ValueError("must be one JSON object (as an object, or as its JSON text)")
        return value

    def as_option(self) -> dict[str, Any]:
        args = self.arguments
        text = args if isinstance(args, str) else json.dumps(args, separators=(",", ":"))
        return {"id": self.id, "name": self.name, "arguments": text or "{}"}


def check_tool_calls(calls: list[ToolCallIn] | None, info: ValidationInfo) -> None:
    if calls and info.data.get("role", "assistant") != "assistant":
        raise ValueError("only an assistant message carries tool calls")


def check_tool_call_id(value: str | None, info: ValidationInfo) -> None:
    role = info.data.get("role")
    if role == "tool" and not value:
        raise ValueError(
            'a "tool" message names the call it answers: give the id of that call '
            "(tool_calls[].id of the assistant message before it)"
        )
    if value and role not in (None, "tool"):
        raise ValueError('applies to "tool" messages only; remove it')


class Message(_Strict):
    """A message: ``{role, content}``; an assistant's may carry ``tool_calls`` (then
    ``content`` may be left out), a ``tool`` message the result of the call that
    ``tool_call_id`` names (``name``: the tool's, optional)."""

    role: RoleName
    tool_calls: list[ToolCallIn] = Field(
        default_factory=list, max_length=MAX_TOOL_CALLS, exclude_if=_empty
    )
    tool_call_id: str = Field("", max_length=128, validate_default=True, exclude_if=_empty)
    name: str = Field("", max_length=64, exclude_if=_empty)
    content: str | None = Field(None, validate_default=True)

    @field_validator("tool_calls")
    @classmethod
    def _calls_on_assistant(cls, value: list[ToolCallIn], info: ValidationInfo) -> Any:
        check_tool_calls(value, info)
        return value

    @field_validator("tool_call_id")
    @classmethod
    def _call_id_on_tool(cls, value: str, info: ValidationInfo) -> str:
        check_tool_call_id(value, info)
        return value

    @field_validator("content")
    @classmethod
    def _content_required(cls, value: str | None, info: ValidationInfo) -> str:
        if value is None:
            if info.data.get("tool_calls"):
                return ""
            raise ValueError("Field required")
        return value

    def as_option(self) -> dict[str, Any]:
        """The message as ``make_request`` takes it (OpenAI-shaped dict)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content or ""}
        if self.tool_calls:
            out["tool_calls"] = [c.as_option() for c in self.tool_calls]
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        if self.name and self.role == "tool":
            out["name"] = self.name
        return out


class JsonSchemaFormat(BaseModel):
    """OpenAI's ``response_format.json_schema``: ``{name, schema, strict, description}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)
    name: str = Field("", pattern=r"^[A-Za-z0-9_-]{0,64}$")
    description: str = ""
    schema_: dict[str, Any] = Field(alias="schema")
    strict: StrictBool | None = None


class ResponseFormatIn(_Strict):
    """``{"type": "text" | "json_object"}`` or ``{"type": "json_schema", "json_schema":
    {"name", "schema", "strict"}}`` (OpenAI's shape); a string is the type alone."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = Field(None, exclude_if=lambda v: v is None)

    @model_validator(mode="before")
    @classmethod
    def _type_alone(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @field_validator("json_schema")
    @classmethod
    def _schema_with_its_type(
        cls, value: JsonSchemaFormat | None, info: ValidationInfo
    ) -> JsonSchemaFormat | None:
        kind = info.data.get("type")
        if value is not None and kind not in (None, "json_schema"):
            raise ValueError(f'applies to type "json_schema", not {kind!r}; remove one of them')
        return value

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormatIn:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError(
                'type "json_schema" needs "json_schema": {"name": ..., "schema": {...}}'
            )
        return self

    @property
    def is_json(self) -> bool:
        return self.type != "text"

    def as_options(self) -> dict[str, Any]:
        """``make_request`` keywords: response_format, json_schema, schema_name, strict."""
        if self.type == "text":
            return {}
        out: dict[str, Any] = {"response_format": self.type}
        js = self.json_schema
        if js is not None:
            out.update(json_schema=js.schema_, schema_name=js.name, strict=bool(js.strict))
        return out


def tool_choice_name(value: Any) -> Any:
    """OpenAI's ``{"type": "function", "function": {"name": ...}}`` (or ``{"name": ...}``)
    -> the name; a string unchanged."""
    if isinstance(value, dict):
        inner = _unwrap_function(value, "tool choices")
        name = inner.get("name") if isinstance(inner, dict) else None
        if not isinstance(name, str) or not name:
            raise ValueError('a dict names a tool: {"type": "function", "function": {"name": ...}}')
        return name
    return value


def check_tool_choice(choice: str | None, tools: Iterable[ToolDef] | None) -> None:
    """``choice`` is a mode, or one of the request's tools."""
    if not choice or choice in TOOL_CHOICE_MODES:
        return
    names = [t.name for t in tools or ()]
    if choice not in names:
        known = ", ".join([*TOOL_CHOICE_MODES, *names])
        raise ValueError(f"{choice!r} is not one of {known}")


def check_validate_before_streaming(value: bool, fmt: ResponseFormatIn | None) -> None:
    if value and (fmt is None or not fmt.is_json):
        raise ValueError(
            'needs a JSON response_format (type "json_object" or "json_schema"); '
            "remove it or give one"
        )


class Sampling(_Strict):
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0)
    stop: list[str] = Field(default_factory=list, max_length=8)


class LatencyBudget(_Strict):
    ttft_ms: int = Field(0, ge=0)
    total_ms: int = Field(0, ge=0)


class EdgeAffinity(_Strict):
    site: str = ""
    device_id: str = ""


class GenerateBody(_Strict):
    messages: list[Message] = Field(min_length=1, max_length=1024)
    max_output_tokens: int = Field(0, ge=0, le=1_000_000)
    sampling: Sampling = Sampling()
    latency_budget: LatencyBudget = LatencyBudget()
    max_cost_usd: float | None = Field(None, ge=0)
    data_class: Literal["public", "internal", "restricted"] | None = None
    pin_tiers: list[TierName] = Field(default_factory=list)
    pin_backends: list[str] = Field(default_factory=list)
    exclude_tiers: list[TierName] = Field(default_factory=list)
    exclude_backends: list[str] = Field(default_factory=list)
    model_family: str = ""
    capabilities: list[str] = Field(default_factory=list)
    edge_affinity: EdgeAffinity = EdgeAffinity()
    request_id: Annotated[str, Field(pattern=_ID)] | None = None
    objective: Literal["cheapest", "fastest", "weighted", "balanced"] | None = None
    session_id: SessionId | None = None
    context_strategy: StrategyName | None = None
    tools: list[ToolDef] = Field(default_factory=list, max_length=MAX_TOOLS, exclude_if=_empty)
    tool_choice: str = Field("", exclude_if=_empty)
    response_format: ResponseFormatIn | None = Field(None, exclude_if=lambda v: v is None)
    validate_before_streaming: StrictBool = Field(False, exclude_if=_empty)

    #: A session applies without ``session_id`` (a WebSocket connection's own).
    session_implied: ClassVar[bool] = False

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _choice_name(cls, value: Any) -> Any:
        return tool_choice_name(value)

    @field_validator("tool_choice")
    @classmethod
    def _choice_of_the_tools(cls, value: str, info: ValidationInfo) -> str:
        if "tools" in info.data:  # else the tools have their own error
            check_tool_choice(value, info.data["tools"])
        return value

    @field_validator("validate_before_streaming")
    @classmethod
    def _validate_needs_json(cls, value: bool, info: ValidationInfo) -> bool:
        if "response_format" in info.data:  # else the format has its own error
            check_validate_before_streaming(value, info.data["response_format"])
        return value

    @field_validator("context_strategy")
    @classmethod
    def _strategy_needs_a_session(cls, value: str | None, info: ValidationInfo) -> str | None:
        # session_id is validated first; when it is missing from info.data it was invalid
        # and already has its own error.
        if value and not cls.session_implied and info.data.get("session_id", "x") is None:
            raise ValueError("applies to a session: give session_id too")
        return value

    def to_proto(
        self, *, request_id: str = "", session_id: str | None = None
    ) -> rpb.GenerateRequest:
        """The request; ``session_id`` (a WebSocket connection's) replaces the body's."""
        s = self.sampling
        fmt = self.response_format
        return make_request(
            messages=[m.as_option() for m in self.messages],
            max_output_tokens=self.max_output_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            seed=s.seed,
            stop=s.stop,
            ttft_budget_ms=self.latency_budget.ttft_ms,
            total_budget_ms=self.latency_budget.total_ms,
            max_cost_usd=self.max_cost_usd,
            data_class=self.data_class or "",
            pin_tiers=self.pin_tiers,
            pin_backends=self.pin_backends,
            exclude_tiers=self.exclude_tiers,
            exclude_backends=self.exclude_backends,
            model_family=self.model_family,
            capabilities=self.capabilities,
            site=self.edge_affinity.site,
            device_id=self.edge_affinity.device_id,
            request_id=request_id or self.request_id or "",
            objective=self.objective or "",
            session_id=(self.session_id or "") if session_id is None else session_id,
            context_strategy=self.context_strategy or "",
            tools=[t.as_option() for t in self.tools],
            tool_choice=self.tool_choice,
            validate_before_streaming=self.validate_before_streaming,
            **(fmt.as_options() if fmt is not None else {}),
        )


class WsRequest(GenerateBody):
    """``request`` of a WebSocket message: ``context_strategy`` may come without
    ``session_id`` (it applies to the connection's session)."""

    session_implied: ClassVar[bool] = True


class WsMessage(_Strict):
    """A WebSocket message: ``{"action": "generate", "request": {...}, "session": true}``.

    ``session`` (default true): the message continues the connection's own session unless
    ``request.session_id`` names another; false sends it without a session (stateless).
    """

    action: Literal["generate", "route"] = "generate"
    request: WsRequest
    session: StrictBool = True

    @field_validator("session")
    @classmethod
    def _opt_out_is_whole(cls, value: bool, info: ValidationInfo) -> bool:
        request = info.data.get("request")
        if not value and request is not None:
            if request.session_id:
                raise ValueError("false conflicts with request.session_id; send one of them")
            if request.context_strategy:
                raise ValueError(
                    "false leaves no session for request.context_strategy; drop one of them"
                )
        return value


class Job(_Strict):
    """An SQS job: ``{"job_id": "...", "request": {...}}``; the result goes to S3 under it."""

    job_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")]
    request: GenerateBody


# --- errors ---------------------------------------------------------------------------


def field_path(loc: tuple[int | str, ...]) -> str:
    """("messages", 0, "content") -> "messages[0].content"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "body"


def describe(err: ValidationError, *, prefix: str = "") -> tuple[str, str]:
    """(field, message) for the first error, with a count of the others."""
    errors = err.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    path = field_path(loc)
    if prefix:
        path = f"{prefix}.{path}" if path != "body" else prefix
    msg = first["msg"]
    if first["type"] == "value_error":  # our validators' own words, without "Value error, "
        msg = str(first.get("ctx", {}).get("error", msg))
    if first["type"] == "extra_forbidden":
        msg = "unknown field; remove it (see docs/lambda.md for the request shape)"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return path, f"{path}: {msg}{more}"


# --- proto -> JSON --------------------------------------------------------------------


def estimate_dict(e: rpb.Estimate) -> dict[str, Any]:
    return {
        "ttft_ms": round(e.ttft_ms, 3),
        "total_ms": round(e.total_ms, 3),
        "cost_usd": e.cost_usd,
        "queue_wait_ms": round(e.queue_wait_ms, 3),
        "from_priors": e.from_priors,
        "prompt_tokens": e.prompt_tokens,
    }


def context_dict(f: spb.ContextFit) -> dict[str, Any]:
    """How a session's history was fitted to one backend's window."""
    return {
        "turns_kept": f.turns_kept,
        "turns_dropped": f.turns_dropped,
        "turns_summarized": f.turns_summarized,
        "tokens_kept": f.tokens_kept,
        "tokens_dropped": f.tokens_dropped,
        "summary_used": f.summary_used,
        "note": f.note,
    }


def candidate_dict(c: rpb.CandidateReport) -> dict[str, Any]:
    out: dict[str, Any] = {
        "backend": c.backend,
        "tier": TIERS.name(c.tier),
        "accepted": c.accepted,
        "reason": c.reason,
    }
    if c.accepted:
        out.update(rank=c.rank, meets_budget=c.meets_budget, estimate=estimate_dict(c.estimate))
    else:
        out["rejected_by"] = c.rejected_by
    if c.HasField("context"):  # with a session only
        out["context"] = context_dict(c.context)
    return out


def decision_dict(d: rpb.Decision, *, candidates: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "request_id": d.request_id,
        "backend": d.backend,
        "tier": TIERS.name(d.tier),
        "fallbacks": list(d.fallbacks),
        "objective": OBJECTIVES.name(d.objective),
        "budget_unmet": d.budget_unmet,
        "explanation": d.explanation,
        "estimate": estimate_dict(d.estimate),
        "decision_us": round(d.decision_us, 1),
        # With a session: its id, the strategy applied, its turns before this one.
        "session_id": d.session_id,
        "context_strategy": CONTEXT_STRATEGIES.name(d.context_strategy),
        "session_turns": d.session_turns,
    }
    if candidates:
        out["candidates"] = [candidate_dict(c) for c in d.candidates]
    return out


def usage_dict(u: rpb.Usage) -> dict[str, Any]:
    return {
        "request_id": u.request_id,
        "backend": u.backend,
        "tier": TIERS.name(u.tier),
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cost_usd": u.cost_usd,
        "ttft_ms": round(u.ttft_ms, 3),
        "total_ms": round(u.total_ms, 3),
        "finish_reason": FINISH_REASONS.name(u.finish_reason),
        "complete": u.complete,
        "error": u.error,
        "tokens_estimated": u.tokens_estimated,
        "attempts": u.attempts,
        # Why the answer misses the request's JSON format or a tool's parameters ("").
        "format_error": u.format_error,
        "tool_calls": u.tool_calls,
    }


def tool_call_dict(c: tpb.ToolCall) -> dict[str, Any]:
    """A whole tool call: ``{"id", "name", "arguments"}`` (arguments: JSON text)."""
    return {"id": c.id, "name": c.name, "arguments": c.arguments}


def tool_call_delta_dict(d: tpb.ToolCallDelta) -> dict[str, Any]:
    """A fragment as the stream carries it: ``id`` and ``name`` on a call's first one."""
    return {"index": d.index, "id": d.id, "name": d.name, "arguments": d.arguments}


class ToolCallJoin:
    """The tool calls of a stream, joined from their fragments as the client library's
    ``Completion.tool_calls`` are (the first id and name of an index win; a call without
    an id is ``call_<index>``, without arguments ``{}``)."""

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, d: tpb.ToolCallDelta) -> bool:
        """Add a fragment; True when it is the first of its call."""
        call = self._calls.get(d.index)
        first = call is None
        if call is None:
            call = self._calls[d.index] = ["", ""]
        call[0] = call[0] or d.id
        call[1] = call[1] or d.name
        if d.arguments:
            call.append(d.arguments)
        return first

    def calls(self) -> list[tpb.ToolCall]:
        return [
            tpb.ToolCall(id=c[0] or f"call_{i}", name=c[1], arguments="".join(c[2:]) or "{}")
            for i, c in sorted(self._calls.items())
        ]


def failover_dict(f: rpb.Failover) -> dict[str, Any]:
    return {
        "from_backend": f.from_backend,
        "to_backend": f.to_backend,
        "to_tier": TIERS.name(f.to_tier),
        "reason": f.reason,
        "attempt": f.attempt,
    }
