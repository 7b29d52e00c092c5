"""Several router replicas: what load spreading and the load marks do when each replica
sees only its own streams (BENCHMARKS.md, Routing).

A Helm deployment runs several router replicas behind one Service. Each keeps its own
``BackendStats``: the streams it opened, the latencies it saw, its circuit breakers, and
a backend's reported load from its own polls (``policy.load_poll_interval_s``; the
figure is already stale when it lands, and between polls the replica adds only its own
streams). This runs each scenario's trace through the router with ``--replicas`` router
replicas (``hybrid-router simulate --replicas N``: a request goes to one at random) and
each ``policy.spread`` (power_of_two, the default until session 12; least_loaded, the
default since; off), with the load marks, and with power_of_two also without them, and
prints one Markdown row per run.
"gpu split" is how unevenly the GPU replicas shared their requests ((most - fewest) /
(most + fewest); 0 is even).

With ``--learning backend,model`` the table runs once per ``policy.learn_by`` setting
(the Helm chart sets ``model``); ``gpu-fleet`` is the scenario where the router replicas
herd (32 GPU replicas, four times the traffic).

With ``--prior-weights``, it sweeps ``policy.ttft_prior_weight`` instead (one row per
scenario, priors and replica count; a column per weight), with the fleet's priors as
they are (``reference``: close to the backends' true behaviour), every backend on the
configuration's default priors (``default``: 500 ms, 30 tokens/s), or each prior's
latency halved or doubled (``half``, ``double``; the decode rate the other way round):
what the weight does when the priors are right and when they are wrong.

With ``--learn-by``, it compares ``policy.learn_by`` instead (one row per scenario and
replica count; a column per setting): each backend learning from its own answers
(``backend``, the default) or from every answer of its model (``model``); with
``--slower-half`` the second half of each scenario's GPU replicas really has 1.5x the
TTFT and 0.6x the decode rate (one model on two GPU types, which pooling blurs).

    .venv/bin/python bench/bench_replicas.py                      # 50,000 per scenario
    .venv/bin/python bench/bench_replicas.py --requests 5000 --scenarios steady --replicas 1,4
    .venv/bin/python bench/bench_replicas.py --requests 20000 --replicas 1,8 \
        --scenarios steady,gpu-spike,throttling,long-conversations --prior-weights 0,16,32,64
    .venv/bin/python bench/bench_replicas.py --scenarios gpu-fleet --replicas 1,8,32 \
        --learning backend,model
    .venv/bin/python bench/bench_replicas.py --scenarios gpu-pool,steady --learn-by backend,model
    .venv/bin/python bench/bench_replicas.py --scenarios gpu-pool --replicas 1,8 \
        --learn-by backend,model --slower-half
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

from scenario_args import add_scenarios

from router.simulation import Fleet, RouterStrategy, Simulation
from router.simulation.report import summarize
from router.simulation.scenarios import build
from router.types import Priors, Tier

SPREADS = ("power_of_two", "least_loaded", "off")
PRIORS = ("reference", "default", "half", "double")
LEARN_BY = ("backend", "model")


def _numbers(kind: type, least: float) -> Callable[[str], list[Any]]:
    """argparse ``type=``: comma-separated numbers of ``kind``, each at least ``least``."""

    def parse(text: str) -> list[Any]:
        try:
            values = [kind(x) for x in text.split(",") if x]
        except ValueError:
            raise argparse.ArgumentTypeError(f"comma-separated numbers, got {text!r}") from None
        if not values or any(v < least for v in values):
            raise argparse.ArgumentTypeError(f"each must be {least:g} or more, got {text!r}")
        return values

    return parse


_counts = _numbers(int, 1)
_weights = _numbers(float, 0)


def _choices(known: tuple[str, ...]) -> Callable[[str], list[str]]:
    """argparse ``type=``: comma-separated names, each one of ``known``."""

    def parse(text: str) -> list[str]:
        modes = [x for x in text.split(",") if x]
        wrong = [m for m in modes if m not in known]
        if wrong or not modes:
            raise argparse.ArgumentTypeError(f"known: {', '.join(known)}; got {text!r}")
        return modes

    return parse


def slower_half(fleet: Fleet) -> Fleet:
    """The fleet with the second half of its GPU replicas slower than the first (1.5x the
    TTFT, 0.6x the decode rate); what the router is told about them is unchanged."""
    gpus = [s.name for s in fleet.specs if s.tier is Tier.GPU]
    models = dict(fleet.models)
    for name in gpus[len(gpus) // 2 :]:
        m = models[name]
        models[name] = dataclasses.replace(
            m,
            ttft_ms=m.ttft_ms * 1.5,
            ttft_p90_ms=m.ttft_p90_ms * 1.5,
            decode_tokens_per_s=m.decode_tokens_per_s * 0.6,
        )
    return dataclasses.replace(fleet, models=models)


def with_learn_by(fleet: Fleet, mode: str) -> Fleet:
    """The fleet with ``policy.learn_by`` set to ``mode``."""
    policy = fleet.config.policy.model_copy(update={"learn_by": mode})
    return dataclasses.replace(fleet, config=fleet.config.model_copy(update={"policy": policy}))


def with_priors(fleet: Fleet, mode: str) -> Fleet:
    """The fleet with its backends' priors as ``mode`` says (see the module doc)."""
    if mode == "reference":
        return fleet
    specs = []
    for spec in fleet.specs:
        p = spec.priors
        if mode == "default":
            q = Priors(500.0, 30.0)
        else:
            k = 0.5 if mode == "half" else 2.0
            q = Priors(p.ttft_ms * k, p.decode_tokens_per_s / k, p.ttft_p90_ms * k)
        specs.append(dataclasses.replace(spec, priors=q))
    return dataclasses.replace(fleet, specs=tuple(specs))


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=50_000, help="requests per scenario")
    p.add_argument("--seed", type=int, default=1)
    add_scenarios(p, default="steady,gpu-spike,diurnal")
    p.add_argument(
        "--replicas", type=_counts, default=[1, 2, 4, 8], help="router replica counts to try"
    )
    p.add_argument(
        "--prior-weights",
        type=_weights,
        help="sweep policy.ttft_prior_weight over these values instead (comma-separated)",
    )
    p.add_argument(
        "--priors",
        type=_choices(PRIORS),
        default=list(PRIORS),
        help=f"with --prior-weights: the priors to try (default: {','.join(PRIORS)})",
    )
    p.add_argument(
        "--learn-by",
        type=_choices(LEARN_BY),
        help="compare these policy.learn_by settings instead (comma-separated: "
        f"{','.join(LEARN_BY)})",
    )
    p.add_argument(
        "--learning",
        type=_choices(LEARN_BY),
        help="the default table once per policy.learn_by setting given (comma-separated: "
        f"{','.join(LEARN_BY)}; default: the scenario's own, backend)",
    )
    p.add_argument(
        "--slower-half",
        action="store_true",
        help="with --learn-by: the second half of the GPU replicas 1.5x the TTFT, 0.6x the "
        "decode rate",
    )
    p.add_argument("--json", help="also write the figures here")
    return p.parse_args(argv)


def compare_learning(args: argparse.Namespace) -> list[dict[str, object]]:
    """The ``--learn-by`` table."""
    rows: list[dict[str, object]] = []
    print(f"| scenario | replicas | {' | '.join(f'learn by {m}' for m in args.learn_by)} |")
    print("|---|---:|" + "---|" * len(args.learn_by))
    for name in args.scenarios:
        fleet, trace = build(name, args.requests, args.seed)
        if args.slower_half:
            fleet = slower_half(fleet)
        for replicas in args.replicas:
            cells = []
            for mode in args.learn_by:
                sim = Simulation(with_learn_by(fleet, mode), args.seed, replicas=replicas)
                out = sim.run(trace, RouterStrategy())
                s = summarize("router", trace, out, 0.0)
                cells.append(f"{s.attainment:.1%}, ${s.cost_usd:.2f}")
                rows.append(
                    {
                        "scenario": name,
                        "replicas": replicas,
                        "learn_by": mode,
                        "attainment": s.attainment,
                        "cost_usd": s.cost_usd,
                        "tier_share": s.tier_share,
                    }
                )
            print(f"| {name} | {replicas} | {' | '.join(cells)} |", flush=True)
    return rows


def sweep_weights(args: argparse.Namespace) -> list[dict[str, object]]:
    """The ``--prior-weights`` table."""
    rows: list[dict[str, object]] = []
    head = " | ".join(f"weight {w:g}" for w in args.prior_weights)
    print(f"| priors | scenario | replicas | {head} |")
    print("|---|---|---:|" + "---|" * len(args.prior_weights))
    for mode in args.priors:
        for name in args.scenarios:
            fleet, trace = build(name, args.requests, args.seed)
            fleet = with_priors(fleet, mode)
            for replicas in args.replicas:
                cells = []
                for w in args.prior_weights:
                    params = dataclasses.replace(fleet.params, ttft_prior_weight=w)
                    sim = Simulation(fleet, args.seed, replicas=replicas)
                    out = sim.run(trace, RouterStrategy(params=params))
                    s = summarize("router", trace, out, 0.0)
                    cells.append(f"{s.attainment:.1%}, ${s.cost_usd:.2f}")
                    rows.append(
                        {
                            "priors": mode,
                            "scenario": name,
                            "replicas": replicas,
                            "weight": w,
                            "attainment": s.attainment,
                            "cost_usd": s.cost_usd,
                        }
                    )
                print(f"| {mode} | {name} | {replicas} | {' | '.join(cells)} |", flush=True)
    return rows


def compare_spreads(args: argparse.Namespace) -> list[dict[str, object]]:
    """The default table: each spreading mode (and power_of_two without the marks) per
    replica count, once per ``--learning`` setting."""
    rows: list[dict[str, object]] = []
    print(
        "| scenario | learn by | replicas | spread | marks | SLO met | cost | hosted | edge "
        "| gpu | gpu split | p99 total |"
    )
    print("|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.scenarios:
        built, trace = build(name, args.requests, args.seed)
        for learning in args.learning or [built.config.policy.learn_by]:
            fleet = with_learn_by(built, learning)
            gpus = [s.name for s in fleet.specs if s.tier.value == "gpu"]
            for replicas in args.replicas:
                runs = [(spread, True) for spread in SPREADS] + [("power_of_two", False)]
                for spread, marks in runs:
                    params = dataclasses.replace(fleet.params, spread=spread)
                    sim = Simulation(fleet, args.seed, load_marks=marks, replicas=replicas)
                    out = sim.run(trace, RouterStrategy(params=params))
                    s = summarize("router", trace, out, 0.0)
                    by_backend = Counter(o.backend for o in out if o.status == "ok")
                    counts = [by_backend[g] for g in gpus]
                    most, least = max(counts), min(counts)
                    split = (most - least) / (most + least) if most else 0.0
                    share = s.tier_share
                    rows.append(
                        {
                            "scenario": name,
                            "learn_by": learning,
                            "replicas": replicas,
                            "spread": spread,
                            "marks": marks,
                            "attainment": s.attainment,
                            "cost_usd": s.cost_usd,
                            "tier_share": share,
                            "gpu_split": split,
                            "p99_total_ms": s.total_p99_ms,
                        }
                    )
                    p99 = "-" if s.total_p99_ms is None else f"{s.total_p99_ms / 1000:.1f} s"
                    print(
                        f"| {name} | {learning} | {replicas} | {spread} "
                        f"| {'yes' if marks else 'no'} | {s.attainment:.1%} | ${s.cost_usd:.2f} "
                        f"| {share['hosted']:.1%} | {share['edge']:.1%} | {share['gpu']:.1%} "
                        f"| {split:.1%} | {p99} |",
                        flush=True,
                    )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.learn_by:
        rows = compare_learning(args)
    elif args.prior_weights:
        rows = sweep_weights(args)
    else:
        rows = compare_spreads(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"requests": args.requests, "seed": args.seed, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
