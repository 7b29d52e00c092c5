"""Load figures that arrive late: the router with and without its load marks
(BENCHMARKS.md, Routing).

A backend that reports its load answers a poll a round trip after it went out; a stream
that ended in between may still be in the figure. The router applies its own streams
since the poll went out to the figure (``BackendStats.set_reported_load``); before, it
took the figure as it came and carried the ended stream as a phantom request until the
next poll. This runs each scenario's trace through the router twice, on the same trace
and seed, with every reporting backend's poll round trip set to ``--poll-ms``: with the
marks (the router now) and without (the router before), and prints one Markdown row per
scenario and round trip.

    .venv/bin/python bench/bench_load_marks.py                        # 20,000 per scenario
    .venv/bin/python bench/bench_load_marks.py --requests 5000 --scenarios steady --poll-ms 50
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from scenario_args import add_scenarios

from router.simulation import RouterStrategy, Simulation
from router.simulation.report import summarize
from router.simulation.scenarios import build


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20_000, help="requests per scenario")
    p.add_argument("--seed", type=int, default=1)
    add_scenarios(p)
    p.add_argument(
        "--poll-ms",
        default="reference,100",
        help="comma-separated round trips to try: a number (ms, every reporting backend) "
        "or 'reference' (the reference fleet's own: edge 60, gpu 10)",
    )
    p.add_argument("--json", help="also write the figures here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    names = args.scenarios
    rtts: list[float | None] = []
    for item in args.poll_ms.split(","):
        if item == "reference":
            rtts.append(None)
            continue
        try:
            rtts.append(float(item))
        except ValueError:
            print(f"--poll-ms: {item!r} is neither a number of ms nor 'reference'")
            return 2
    rows = []
    print("| scenario | poll round trip | marks | SLO met | cost | hosted | edge | gpu |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name in names:
        fleet, trace = build(name, args.requests, args.seed)
        for rtt in rtts:
            if rtt is not None:
                models = {
                    n: dataclasses.replace(m, poll_ms=rtt) if m.reports_load else m
                    for n, m in fleet.models.items()
                }
                run_fleet = dataclasses.replace(fleet, models=models)
            else:
                run_fleet = fleet
            label = "reference" if rtt is None else f"{rtt:g} ms"
            for marks in (False, True):
                t0 = time.perf_counter()
                out = Simulation(run_fleet, args.seed, load_marks=marks).run(
                    trace, RouterStrategy()
                )
                s = summarize("router", trace, out, time.perf_counter() - t0)
                share = s.tier_share
                row = {
                    "scenario": name,
                    "poll_ms": label,
                    "marks": marks,
                    "attainment": s.attainment,
                    "cost_usd": s.cost_usd,
                    "tier_share": share,
                }
                rows.append(row)
                print(
                    f"| {name} | {label} | {'yes' if marks else 'no (before)'} "
                    f"| {s.attainment:.1%} | ${s.cost_usd:.2f} | {share['hosted']:.1%} "
                    f"| {share['edge']:.1%} | {share['gpu']:.1%} |",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"requests": args.requests, "seed": args.seed, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
