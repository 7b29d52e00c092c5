"""A prompt's reading slows the other requests on a backend: ``long-prompts`` with and
without it (BENCHMARKS.md, Routing, "A prompt's reading slows the others").

``long-prompts`` gives every backend a prompt reading rate; a GPU replica or a device
that reads a long prompt also decodes its other requests slower meanwhile (vLLM's
chunked prefill shares each step between a prompt's chunk and the batch's decoding;
llama.cpp's server reads a prompt's batch between its slots' decode steps). The fleet
file's ``prefill_interference`` says by how much. This runs the scenario's trace on its
fleet as it is (no interference) and with the shares of
``router.simulation.scenarios.PREFILL_INTERFERENCE`` (edge devices 0.9, GPU replicas
0.5), the same trace and seed, and prints a table for each and the change per strategy.

The oracle knows the present: where a prompt's reading slows the others, a request's
latency also depends on the prompts sent to its backend after it. The oracle counts the
budgets its choice would make the requests already there miss as its own, but not
those of requests it has yet to see, so a strategy can meet more than it (the bound
stays a strict limit).

    .venv/bin/python bench/bench_interference.py                  # 50,000 requests, seed 1
    .venv/bin/python bench/bench_interference.py --requests 20000 --seeds 1,2,3,4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from bench_routing import table

from router.simulation import compare
from router.simulation.scenarios import PREFILL_INTERFERENCE, build, prefill_fleet
from router.simulation.strategies import STRATEGIES
from router.simulation.variants import router_variant


def _seeds(text: str) -> list[int]:
    try:
        found = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers") from None
    if not found:
        raise argparse.ArgumentTypeError("give at least one seed")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--requests", type=int, default=50_000)
    p.add_argument("--seeds", type=_seeds, default=[1], help="comma-separated (default 1)")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = p.parse_args(argv)
    shares = ", ".join(f"{k} {v:g}" for k, v in PREFILL_INTERFERENCE.items())
    results: dict[str, Any] = {"requests": args.requests, "shares": PREFILL_INTERFERENCE}
    changes: list[str] = []
    for seed in args.seeds:
        _, trace = build("long-prompts", args.requests, seed)
        runs = {}
        for label, interference in (("without", False), ("with", True)):
            fleet = prefill_fleet(interference=interference)
            cheapest = router_variant(fleet, "router-cheapest", {"objective": "cheapest"})
            t0 = time.perf_counter()
            res = compare(fleet, trace, [*STRATEGIES, cheapest], seed=seed)
            runs[label] = res.summaries
            heading = "as it is" if not interference else f"prefill_interference: {shares}"
            print(
                f"\n### long-prompts, {heading} (seed {seed}, {args.requests:,} requests, "
                f"{time.perf_counter() - t0:.0f} s)\n",
                flush=True,
            )
            print(table(res.summaries))
        results[str(seed)] = {
            label: {k: s.to_json(series=False) for k, s in summaries.items()}
            for label, summaries in runs.items()
        }
        for name, before in runs["without"].items():
            after = runs["with"][name]
            changes.append(
                f"| {seed} | {name} | {before.attainment:.2%}, ${before.cost_usd:.2f} "
                f"| {after.attainment:.2%}, ${after.cost_usd:.2f} "
                f"| {100 * (after.attainment - before.attainment):+.2f} "
                f"| {after.cost_usd / before.cost_usd - 1:+.1%} "
                f"| {after.tier_share['gpu']:.0%} / {after.tier_share['hosted']:.0%} |"
            )
    print(
        "\n| seed | strategy | without: SLO met, cost | with | points | cost | gpu / hosted with |"
    )
    print("|---:|---|---|---|---:|---:|---|")
    print("\n".join(changes))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
