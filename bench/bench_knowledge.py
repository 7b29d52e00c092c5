"""What the oracle knows that the router cannot: the router against strategies that know
more than any router can (BENCHMARKS.md, Routing).

The oracle knows each request's own draws (its TTFT, decode rate and error on every
backend) and its answer's length. This splits that knowledge, on the same trace and seed:

    router          the router with its defaults (``plan()``, live BackendStats)
    router+length   the same, planning each request with its true answer length
                    (instead of ``max_output_tokens`` or the learnt estimate)
    informed        knows each backend's true behaviour (the fleet's TTFT and decode
                    distributions, error rate, batch slowdown) and the fleet's present
                    state exactly (outages, throttles, when a queued request would start,
                    the batch it would join), and the distribution of the answer's length
                    (the lengths of the trace's requests of its kind: tenant, budgets,
                    data class); not the request's own draws or length. It sends each
                    request where its chance of meeting its budgets is highest (a grid of
                    32 draws per backend), equal chances to the cheaper.
    informed+length the same, knowing the answer's length too

One Markdown row per scenario and strategy: SLO met, share of the oracle's, cost, ratio
to the oracle's, tier shares.

    .venv/bin/python bench/bench_knowledge.py                        # 20,000 per scenario
    .venv/bin/python bench/bench_knowledge.py --requests 5000 --scenarios steady
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from statistics import NormalDist

from scenario_args import add_scenarios

from router.policy import cost_usd
from router.simulation import RouterStrategy, Simulation, compare
from router.simulation.engine import Observation, Truth
from router.simulation.scenarios import build
from router.simulation.strategies import Eligibility
from router.simulation.trace import TraceRequest

#: Draws per backend and request.
GRID = 32
_NORMAL = NormalDist()
#: The TTFT's grid: standard normal quantiles at the midpoints of GRID equal slices; the
#: decode rate's and the answer length's paired with it by fixed permutations (strides
#: coprime with GRID), so the three vary independently.
_TTFT_Z = [_NORMAL.inv_cdf((k + 0.5) / GRID) for k in range(GRID)]
_RATE_Z = [_TTFT_Z[(k * 7 + 3) % GRID] for k in range(GRID)]
_LENGTH_Q = [((k * 13 + 5) % GRID + 0.5) / GRID for k in range(GRID)]

Kind = tuple[str, float | None, float | None, str, bool]


def kind_of(tr: TraceRequest) -> Kind:
    """What a router could know a request by before its answer."""
    return (tr.tenant, tr.ttft_budget_ms, tr.total_budget_ms, tr.data_class.value, bool(tr.session))


def length_grids(trace: Sequence[TraceRequest]) -> dict[Kind, list[int]]:
    """Per kind of request, its answer lengths at the grid's quantiles (nearest rank)."""
    lengths: dict[Kind, list[int]] = defaultdict(list)
    for tr in trace:
        lengths[kind_of(tr)].append(tr.output_tokens)
    grids = {}
    for kind, found in lengths.items():
        found.sort()
        n = len(found)
        grids[kind] = [found[min(n - 1, max(0, math.ceil(q * n) - 1))] for q in _LENGTH_Q]
    return grids


def meet_chance(
    ttft_ms: float,
    sigma: float,
    rate: float,
    spread: float,
    wait_ms: float,
    lengths: Sequence[int],
    ttft_budget_ms: float | None,
    total_budget_ms: float | None,
    ttft_timeout_ms: float,
) -> float:
    """The share of the grid's draws that meet the budgets: TTFT log-normal around
    ``ttft_ms`` (``sigma``), decode rate log-normal around ``rate`` (``spread``; scaled for
    the batch), after ``wait_ms`` for a slot; ``lengths``: the answer's length per draw."""
    first_cap = ttft_timeout_ms if ttft_budget_ms is None else min(ttft_budget_ms, ttft_timeout_ms)
    met = 0
    for k in range(GRID):
        first = wait_ms + ttft_ms * math.exp(sigma * _TTFT_Z[k])
        if first > first_cap:
            continue
        if total_budget_ms is not None:
            total = first + lengths[k] * 1000.0 / (rate * math.exp(spread * _RATE_Z[k]))
            if total > total_budget_ms:
                continue
        met += 1
    return met / GRID


class Informed:
    """See the module doc; ``known_length``: the request's own answer length is known."""

    def __init__(self, trace: Sequence[TraceRequest], known_length: bool = False) -> None:
        self.name = "informed+length" if known_length else "informed"
        self.known_length = known_length
        self._grids = length_grids(trace)

    def bind(self, sim: Simulation) -> None:
        self.sim = sim
        self.keep = 1 + sim.fleet.params.max_fallbacks
        self._eligible = Eligibility(sim.fleet)
        # The log-normal parameters the simulation draws from (Truth: the seed only keys
        # the draws, not the parameters).
        params = Truth(sim.fleet, sim.seed).params
        self._models = {
            spec.name: (sim.fleet.models[spec.name], params[i][1])
            for i, spec in enumerate(sim.fleet.specs)
        }

    def order(self, index: int, request: TraceRequest, now: float) -> list[str] | str:
        specs = self._eligible(index, request)
        if not specs:
            return "no eligible backend (data class, window or tenant)"
        cap = request.planned_output_tokens
        if self.known_length:
            lengths = [request.output_tokens] * GRID
        else:
            lengths = [min(n, cap) for n in self._grids[kind_of(request)]]
        mean_out = max(1, round(sum(lengths) / GRID))
        rows = []
        for spec in specs:
            m, sigma = self._models[spec.name]
            if (m.outages and m.down_at(now) is not None) or (
                m.throttle and m.throttled_at(now) is not None
            ):
                continue  # it would fail now
            start, factor = self.sim.placement(spec.name)
            # The prompt's prefill (where the fleet gives a rate) adds to the TTFT draw as
            # the wait does.
            prefill = (
                request.prompt_tokens * 1000.0 / m.prefill_tokens_per_s
                if m.prefill_tokens_per_s
                else 0.0
            )
            chance = (1.0 - m.error_rate) * meet_chance(
                m.ttft_ms,
                sigma,
                m.decode_tokens_per_s * factor,
                m.decode_spread,
                (start - now) * 1000.0 + prefill,
                lengths,
                request.ttft_budget_ms,
                request.total_budget_ms,
                self.sim.ttft_timeout_ms,
            )
            rows.append((-chance, cost_usd(spec, request.prompt_tokens, mean_out), spec.name))
        if not rows:
            return "every eligible backend would fail now"
        rows.sort()
        return [r[2] for r in rows[: self.keep]]

    def admit(self, backend: str, now: float) -> bool:
        return True

    def observe(self, seen: Observation) -> None:
        pass


class RouterKnowingLength(RouterStrategy):
    """The router's own policy, told each request's true answer length."""

    def __init__(self) -> None:
        super().__init__(name="router+length")

    def expected_output(self, request: TraceRequest) -> int | None:
        return request.output_tokens


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20_000, help="requests per scenario")
    p.add_argument("--seed", type=int, default=1)
    add_scenarios(p)
    p.add_argument("--json", help="also write the figures here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    rows = []
    print("| scenario | strategy | SLO met | vs oracle | cost | vs oracle | edge / gpu / hosted |")
    print("|---|---|---:|---:|---:|---:|---|")
    for name in args.scenarios:
        t0 = time.perf_counter()
        fleet, trace = build(name, args.requests, args.seed)
        strategies = [
            "router",
            RouterKnowingLength(),
            Informed(trace),
            Informed(trace, known_length=True),
        ]
        result = compare(fleet, trace, strategies, seed=args.seed)
        for s in result.summaries.values():
            if s.strategy == "bound":
                continue
            shares = " / ".join(
                f"{s.tier_share.get(t, 0.0) * 100:.0f}" for t in ("edge", "gpu", "hosted")
            )
            vs_att = "-" if s.attainment_vs_oracle is None else f"{s.attainment_vs_oracle:.1%}"
            vs_cost = "-" if s.cost_vs_oracle is None else f"{s.cost_vs_oracle:.2f}x"
            print(
                f"| {name} | {s.strategy} | {s.attainment:.1%} | {vs_att} | "
                f"${s.cost_usd:.2f} | {vs_cost} | {shares} |"
            )
            rows.append(
                {
                    "scenario": name,
                    "strategy": s.strategy,
                    "attainment": s.attainment,
                    "attainment_vs_oracle": s.attainment_vs_oracle,
                    "cost_usd": s.cost_usd,
                    "cost_vs_oracle": s.cost_vs_oracle,
                    "tier_share": s.tier_share,
                }
            )
        print(f"<!-- {name}: {time.perf_counter() - t0:.0f} s -->", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"requests": args.requests, "seed": args.seed, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
