"""Routing quality: the router's policy against the oracle and the baselines, per scenario
(BENCHMARKS.md, Routing).

For each built-in scenario (router/simulation/scenarios.py) it runs ``hybrid-router
simulate``'s comparison (the bound, the clairvoyant oracle, the router with its defaults,
every baseline) plus the policy settings this issue changed, side by side on the same
trace and seed:

    router-before    the policy as it was: objective cheapest, no load spreading, TTFT
                     judged by its p50, and a request no backend meets goes to the fastest
                     by total latency (the planner's own code, called with the budgets left
                     out of the unmet ordering)
    router-cheapest  policy.objective: cheapest (the default before balanced)
    router-w8        policy.objective: weighted with weights.latency 8 (the default
                     before session 12)
    router-p50       policy.ttft_estimate: p50 (the default before the p90)
    router-outq75    policy.output_estimate.enabled with quantile 0.75
    router-p2c       policy.spread: power_of_two (the default before session 12)
    router-weighted  policy.objective: weighted (default weights: cost 1, latency 10): the
                     default objective before session 15, balanced, on a trace whose
                     requests all give a budget
    router-fastest   policy.objective: fastest

and, on ``long-prompts``, on the same backends and trace: ``router-no-priors``, the
router whose configuration gives no ``priors.prefill_tokens_per_s`` (the model servers
and devices still report their rates; the hosted APIs do not), and
``router-no-prefill``, neither (the router before session 13).

and prints one Markdown table per scenario, the targets' verdict (``hybrid-router
simulate``'s own checks), and the simulator's speed (``--speed-requests`` requests of the
router alone, one process, one core).

    .venv/bin/python bench/bench_routing.py                       # 50,000 per scenario
    .venv/bin/python bench/bench_routing.py --requests 5000 --scenarios steady --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

from scenario_args import add_scenarios

import router.policy.planner as planner
from hybrid_router_cli.render_simulate import targets, verdict_line
from router.config import OutputEstimateConfig
from router.policy.records import Weights
from router.simulation import RouterStrategy, Simulation, compare
from router.simulation.report import against_oracle, summarize
from router.simulation.scenarios import SCENARIOS, build, prefill_fleet
from router.simulation.strategies import STRATEGIES
from router.types import Objective

_ORDER = planner.order_candidates


class RouterBefore(RouterStrategy):
    """The policy before load spreading and the closest-miss order for unmet budgets."""

    def order(self, index: int, request: Any, now: float) -> list[str] | str:
        planner.order_candidates = lambda o, rows, w, *_: _ORDER(o, rows, w)
        try:
            return super().order(index, request, now)
        finally:
            planner.order_candidates = _ORDER


def variants(params: Any) -> list[RouterStrategy]:
    r = dataclasses.replace
    return [
        RouterBefore(
            params=r(params, spread="off", ttft_p90=False, objective=Objective.CHEAPEST),
            name="router-before",
        ),
        RouterStrategy(params=r(params, objective=Objective.CHEAPEST), name="router-cheapest"),
        RouterStrategy(
            params=r(params, objective=Objective.WEIGHTED, weights=Weights(cost=1.0, latency=8.0)),
            name="router-w8",
        ),
        RouterStrategy(params=r(params, ttft_p90=False), name="router-p50"),
        RouterStrategy(
            name="router-outq75", output_estimate=OutputEstimateConfig(enabled=True, quantile=0.75)
        ),
        RouterStrategy(params=r(params, spread="power_of_two"), name="router-p2c"),
        RouterStrategy(params=r(params, objective=Objective.WEIGHTED), name="router-weighted"),
        RouterStrategy(params=r(params, objective=Objective.FASTEST), name="router-fastest"),
    ]


def without_prefill_rates(trace: Any, seed: int, oracle: Any) -> dict[str, Any]:
    """``router-no-priors`` and ``router-no-prefill`` on ``long-prompts`` (module doc)."""
    fleet = prefill_fleet(router_knows=False)
    out = {}
    for name, reports in (("router-no-priors", True), ("router-no-prefill", False)):
        t0 = time.perf_counter()
        sim = Simulation(fleet, seed, prefill_reports=reports)
        outcomes = sim.run(trace, RouterStrategy(name=name))
        out[name] = summarize(name, trace, outcomes, time.perf_counter() - t0)
    against_oracle(list(out.values()), oracle)
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table(summaries: dict[str, Any]) -> str:
    lines = [
        "| strategy | SLO met | vs oracle | cost $ | vs oracle | $ per 1k met "
        "| edge / gpu / hosted | p50 / p99 total s | refused / failed / cut |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for s in summaries.values():
        share = " / ".join(f"{100 * s.tier_share[t]:.0f}" for t in ("edge", "gpu", "hosted"))
        lat = (
            f"{(s.total_p50_ms or 0) / 1000:.1f} / {(s.total_p99_ms or 0) / 1000:.1f}"
            if s.total_p50_ms is not None
            else "-"
        )
        name = f"**{s.strategy}**" if s.strategy == "router" else s.strategy
        vs_cost = "-" if s.cost_vs_oracle is None else f"{s.cost_vs_oracle:.2f}x"
        per_met = "-" if s.cost_per_met_usd is None else f"{1000 * s.cost_per_met_usd:.3f}"
        lines.append(
            f"| {name} | {_pct(s.attainment)} | {_pct(s.attainment_vs_oracle)} | "
            f"{s.cost_usd:.2f} | {vs_cost} | {per_met} | {share} | {lat} | "
            f"{s.refused} / {s.failed} / {s.cut} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--requests", type=int, default=50_000, help="per scenario")
    add_scenarios(p)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--speed-requests", type=int, default=1_000_000, help="0: skip the speed run")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    results: dict[str, Any] = {"requests": args.requests, "seed": args.seed, "scenarios": {}}
    for name in args.scenarios:
        fleet, trace = build(name, args.requests, args.seed)
        t0 = time.perf_counter()
        res = compare(fleet, trace, [*STRATEGIES, *variants(fleet.params)], seed=args.seed)
        if name == "long-prompts":
            res.summaries.update(without_prefill_rates(trace, args.seed, res.summaries["oracle"]))
        print(
            f"\n### {name}: {SCENARIOS[name].about} ({args.requests:,} requests, "
            f"{time.perf_counter() - t0:.0f} s)\n",
            flush=True,
        )
        print(table(res.summaries))
        found = targets(res.summaries)  # the command's own target checks
        print("\n" + verdict_line(found), flush=True)
        results["scenarios"][name] = {
            "summaries": {k: s.to_json(series=False) for k, s in res.summaries.items()},
            "targets": [dataclasses.asdict(t) for t in found],
        }
    if args.speed_requests:
        fleet, trace = build("steady", args.speed_requests, args.seed)
        t0 = time.perf_counter()
        Simulation(fleet, args.seed).run(trace, RouterStrategy())
        took = time.perf_counter() - t0
        results["speed"] = {
            "requests": args.speed_requests,
            "seconds": round(took, 1),
            "us_per_request": round(took / args.speed_requests * 1e6, 1),
        }
        print(
            f"\nspeed: {args.speed_requests:,} requests through the router's policy in "
            f"{took:.1f} s "
            f"({took / args.speed_requests * 1e6:.1f} us each)",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
