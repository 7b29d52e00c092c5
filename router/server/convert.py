"""proto <-> domain. Validation of incoming requests lives here: every rejection
names the field and the fix (INVALID_ARGUMENT)."""

from __future__ import annotations

import json
import math
import re
import uuid

from hybrid_router.client.enums import (
    CIRCUIT_STATES,
    CONTEXT_STRATEGIES,
    DATA_CLASSES,
    FINISH_REASONS,
    OBJECTIVES,
    RESPONSE_FORMATS,
    ROLES,
    TIERS,
    TOOL_CHOICES,
)
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import sessions_pb2 as spb
from hybrid_router.v1 import types_pb2 as tpb

from router.config import PolicyConfig
from router.errors import InvalidRequest
from router.policy.estimate import prefill_rate
from router.tools import schema as tool_schema
from router.tools.needs import needed
from router.types import (
    BackendSnapshot,
    BackendSpec,
    CandidateReport,
    CircuitState,
    ContextFit,
    ContinuationEvent,
    DataClass,
    DeltaEvent,
    Estimate,
    FailoverEvent,
    FinishReason,
    FormatType,
    InferenceRequest,
    Message,
    Objective,
    Plan,
    ResponseFormat,
    Role,
    Sampling,
    Tier,
    ToolCall,
    ToolCallEvent,
    ToolChoice,
    ToolChoiceMode,
    ToolSpec,
    UsageEvent,
)

# The proto <-> domain tables, built from the one table of names (hybrid_router.client.
# enums, read from the proto enums): router.types' values are those names.
TIER_TO_PB = {t: TIERS[t.value] for t in Tier}
TIER_FROM_PB = {n: t for t, n in TIER_TO_PB.items()}
DATA_CLASS_TO_PB = {d: DATA_CLASSES[d.value] for d in DataClass}
#: An unspecified data class is treated as internal (docs/policy.md).
DATA_CLASS_FROM_PB = {
    tpb.DATA_CLASS_UNSPECIFIED: DataClass.INTERNAL,
    **{n: d for d, n in DATA_CLASS_TO_PB.items()},
}
ROLE_FROM_PB = {ROLES[r.value]: r for r in Role}
OBJECTIVE_TO_PB = {o: OBJECTIVES[o.value] for o in Objective}
OBJECTIVE_FROM_PB = {n: o for o, n in OBJECTIVE_TO_PB.items()}
FINISH_TO_PB = {f: FINISH_REASONS[f.value] for f in FinishReason}
CIRCUIT_TO_PB = {c: CIRCUIT_STATES[c.value] for c in CircuitState}

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")
MAX_MESSAGES = 1024
MAX_STOP = 8
_BACKEND_TIERS = "TIER_HOSTED, TIER_GPU or TIER_EDGE"


def _tiers(values, field: str, *, cache: bool = False):  # type: ignore[no-untyped-def]
    """The tiers named; TIER_CACHE only where ``cache`` (exclude_tiers: skip the cache)."""
    out: set[Tier] = set()
    for i, v in enumerate(values):
        tier = TIER_FROM_PB.get(v)
        if tier is None or (tier is Tier.CACHE and not cache):
            allowed = "TIER_HOSTED, TIER_GPU, TIER_EDGE or TIER_CACHE" if cache else _BACKEND_TIERS
            raise InvalidRequest(f"{field}[{i}]", f"must be {allowed}")
        out.add(tier)
    return frozenset(out)


def _names(values, field: str) -> frozenset[str]:  # type: ignore[no-untyped-def]
    for i, v in enumerate(values):
        if not v or len(v) > 64:
            raise InvalidRequest(f"{field}[{i}]", "must be a backend name (1-64 characters)")
    return frozenset(values)


def request_from_proto(
    pb: rpb.GenerateRequest, cfg: PolicyConfig, *, tenant: str = "", request_id: str = ""
) -> InferenceRequest:
    """Validate and convert. ``request_id`` (e.g. from metadata) wins over the field."""
    if not pb.messages and not pb.template:
        raise InvalidRequest("messages", "must contain at least one message (or name a template)")
    if len(pb.messages) > MAX_MESSAGES:
        raise InvalidRequest("messages", f"at most {MAX_MESSAGES} messages per request")
    messages = [message_from_proto(m, f"messages[{i}]") for i, m in enumerate(pb.messages)]
    if all(m.role is Role.SYSTEM for m in messages) and not pb.template:
        raise InvalidRequest("messages", "needs at least one user or assistant message")
    if (pb.template_version or pb.template_variables) and not pb.template:
        raise InvalidRequest("template", "template_version and template_variables need template")

    max_out = pb.max_output_tokens or cfg.default_max_output_tokens
    if max_out > cfg.max_output_tokens_limit:
        raise InvalidRequest(
            "max_output_tokens",
            f"{pb.max_output_tokens} is above this router's limit of "
            f"{cfg.max_output_tokens_limit}; ask for fewer tokens",
        )

    s = pb.sampling
    if s.HasField("temperature") and not (0.0 <= s.temperature <= 2.0):
        raise InvalidRequest("sampling.temperature", "must be between 0 and 2")
    if s.HasField("top_p") and not (0.0 < s.top_p <= 1.0):
        raise InvalidRequest("sampling.top_p", "must be in (0, 1]")
    if len(s.stop) > MAX_STOP:
        raise InvalidRequest("sampling.stop", f"at most {MAX_STOP} stop strings")
    sampling = Sampling(
        temperature=s.temperature if s.HasField("temperature") else None,
        top_p=s.top_p if s.HasField("top_p") else None,
        top_k=s.top_k if s.HasField("top_k") else None,
        seed=s.seed if s.HasField("seed") else None,
        stop=tuple(s.stop),
    )

    max_cost = None
    if pb.HasField("max_cost_usd"):
        if not math.isfinite(pb.max_cost_usd) or pb.max_cost_usd < 0:
            raise InvalidRequest("max_cost_usd", "must be a non-negative number of USD")
        max_cost = pb.max_cost_usd

    if pb.data_class not in DATA_CLASS_FROM_PB:
        raise InvalidRequest(
            "data_class", "must be DATA_CLASS_PUBLIC, DATA_CLASS_INTERNAL or DATA_CLASS_RESTRICTED"
        )
    if pb.objective != rpb.OBJECTIVE_UNSPECIFIED and pb.objective not in OBJECTIVE_FROM_PB:
        raise InvalidRequest(
            "objective", "must be OBJECTIVE_CHEAPEST, _FASTEST, _WEIGHTED or _BALANCED"
        )

    rid = request_id or pb.request_id
    if rid and not _REQUEST_ID.match(rid):
        raise InvalidRequest(
            "request_id", "use 1-128 characters from letters, digits and . _ : / -"
        )
    if len(pb.session_id) > 128:
        raise InvalidRequest("session_id", "at most 128 characters")
    strategy = CONTEXT_STRATEGIES.name(pb.context_strategy)
    if pb.context_strategy and not strategy:
        raise InvalidRequest(
            "context_strategy", "must be CONTEXT_STRATEGY_SLIDING, _SUMMARIZE or _STRICT"
        )
    if strategy and not pb.session_id:
        raise InvalidRequest("context_strategy", "applies to a session: set session_id too")
    for fname in ("model_family",):
        if len(getattr(pb, fname)) > 64:
            raise InvalidRequest(fname, "at most 64 characters")

    tools = tuple(
        ToolSpec(name=t.name, description=t.description, parameters=t.parameters_json)
        for t in pb.tools
    )
    tool_schema.check_tools(tools)
    mode = TOOL_CHOICE_FROM_PB.get(pb.tool_choice.mode)
    if mode is None:
        raise InvalidRequest(
            "tool_choice.mode", "must be TOOL_CHOICE_MODE_AUTO, _NONE, _REQUIRED or _NAMED"
        )
    tool_schema.check_choice(mode, pb.tool_choice.name, tools)
    ftype = FORMAT_FROM_PB.get(pb.response_format.type)
    if ftype is None:
        raise InvalidRequest(
            "response_format.type",
            "must be RESPONSE_FORMAT_TYPE_TEXT, _JSON_OBJECT or _JSON_SCHEMA",
        )
    fmt = ResponseFormat(
        type=ftype,
        schema=pb.response_format.schema_json,
        name=pb.response_format.name,
        strict=pb.response_format.strict,
    )
    tool_schema.check_format(fmt)
    if pb.validate_before_streaming and not fmt.is_json:
        raise InvalidRequest(
            "validate_before_streaming", "needs a JSON response_format (json_object or json_schema)"
        )

    budget = pb.latency_budget
    return InferenceRequest(
        messages=tuple(messages),
        max_output_tokens=max_out,
        request_id=rid or uuid.uuid4().hex,
        sampling=sampling,
        ttft_budget_ms=float(budget.ttft_ms) if budget.ttft_ms else None,
        total_budget_ms=float(budget.total_ms) if budget.total_ms else None,
        max_cost_usd=max_cost,
        data_class=DATA_CLASS_FROM_PB[pb.data_class],
        pin_tiers=_tiers(pb.pin_tiers, "pin_tiers"),
        pin_backends=_names(pb.pin_backends, "pin_backends"),
        exclude_tiers=_tiers(pb.exclude_tiers, "exclude_tiers", cache=True),
        exclude_backends=_names(pb.exclude_backends, "exclude_backends"),
        model_family=pb.model_family,
        capabilities=frozenset(pb.capabilities) | needed(tools, fmt, messages),
        site=pb.edge_affinity.site,
        device_id=pb.edge_affinity.device_id,
        session_id=pb.session_id,
        tenant=tenant,
        objective=OBJECTIVE_FROM_PB.get(pb.objective),
        context_strategy=strategy,
        tools=tools,
        tool_choice=ToolChoice(mode, pb.tool_choice.name),
        response_format=fmt,
        validate_before_streaming=pb.validate_before_streaming,
        continue_on_failure=pb.continue_on_failure,
    )


TOOL_CHOICE_FROM_PB = {
    0: ToolChoiceMode.AUTO,
    **{TOOL_CHOICES[m.value]: m for m in ToolChoiceMode},
}
TOOL_CHOICE_TO_PB = {m: TOOL_CHOICES[m.value] for m in ToolChoiceMode}
FORMAT_FROM_PB = {0: FormatType.TEXT, **{RESPONSE_FORMATS[f.value]: f for f in FormatType}}
FORMAT_TO_PB = {f: RESPONSE_FORMATS[f.value] for f in FormatType}
ROLE_TO_PB = {r: ROLES[r.value] for r in Role}
MAX_TOOL_CALLS = 128


def message_from_proto(m: tpb.ChatMessage, field: str) -> Message:
    """One checked message: roles, tool calls on assistant turns, tool results naming
    their call. Shared with the SessionService and the model server's requests."""
    role = ROLE_FROM_PB.get(m.role)
    if role is None:
        raise InvalidRequest(
            f"{field}.role", "must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL"
        )
    if m.tool_calls and role is not Role.ASSISTANT:
        raise InvalidRequest(f"{field}.tool_calls", "only an assistant message carries tool calls")
    if len(m.tool_calls) > MAX_TOOL_CALLS:
        raise InvalidRequest(f"{field}.tool_calls", f"at most {MAX_TOOL_CALLS} per message")
    calls = []
    for j, c in enumerate(m.tool_calls):
        where = f"{field}.tool_calls[{j}]"
        if not c.id or len(c.id) > 128:
            raise InvalidRequest(f"{where}.id", "must be the call's id (1-128 characters)")
        if not tool_schema.NAME.match(c.name):
            raise InvalidRequest(
                f"{where}.name", "must be a tool name (1-64 letters, digits, _ and -)"
            )
        args = c.arguments or "{}"
        try:
            value = json.loads(args)
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            raise InvalidRequest(f"{where}.arguments", "must be one JSON object, as text")
        calls.append(ToolCall(c.id, c.name, args))
    if role is Role.TOOL:
        if not m.tool_call_id:
            raise InvalidRequest(
                f"{field}.tool_call_id", "a tool message names the call it answers"
            )
    elif m.tool_call_id:
        raise InvalidRequest(f"{field}.tool_call_id", "applies to ROLE_TOOL messages only")
    if not m.content and not calls:
        raise InvalidRequest(f"{field}.content", "must not be empty")
    if len(m.name) > 64:
        raise InvalidRequest(f"{field}.name", "at most 64 characters")
    return Message(role, m.content, tuple(calls), m.tool_call_id, m.name)


def message_to_proto(m: Message) -> tpb.ChatMessage:
    return tpb.ChatMessage(
        role=ROLE_TO_PB[m.role],  # type: ignore[arg-type]
        content=m.content,
        tool_calls=[
            tpb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in m.tool_calls
        ],
        tool_call_id=m.tool_call_id,
        name=m.name,
    )


def tools_to_proto(req: InferenceRequest) -> dict[str, object]:
    """The tool fields of a request, for a ModelGenerateRequest (keyword arguments)."""
    fmt = req.response_format
    return {
        "tools": [
            tpb.ToolDefinition(name=t.name, description=t.description, parameters_json=t.parameters)
            for t in req.tools
        ],
        "tool_choice": tpb.ToolChoice(
            mode=TOOL_CHOICE_TO_PB[req.tool_choice.mode],  # type: ignore[arg-type]
            name=req.tool_choice.name,
        ),
        "response_format": tpb.ResponseFormat(
            type=FORMAT_TO_PB[fmt.type],  # type: ignore[arg-type]
            schema_json=fmt.schema,
            name=fmt.name,
            strict=fmt.strict,
        ),
    }


def continuation_to_proto(ev: ContinuationEvent) -> rpb.GenerateEvent:
    return rpb.GenerateEvent(
        continuation=rpb.Continuation(
            from_backend=ev.from_backend,
            to_backend=ev.to_backend,
            reason=ev.reason,
            tokens_so_far=ev.tokens_so_far,
            to_tier=TIER_TO_PB[ev.to_tier],
            method=ev.method,
            attempt=ev.attempt,
        )
    )


def tool_call_to_proto(ev: ToolCallEvent) -> rpb.GenerateEvent:
    return rpb.GenerateEvent(
        tool_call=tpb.ToolCallDelta(index=ev.index, id=ev.id, name=ev.name, arguments=ev.arguments)
    )


def _estimate_pb(e: Estimate | None) -> rpb.Estimate | None:
    if e is None:
        return None
    return rpb.Estimate(
        ttft_ms=e.ttft_ms,
        total_ms=e.total_ms,
        cost_usd=e.cost_usd,
        queue_wait_ms=e.queue_wait_ms,
        from_priors=e.from_priors,
        prompt_tokens=e.prompt_tokens,
        token_count_method=(
            rpb.TOKEN_COUNT_METHOD_EXACT if e.tokens_exact else rpb.TOKEN_COUNT_METHOD_ESTIMATE
        ),
    )


def _candidate_pb(c: CandidateReport) -> rpb.CandidateReport:
    return rpb.CandidateReport(
        backend=c.backend,
        tier=TIER_TO_PB[c.tier],
        accepted=c.accepted,
        rejected_by=c.rejected_by,
        reason=c.reason,
        estimate=_estimate_pb(c.estimate),
        rank=c.rank,
        meets_budget=c.meets_budget,
        score=c.score if math.isfinite(c.score) else 0.0,
        context=_context_pb(c.context),
    )


def _context_pb(fit: ContextFit | None) -> spb.ContextFit | None:
    if fit is None:
        return None
    return spb.ContextFit(
        turns_kept=fit.turns_kept,
        turns_dropped=fit.turns_dropped,
        turns_summarized=fit.turns_summarized,
        tokens_kept=fit.tokens_kept,
        tokens_dropped=fit.tokens_dropped,
        summary_used=fit.summary_used,
        note=fit.note,
    )


def decision_to_proto(plan: Plan) -> rpb.Decision:
    primary = plan.report(plan.primary)
    return rpb.Decision(
        request_id=plan.request_id,
        backend=plan.primary,
        tier=TIER_TO_PB[primary.tier] if primary else tpb.TIER_UNSPECIFIED,
        fallbacks=list(plan.fallbacks),
        candidates=[_candidate_pb(c) for c in plan.candidates],
        objective=OBJECTIVE_TO_PB[plan.objective],
        budget_unmet=plan.budget_unmet,
        explanation=plan.explanation,
        estimate=_estimate_pb(primary.estimate if primary else None),
        decision_us=plan.decision_us,
        session_id=plan.session_id,
        context_strategy=CONTEXT_STRATEGIES.number(plan.context_strategy),
        session_turns=plan.session_turns,
        cache=plan.cache,
    )


def delta_to_proto(ev: DeltaEvent) -> rpb.GenerateEvent:
    return rpb.GenerateEvent(delta=tpb.TextDelta(text=ev.text, tokens=ev.tokens))


def failover_to_proto(ev: FailoverEvent) -> rpb.GenerateEvent:
    return rpb.GenerateEvent(
        failover=rpb.Failover(
            from_backend=ev.from_backend,
            to_backend=ev.to_backend,
            reason=ev.reason,
            attempt=ev.attempt,
            to_tier=TIER_TO_PB[ev.to_tier],
        )
    )


def usage_to_proto(ev: UsageEvent) -> rpb.GenerateEvent:
    return rpb.GenerateEvent(
        usage=rpb.Usage(
            input_tokens=ev.input_tokens,
            output_tokens=ev.output_tokens,
            cost_usd=ev.cost_usd,
            backend=ev.backend,
            tier=TIER_TO_PB[ev.tier],
            ttft_ms=ev.ttft_ms,
            total_ms=ev.total_ms,
            finish_reason=FINISH_TO_PB[ev.finish_reason],
            complete=ev.complete,
            error=ev.error,
            tokens_estimated=ev.tokens_estimated,
            template=ev.template,
            template_version=ev.template_version,
            request_id=ev.request_id,
            attempts=ev.attempts,
            format_error=ev.format_error,
            tool_calls=ev.tool_calls,
            continued=ev.continued,
        )
    )


def backend_status(
    spec: BackendSpec, snap: BackendSnapshot, *, description: str = ""
) -> rpb.BackendStatus:
    p = spec.prices
    return rpb.BackendStatus(
        name=spec.name,
        tier=TIER_TO_PB[spec.tier],
        kind=spec.kind,
        endpoint=spec.endpoint,
        model=spec.model,
        model_family=spec.model_family,
        context_window=spec.context_window,
        max_payload_bytes=spec.max_payload_bytes,
        prices=rpb.Prices(
            input_per_mtok_usd=p.input_per_mtok_usd,
            output_per_mtok_usd=p.output_per_mtok_usd,
            gpu_hourly_usd=p.gpu_hourly_usd,
            edge_per_mtok_usd=p.edge_per_mtok_usd,
            source=p.source,
            gpu_throughput_tokens_per_s=p.gpu_throughput_tokens_per_s,
            gpu_utilization=p.gpu_utilization,
            gpu_prefill_ratio=p.gpu_prefill_ratio,
        ),
        data_classes=[DATA_CLASS_TO_PB[d] for d in sorted(spec.data_classes)],
        max_concurrency=spec.max_concurrency,
        healthy=snap.healthy,
        circuit=CIRCUIT_TO_PB[snap.circuit],
        in_flight=snap.in_flight,
        queue_depth=snap.reported_load or 0,
        ttft_p50_ms=snap.ttft_p50_ms or 0.0,
        ttft_p90_ms=snap.ttft_p90_ms or 0.0,
        decode_tokens_per_s=snap.decode_tokens_per_s or 0.0,
        error_rate=snap.error_rate,
        requests=snap.requests,
        failures=snap.failures,
        from_priors=snap.ttft_p50_ms is None,
        decode_from_priors=not snap.decode_tokens_per_s,  # None (or 0) until observed
        prefill_tokens_per_s=prefill_rate(spec.priors, snap),
        capabilities=sorted(spec.capabilities),
        site=spec.site,
        device_id=spec.device_id,
        detail=snap.detail or description,
        last_error=snap.last_error,
        last_error_unix_ms=snap.last_error_unix_ms,
        priors=rpb.Priors(
            ttft_ms=spec.priors.ttft_ms,
            decode_tokens_per_s=spec.priors.decode_tokens_per_s,
            ttft_p90_ms=spec.priors.ttft_p90(),
            prefill_tokens_per_s=spec.priors.prefill_tokens_per_s,
        ),
    )
