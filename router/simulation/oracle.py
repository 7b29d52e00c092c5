"""Two limits of any routing strategy on a trace: the oracle and the bound.

Both know each request's true TTFT, decode rate and error draw on every backend (the same
draws the simulation makes, :class:`router.simulation.engine.Truth`) and the fleet's
outage and throttle windows.

``oracle`` (:class:`Oracle`) routes inside the simulation like any strategy, with
perfect knowledge of the present: for each arriving request it reads what the request
would really see on every backend now (:meth:`Simulation.truth`: the queue ahead of it,
the batch it joins, an outage that would cut it) and sends it to the cheapest backend
that meets its latency budgets (none does: the cheapest that completes, else the
fastest). Where a backend's prompt reading slows the requests it serves
(``prefill_interference``), it counts the budgets the request's prompt would make them
miss as its own (:meth:`Simulation.harm`): the fewest budgets missed first, then the
cheapest. So a request it placed is not pushed past its budget by a later one, unless
every choice for that one misses as many. The strategies' ratios are taken to it. It
does not know the future (a request it places may delay later ones), so a strategy can
beat it on a request; it is the best a per-request decision with perfect information
makes.

``bound`` (:func:`run_bound`) is the strict limit: every request alone on the fleet
(no queue, no batch), held if need be until a backend's outage or throttle window ends.
Every latency a strategy sees is at least the bound's on the same backend, so:

- no strategy meets more requests' budgets than the bound;
- on every request both meet, the bound's cost is at most the strategy's.

(``tests/unit/test_simulation.py`` checks both as properties over random fleets and
traces.) With unlimited slots and no faults the oracle and the bound coincide.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from router.policy import cost_usd
from router.simulation.engine import Observation, Outcome, Simulation, Truth
from router.simulation.fleet import BackendModel, Fleet
from router.simulation.strategies import Eligibility
from router.simulation.trace import TraceRequest
from router.types import BackendSpec

ORACLE = "oracle"
BOUND = "bound"


def clean_start(model: BackendModel, at: float, service_s: float) -> float:
    """The earliest time >= ``at`` a call to the backend can start and run ``service_s``
    seconds without meeting an outage (calls fail, streams are cut) or starting inside a
    throttle window (a 429). Each step moves past a window no start before its end can
    avoid, so the first clean time is found (windows are finite: it ends)."""
    start = at
    moved = True
    while moved:
        moved = False
        for w0, w1 in model.outages:
            if w0 <= start + service_s and w1 > start:
                start = w1
                moved = True
        for w0, w1, _ in model.throttle:
            if w0 <= start < w1:
                start = w1
                moved = True
    return start


def run_bound(
    fleet: Fleet,
    trace: Sequence[TraceRequest],
    seed: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[Outcome]:
    """The bound's outcome for every request of ``trace`` (same seed as the runs)."""
    truth = Truth(fleet, seed)
    index = {s.name: i for i, s in enumerate(fleet.specs)}
    candidates = Eligibility(fleet)
    outcomes = []
    step = max(1, len(trace) // 100)
    for i, tr in enumerate(trace):
        specs = candidates(i, tr)
        out = Outcome(i)
        outcomes.append(out)
        if progress is not None and i % step == 0:
            progress(i)
        if not specs:
            out.status = "refused"
            out.reason = "no eligible backend"
            continue
        best: tuple[tuple[int, float, float], BackendSpec, float, float, float] | None = None
        for spec in specs:
            model = fleet.models[spec.name]
            ttft_ms, rate, u = truth.of(i, index[spec.name], tr.prompt_tokens)
            if u < model.error_rate:
                continue
            service = ttft_ms / 1000.0 + tr.output_tokens / rate
            start = (
                clean_start(model, tr.at_s, service)
                if (model.outages or model.throttle)
                else tr.at_s
            )
            wait_ms = (start - tr.at_s) * 1000.0
            ttft = wait_ms + ttft_ms
            total = wait_ms + service * 1000.0
            meets = (tr.ttft_budget_ms is None or ttft <= tr.ttft_budget_ms) and (
                tr.total_budget_ms is None or total <= tr.total_budget_ms
            )
            cost = cost_usd(spec, tr.prompt_tokens, tr.output_tokens)
            rank = (0 if meets else 1, cost, total)
            if best is None or rank < best[0]:
                best = (rank, spec, ttft, total, cost)
        if best is None:
            out.status = "failed"
            out.reason = "every eligible backend fails this request"
            continue
        _, chosen, ttft, total, cost = best
        out.status = "ok"
        out.backend = chosen.name
        out.tier = chosen.tier
        out.ttft_ms = ttft
        out.total_ms = total
        out.cost_usd = cost
        out.attempts = 1
    return outcomes


class Oracle:
    """The clairvoyant strategy (see the module doc)."""

    name = ORACLE

    def bind(self, sim: Simulation) -> None:
        self.sim = sim
        self.keep = 1 + sim.fleet.params.max_fallbacks
        self._eligible = Eligibility(sim.fleet)

    def order(self, index: int, request: TraceRequest, now: float) -> list[str] | str:
        specs = self._eligible(index, request)
        if not specs:
            return "no eligible backend (data class, window or tenant)"
        rows = []
        ttft_b, total_b = request.ttft_budget_ms, request.total_budget_ms
        for spec in specs:
            seen = self.sim.truth(spec.name, index)
            if seen is None:
                continue
            ttft, total, completes = seen
            ok = (
                completes
                and (ttft_b is None or ttft <= ttft_b)
                and (total_b is None or total <= total_b)
            )
            cost = cost_usd(spec, request.prompt_tokens, request.output_tokens)
            # budgets missed: its own, and those its prompt's reading would make others miss
            rank = (0 if ok else 1) + self.sim.harm(spec.name) if completes else math.inf
            rows.append((rank, cost if completes else total, total, spec.name))
        if not rows:
            return "every eligible backend would fail now"
        rows.sort()
        return [r[3] for r in rows[: self.keep]]

    def admit(self, backend: str, now: float) -> bool:
        return True

    def observe(self, seen: Observation) -> None:
        pass
