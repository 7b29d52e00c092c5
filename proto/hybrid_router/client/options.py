"""Request options -> the contract's ``GenerateRequest``, checked on the way.

:class:`RequestOptions` holds plain values (enum names as lower-case strings, see
:mod:`hybrid_router.client.enums`); :func:`build_request` (or ``opts.to_proto()``) makes
the message, and :func:`make_request` does both from keyword arguments. A wrong value
raises :class:`~hybrid_router.client.errors.OptionError` naming the option
(``pin_tiers: 'cloud' is not one of hosted, gpu, edge``, ``messages[1].role: ...``,
``max_output_tokens: must be >= 0``, ``seed: must be at most ...`` for a value its
protocol field cannot hold) before anything is sent. The router checks the rest
(limits, backend names) and names the field in its INVALID_ARGUMENT.

Sessions: ``session_id`` names a conversation the router keeps (``SessionService``, see
:mod:`hybrid_router.client.sessions`); the messages are then only the new turn, and the
router adds the stored history fitted to each backend's window (an unknown id starts a
session). ``context_strategy`` (``sliding``, ``summarize``, ``strict``) overrides the
session's for this request and needs ``session_id``.

Tools and JSON answers (docs/tools.md): ``tools`` (OpenAI-shaped or flat dicts),
``tool_choice`` (``auto``, ``none``, ``required`` or a tool's name), ``response_format``
(``text``, ``json_object``, ``json_schema``) with ``json_schema`` (a dict or JSON text;
alone it implies ``json_schema``), ``validate_before_streaming``. ``messages`` may hold
OpenAI-shaped dicts (assistant ``tool_calls``, ``role: "tool"`` with ``tool_call_id``):
see :mod:`hybrid_router.client.tools`.

Unset stays unset: 0 / "" / None leave the router's defaults (``max_cost_usd``,
``temperature``... are proto3 optionals and are only set when given).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from hybrid_router.client.enums import (
    BACKEND_TIERS,
    CONTEXT_STRATEGIES,
    DATA_CLASSES,
    OBJECTIVES,
    TIERS,
)
from hybrid_router.client.errors import OptionError
from hybrid_router.client.sessions import check_session_id
from hybrid_router.client.tools import (
    build_message,
    build_response_format,
    build_tool_choice,
    build_tools,
)
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb

__all__ = ["RequestOptions", "build_request", "make_request"]


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Everything a caller puts into a ``GenerateRequest``.

    The conversation is ``prompt`` (one user message) or ``messages`` (``(role,
    content)`` pairs, roles ``system|user|assistant``): exactly one of them. ``system``,
    when given, goes first as a system message. With ``session_id`` they are the new turn
    only (the router adds the session's history); ``context_strategy`` needs it.
    """

    prompt: str | None = None
    #: ``(role, content)`` pairs, OpenAI-shaped dicts or ``ChatMessage`` objects.
    messages: tuple[Any, ...] = ()
    system: str = ""
    max_output_tokens: int = 0
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ttft_budget_ms: int = 0
    total_budget_ms: int = 0
    max_cost_usd: float | None = None
    data_class: str = ""
    pin_tiers: tuple[str, ...] = ()
    pin_backends: tuple[str, ...] = ()
    exclude_tiers: tuple[str, ...] = ()
    exclude_backends: tuple[str, ...] = ()
    model_family: str = ""
    capabilities: tuple[str, ...] = ()
    site: str = ""
    device_id: str = ""
    request_id: str = ""
    objective: str = ""
    session_id: str = ""
    context_strategy: str = ""
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: str | Mapping[str, Any] = ""
    response_format: str = ""
    json_schema: Mapping[str, Any] | str | None = None
    schema_name: str = ""
    strict: bool = False
    validate_before_streaming: bool = False
    continue_on_failure: bool = False

    def to_proto(self) -> rpb.GenerateRequest:
        return build_request(self)


_NON_NEGATIVE = (
    "max_output_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "ttft_budget_ms",
    "total_budget_ms",
    "max_cost_usd",
)


_UINT32_MAX = 2**32 - 1
#: The widest value each option's protocol field holds (uint32, uint64, float, double).
_MAXIMA: dict[str, float] = {
    "max_output_tokens": _UINT32_MAX,
    "top_k": _UINT32_MAX,
    "ttft_budget_ms": _UINT32_MAX,
    "total_budget_ms": _UINT32_MAX,
    "seed": 2**64 - 1,
    # float fields: beyond this a float32 is infinite.
    "temperature": 3.4e38,
    "top_p": 3.4e38,
    "max_cost_usd": 1e300,
}


def _non_negative(option: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise OptionError(option, f"must be a finite number, got {value!r}")
    if value < 0:
        raise OptionError(option, f"must be >= 0, got {value!r}")
    if value > _MAXIMA[option]:
        most = _MAXIMA[option]
        shown = str(most) if isinstance(most, int) else f"{most:g}"
        raise OptionError(option, f"must be at most {shown}, got {value!r}")


def _chat(opts: RequestOptions) -> list[tpb.ChatMessage]:
    if (opts.prompt is None) == (not opts.messages):
        raise OptionError("prompt", "give either prompt or messages (one of them)")
    chat = []
    if opts.system:
        chat.append(tpb.ChatMessage(role=tpb.ROLE_SYSTEM, content=opts.system))
    if opts.prompt is not None:
        chat.append(tpb.ChatMessage(role=tpb.ROLE_USER, content=opts.prompt))
    for i, item in enumerate(opts.messages):
        chat.append(build_message(item, i))
    return chat


def build_request(opts: RequestOptions) -> rpb.GenerateRequest:
    """The ``GenerateRequest`` for ``opts``; :class:`OptionError` names a wrong option."""
    for name in _NON_NEGATIVE:
        _non_negative(name, getattr(opts, name))
    if not all(" " <= c <= "~" for c in opts.request_id):
        # It travels as x-request-id metadata too.
        raise OptionError("request_id", "must be printable ASCII on one line")
    if opts.session_id:
        check_session_id(opts.session_id)
    strategy = CONTEXT_STRATEGIES.number(opts.context_strategy, "context_strategy")
    if strategy and not opts.session_id:
        raise OptionError("context_strategy", "applies to a session: give a session id too")
    sampling = tpb.SamplingParams(stop=list(opts.stop))
    if opts.temperature is not None:
        sampling.temperature = opts.temperature
    if opts.top_p is not None:
        sampling.top_p = opts.top_p
    if opts.top_k is not None:
        sampling.top_k = opts.top_k
    if opts.seed is not None:
        sampling.seed = opts.seed
    req = rpb.GenerateRequest(
        messages=_chat(opts),
        max_output_tokens=opts.max_output_tokens,
        sampling=sampling,
        latency_budget=rpb.LatencyBudget(
            ttft_ms=opts.ttft_budget_ms, total_ms=opts.total_budget_ms
        ),
        data_class=DATA_CLASSES.number(opts.data_class, "data_class"),  # type: ignore[arg-type]
        pin_tiers=_pin_tiers(opts.pin_tiers),  # type: ignore[arg-type]
        pin_backends=list(opts.pin_backends),
        exclude_tiers=TIERS.numbers(opts.exclude_tiers, "exclude_tiers"),  # type: ignore[arg-type]
        exclude_backends=list(opts.exclude_backends),
        model_family=opts.model_family,
        capabilities=list(opts.capabilities),
        edge_affinity=rpb.EdgeAffinity(site=opts.site, device_id=opts.device_id),
        request_id=opts.request_id,
        objective=OBJECTIVES.number(opts.objective, "objective"),  # type: ignore[arg-type]
        session_id=opts.session_id,
        context_strategy=strategy,  # type: ignore[arg-type]
        validate_before_streaming=opts.validate_before_streaming,
        continue_on_failure=opts.continue_on_failure,
    )
    if opts.tools:
        req.tools.extend(build_tools(opts.tools))
    if opts.tool_choice:
        req.tool_choice.CopyFrom(build_tool_choice(opts.tool_choice, [t.name for t in req.tools]))
    if opts.response_format or opts.json_schema not in (None, ""):
        req.response_format.CopyFrom(
            build_response_format(
                opts.response_format, opts.json_schema, opts.schema_name, opts.strict
            )
        )
    if opts.max_cost_usd is not None:
        req.max_cost_usd = opts.max_cost_usd
    return req


#: Options that hold tuples (make_request also takes lists for them).
_SEQUENCES = frozenset(
    {
        "stop",
        "pin_tiers",
        "pin_backends",
        "exclude_tiers",
        "exclude_backends",
        "capabilities",
        "tools",
    }
)


def make_request(
    prompt: str | None = None,
    *,
    messages: Iterable[Any] | None = None,
    **options: Any,
) -> rpb.GenerateRequest:
    """``build_request(RequestOptions(prompt=..., **options))`` from keyword arguments;
    lists are accepted where the options hold tuples. Unknown keywords raise TypeError."""
    known = {f.name for f in fields(RequestOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"make_request() got unknown option(s): {', '.join(unknown)}")
    values = {k: tuple(v) if k in _SEQUENCES else v for k, v in options.items()}  # type: ignore[arg-type]
    msgs = tuple(messages) if messages is not None else ()
    return build_request(RequestOptions(prompt=prompt, messages=msgs, **values))  # type: ignore[arg-type]


def _pin_tiers(names: Iterable[str]) -> list[int]:
    """pin_tiers' numbers: backend tiers only (``cache`` is the router's response cache)."""
    names = list(names)
    for n in names:
        if n == "cache":
            raise OptionError(
                "pin_tiers",
                f"'cache' is not a backend's tier: pin one of {', '.join(BACKEND_TIERS)} "
                "(exclude_tiers=['cache'] skips the response cache)",
            )
        if n not in BACKEND_TIERS:
            raise OptionError("pin_tiers", f"{n!r} is not one of {', '.join(BACKEND_TIERS)}")
    return TIERS.numbers(names, "pin_tiers")
