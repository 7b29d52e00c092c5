"""Trace-replay simulation of routing strategies (``hybrid-router simulate``, docs/simulate.md).

    fleet = load_fleet(Path("fleet.yaml"))            # router.yaml + how backends behave
    trace = read_trace(Path("trace.jsonl"))           # or scenarios.build("steady", ...)
    result = compare(fleet, trace, ["router", "always-hosted"], seed=1)
    result.summaries["router"].attainment_vs_oracle

``engine.py`` is the discrete-event loop; ``strategies.py`` the router's own policy
(``router.policy.plan``, not a copy) and the baselines; ``oracle.py`` the bound;
``report.py`` the figures; ``trace.py`` and ``fleet.py`` the inputs; ``scenarios.py`` the
built-in scenarios.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from router.errors import ConfigError
from router.simulation.engine import Outcome, Simulation
from router.simulation.fleet import Fleet, load_fleet, parse_fleet
from router.simulation.oracle import BOUND, ORACLE, Oracle, run_bound
from router.simulation.report import Summary, against_oracle, summarize
from router.simulation.strategies import STRATEGIES, RouterStrategy
from router.simulation.trace import TraceRequest, from_request_log, read_trace, write_trace


@dataclass
class Comparison:
    """Every strategy's summary (the oracle's first) and, when kept, its outcomes."""

    summaries: dict[str, Summary]
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)


def make_strategy(name: str) -> object:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ConfigError(
            f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})", key="--strategies"
        ) from None


def compare(
    fleet: Fleet,
    trace: Sequence[TraceRequest],
    strategies: Sequence[str | object],
    *,
    seed: int = 1,
    replicas: int = 1,
    keep_outcomes: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> Comparison:
    """Run the bound, the oracle and each strategy (a name of :data:`STRATEGIES` or a
    strategy object) over ``trace``; summaries with their ratios to the oracle.

    ``replicas``: router replicas sharing the traffic, each with its own live signals
    (:class:`Simulation`); the oracle and the bound see everything whatever it is."""
    n = len(trace)

    def tick(name: str) -> Callable[[int], None] | None:
        if progress is None:
            return None
        return lambda i: progress(name, i, n)

    t0 = time.perf_counter()
    bound_out = run_bound(fleet, trace, seed, tick(BOUND))
    summaries = {BOUND: summarize(BOUND, trace, bound_out, time.perf_counter() - t0)}
    outcomes = {BOUND: bound_out} if keep_outcomes else {}
    for item in [Oracle(), *strategies]:
        strategy = make_strategy(item) if isinstance(item, str) else item
        name = strategy.name  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        sim = Simulation(fleet, seed, replicas=replicas)
        out = sim.run(trace, strategy, tick(name))  # type: ignore[arg-type]
        summaries[name] = summarize(name, trace, out, time.perf_counter() - t0)
        if keep_outcomes:
            outcomes[name] = out
    against_oracle(list(summaries.values()), summaries[ORACLE])
    return Comparison(summaries, outcomes)


__all__ = [
    "BOUND",
    "ORACLE",
    "Oracle",
    "STRATEGIES",
    "Comparison",
    "Fleet",
    "Outcome",
    "RouterStrategy",
    "Simulation",
    "Summary",
    "TraceRequest",
    "compare",
    "from_request_log",
    "load_fleet",
    "make_strategy",
    "parse_fleet",
    "read_trace",
    "run_bound",
    "write_trace",
]
