"""``plan()``: features + backend snapshots -> an ordered Plan with explanations.

Pure: no I/O, no clock of its own (the caller passes ``now``), no global state.

Errors, checked in this order (docs/policy.md#errors):

1. A name in ``pin_backends`` that is not a known backend: ``InvalidRequest("pin_backends")``,
   even when other backends would be accepted. Unknown names in ``exclude_backends`` are
   ignored (excluding something absent is already true; backends come and go at run time).
2. Nothing accepted: the *decisive* filter is the last filter in ``FILTERS`` order that
   rejected anything; every backend that reached it was rejected by it.
   - ``data_class``: ``NoTierAllowed`` (FAILED_PRECONDITION) with the data class and the
     tiers that allow it;
   - ``context_window``: ``NoWindowFits`` (OUT_OF_RANGE, never retryable) with the tokens
     needed and the largest window among the backends that reached that filter;
   - ``payload``: ``InvalidRequest("messages")``, the largest payload limit named;
   - ``cost``, when no backend was turned away for health or capacity (those may pass on
     a retry): ``CostCapTooLow`` (FAILED_PRECONDITION: the caller's cap, which waiting
     does not change), naming the cheapest estimate;
   - anything else (pins, capability, edge affinity, health, capacity):
     ``NoCandidate`` (UNAVAILABLE) listing each backend's rejection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from router.errors import (
    CostCapTooLow,
    InvalidRequest,
    NoCandidate,
    NoTierAllowed,
    NoWindowFits,
    RouterError,
)
from router.policy.estimate import estimate
from router.policy.filters import (
    CAPACITY,
    CONTEXT_WINDOW,
    COST,
    DATA_CLASS,
    FILTERS,
    HEALTH,
    PAYLOAD,
    RequestFilter,
    cost_rejection,
)
from router.policy.objectives import (
    TIER_ORDER,
    Candidate,
    effective,
    order_candidates,
    spread,
    uses_ttft,
)
from router.policy.records import DEFAULT_HEADROOM, PolicyParams
from router.types import (
    BackendSnapshot,
    BackendSpec,
    CandidateReport,
    CircuitState,
    Estimate,
    Features,
    InferenceRequest,
    Objective,
    Plan,
    Tier,
    frozen_factory,
    unfrozen_twin,
)

_new_report = frozen_factory(CandidateReport)
_new_plan = frozen_factory(Plan)


def _inline_twin(cls: type, names: tuple[str, ...]) -> type[Any]:
    """The unfrozen twin plan() builds ``cls`` from inline: the way frozen_factory's
    constructors do (allocate the twin, store every field, assign ``__class__``), without
    the call per record. plan() stores exactly ``names``: fail loudly if they change."""
    twin = unfrozen_twin(cls)
    if twin is None:
        raise TypeError(f"{cls.__name__} must stay a frozen, slotted dataclass (see plan())")
    if tuple(f.name for f in dataclasses.fields(cls)) != names:
        raise TypeError(f"{cls.__name__}'s fields changed: update its inline build in plan()")
    return twin


_REPORT_TWIN = _inline_twin(
    CandidateReport,
    (
        "backend",
        "tier",
        "accepted",
        "rejected_by",
        "reason",
        "estimate",
        "rank",
        "meets_budget",
        "score",
        "context",
    ),
)
_EDGE = Tier.EDGE
_OPEN = CircuitState.OPEN
_CHEAPEST_OBJECTIVE = Objective.CHEAPEST
_FASTEST_OBJECTIVE = Objective.FASTEST
_BALANCED_OBJECTIVE = Objective.BALANCED
_FILTER_INDEX = {name: i for i, name in enumerate(FILTERS)}
#: Rejections listed in a NoCandidate message before "... and N more".
_SUMMARY_LIMIT = 8


def plan(
    features: Features,
    backends: Sequence[tuple[BackendSpec, BackendSnapshot]],
    cfg: PolicyParams,
    now: float,
    *,
    detail: bool = True,
) -> Plan:
    """Filter, estimate and order ``backends`` for one request.

    ``cfg``: the policy's settings as a plain record (:class:`PolicyParams`, built by
    ``router.records.policy_params``). ``now`` is the monotonic clock reading the
    snapshots' ``retry_after_until`` uses.
    Raises InvalidRequest, NoTierAllowed, NoWindowFits, CostCapTooLow or NoCandidate
    (see the module doc).

    ``detail=False`` returns the same decision (order, objective, ``budget_unmet``)
    without the per-candidate reports and the explanation, which only the caller's
    telemetry reads: ``hybrid-router simulate`` plans a million requests this way.

    One pass per backend does what :meth:`RequestFilter.check`, :func:`estimate`,
    :func:`cost_rejection` and the columns of :func:`rank` do, inline (the decision hot
    path; tests/unit/test_plan_equivalence.py holds it to those building blocks):

    - a screen of the filters' predicates: a backend that fails any of them goes to
      ``RequestFilter.check``, which decides and names the rejection (so the screen only
      ever sends too many there, never too few, and reasons live in one place);
    - the estimate (:func:`router.policy.estimate.estimate`, called: its formulas live
      in one place);
    - the cost cap, the latency the objective compares and whether the budget is met.
    """
    req = features.request
    objective = req.objective or cfg.objective
    max_out = req.max_output_tokens or cfg.default_max_output_tokens
    if req.pin_backends:
        _check_pins(req, backends)

    flt = RequestFilter(features, max_out, now)
    check = flt.check
    counts = features.prompt_tokens
    min_samples = cfg.min_samples
    max_cost = req.max_cost_usd
    ttft_b = req.ttft_budget_ms
    total_b = req.total_budget_ms
    by_ttft = ttft_b is not None and total_b is None
    # What the request asks of every backend (the screen; see RequestFilter.check).
    pinned = bool(req.pin_tiers or req.pin_backends or req.exclude_tiers or req.exclude_backends)
    family = req.model_family.casefold()
    caps = req.capabilities
    data_class = req.data_class
    payload = features.payload_bytes
    affinity = bool(req.site or req.device_id)
    new, estimate_of = object.__new__, estimate
    edge, circuit_open = _EDGE, _OPEN

    accepted: list[Candidate] = []
    accept = accepted.append
    loads: list[float] = []  # each accepted candidate's load per slot (load spreading)
    add_load = loads.append
    rejected: list[tuple[BackendSpec, str, str, Estimate | None]] = []
    fitted = features.fitted  # a session request: the prompt differs per backend
    expected_out = features.expected_output_tokens
    ttft_p90 = cfg.ttft_p90
    prior_weight = cfg.ttft_prior_weight
    decode = cfg.decode_estimate
    for spec, snap in backends:
        size = payload
        if fitted is not None and spec.name in fitted:
            fit = fitted[spec.name]
            prompt, size = fit.tokens, fit.payload_bytes
        else:
            counted = counts.get(spec.tokenizer_id)
            prompt = counted if counted is not None else flt.prompt_tokens(spec)
        tokens = prompt.tokens
        tier = spec.tier
        load = snap.in_flight
        reported = snap.reported_load
        if reported is not None and reported > load:
            load = reported
        slots = spec.max_concurrency
        retry_after = snap.retry_after_until
        if (
            pinned
            or (family and spec.model_family != family)
            or (caps and not caps <= spec.capabilities)
            or data_class not in spec.data_classes
            or tokens + max_out > spec.context_window
            or size > spec.max_payload_bytes
            or (affinity and tier is edge)
            or not snap.healthy
            or snap.circuit is circuit_open
            or (retry_after is not None and retry_after > now)
            or load >= slots + spec.max_queue
        ):
            rejection = check(spec, snap, prompt)
            if rejection is not None:
                rejected.append((spec, rejection[0], rejection[1], None))
                continue

        est = estimate_of(
            spec,
            snap,
            prompt,
            max_out,
            min_samples,
            expected_out,
            ttft_p90,
            prior_weight,
            decode,
        )
        cost = est.cost_usd
        ttft = est.ttft_ms
        total = est.total_ms

        if max_cost is not None and cost > max_cost:
            rejected.append((spec, COST, cost_rejection(cost, max_cost) or "", est))
            continue
        accept(
            (
                spec,
                est,
                cost,
                ttft if by_ttft else total,
                (ttft_b is None or ttft <= ttft_b) and (total_b is None or total <= total_b),
            )
        )
        add_load(load / slots)

    if not accepted:
        raise _no_candidate(features, backends, rejected, max_out)

    # balanced: with room under the budget first for a request with one, cheapest without
    ranking = effective(objective, ttft_b, total_b)
    order, scores = order_candidates(
        ranking, accepted, cfg.weights, (ttft_b, total_b), cfg.headroom
    )
    if cfg.spread != "off" and len(order) > 1:
        order = spread(
            order,
            accepted,
            loads,
            cfg.spread,
            req.request_id,
            cfg.spread_tolerance,
        )
    kept = min(len(order), 1 + cfg.max_fallbacks)
    if not detail:  # the decision alone (the simulator)
        return _new_plan(
            request_id=req.request_id,
            objective=objective,
            order=tuple([accepted[i][0].name for i in order[:kept]]),
            candidates=(),
            budget_unmet=not accepted[order[0]][4],
            explanation="",
        )
    reports: list[CandidateReport] = []
    append = reports.append
    report_twin, report_cls = _REPORT_TWIN, CandidateReport
    for pos, i in enumerate(order):
        s, est, _, _, meets = accepted[i]
        report = new(report_twin)  # every field, then the class (_inline_twin)
        report.backend = s.name
        report.tier = s.tier
        report.accepted = True
        report.rejected_by = ""
        report.reason = ""
        report.estimate = est
        report.rank = pos + 1 if pos < kept else 0
        report.meets_budget = meets
        report.score = scores[i]
        report.context = None  # set by dispatch for a session request
        report.__class__ = report_cls
        append(report)
    new_report = _new_report
    # Positional: backend, tier, accepted, rejected_by, reason, estimate, rank,
    # meets_budget, score, context (CandidateReport's field order).
    for s, by, reason, cost_est in rejected:
        append(new_report(s.name, s.tier, False, by, reason, cost_est, 0, False, 0.0, None))
    first, first_est, _, _, first_meets = accepted[order[0]]
    return _new_plan(
        request_id=req.request_id,
        objective=objective,
        order=tuple([accepted[i][0].name for i in order[:kept]]),
        candidates=tuple(reports),
        budget_unmet=not first_meets,
        explanation=explain(
            objective,
            first.name,
            first_est,
            scores[order[0]],
            first_meets,
            req,
            kept - 1,
            len(rejected),
            cfg.headroom,
        ),
    )


def budget_text(
    ttft_budget_ms: float | None, total_budget_ms: float | None, sep: str = " and "
) -> str:
    """The budgets a request gives, as plans and reports name them: ``ttft<=600ms and
    total<=3000ms`` (``sep`` between the two); "" when it gives none."""
    if ttft_budget_ms is None:
        return "" if total_budget_ms is None else f"total<={total_budget_ms:g}ms"
    if total_budget_ms is None:
        return f"ttft<={ttft_budget_ms:g}ms"
    return f"ttft<={ttft_budget_ms:g}ms{sep}total<={total_budget_ms:g}ms"


def explain(
    objective: Objective,
    name: str,
    est: Estimate,
    score: float,
    meets: bool,
    req: InferenceRequest,
    fallbacks: int,
    rejected: int,
    headroom: float = DEFAULT_HEADROOM,
) -> str:
    """The one-line explanation of a plan's primary choice (``balanced`` without a budget
    explained as ``cheapest``; with one, whether the choice has ``headroom``'s room). Built
    on every detailed plan, so each number is formatted once and only when the text shows
    it."""
    ttft_b = req.ttft_budget_ms
    total_b = req.total_budget_ms
    objective = effective(objective, ttft_b, total_b)
    budget = budget_text(ttft_b, total_b)
    balanced = objective is _BALANCED_OBJECTIVE
    if (objective is _CHEAPEST_OBJECTIVE or balanced) and (meets or not budget):
        cost = f"cheapest (${est.cost_usd:.6f})"
        head = f"{cost} meeting {budget}" if budget else f"{cost}, no latency budget given"
        if balanced:
            roomy = (ttft_b is None or est.ttft_ms <= headroom * ttft_b) and (
                total_b is None or est.total_ms <= headroom * total_b
            )
            room = f"within {headroom:.0%} of it"
            head += f" with room ({room})" if roomy else f" without room (not {room})"
    else:
        metric = "ttft" if uses_ttft(req) else "total"
        guess = f"est {metric} {est.ttft_ms if metric == 'ttft' else est.total_ms:.0f} ms"
        if objective is _CHEAPEST_OBJECTIVE or balanced:  # no candidate meets the budget
            head = f"fastest ({guess}); no candidate meets {budget} (budget unmet)"
        else:
            if objective is _FASTEST_OBJECTIVE:
                head = f"fastest ({guess})"
            else:
                head = f"best weighted score {score:.3f} (${est.cost_usd:.6f}, {guess})"
            if budget:
                head += f", meets {budget}" if meets else f"; misses {budget} (budget unmet)"
    plural = "" if fallbacks == 1 else "s"
    if rejected:
        return f"{name}: {head}; {fallbacks} fallback{plural}; {rejected} rejected"
    return f"{name}: {head}; {fallbacks} fallback{plural}"


def _check_pins(
    req: InferenceRequest, backends: Sequence[tuple[BackendSpec, BackendSnapshot]]
) -> None:
    known = {spec.name for spec, _ in backends}
    unknown = req.pin_backends - known
    if unknown:
        raise InvalidRequest(
            "pin_backends",
            f"unknown backend {', '.join(repr(n) for n in sorted(unknown))} "
            f"(known: {', '.join(sorted(known)) or 'none'})",
        )


def _no_candidate(
    features: Features,
    backends: Sequence[tuple[BackendSpec, BackendSnapshot]],
    rejected: list[tuple[BackendSpec, str, str, Estimate | None]],
    max_out: int,
) -> RouterError:
    """The error to raise when no backend was accepted (precedence in the module doc)."""
    if not rejected:
        return NoCandidate("no backends are configured")
    decisive = max(rejected, key=lambda r: _FILTER_INDEX[r[1]])[1]
    last = [r for r in rejected if r[1] == decisive]
    req = features.request

    if decisive == DATA_CLASS:
        dc = req.data_class.value
        allowing = sorted(
            {s.tier for s, _ in backends if req.data_class in s.data_classes},
            key=TIER_ORDER.__getitem__,
        )
        checked = ", ".join(f"{s.name} ({s.tier.value})" for s, *_ in last)
        if allowing:
            where = (
                f"tiers that allow it: {', '.join(t.value for t in allowing)} "
                "(ruled out by the request's pins or model requirements)"
            )
        else:
            where = "no configured backend allows it"
        return NoTierAllowed(f"data class {dc!r} may not go to {checked}; {where}")

    if decisive == CONTEXT_WINDOW:
        spec = max(
            (r[0] for r in last), key=lambda s: (s.context_window, -TIER_ORDER[s.tier], s.name)
        )
        needed = RequestFilter(features, max_out, 0.0).prompt_tokens(spec).tokens + max_out
        return NoWindowFits(needed, spec.context_window, spec.name)

    if decisive == PAYLOAD:
        spec = max((r[0] for r in last), key=lambda s: (s.max_payload_bytes, s.name))
        return InvalidRequest(
            "messages",
            f"payload of {RequestFilter(features, max_out, 0.0).payload_bytes(spec)} bytes "
            "exceeds every candidate backend's "
            f"limit (largest: {spec.max_payload_bytes} bytes, {spec.name})",
        )

    if decisive == COST and not any(r[1] in (HEALTH, CAPACITY) for r in rejected):
        spec, est = min(
            ((r[0], r[3]) for r in last if r[3] is not None),
            key=lambda p: (p[1].cost_usd, p[0].name),
        )
        cap = req.max_cost_usd or 0.0
        return CostCapTooLow(
            f"max_cost_usd ${cap:.6f} is below every candidate's estimated cost "
            f"(cheapest: ${est.cost_usd:.6f}, {spec.name}); raise max_cost_usd or lower "
            "max_output_tokens",
            cap_usd=cap,
            cheapest_usd=est.cost_usd,
        )

    shown = [f"{s.name}: {by} ({reason})" for s, by, reason, _ in rejected[:_SUMMARY_LIMIT]]
    more = len(rejected) - _SUMMARY_LIMIT
    if more > 0:
        shown.append(f"... and {more} more")
    return NoCandidate(f"no backend can take this request: {'; '.join(shown)}")
