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
"""

from __future__ import annotations

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
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
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


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


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
    objective: Literal["cheapest", "fastest", "weighted"] | None = None
    session_id: SessionId | None = None
    context_strategy: StrategyName | None = None

    #: A session applies without ``session_id`` (a WebSocket connection's own).
    session_implied: ClassVar[bool] = False

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
        return make_request(
            messages=[(m.role, m.content) for m in self.messages],
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
    }


def failover_dict(f: rpb.Failover) -> dict[str, Any]:
    return {
        "from_backend": f.from_backend,
        "to_backend": f.to_backend,
        "to_tier": TIERS.name(f.to_tier),
        "reason": f.reason,
        "attempt": f.attempt,
    }
