"""Stale signals: what the router's policy reads about backends it has not used lately
(BENCHMARKS.md, Routing).

Two tables, the router strategy alone on the built-in scenarios:

``--ages``: ``policy.sample_max_age_s`` swept over seeds (``inf``: samples never expire,
the router before the setting). The router samples only the backends it chooses, so
one whose estimate once crossed a budget kept it for as long as its samples counted.

``--undo``: the router with its defaults, then with each of three changes undone on the
same trace and seed: samples that never expire (``no-aging``), priors judged by their
median under ``ttft_estimate: p90`` (``prior-median``: ``priors.ttft_p90_ms`` set to
``ttft_ms``), load figures taken as they came (``no-marks``), and all three (``none``).

    .venv/bin/python bench/bench_stale_signals.py --scenarios long-conversations \\
        --requests 20000 --seeds 8 --ages inf,300,120,60
    .venv/bin/python bench/bench_stale_signals.py --undo --requests 50000
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

from scenario_args import add_scenarios

from router.simulation import RouterStrategy, Simulation
from router.simulation.fleet import Fleet
from router.simulation.report import summarize
from router.simulation.scenarios import build
from router.types import Priors


def with_age(fleet: Fleet, age_s: float) -> Fleet:
    policy = fleet.config.policy.model_copy(update={"sample_max_age_s": age_s})
    return dataclasses.replace(fleet, config=fleet.config.model_copy(update={"policy": policy}))


def with_median_priors(fleet: Fleet) -> Fleet:
    specs = tuple(
        dataclasses.replace(
            s, priors=Priors(s.priors.ttft_ms, s.priors.decode_tokens_per_s, s.priors.ttft_ms)
        )
        for s in fleet.specs
    )
    return dataclasses.replace(fleet, specs=specs)


def run(fleet: Fleet, trace: list, seed: int, marks: bool = True) -> str:
    out = Simulation(fleet, seed, load_marks=marks).run(trace, RouterStrategy())
    s = summarize("router", trace, out)
    return f"{s.attainment:.1%}, ${s.cost_usd:.2f}"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_scenarios(p)
    p.add_argument("--requests", type=int, default=20_000, help="requests per run")
    p.add_argument("--seeds", type=int, default=1, help="seeds 1..N (--ages)")
    p.add_argument("--seed", type=int, default=1, help="the seed of --undo")
    p.add_argument(
        "--ages",
        default="inf,300,120",
        help="comma-separated sample_max_age_s values, seconds ('inf': never expire)",
    )
    p.add_argument("--undo", action="store_true", help="the --undo table instead of --ages")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    names = args.scenarios
    if args.undo:
        print("| scenario | router | no-aging | prior-median | no-marks | none |")
        print("|---|---|---|---|---|---|")
        for name in names:
            fleet, trace = build(name, args.requests, args.seed)
            never = with_age(fleet, math.inf)
            cells = [
                run(fleet, trace, args.seed),
                run(never, trace, args.seed),
                run(with_median_priors(fleet), trace, args.seed),
                run(fleet, trace, args.seed, marks=False),
                run(with_median_priors(never), trace, args.seed, marks=False),
            ]
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        return 0
    try:
        ages = [math.inf if a == "inf" else float(a) for a in args.ages.split(",")]
    except ValueError:
        print(f"--ages: {args.ages!r} is not a comma-separated list of seconds or 'inf'")
        return 2
    if any(a <= 0 for a in ages):
        print("--ages: every age must be > 0 seconds")
        return 2
    head = " | ".join("never" if math.isinf(a) else f"{a:g} s" for a in ages)
    print(f"| scenario | seed | {head} |")
    print("|---|---:|" + "---|" * len(ages))
    for name in names:
        for seed in range(1, args.seeds + 1):
            fleet, trace = build(name, args.requests, seed)
            cells = [run(with_age(fleet, a), trace, seed) for a in ages]
            print(f"| {name} | {seed} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
