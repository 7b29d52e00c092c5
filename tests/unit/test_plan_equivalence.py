"""plan() decides exactly what the unfused building blocks decide, over random cases.

``plan()`` runs the filters, the estimate, the cost cap and the ranking in one pass (the
decision hot path). ``reference_plan`` below composes the public building blocks the way
plan() did before it was fused: ``RequestFilter.check``, ``estimate``, ``cost_rejection``,
``rank``, ``explain`` and the planner's error precedence. For thousands of seeded random
fleets and requests (every filter, objective, budget, live or prior statistics, missing
tokenizer counts, errors) both must return equal Plans (every field of every report and
estimate, floats bit for bit) or raise the same error with the same message.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import pytest

from router.config import PolicyConfig, WeightsConfig
from router.errors import RouterError
from router.policy import RequestFilter, explain, plan, rank
from router.policy.estimate import estimate
from router.policy.filters import COST, cost_rejection
from router.policy.objectives import spread, uses_ttft
from router.policy.planner import _check_pins, _no_candidate
from router.records import policy_params
from router.types import (
    BACKEND_TIERS,
    BackendSnapshot,
    BackendSpec,
    CandidateReport,
    CircuitState,
    DataClass,
    Estimate,
    Features,
    InferenceRequest,
    Message,
    Objective,
    Plan,
    Prices,
    Priors,
    Role,
    Tier,
    TokenCount,
)

NOW = 1_000.0


def reference_plan(
    features: Features,
    backends: Sequence[tuple[BackendSpec, BackendSnapshot]],
    cfg: PolicyConfig,
    now: float,
) -> Plan:
    """plan() as composed from its building blocks (the pre-fusion implementation)."""
    req = features.request
    objective = req.objective or cfg.objective
    max_out = req.max_output_tokens or cfg.default_max_output_tokens
    if req.pin_backends:
        _check_pins(req, backends)
    flt = RequestFilter(features, max_out, now)
    specs: list[BackendSpec] = []
    ests: list[Estimate] = []
    accepted: list[tuple[BackendSpec, BackendSnapshot]] = []
    rejected: list[tuple[BackendSpec, str, str, Estimate | None]] = []
    for spec, snap in backends:
        prompt = features.prompt_tokens.get(spec.tokenizer_id) or flt.prompt_tokens(spec)
        rejection = flt.check(spec, snap, prompt)
        if rejection is not None:
            rejected.append((spec, rejection[0], rejection[1], None))
            continue
        est = estimate(
            spec,
            snap,
            prompt,
            max_out,
            cfg.min_samples,
            features.expected_output_tokens,
            cfg.ttft_estimate == "p90",
            cfg.ttft_prior_weight,
            cfg.decode_estimate,
        )
        too_costly = cost_rejection(est.cost_usd, req.max_cost_usd)
        if too_costly is not None:
            rejected.append((spec, COST, too_costly, est))
            continue
        specs.append(spec)
        ests.append(est)
        accepted.append((spec, snap))
    if not specs:
        raise _no_candidate(features, backends, rejected, max_out)
    order, scores, meets = rank(objective, specs, ests, req, cfg.weights)
    if cfg.spread != "off":
        by_ttft = uses_ttft(req)
        rows = [
            (s, e, e.cost_usd, e.ttft_ms if by_ttft else e.total_ms, m)
            for s, e, m in zip(specs, ests, meets, strict=True)
        ]
        loads = [max(n.in_flight, n.reported_load or 0) / s.max_concurrency for s, n in accepted]
        order = spread(order, rows, loads, cfg.spread, req.request_id, cfg.spread_tolerance)
    kept = min(len(order), 1 + cfg.max_fallbacks)
    reports = [
        CandidateReport(
            specs[i].name,
            specs[i].tier,
            True,
            "",
            "",
            ests[i],
            pos + 1 if pos < kept else 0,
            meets[i],
            scores[i],
        )
        for pos, i in enumerate(order)
    ]
    reports += [
        CandidateReport(s.name, s.tier, False, by, reason, est, 0, False, 0.0)
        for s, by, reason, est in rejected
    ]
    first = order[0]
    return Plan(
        request_id=req.request_id,
        objective=objective,
        order=tuple(specs[i].name for i in order[:kept]),
        candidates=tuple(reports),
        budget_unmet=not meets[first],
        explanation=explain(
            objective,
            specs[first].name,
            ests[first],
            scores[first],
            meets[first],
            req,
            kept - 1,
            len(rejected),
        ),
    )


_TOKENIZERS = ("estimate", "gguf:a.gguf", "gguf:b.gguf")


def _maybe(rng: random.Random, value: object, p: float = 0.5) -> object:
    return value if rng.random() < p else None


def random_backend(rng: random.Random, i: int) -> tuple[BackendSpec, BackendSnapshot]:
    """A random backend; about a third are "wild" (any value, so every filter rejects
    some), the rest plausible (most pass, so plans have several candidates to rank)."""
    wild = rng.random() < 0.25
    tier = rng.choice((Tier.HOSTED, Tier.GPU, Tier.EDGE))
    prices = Prices(
        input_per_mtok_usd=rng.choice((0.0, 0.25, 1.0, 3.0)),
        output_per_mtok_usd=rng.choice((0.0, 1.25, 4.0, 15.0)),
        gpu_hourly_usd=rng.choice((0.0, 1.5, 4.0)),
        gpu_throughput_tokens_per_s=rng.choice((0.0, 800.0, 2500.0)),
        gpu_utilization=rng.choice((0.3, 0.6, 1.0)),
        gpu_prefill_ratio=rng.choice((0.0, 0.1, 0.25)),
        edge_per_mtok_usd=rng.choice((0.0, 0.01, 0.2)),
    )
    if wild:
        caps = frozenset(rng.sample(("chat", "tools", "vision"), rng.randint(0, 3)))
        classes = frozenset(rng.sample(list(DataClass), rng.randint(1, len(DataClass))))
        window = rng.choice((256, 1024, 4096, 8192, 128_000))
        payload = rng.choice((2_000, 100_000, 1_048_576))
    else:
        caps = frozenset({"chat", "tools", "vision"})
        classes = frozenset(DataClass)
        window = rng.choice((8192, 32_768, 128_000))
        payload = 1_048_576
    spec = BackendSpec(
        name=f"{tier.value}-{i:02d}-{rng.randrange(1000)}",
        tier=tier,
        kind="model_service",
        endpoint="127.0.0.1:9000",
        model=rng.choice(("gemma-3", "llama-3")),
        model_family=rng.choice(("", "gemma", "Gemma", "llama") if wild else ("gemma",)),
        capabilities=caps,
        context_window=window,
        max_payload_bytes=payload,
        max_concurrency=rng.randint(1, 8),
        max_queue=rng.randint(0, 16) if wild else rng.randint(12, 32),
        data_classes=classes,
        priors=Priors(rng.uniform(20.0, 900.0), rng.uniform(5.0, 120.0)),
        prices=prices,
        site=rng.choice(("", "plant-1", "plant-2")) if wild else "plant-1",
        device_id=rng.choice(("", "dev-1", "dev-2")) if wild else "dev-2",
        tokenizer_id=rng.choice(_TOKENIZERS),
    )
    snap = BackendSnapshot(
        name=spec.name,
        healthy=rng.random() < 0.8 if wild else True,
        circuit=rng.choice(list(CircuitState)) if wild else CircuitState.CLOSED,
        in_flight=rng.randint(0, 20),
        reported_load=_maybe(rng, rng.randint(0, 30 if wild else 12)),  # type: ignore[arg-type]
        ttft_p50_ms=_maybe(rng, rng.uniform(10.0, 1500.0), 0.7),  # type: ignore[arg-type]
        decode_tokens_per_s=rng.choice((None, 0.0, rng.uniform(1.0, 150.0))),
        mean_service_ms=_maybe(rng, rng.uniform(100.0, 9000.0), 0.7),  # type: ignore[arg-type]
        error_rate=rng.random(),
        requests=rng.randint(0, 6),
        failures=rng.randint(0, 6),
        retry_after_until=rng.choice((None, None, NOW - 1.0, NOW, NOW + 5.0)) if wild else None,
        detail=rng.choice(("", "probe failed")),
    )
    if not wild:
        snap = dataclasses.replace(snap, in_flight=min(snap.in_flight, 11))
    if snap.ttft_p50_ms is not None:  # derived, not drawn: the cases stay as they were
        snap = dataclasses.replace(
            snap, ttft_p90_ms=snap.ttft_p50_ms * 1.8, ttft_samples=3 * snap.requests
        )
    rate = snap.decode_tokens_per_s
    if rate is not None:  # the slow quantiles, derived too (0.0 stays 0.0)
        snap = dataclasses.replace(
            snap, decode_p25_tokens_per_s=rate * 0.8, decode_p10_tokens_per_s=rate * 0.6
        )
    return spec, snap


def random_case(
    rng: random.Random,
) -> tuple[Features, list[tuple[BackendSpec, BackendSnapshot]], PolicyConfig]:
    backends = [random_backend(rng, i) for i in range(rng.choice((0, 1, 2, 5, 12, 30)))]
    names = [spec.name for spec, _ in backends]
    request = InferenceRequest(
        messages=(Message(Role.USER, "hello"),),
        max_output_tokens=rng.choice((0, 16, 256, 1024)),
        request_id=f"r{rng.randrange(10**6)}",
        ttft_budget_ms=_maybe(rng, rng.uniform(50.0, 1500.0)),  # type: ignore[arg-type]
        total_budget_ms=_maybe(rng, rng.uniform(500.0, 60_000.0), 0.3),  # type: ignore[arg-type]
        max_cost_usd=_maybe(rng, rng.choice((0.0, 1e-6, 1e-4, 1e-2)), 0.3),  # type: ignore[arg-type]
        data_class=rng.choice(list(DataClass)),
        pin_tiers=frozenset(rng.sample(BACKEND_TIERS, rng.choice((0, 0, 0, 1, 2)))),
        pin_backends=frozenset(
            rng.sample(names, min(len(names), rng.choice((0, 0, 0, 0, 1, 3))))
            + (["no-such"] if rng.random() < 0.02 else [])
        ),
        exclude_tiers=frozenset(rng.sample(list(Tier), rng.choice((0, 0, 0, 1)))),
        exclude_backends=frozenset(
            rng.sample(names, min(len(names), rng.choice((0, 0, 0, 1, 2))))
            + (["gone"] if rng.random() < 0.05 else [])
        ),
        model_family=rng.choice(("", "", "", "gemma", "GEMMA", "llama")),
        capabilities=frozenset(rng.sample(("chat", "tools", "vision"), rng.choice((0, 0, 1, 2)))),
        site=rng.choice(("", "", "", "plant-1")),
        device_id=rng.choice(("", "", "", "dev-2")),
        objective=rng.choice((None, *Objective)),
    )
    counts = {
        tid: TokenCount(rng.choice((5, 120, 900, 3000)), tid != "estimate")
        for tid in _TOKENIZERS
        if rng.random() < 0.7
    }
    features = Features(request, rng.choice((100, 5_000, 500_000)), counts)
    cfg = PolicyConfig(
        objective=rng.choice(list(Objective)),
        weights=WeightsConfig(cost=rng.choice((0.0, 1.0, 2.5)), latency=rng.choice((0.0, 1.0))),
        max_fallbacks=rng.choice((0, 1, 2, 5, 16)),
        min_samples=rng.choice((1, 3, 5)),
        ttft_estimate=rng.choice(("p50", "p90")),
        spread=rng.choice(("power_of_two", "least_loaded", "off")),
        spread_tolerance=rng.choice((0.0, 0.2, 1.0)),
    )
    # The TTFT estimate pulled toward the priors in some cases (derived, not drawn).
    cfg = cfg.model_copy(
        update={
            "ttft_prior_weight": 8.0 if cfg.min_samples == 3 else 0.0,
            "decode_estimate": ("mean", "p25", "p10")[cfg.max_fallbacks % 3],
        }
    )
    if rng.random() < 0.3:
        features = dataclasses.replace(
            features, expected_output_tokens=rng.choice((1, 50, 100_000))
        )
    backends = [_edge_case(rng, b, features, cfg) if rng.random() < 0.3 else b for b in backends]
    if backends and rng.random() < 0.2:
        # A budget some backend meets exactly (its prior TTFT, no live data, no queue).
        spec, snap = rng.choice(backends)
        snap = dataclasses.replace(snap, requests=0, in_flight=0, reported_load=None)
        backends[0] = (spec, snap)
        request = dataclasses.replace(request, ttft_budget_ms=spec.priors.ttft_ms)
        features = dataclasses.replace(features, request=request)
    return features, backends, cfg


def _edge_case(
    rng: random.Random,
    backend: tuple[BackendSpec, BackendSnapshot],
    features: Features,
    cfg: PolicyConfig,
) -> tuple[BackendSpec, BackendSnapshot]:
    """``backend`` moved onto (or one off) a filter's boundary for this request."""
    spec, snap = backend
    step = rng.choice((-1, 0, 0, 1))
    what = rng.choice(("window", "payload", "load", "reported", "retry_after"))
    if what == "window":
        counts = features.prompt_tokens
        tc = counts.get(spec.tokenizer_id) or counts.get("estimate") or TokenCount(0, False)
        max_out = features.request.max_output_tokens or cfg.default_max_output_tokens
        return dataclasses.replace(spec, context_window=max(16, tc.tokens + max_out + step)), snap
    if what == "payload":
        return dataclasses.replace(spec, max_payload_bytes=features.payload_bytes + step), snap
    capacity = spec.max_concurrency + spec.max_queue
    if what == "load":
        return spec, dataclasses.replace(snap, in_flight=capacity + step, reported_load=None)
    if what == "reported":
        return spec, dataclasses.replace(snap, in_flight=0, reported_load=capacity + step)
    return spec, dataclasses.replace(snap, retry_after_until=NOW + step * 0.001)


def _outcome(fn: object, *args: object) -> tuple[str, object]:
    try:
        return "plan", fn(*args)  # type: ignore[operator]
    except RouterError as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("seed", range(8))
def test_plan_matches_the_building_blocks_on_random_cases(seed: int) -> None:
    rng = random.Random(seed)
    kinds: dict[str, int] = {}
    for _ in range(400):
        features, backends, cfg = random_case(rng)
        got = _outcome(plan, features, backends, policy_params(cfg), NOW)
        want = _outcome(reference_plan, features, backends, cfg, NOW)
        assert got == want, (features, backends, cfg)
        if got[0] == "plan":
            result = got[1]
            assert isinstance(result, Plan)
            # Equal dataclasses compare field tuples; also pin the exact record types.
            assert type(result) is Plan
            for report in result.candidates:
                assert type(report) is CandidateReport
                assert report.estimate is None or type(report.estimate) is Estimate
                assert dataclasses.astuple(report)  # every slot is set
        kinds[got[0]] = kinds.get(got[0], 0) + 1
    # The generator reaches plans and every error kind, so the comparison means something.
    assert kinds.get("plan", 0) > 100, kinds
    assert len(kinds) >= 4, kinds


@pytest.mark.parametrize("seed", range(4))
def test_plan_without_detail_decides_the_same(seed: int) -> None:
    """``detail=False`` (the simulator's call) leaves out the reports and the explanation
    and nothing else: the same order, objective and verdict, or the same error."""
    rng = random.Random(100 + seed)
    plans = 0
    for _ in range(400):
        features, backends, cfg = random_case(rng)
        params = policy_params(cfg)
        full = _outcome(plan, features, backends, params, NOW)
        try:
            lean: tuple[str, object] = ("plan", plan(features, backends, params, NOW, detail=False))
        except RouterError as exc:
            lean = (type(exc).__name__, str(exc))
        if full[0] != "plan":
            assert lean == full
            continue
        plans += 1
        assert lean[0] == "plan"
        got, want = lean[1], full[1]
        assert isinstance(got, Plan) and isinstance(want, Plan)
        assert got == dataclasses.replace(want, candidates=(), explanation="")
    assert plans > 100


def test_random_cases_exercise_every_filter_and_objective() -> None:
    rng = random.Random(1234)
    rejected_by: set[str] = set()
    objectives: set[Objective] = set()
    accepted_with_cost_cap = 0
    for _ in range(1500):
        features, backends, cfg = random_case(rng)
        try:
            result = plan(features, backends, policy_params(cfg), NOW)
        except RouterError:
            continue
        objectives.add(result.objective)
        rejected_by |= {c.rejected_by for c in result.candidates if not c.accepted}
        if features.request.max_cost_usd is not None:
            accepted_with_cost_cap += 1
    assert objectives == set(Objective)
    assert rejected_by == {
        "pin",
        "capability",
        "data_class",
        "context_window",
        "payload",
        "edge_affinity",
        "health",
        "capacity",
        "cost",
    }
    assert accepted_with_cost_cap > 0
