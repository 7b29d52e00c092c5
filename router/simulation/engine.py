"""The discrete-event simulation: a trace through a fleet under one routing strategy.

Time is simulated (seconds); nothing sleeps. Each arrival asks the strategy for an order
of backends (the router's strategy calls the router's own ``plan()`` on the snapshots of
the router's own :class:`~router.stats.BackendStats`, fed as dispatch feeds them, on the
simulated clock), then the attempts run as the router's dispatch runs them: a backend
whose circuit is open is skipped, a failure before the first token (an outage, a 429, an
error, no first token within ``policy.ttft_timeout_ms``) moves on to the next backend of
the order, a failure after it ends the answer cut short.

Each backend serves ``slots`` requests at once (FIFO queue beyond), with a true TTFT and
decode rate per request and backend (log-normal around the fleet's medians; :class:`Truth`:
a pure function of the seed, the request and the backend), so every strategy meets the
same truth and :mod:`router.simulation.oracle` can read it too. Decode slows with the batch
(``batch_slowdown`` at a full one, taken when the request starts). Backends that report
their load (model servers, Ray Serve, edge devices) are polled every
``policy.load_poll_interval_s`` as the router polls them (each after ``poll_ms``, its
round trip: the figure as the poll went out, applied when it is back; with it the
backend's prompt reading rate, ``prefill_tokens_per_s``, where it has one), and every
backend's samples past ``policy.sample_max_age_s`` expire then.

With ``replicas`` > 1 the router runs as that many replicas (``hybrid-router simulate
--replicas``): each has its own ``BackendStats`` per backend and its own poller (the
replicas' polls staggered over the interval), and each request goes to one of them at
random (a hash of the seed and its index).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from router.config import PolicyConfig
from router.errors import ConfigError, ErrorClass
from router.policy import cost_usd, ttft_sample_ms
from router.simulation.fleet import BackendModel, Fleet
from router.simulation.trace import TraceRequest
from router.stats import BackendStats, Samples, samples_for
from router.types import BackendSpec, Tier

_Z90 = 1.2815515655446004  # the 90th percentile of the standard normal


class Strategy(Protocol):
    """A routing strategy under simulation (router/simulation/strategies.py)."""

    name: str

    def bind(self, sim: Simulation) -> None:
        """Called once before the run: the fleet, the router's stats, the clock."""

    def order(self, index: int, request: TraceRequest, now: float) -> list[str] | str:
        """Backends to try, best first; or why the request is refused (a message)."""

    def admit(self, backend: str, now: float) -> bool:
        """Whether the backend may be tried now (the router: its circuit breaker)."""

    def observe(self, seen: Observation) -> None:
        """An attempt ended (what the strategy may learn from it)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """An attempt on a backend ended: what a strategy may learn from it."""

    backend: str
    ok: bool
    now: float
    #: From the attempt's start (a success only).
    ttft_ms: float | None = None
    total_ms: float | None = None
    #: Prompt and answer tokens (a success only).
    tokens: int = 0
    #: The backend's Retry-After, seconds (a 429 that sent one).
    retry_after_s: float | None = None


@dataclass(slots=True)
class Outcome:
    """What happened to one request."""

    index: int
    #: "ok", "cut" (failed after its first token), "failed" (every candidate failed
    #: before answering), "refused" (the strategy chose nothing).
    status: str = ""
    backend: str = ""
    tier: Tier | None = None
    ttft_ms: float | None = None
    total_ms: float | None = None
    cost_usd: float = 0.0
    attempts: int = 0
    reason: str = ""


class _Request:
    __slots__ = (
        "index",
        "tr",
        "at",
        "order",
        "pos",
        "outcome",
        "truth",
        "drawn",
        "first_at",
        "replica",
    )

    def __init__(self, index: int, tr: TraceRequest, truth: Truth, replica: int = 0) -> None:
        self.index = index
        #: The router replica that takes the request (and sees its outcome).
        self.replica = replica
        self.tr = tr
        self.at = tr.at_s
        self.order: list[str] = []
        self.pos = 0
        self.outcome = Outcome(index)
        self.truth = truth
        self.drawn: list[tuple[float, float, float] | None] = [None] * truth.n
        self.first_at: float | None = None

    def draw(self, backend: int) -> tuple[float, float, float]:
        d = self.drawn[backend]
        if d is None:
            d = self.drawn[backend] = self.truth.of(self.index, backend, self.tr.prompt_tokens)
        return d


class _Attempt:
    __slots__ = (
        "req",
        "b",
        "st",
        "dispatched",
        "started",
        "first_at",
        "rate",
        "live",
        "done_at",
        "first_due",
        "armed",
    )

    def __init__(self, req: _Request, b: _Backend, st: BackendStats, now: float) -> None:
        self.req = req
        self.b = b
        #: The BackendStats of the replica that sent it (its router's view of ``b``).
        self.st = st
        self.dispatched = now
        self.started: float | None = None
        self.first_at: float | None = None
        self.rate = 0.0
        self.live = True
        self.done_at = 0.0
        #: When its first token comes (later than drawn when other prompts' reading
        #: slowed it: ``prefill_interference``).
        self.first_due = 0.0
        #: Whether a TTFT timeout event is pending for it.
        self.armed = False


#: A request a backend serves, as :meth:`Simulation._walk` foresees it: (its end, an order
#: among equal ends, its first token, its arrival, its TTFT budget ms, its total budget ms).
_Served = tuple[float, int, float, float, float | None, float | None]


class _Backend:
    __slots__ = ("index", "spec", "model", "busy", "queue", "serving")

    def __init__(self, index: int, spec: BackendSpec, model: BackendModel):
        self.index = index
        self.spec = spec
        self.model = model
        self.busy = 0
        self.queue: deque[_Attempt] = deque()
        self.serving: set[_Attempt] = set()


# event kinds
_FIRST, _DONE, _FAIL, _TIMEOUT, _OUTAGE, _POLL, _ANSWER = range(7)


_MASK = (1 << 64) - 1
_TWO_PI = 2.0 * math.pi
_U53 = 2.0**-53


def _mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of ``x``."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class Truth:
    """What each request really sees on each backend: (TTFT ms when a slot is free,
    decode tokens/s, a uniform for the error draw), log-normal around the fleet's medians;
    the TTFT plus the prompt's prefill where the backend has a ``prefill_tokens_per_s``.

    A pure function of (seed, request index, backend index) (counter-based draws: a
    hash, not a stream), so a strategy computes only the backends it tries, and every
    strategy, the oracle and the bound read the same values for a seed.
    """

    def __init__(self, fleet: Fleet, seed: int) -> None:
        self.n = len(fleet.specs)
        self.key = _mix(seed & _MASK)
        self.params = []
        for spec in fleet.specs:
            m = fleet.models[spec.name]
            sigma = math.log(m.ttft_p90_ms / m.ttft_ms) / _Z90 if m.ttft_p90_ms > m.ttft_ms else 0.0
            self.params.append((m.ttft_ms, sigma, m.decode_tokens_per_s, m.decode_spread))
        #: ms per prompt token before the first token, per backend (0: not modelled).
        self.prefill_ms_per_token = [
            1000.0 / m.prefill_tokens_per_s if m.prefill_tokens_per_s > 0 else 0.0
            for m in (fleet.models[spec.name] for spec in fleet.specs)
        ]

    def of(self, index: int, backend: int, prompt_tokens: int = 0) -> tuple[float, float, float]:
        ttft, sigma, rate, spread = self.params[backend]
        h1 = _mix(self.key ^ (index * 1024 + backend))
        h2 = _mix(h1)
        h3 = _mix(h2)
        # Box-Muller: two independent standard normals from two uniforms in (0, 1].
        r = math.sqrt(-2.0 * math.log(((h1 >> 11) + 1) * _U53))
        theta = _TWO_PI * (h2 >> 11) * _U53
        return (
            (ttft * math.exp(sigma * r * math.cos(theta)) if sigma else ttft)
            + prompt_tokens * self.prefill_ms_per_token[backend],
            rate * math.exp(spread * r * math.sin(theta)) if spread else rate,
            (h3 >> 11) * _U53,
        )


def _later(left: float, reading: float, share: float) -> float:
    """How much later something ``left`` seconds away (at full pace) happens when the
    pace drops by ``share`` for the next ``reading`` seconds: ``share x reading`` if it is
    still going when the reading ends, else ``left x share / (1 - share)``."""
    if left <= 0.0:
        return 0.0
    keep = 1.0 - share
    if left >= keep * reading or keep <= 0.0:
        return share * reading
    return left * share / keep


class Simulation:
    """One run of a trace through a fleet under one strategy (:meth:`run`)."""

    def __init__(
        self,
        fleet: Fleet,
        seed: int = 1,
        *,
        load_marks: bool = True,
        replicas: int = 1,
        prefill_reports: bool = True,
    ) -> None:
        if replicas < 1:
            raise ConfigError(f"must be 1 or more, got {replicas}", key="--replicas")
        self.fleet = fleet
        self.seed = seed
        #: Router replicas sharing the traffic, each with its own BackendStats (streams,
        #: samples, breakers, load polls) and, in the router strategy, its own learnt
        #: answer lengths; a request goes to one at random (a hash of the seed and its
        #: index), as a Kubernetes Service spreads connections.
        self.replicas = replicas
        #: The replica whose request is being decided or whose attempt just ended: what
        #: :meth:`stats` answers for (strategies read their router's view through it).
        self.replica = 0
        #: Apply the router's own streams since a load poll went out to its figure, as the
        #: registry does (``BackendStats.set_reported_load``); False replays the router
        #: before it did (the figure taken as it came: ``bench/bench_load_marks.py``).
        self.load_marks = load_marks
        #: Backends that report their load report their prompt reading rate with it
        #: (``prefill_tokens_per_s``, as a model server's Info and a device's heartbeat
        #: do); False replays the router before they did.
        self.prefill_reports = prefill_reports
        self.now = 0.0
        cfg: PolicyConfig = fleet.config.policy
        self.policy_config = cfg
        self.ttft_timeout_ms = cfg.ttft_timeout_ms
        self.ttft_timeout_s = cfg.ttft_timeout_ms / 1000.0
        self.poll_s = cfg.load_poll_interval_s
        self.max_age_s = cfg.sample_max_age_s
        self.backends = [
            _Backend(i, spec, fleet.models[spec.name]) for i, spec in enumerate(fleet.specs)
        ]
        self.by_name = {b.spec.name: b for b in self.backends}
        #: [replica][backend index]: each replica's BackendStats of each backend (with
        #: policy.learn_by: model, a replica's backends of one model share their windows).
        self.views = [self._view(fleet.specs, cfg) for _ in range(replicas)]
        #: [replica][backend index]: when those stats next have a sample to expire.
        self._expire_at = [[0.0] * len(fleet.specs) for _ in range(replicas)]
        self._replica_key = _mix((seed ^ 0x5EED) & _MASK)
        self._heap: list[tuple[float, int, int, object]] = []
        self._seq = 0

    def _clock(self) -> float:
        return self.now

    def _view(self, specs: Sequence[BackendSpec], cfg: PolicyConfig) -> list[BackendStats]:
        """One router replica's BackendStats, as its registry builds them."""
        shared: dict[tuple[str, str, str], Samples] = {}
        return [
            BackendStats(spec.name, cfg, self._clock, samples_for(spec, cfg, shared))
            for spec in specs
        ]

    def stats(self, name: str) -> BackendStats:
        """The current replica's BackendStats of backend ``name``."""
        return self.views[self.replica][self.by_name[name].index]

    def replica_of(self, index: int) -> int:
        """The replica that takes request ``index`` (0 with one replica)."""
        if self.replicas == 1:
            return 0
        return _mix(self._replica_key ^ index) % self.replicas

    def load(self, name: str) -> int:
        """Requests the backend holds now (serving + queued)."""
        b = self.by_name[name]
        return b.busy + len(b.queue)

    def truth(self, name: str, index: int) -> tuple[float, float, bool] | None:
        """What request ``index`` (arriving now) would really see on backend ``name`` if
        sent there now: (TTFT ms, total ms, whether it completes), from the draws and the
        backend's queue (requests ahead keep their place; those queued are taken to
        decode at a full batch's rate). None when it would fail at once (an outage, a
        429, an error draw). For the clairvoyant oracle."""
        b = self.by_name[name]
        m = b.model
        req = self._current
        assert req is not None and req.index == index
        now = self.now
        if m.outages and m.down_at(now) is not None:
            return None
        if m.throttle and m.throttled_at(now) is not None:
            return None
        ttft_ms, rate, u = req.draw(b.index)
        if u < m.error_rate:
            return None
        out = req.tr.output_tokens
        start, factor = self.placement(name)
        rate *= factor
        first = start + ttft_ms / 1000.0
        end = first + out / rate
        completes = not any(w0 <= end and w1 > start for w0, w1 in m.outages)
        if (first - now) * 1000.0 > self.ttft_timeout_ms:
            completes = False
        return (first - now) * 1000.0, (end - now) * 1000.0, completes

    def harm(self, name: str) -> int:
        """How many of the requests backend ``name`` will be serving when the request
        arriving now starts there (now, or once the queue ahead of it has moved:
        :meth:`placement`), each on course to meet its budgets, would miss them because
        its prompt's reading slows them (``prefill_interference``); 0 where the backend
        has none. For the oracle, which so protects the requests it placed from those it
        places after them."""
        b = self.by_name[name]
        m = b.model
        share = m.prefill_interference
        if not share:
            return 0
        req = self._current
        assert req is not None
        reading = req.tr.prompt_tokens / m.prefill_tokens_per_s
        start, serving = self._walk(b)
        harmed = 0
        for end, _, first, at, ttft_b, total_b in serving:
            if total_b is None and (ttft_b is None or first <= start):
                continue  # nothing left it could miss
            if (ttft_b is not None and (first - at) * 1000.0 > ttft_b) or (
                total_b is not None and (end - at) * 1000.0 > total_b
            ):
                continue  # missing already
            if ttft_b is not None and first > start:
                first += _later(first - start, reading, share)
                if (first - at) * 1000.0 > ttft_b:
                    harmed += 1
                    continue
            if total_b is not None:
                end += _later(end - start, reading, share)
                if (end - at) * 1000.0 > total_b:
                    harmed += 1
        return harmed

    def placement(self, name: str) -> tuple[float, float]:
        """When a request sent to backend ``name`` now would start (a slot free now, or
        when the requests queued ahead of it have taken theirs: their own draws decide
        when the slots free up, later where their prompts' reading slows the others) and
        the factor of its decode rate (the batch it joins; a full batch's once it
        waited). For the oracle (and bench/bench_knowledge.py)."""
        b = self.by_name[name]
        m = b.model
        slots = m.slots
        if slots == 0 or b.busy < slots:
            if m.batch_slowdown and slots:
                return self.now, 1.0 - m.batch_slowdown * (b.busy + 1) / slots
            return self.now, 1.0
        return self._walk(b)[0], 1.0 - m.batch_slowdown

    def _walk(self, b: _Backend) -> tuple[float, list[_Served]]:
        """When a request sent to ``b`` now would start, and what ``b`` would be serving
        then: (end, order, first token, arrival, TTFT budget, total budget) of each, as
        the requests queued ahead of it take the slots that free up. Kept while the
        arriving request's order is decided (the oracle asks :meth:`placement`, then
        :meth:`harm`, of each backend; nothing moves in between)."""
        key = (self._current, b.index)
        if self._walked is not None and self._walked[0] == key:
            return self._walked[1]
        walked = self._walk_queue(b)
        self._walked = (key, walked)
        return walked

    def _walk_queue(self, b: _Backend) -> tuple[float, list[_Served]]:
        m = b.model
        now = self.now
        serving: list[_Served] = []
        for k, a in enumerate(b.serving):
            tr = a.req.tr
            first = a.first_at if a.first_at is not None else a.first_due
            serving.append((a.done_at, k, first, a.req.at, tr.ttft_budget_ms, tr.total_budget_ms))
        if m.slots == 0 or b.busy < m.slots:
            return now, serving
        heapq.heapify(serving)
        full = 1.0 - m.batch_slowdown
        share = m.prefill_interference
        seq = len(serving)
        for q in b.queue:
            if not q.live:
                continue
            q_ttft, q_rate, _ = q.req.draw(b.index)
            at = max(now, heapq.heappop(serving)[0])
            if share:  # its prompt's reading slows the others (each moves later in order)
                reading = q.req.tr.prompt_tokens / m.prefill_tokens_per_s
                serving = [
                    (
                        end + _later(end - at, reading, share),
                        k,
                        first + _later(first - at, reading, share),
                        arrived,
                        ttft_b,
                        total_b,
                    )
                    for end, k, first, arrived, ttft_b, total_b in serving
                ]
            first = at + q_ttft / 1000.0
            tr = q.req.tr
            seq += 1
            heapq.heappush(
                serving,
                (
                    first + tr.output_tokens / (q_rate * full),
                    seq,
                    first,
                    q.req.at,
                    tr.ttft_budget_ms,
                    tr.total_budget_ms,
                ),
            )
        return max(now, heapq.heappop(serving)[0]), serving

    # --- the run ------------------------------------------------------------------

    def run(
        self,
        trace: Sequence[TraceRequest],
        strategy: Strategy,
        progress: Callable[[int], None] | None = None,
    ) -> list[Outcome]:
        strategy.bind(self)
        self.strategy = strategy
        self._completed = getattr(strategy, "completed", None)
        truth = Truth(self.fleet, self.seed)
        heap = self._heap
        push = self._push
        for b in self.backends:
            for start, _end in b.model.outages:
                push(start, _OUTAGE, b)
        for r in range(self.replicas):  # load polls and sample expiry, staggered
            push(self.poll_s * r / self.replicas, _POLL, r)
        outcomes: list[Outcome] = []
        n = len(trace)
        step = max(1, n // 100)
        handlers: tuple[Callable[[Any], None], ...] = (
            self._first,
            self._done,
            self._fail,
            self._timeout,
            self._outage,
            self._poll,
            self._answer,
        )
        pop = heapq.heappop
        for i, tr in enumerate(trace):
            at = tr.at_s
            while heap and heap[0][0] <= at:
                t, _, kind, obj = pop(heap)
                self.now = t
                handlers[kind](obj)
            self.now = at
            replica = self.replica = self.replica_of(i)
            req = _Request(i, tr, truth, replica)
            self._current = req
            outcomes.append(req.outcome)
            chosen = strategy.order(i, tr, at)
            self._walked = None  # the fleet moves on from here
            if isinstance(chosen, str):
                req.outcome.status = "refused"
                req.outcome.reason = chosen
            else:
                req.order = chosen
                self._next(req)
            if progress is not None and i % step == 0:
                progress(i)
        self._draining = True
        while heap:
            t, _, kind, obj = pop(heap)
            if kind >= _POLL:  # load polls stop with the trace
                continue
            self.now = t
            handlers[kind](obj)
        return outcomes

    _draining = False
    _current: _Request | None = None
    _walked: tuple[tuple[_Request | None, int], tuple[float, list[_Served]]] | None = None

    def _push(self, t: float, kind: int, obj: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, obj))

    # --- dispatch -----------------------------------------------------------------

    def _next(self, req: _Request) -> None:
        """Try the request's next backend (dispatch's loop over plan.order)."""
        now = self.now
        strategy = self.strategy
        self.replica = req.replica
        view = self.views[req.replica]
        while req.pos < len(req.order):
            name = req.order[req.pos]
            req.pos += 1
            b = self.by_name.get(name)
            if b is None or not strategy.admit(name, now):
                continue
            req.outcome.attempts += 1
            st = view[b.index]
            att = _Attempt(req, b, st, now)
            m = b.model
            st.begin()
            if m.outages and m.down_at(now) is not None:
                self._push(now + m.fail_after_ms / 1000.0, _FAIL, (att, None, "outage"))
                return
            if m.throttle:
                w = m.throttled_at(now)
                if w is not None:
                    self._push(now + m.fail_after_ms / 1000.0, _FAIL, (att, w[2] or None, "429"))
                    return
            if req.draw(b.index)[2] < m.error_rate:
                self._push(now + m.fail_after_ms / 1000.0, _FAIL, (att, None, "error"))
                return
            slots = m.slots
            if slots == 0 or b.busy < slots:
                if req.draw(b.index)[0] > self.ttft_timeout_ms:
                    self._push(now + self.ttft_timeout_s, _TIMEOUT, att)
                    att.armed = True
                self._start(att)
            else:  # it may wait past the timeout
                self._push(now + self.ttft_timeout_s, _TIMEOUT, att)
                att.armed = True
                b.queue.append(att)
            return
        out = req.outcome
        out.status = "failed"
        out.reason = out.reason or "no candidate could be tried"

    def _start(self, att: _Attempt) -> None:
        b = att.b
        m = b.model
        now = self.now
        b.busy += 1
        b.serving.add(att)
        att.started = now
        ttft_ms, rate, _ = att.req.draw(b.index)
        if m.batch_slowdown and m.slots:
            rate *= 1.0 - m.batch_slowdown * b.busy / m.slots
        att.rate = rate
        first = att.first_due = now + ttft_ms / 1000.0
        att.done_at = first + att.req.tr.output_tokens / rate
        if m.prefill_interference and b.busy > 1:
            self._interfere(att, m.prefill_interference)
        self._push(first, _FIRST, att)

    def _interfere(self, att: _Attempt, share: float) -> None:
        """``att`` starts reading its prompt (``prompt / prefill_tokens_per_s`` seconds):
        the backend's other requests go ``share`` slower meanwhile, so each ends (and one
        still before its first token gets it) later by ``share`` of that time, or less
        when it ends sooner: at ``(1 - share)`` of its pace, a request with ``w`` seconds
        left at full pace is ``w * share / (1 - share)`` later if that ends within it."""
        b = att.b
        now = self.now
        reading = att.req.tr.prompt_tokens / b.model.prefill_tokens_per_s
        if reading <= 0.0:
            return
        for other in b.serving:
            if other is att:
                continue
            other.done_at += _later(other.done_at - now, reading, share)
            if other.first_at is None:
                other.first_due += _later(other.first_due - now, reading, share)
                due = other.dispatched + self.ttft_timeout_s
                if not other.armed and other.first_due > due:  # now past the TTFT timeout
                    self._push(max(due, now), _TIMEOUT, other)
                    other.armed = True

    def _release(self, att: _Attempt) -> None:
        """The attempt leaves its backend (done, failed, cut, timed out)."""
        att.live = False
        b = att.b
        if att.started is not None:
            b.serving.discard(att)
            b.busy -= 1
            m = b.model
            while b.queue and (m.slots == 0 or b.busy < m.slots):
                nxt = b.queue.popleft()
                if nxt.live:
                    self._start(nxt)
        else:
            try:
                b.queue.remove(att)
            except ValueError:
                pass

    # --- events -------------------------------------------------------------------

    def _first(self, att: _Attempt) -> None:
        if not att.live:
            return
        if att.first_due > self.now:  # slowed by another prompt's reading since
            self._push(att.first_due, _FIRST, att)
            return
        att.first_at = self.now
        req = att.req
        if req.first_at is None:
            req.first_at = self.now
        self._push(att.done_at, _DONE, att)

    def _done(self, att: _Attempt) -> None:
        if not att.live:
            return
        if att.done_at > self.now:  # slowed by another prompt's reading since
            self._push(att.done_at, _DONE, att)
            return
        self._release(att)
        now = self.now
        b = att.b
        req = att.req
        tr = req.tr
        assert att.first_at is not None and att.started is not None
        queued_ms = (att.started - att.dispatched) * 1000.0 if b.model.reports_load else 0.0
        ttft_ms = (att.first_at - att.dispatched) * 1000.0
        total_ms = (now - att.dispatched) * 1000.0
        st = att.st
        # as dispatch records it: without the queue, and without the prompt's prefill where
        # the backend reports a rate or the router's priors give one
        st.record_first_token(
            ttft_sample_ms(st.prefill_rate(b.spec.priors), tr.prompt_tokens, ttft_ms - queued_ms)
        )
        st.record_success(
            max(0.0, total_ms - queued_ms), tr.output_tokens, (now - att.first_at) * 1000.0
        )
        st.end()
        self.replica = req.replica
        self.strategy.observe(
            Observation(
                b.spec.name, True, now, ttft_ms, total_ms, tr.prompt_tokens + tr.output_tokens
            )
        )
        out = req.outcome
        out.status = "ok"
        out.backend = b.spec.name
        out.tier = b.spec.tier
        out.ttft_ms = ((req.first_at or att.first_at) - req.at) * 1000.0
        out.total_ms = (now - req.at) * 1000.0
        out.cost_usd += cost_usd(b.spec, tr.prompt_tokens, tr.output_tokens)
        if self._completed is not None:
            self._completed(tr)

    def _fail(self, item: object) -> None:
        att, retry_after, why = cast(tuple[_Attempt, float | None, str], item)
        self._failed_before_first(att, retry_after, why)

    def _failed_before_first(self, att: _Attempt, retry_after: float | None, why: str) -> None:
        if att.live:
            self._release(att)
        b = att.b
        st = att.st
        st.record_failure(ErrorClass.RETRYABLE, retry_after, message=why)
        st.end()
        self.replica = att.req.replica
        self.strategy.observe(Observation(b.spec.name, False, self.now, retry_after_s=retry_after))
        att.req.outcome.reason = f"{b.spec.name}: {why}"
        self._next(att.req)

    def _timeout(self, att: _Attempt) -> None:
        if not att.live or att.first_at is not None:
            return
        self._failed_before_first(att, None, "no first token in time")

    def _outage(self, b: object) -> None:
        assert isinstance(b, _Backend)
        now = self.now
        for att in list(b.serving) + list(b.queue):
            if not att.live:
                continue
            if att.first_at is None:
                self._failed_before_first(att, None, "outage")
                continue
            # Cut after its first token: the answer ends short (no continuation).
            self._release(att)
            st = att.st
            st.record_first_token(
                ttft_sample_ms(
                    st.prefill_rate(b.spec.priors),
                    att.req.tr.prompt_tokens,
                    (att.first_at - att.dispatched) * 1000.0,
                )
            )
            st.record_failure(ErrorClass.RETRYABLE, message="outage")
            st.end()
            req = att.req
            self.replica = req.replica
            self.strategy.observe(Observation(b.spec.name, False, now))
            tokens = int((now - att.first_at) * att.rate)
            out = req.outcome
            out.status = "cut"
            out.backend = b.spec.name
            out.tier = b.spec.tier
            out.reason = f"{b.spec.name}: outage mid-answer"
            out.ttft_ms = ((req.first_at or att.first_at) - req.at) * 1000.0
            out.total_ms = (now - req.at) * 1000.0
            out.cost_usd += cost_usd(b.spec, req.tr.prompt_tokens, tokens)

    def _poll(self, replica: int) -> None:
        """One replica's load poller: every backend's sample expiry, then a load poll of
        each backend that reports its load."""
        now = self.now
        view = self.views[replica]
        expire_at = self._expire_at[replica]
        for b in self.backends:
            st = view[b.index]
            if now >= expire_at[b.index]:  # BackendStats.expire(): nothing to do before then
                until = st.expire()
                expire_at[b.index] = min(until, now + self.max_age_s)
            m = b.model
            if not m.reports_load:
                continue
            if self.prefill_reports and m.prefill_tokens_per_s:
                st.set_reported_prefill(m.prefill_tokens_per_s)
            if m.poll_ms:  # the figure as the poll went out, a round trip later
                self._push(now + m.poll_ms / 1000.0, _ANSWER, (st, b.busy + len(b.queue), st.ends))
            else:
                st.set_reported_load(b.busy + len(b.queue))
        if not self._draining:
            self._push(self.now + self.poll_s, _POLL, replica)

    def _answer(self, obj: tuple[BackendStats, int, int]) -> None:
        st, figure, closed = obj
        st.set_reported_load(figure, (st.begins, closed) if self.load_marks else None)
