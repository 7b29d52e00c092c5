"""Decision latency: how long the router takes to turn a request into a Plan.

Measures, with 3, 30 and 300 backends of mixed tiers carrying live statistics:

- ``plan``: ``router.policy.plan`` alone (snapshots taken beforehand);
- ``features+plan``: token counting (estimate tokenizer) and payload size, then the plan;
- ``decision``: what the servicer does per request: read every backend's snapshot
  (``BackendStats.snapshot``, cached), count tokens, plan.

In the mixed fleets about half the backends are rejected on purpose (small windows,
restricted data, unhealthy, busy, Retry-After) so every filter runs; a last scenario has 30
backends that all pass (every one estimated, ranked and reported). Token counts use the
``estimate`` tokenizer (an exact GGUF tokenizer costs ~1-3 ms per 1,000 tokens, see
docs/policy.md). Target: p50 <= 50 us with 30 backends.

    .venv/bin/python bench/bench_decision.py [--iterations N] [--json]
    .venv/bin/python bench/bench_decision.py --compare balanced,weighted [--rounds 5]

``--compare A,B`` measures ``plan()`` with 30 backends (mixed, and all accepted) under
each objective, alternated round by round on the same request (a 300 ms TTFT budget),
and prints each round's p50 and the medians' ratio: an A/B on one noisy host.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial

from router.config import PolicyConfig
from router.errors import ErrorClass
from router.policy import PolicyParams, plan
from router.records import policy_params
from router.stats import BackendStats
from router.tokenizers import Tokenizers, features
from router.types import (
    BackendSnapshot,
    BackendSpec,
    DataClass,
    Features,
    InferenceRequest,
    Message,
    Objective,
    Plan,
    Prices,
    Priors,
    Role,
    Tier,
)

SIZES = (3, 30, 300)
TIERS = (Tier.HOSTED, Tier.GPU, Tier.EDGE)


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_backends(
    n: int, cfg: PolicyConfig, clock: _Clock, *, rejections: bool = True
) -> list[tuple[BackendSpec, BackendStats]]:
    """``n`` backends cycling hosted/gpu/edge, each with 20 completed requests of live
    statistics and some queueing. With ``rejections``, about half are rejected by one of
    the filters (small window, data class, unhealthy, over capacity, Retry-After)."""
    out = []
    for i in range(n):
        tier = TIERS[i % 3]
        if tier is Tier.HOSTED:
            prices = Prices(input_per_mtok_usd=0.25 + i % 5, output_per_mtok_usd=1.25 + i % 7)
            window, priors = 128_000, Priors(400.0 + i, 80.0)
        elif tier is Tier.GPU:
            prices = Prices(gpu_hourly_usd=4.0, gpu_throughput_tokens_per_s=2500.0 + 10 * i)
            window, priors = 32_768, Priors(150.0 + i, 60.0)
        else:
            prices = Prices(edge_per_mtok_usd=0.01)
            window, priors = 8192, Priors(60.0 + i, 20.0)
            if rejections and i % 9 == 2:
                window = 512  # too small for the bench prompt
        classes = {DataClass.PUBLIC, DataClass.INTERNAL}
        if rejections and i % 7 == 3:
            classes = {DataClass.PUBLIC}  # rejected by data_class
        spec = BackendSpec(
            name=f"{tier.value}-{i:03d}",
            tier=tier,
            kind="openai" if tier is Tier.HOSTED else "model_service",
            endpoint=f"10.0.0.{i % 250}:9000",
            model="bench-model",
            model_family="gemma",
            context_window=window,
            max_payload_bytes=1_048_576,
            max_concurrency=8,
            max_queue=32,
            data_classes=frozenset(classes),
            priors=priors,
            prices=prices,
        )
        stats = BackendStats(spec.name, cfg, clock)
        for k in range(20):
            stats.begin()
            stats.record_first_token(priors.ttft_ms * (0.8 + 0.02 * k))
            stats.record_success(priors.ttft_ms + 2000.0, 128, 2000.0 - k)
            stats.end()
        for _ in range(i % 12):  # some queueing
            stats.begin()
        if rejections and i % 11 == 5:
            stats.set_healthy(False, "bench: marked down")
        if rejections and i % 13 == 6:
            for _ in range(40):
                stats.begin()  # over capacity
        if rejections and i % 17 == 8:
            stats.record_failure(ErrorClass.RETRYABLE, retry_after_s=30.0)
        out.append((spec, stats))
    return out


def make_request() -> InferenceRequest:
    return InferenceRequest(
        messages=(
            Message(Role.SYSTEM, "You are a helpful assistant. Answer briefly. " * 4),
            Message(Role.USER, "Summarise the following maintenance log entry. " * 30),
        ),
        max_output_tokens=256,
        request_id="bench",
        ttft_budget_ms=300.0,
        data_class=DataClass.INTERNAL,
        model_family="gemma",
    )


def measure(fn: Callable[[], object], iterations: int) -> list[float]:
    for _ in range(min(1000, iterations)):
        fn()
    gc.collect()
    clock = time.perf_counter_ns
    samples = [0.0] * iterations
    for k in range(iterations):
        t0 = clock()
        fn()
        samples[k] = (clock() - t0) / 1000.0
    return samples


def quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    n = len(ordered)

    def q(p: float) -> float:
        return ordered[min(n - 1, int(p * n))]

    return {
        "p50_us": round(q(0.50), 2),
        "p90_us": round(q(0.90), 2),
        "p99_us": round(q(0.99), 2),
        "mean_us": round(statistics.fmean(ordered), 2),
    }


#: (backends, with rejections): mixed fleets, plus 30 backends that all pass the filters.
SCENARIOS = ((3, True), (30, True), (300, True), (30, False))


@dataclasses.dataclass
class _Fleet:
    """One bench fleet with its live statistics, and what a plan over it needs."""

    backends: list[tuple[BackendSpec, BackendStats]]
    tokenizer_ids: set[str]
    snaps: list[tuple[BackendSpec, BackendSnapshot]]
    feats: Features
    now: float
    accepted: int


def _fleet(
    n: int,
    rejections: bool,
    config: PolicyConfig,
    cfg: PolicyParams,
    clock: _Clock,
    counter: Tokenizers,
    request: InferenceRequest,
) -> _Fleet:
    backends = make_backends(n, config, clock, rejections=rejections)
    tokenizer_ids = {spec.tokenizer_id for spec, _ in backends}
    snaps = [(spec, stats.snapshot()) for spec, stats in backends]
    feats = features(request, counter, tokenizer_ids)
    now = clock()
    accepted = sum(1 for c in plan(feats, snaps, cfg, now).candidates if c.accepted)
    return _Fleet(backends, tokenizer_ids, snaps, feats, now, accepted)


def _inputs() -> tuple[PolicyConfig, PolicyParams, _Clock, Tokenizers, InferenceRequest]:
    """The default policy, its plain record, a clock, a token counter and the request."""
    config = PolicyConfig()
    return (
        config,
        policy_params(config),
        _Clock(),
        Tokenizers(config.token_estimate),
        make_request(),
    )


def run(iterations: int) -> list[dict[str, object]]:
    config, cfg, clock, counter, request = _inputs()
    rows: list[dict[str, object]] = []
    for n, rejections in SCENARIOS:
        f = _fleet(n, rejections, config, cfg, clock, counter, request)
        backends, tokenizer_ids, snaps = f.backends, f.tokenizer_ids, f.snaps
        feats, now, accepted = f.feats, f.now, f.accepted
        measures: dict[str, Callable[[], object]] = {
            "plan": partial(plan, feats, snaps, cfg, now),
            "features+plan": partial(
                _features_plan, counter, request, tokenizer_ids, snaps, cfg, now
            ),
            "decision": partial(_decision, counter, request, tokenizer_ids, backends, cfg, clock),
        }
        iters = iterations if n <= 30 else max(200, iterations // 10)
        for label, fn in measures.items():
            rows.append(
                {
                    "backends": n,
                    "accepted": accepted,
                    "measure": label,
                    "iterations": iters,
                    **quantiles(measure(fn, iters)),
                }
            )
    return rows


def compare_objectives(
    objectives: list[Objective], rounds: int, iterations: int
) -> list[dict[str, object]]:
    """``plan()`` p50 per round under each objective, alternated (``--compare``)."""
    config, base, clock, counter, request = _inputs()
    rows: list[dict[str, object]] = []
    params = {o: dataclasses.replace(base, objective=o) for o in objectives}
    for rejections in (True, False):
        f = _fleet(30, rejections, config, base, clock, counter, request)
        p50s: dict[Objective, list[float]] = {o: [] for o in objectives}
        for _ in range(rounds):
            for o in objectives:
                fn = partial(plan, f.feats, f.snaps, params[o], f.now)
                p50s[o].append(quantiles(measure(fn, iterations))["p50_us"])
        for o in objectives:
            rows.append(
                {
                    "backends": 30,
                    "accepted": f.accepted,
                    "objective": o.value,
                    "round_p50_us": p50s[o],
                    "median_p50_us": statistics.median(p50s[o]),
                }
            )
    return rows


def _objectives(text: str) -> list[Objective]:
    try:
        found = [Objective(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        known = ", ".join(o.value for o in Objective)
        raise argparse.ArgumentTypeError(f"{text!r}: give objectives among {known}") from None
    if len(found) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: give two or more objectives, A,B")
    return found


def _features_plan(
    counter: Tokenizers,
    request: InferenceRequest,
    tokenizer_ids: set[str],
    snaps: list[tuple[BackendSpec, BackendSnapshot]],
    cfg: PolicyParams,
    now: float,
) -> Plan:
    return plan(features(request, counter, tokenizer_ids), snaps, cfg, now)


def _decision(
    counter: Tokenizers,
    request: InferenceRequest,
    tokenizer_ids: set[str],
    backends: list[tuple[BackendSpec, BackendStats]],
    cfg: PolicyParams,
    clock: _Clock,
) -> Plan:
    pairs = [(spec, stats.snapshot()) for spec, stats in backends]
    return plan(features(request, counter, tokenizer_ids), pairs, cfg, clock())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20_000, help="per measure (30 backends)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--compare",
        type=_objectives,
        metavar="A,B",
        help="A/B of plan() under these objectives, alternated (e.g. balanced,weighted)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --compare")
    args = parser.parse_args(argv)
    if args.compare:
        found = compare_objectives(args.compare, max(1, args.rounds), args.iterations)
        if args.json:
            print(json.dumps(found, indent=2))
            return 0
        for r in found:
            rounds = ", ".join(f"{x:.1f}" for x in r["round_p50_us"])  # type: ignore[attr-defined]
            print(
                f"30 backends, {r['accepted']} accepted, {r['objective']}: "
                f"median p50 {r['median_p50_us']:.1f} us (rounds: {rounds})"
            )
        first = args.compare[0].value
        for accepted in sorted({r["accepted"] for r in found}):  # type: ignore[type-var]
            med = {r["objective"]: r["median_p50_us"] for r in found if r["accepted"] == accepted}
            for o in args.compare[1:]:
                ratio = float(med[first]) / float(med[o.value])  # type: ignore[arg-type]
                print(f"{accepted} accepted: {first} / {o.value} = {ratio:.2f}x")
        return 0
    rows = run(args.iterations)
    python = os.path.relpath(sys.executable)
    if python.startswith(".."):
        python = sys.executable
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join([python, "bench/bench_decision.py", *given])
    meta = {
        "command": command.strip(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "target": "p50 <= 50 us with 30 backends",
    }
    if args.json:
        print(json.dumps({"meta": meta, "results": rows}, indent=2))
        return 0
    print(f"$ {meta['command']}   (Python {meta['python']}, {meta['machine']})")
    print(
        f"{'backends':>8} {'accepted':>8} {'measure':<14} {'p50 us':>9} {'p90 us':>9} "
        f"{'p99 us':>9} {'iterations':>10}"
    )
    for r in rows:
        print(
            f"{r['backends']:>8} {r['accepted']:>8} {r['measure']:<14} {r['p50_us']:>9.1f} "
            f"{r['p90_us']:>9.1f} {r['p99_us']:>9.1f} {r['iterations']:>10}"
        )
    for r in rows:
        if r["backends"] == 30 and r["measure"] == "features+plan":
            ok = float(r["p50_us"]) <= 50.0  # type: ignore[arg-type]
            print(
                f"target {meta['target']} (features+plan, {r['accepted']} accepted): "
                f"{'met' if ok else 'NOT met'}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
