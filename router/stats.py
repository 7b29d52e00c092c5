"""Live per-backend signals and the circuit breaker.

One :class:`BackendStats` per backend per router replica, fed by dispatch::

    if stats.allow():                 # circuit breaker gate (admits half-open probes)
        stats.begin()
        try:
            ... stats.record_first_token(ttft_ms)
            ... stats.record_success(total_ms, output_tokens, decode_ms)
        except BackendError as exc:
            stats.record_failure(exc.error_class, exc.retry_after_s, message=exc.reason)
        finally:
            stats.end()

and read by the policy through :meth:`BackendStats.snapshot` (cached until something
changes, so reading it per decision is cheap). Windows are bounded in size and in age
(``policy.sample_max_age_s``, applied by ``expire``); observed values stay ``None`` until
``policy.min_samples`` requests have completed and while fewer samples than that are in
a window (the policy uses its priors then). Not thread-safe: use it from the event loop's
thread. Every time comes from the injected ``clock`` (seconds, monotonic).

Circuit breaker (``policy.circuit``):

- CLOSED: everything passes. ``consecutive_failures`` failures in a row, or an error rate
  >= ``error_rate`` over the last ``window`` outcomes (once ``min_requests`` are in the
  window), open it.
- OPEN: nothing passes until ``cooldown_s`` has passed, then HALF_OPEN.
- HALF_OPEN: one probe at a time. Its success closes the circuit (and clears the window),
  its failure re-opens it for another cool-down. A probe that ends without a verdict
  (cancelled, too large, fatal, throttled) frees the slot; a probe that never reports
  frees it after ``cooldown_s``.

Every failure (and a health probe that starts failing) sets ``last_error`` and
``last_error_unix_ms`` (wall clock, for "how long ago" in ``hybrid-router backends``); a
success does not clear them. This happens on failures only: the request path is unchanged.

Only RETRYABLE failures count. TOO_LARGE and FATAL say nothing about the backend's health.
A failure with a Retry-After sets ``retry_after_until`` (the policy skips the backend until
then) and does not count either: the backend told us when to come back.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Callable

from router.config import CircuitConfig, PolicyConfig
from router.errors import ErrorClass
from router.types import (
    BackendSnapshot,
    BackendSpec,
    CircuitState,
    LoadMark,
    Priors,
    frozen_factory,
)

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN
_INF = math.inf
#: Snapshots are built on every change of a backend's state: the fast constructor.
_new_snapshot = frozen_factory(BackendSnapshot)

#: TTFT samples kept for the quantiles.
TTFT_WINDOW = 256
#: Successful requests kept for the decode rate and the mean service time.
RATE_WINDOW = 64


class CircuitBreaker:
    """Consecutive-failure and error-rate circuit breaker with a half-open probe."""

    __slots__ = (
        "_cfg",
        "_clock",
        "_state",
        "_opened_at",
        "_consecutive",
        "_window",
        "_window_failures",
        "_probe_since",
        "opened",
    )

    def __init__(self, cfg: CircuitConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg = cfg
        self._clock = clock
        self._state = _CLOSED
        self._opened_at = 0.0
        self._consecutive = 0
        #: Last ``window`` counted outcomes, True = failure.
        self._window: deque[bool] = deque(maxlen=cfg.window)
        self._window_failures = 0
        #: When the half-open probe in flight was admitted (None: no probe in flight).
        self._probe_since: float | None = None
        #: Times the circuit has opened.
        self.opened = 0

    @property
    def state(self) -> CircuitState:
        """The current state (an open circuit whose cool-down has passed is half-open)."""
        if self._state is _OPEN and self._clock() >= self._opened_at + self._cfg.cooldown_s:
            self._state = _HALF_OPEN
            self._probe_since = None
        return self._state

    @property
    def open_until(self) -> float:
        """When an open circuit turns half-open (inf when not open)."""
        if self._state is _OPEN:
            return self._opened_at + self._cfg.cooldown_s
        return _INF

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive

    @property
    def error_rate(self) -> float:
        """Failures / outcomes over the last ``window`` counted outcomes."""
        n = len(self._window)
        return self._window_failures / n if n else 0.0

    def allow(self) -> bool:
        """Whether a request may go to the backend now (takes the probe slot if half-open)."""
        state = self.state
        if state is _CLOSED:
            return True
        if state is _OPEN:
            return False
        now = self._clock()
        if self._probe_since is None or now - self._probe_since >= self._cfg.cooldown_s:
            self._probe_since = now
            return True
        return False

    def record_success(self) -> None:
        self._consecutive = 0
        self._push(False)
        if self.state is _HALF_OPEN:
            self._state = _CLOSED
            self._probe_since = None
            self._window.clear()
            self._window_failures = 0

    def record_failure(self) -> None:
        self._consecutive += 1
        self._push(True)
        state = self.state
        if state is _HALF_OPEN:
            self._open()
        elif state is _CLOSED:
            cfg = self._cfg
            n = len(self._window)
            if self._consecutive >= cfg.consecutive_failures or (
                n >= cfg.min_requests and self._window_failures >= cfg.error_rate * n
            ):
                self._open()

    def release_probe(self) -> None:
        """Free the half-open probe slot without a verdict."""
        self._probe_since = None

    def _push(self, failed: bool) -> None:
        window = self._window
        if len(window) == window.maxlen and window[0]:
            self._window_failures -= 1
        window.append(failed)
        if failed:
            self._window_failures += 1

    def _open(self) -> None:
        self._state = _OPEN
        self._opened_at = self._clock()
        self._probe_since = None
        self.opened += 1


class Samples:
    """Latency windows: TTFT, decode rates and service times of recent calls, each
    bounded in size and (through ``BackendStats.expire``) in age.

    One per backend; with ``policy.learn_by: model`` one per model of a tier
    (:func:`samples_key`), shared by the backends serving it (the replicas of one Ray
    Serve application), so each learns from all their answers. ``version`` counts the
    changes: a backend's cached snapshot is rebuilt when its samples changed, whichever
    backend's answer changed them.
    """

    __slots__ = (
        "ttft",
        "ttft_sorted",
        "ttft_at",
        "decode",
        "decode_at",
        "rates_sorted",
        "decode_tokens",
        "decode_ms",
        "service",
        "service_at",
        "service_ms",
        "version",
    )

    def __init__(self) -> None:
        self.ttft: deque[float] = deque(maxlen=TTFT_WINDOW)
        #: The same samples, kept sorted (an insert and a delete per sample, not a sort
        #: per snapshot).
        self.ttft_sorted: list[float] = []
        #: When each sample of a window came in (clock seconds), oldest first.
        self.ttft_at: deque[float] = deque(maxlen=TTFT_WINDOW)
        #: (output tokens, decode ms) of recent successes with a decode phase.
        self.decode: deque[tuple[int, float]] = deque(maxlen=RATE_WINDOW)
        self.decode_at: deque[float] = deque(maxlen=RATE_WINDOW)
        #: Their decode rates (tokens/s), kept sorted for the slow-tail quantile.
        self.rates_sorted: list[float] = []
        self.decode_tokens = 0
        self.decode_ms = 0.0
        self.service: deque[float] = deque(maxlen=RATE_WINDOW)
        self.service_at: deque[float] = deque(maxlen=RATE_WINDOW)
        self.service_ms = 0.0
        self.version = 0


def samples_key(spec: BackendSpec) -> tuple[str, str, str]:
    """Which backends learn together under ``policy.learn_by: model``: those of one tier
    and kind serving the same model (the replicas of one Ray Serve application, edge
    devices running one model)."""
    return (spec.tier.value, spec.kind, spec.model)


def samples_for(
    spec: BackendSpec, cfg: PolicyConfig, shared: dict[tuple[str, str, str], Samples]
) -> Samples | None:
    """The windows a new backend's stats learn into: None (its own) by default; with
    ``policy.learn_by: model`` its model's entry of ``shared`` (made on first use)."""
    if cfg.learn_by != "model":
        return None
    return shared.setdefault(samples_key(spec), Samples())


class BackendStats:
    """Live signals of one backend: load, latency windows, errors, health, circuit.

    ``samples``: latency windows shared with equivalent backends (``policy.learn_by:
    model``; :class:`Samples`); None: its own. Shared windows count as the backend's own
    from its first call: a new replica starts with what its siblings learnt."""

    def __init__(
        self,
        name: str,
        cfg: PolicyConfig,
        clock: Callable[[], float] = time.monotonic,
        samples: Samples | None = None,
    ) -> None:
        self.name = name
        self._min_samples = cfg.min_samples
        self._max_age = cfg.sample_max_age_s
        self._clock = clock
        self.breaker = CircuitBreaker(cfg.circuit, clock)
        self.in_flight = 0
        self.reported_load: int | None = None
        #: The prompt reading rate the backend reports (None: it reports none).
        self.reported_prefill: float | None = None
        #: Streams opened and closed so far: a load figure's mark (``load_mark``).
        self.begins = 0
        self.ends = 0
        self.healthy = True
        self.detail = ""
        self.requests = 0
        self.failures = 0
        self.retry_after_until: float | None = None
        #: The last failure's message, and when it happened (unix ms; 0 = never).
        self.last_error = ""
        self.last_error_unix_ms = 0
        #: Shared windows count without calls of its own (``live`` below).
        self._shared = samples is not None
        self._s = samples if samples is not None else Samples()
        self._snap: BackendSnapshot | None = None
        self._snap_until = _INF
        #: The samples' version the cached snapshot was built from.
        self._snap_version = -1

    # --- load ---------------------------------------------------------------------

    def begin(self) -> None:
        """A stream to the backend opened.

        The backend's reported load is polled; between polls it is kept current with the
        router's own streams (+1 here, -1 in ``end``), so a finished request does not leave
        a phantom queue until the next poll.
        """
        self.in_flight += 1
        self.begins += 1
        if self.reported_load is not None:
            self.reported_load += 1
        self._snap = None

    def end(self) -> None:
        """A stream to the backend closed (after its outcome, if any, was recorded)."""
        if self.in_flight > 0:
            self.in_flight -= 1
        self.ends += 1
        if self.reported_load:
            self.reported_load -= 1
        if self.breaker.state is _HALF_OPEN:
            self.breaker.release_probe()
        self._snap = None

    def load_mark(self) -> LoadMark:
        """The streams opened and closed so far: what a load figure taken now has seen."""
        return (self.begins, self.ends)

    def set_reported_load(self, n: int | None, mark: LoadMark | None = None) -> None:
        """The backend's own load figure (queued + running), or None when unknown.

        ``mark``: ``load_mark()`` as it stood when the figure was taken. The router's own
        streams since then are applied to it, as ``begin``/``end`` apply them between
        figures: a stream that ended while a poll was out (or since the heartbeat that
        carried the figure) is not put back as a phantom request until the next figure.
        A poll's mark takes its closes from before the poll and its opens from after, so
        a stream that opened or closed while the poll was out never counts twice (the
        estimate's own in-flight count is the floor).
        """
        if n is not None and mark is not None:
            n += (self.begins - mark[0]) - (self.ends - mark[1])
            if n < 0:
                n = 0
        if n != self.reported_load:
            self.reported_load = n
            self._snap = None

    def set_reported_prefill(self, rate: float | None) -> None:
        """The backend's own prompt reading rate, prompt tokens/s (None or 0: none)."""
        rate = rate or None
        if rate != self.reported_prefill:
            self.reported_prefill = rate
            self._snap = None

    def prefill_rate(self, priors: Priors) -> float:
        """The prompt reading rate TTFT estimates and samples use: the backend's reported
        one, else ``priors.prefill_tokens_per_s`` (0.0: not modelled)."""
        return self.reported_prefill or priors.prefill_tokens_per_s

    def set_healthy(self, healthy: bool, detail: str = "") -> None:
        if healthy != self.healthy or detail != self.detail:
            if not healthy:
                if self.healthy:
                    self.note_error(detail or "unhealthy")
                else:  # still failing, another reason: the time it started failing stays
                    self.last_error = detail or "unhealthy"
            self.healthy = healthy
            self.detail = detail
            self._snap = None

    def note_error(self, message: str) -> None:
        """Remember ``message`` as the last error, stamped with the wall clock."""
        self.last_error = message
        self.last_error_unix_ms = time.time_ns() // 1_000_000
        self._snap = None

    # --- outcomes -----------------------------------------------------------------

    def record_first_token(self, ttft_ms: float) -> None:
        s = self._s
        window = s.ttft
        ordered = s.ttft_sorted
        if len(window) == TTFT_WINDOW:
            del ordered[bisect.bisect_left(ordered, window[0])]
        window.append(ttft_ms)
        s.ttft_at.append(self._clock())
        bisect.insort(ordered, ttft_ms)
        s.version += 1
        self._snap = None

    def record_success(self, total_ms: float, output_tokens: int, decode_ms: float) -> None:
        """A call completed. ``decode_ms``: first token to last (the decode phase)."""
        self.requests += 1
        self.breaker.record_success()
        now = self._clock()
        s = self._s
        if output_tokens > 0 and decode_ms > 0.0:
            rates = s.rates_sorted
            decode = s.decode
            if len(decode) == RATE_WINDOW:
                old_tokens, old_ms = decode[0]
                s.decode_tokens -= old_tokens
                s.decode_ms -= old_ms
                del rates[bisect.bisect_left(rates, old_tokens / old_ms * 1000.0)]
            bisect.insort(rates, output_tokens / decode_ms * 1000.0)
            decode.append((output_tokens, decode_ms))
            s.decode_at.append(now)
            s.decode_tokens += output_tokens
            s.decode_ms += decode_ms
        service = s.service
        if len(service) == RATE_WINDOW:
            s.service_ms -= service[0]
        service.append(total_ms)
        s.service_at.append(now)
        s.service_ms += total_ms
        s.version += 1
        self._snap = None

    def record_failure(
        self, error_class: ErrorClass, retry_after_s: float | None = None, *, message: str = ""
    ) -> None:
        """A call failed (``message``: why, kept as the last error). Only RETRYABLE failures
        without a Retry-After count toward the circuit breaker; a Retry-After holds the
        backend off until then."""
        self.requests += 1
        self.failures += 1
        self.note_error(message or f"{error_class.value} failure")
        if retry_after_s is not None and retry_after_s > 0:
            until = self._clock() + retry_after_s
            if self.retry_after_until is None or until > self.retry_after_until:
                self.retry_after_until = until
            self.breaker.release_probe()
        elif error_class is ErrorClass.RETRYABLE:
            self.breaker.record_failure()
        else:
            self.breaker.release_probe()
        self._snap = None

    # --- reading ------------------------------------------------------------------

    def allow(self) -> bool:
        """Circuit-breaker gate for one call (see the module doc)."""
        breaker = self.breaker
        if breaker.state is _CLOSED:  # nothing changes: the snapshot stays valid
            return True
        allowed = breaker.allow()
        self._snap = None
        return allowed

    @property
    def circuit(self) -> CircuitState:
        return self.breaker.state

    def ttft_quantile(self, q: float) -> float | None:
        """Nearest-rank quantile of the TTFT window (None when empty)."""
        ordered = self._s.ttft_sorted
        if not ordered:
            return None
        n = len(ordered)
        return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))]

    def snapshot(self) -> BackendSnapshot:
        """The backend's live state (cached until it changes)."""
        snap = self._snap
        s = self._s
        if (
            snap is not None
            and self._snap_version == s.version
            and (self._snap_until == _INF or self._clock() < self._snap_until)
        ):
            return snap
        circuit = self.breaker.state
        need = self._min_samples
        live = self._shared or self.requests >= need
        ttft_ok = live and len(s.ttft) >= need
        p50 = p90 = None
        ordered = s.ttft_sorted
        if ttft_ok and ordered:  # ttft_quantile(0.5) and (0.9), inline (per state change)
            n = len(ordered)
            p50 = ordered[min(n - 1, max(0, math.ceil(0.5 * n) - 1))]
            p90 = ordered[min(n - 1, max(0, math.ceil(0.9 * n) - 1))]
        decode_ok = live and len(s.decode) >= need and s.decode_ms > 0.0
        p10 = p25 = None
        rates = s.rates_sorted
        if decode_ok and rates:  # the slow tail's rates (nearest rank)
            n = len(rates)
            p10 = rates[max(0, math.ceil(0.1 * n) - 1)]
            p25 = rates[max(0, math.ceil(0.25 * n) - 1)]
        service_ok = live and len(s.service) >= need
        snap = _new_snapshot(
            name=self.name,
            healthy=self.healthy,
            circuit=circuit,
            in_flight=self.in_flight,
            reported_load=self.reported_load,
            ttft_p50_ms=p50,
            ttft_p90_ms=p90,
            decode_tokens_per_s=s.decode_tokens / s.decode_ms * 1000.0 if decode_ok else None,
            mean_service_ms=s.service_ms / len(s.service) if service_ok else None,
            error_rate=self.breaker.error_rate,
            requests=self.requests,
            failures=self.failures,
            retry_after_until=self.retry_after_until,
            detail=self.detail,
            last_error=self.last_error,
            last_error_unix_ms=self.last_error_unix_ms,
            ttft_samples=len(ordered) if ttft_ok else 0,
            decode_p10_tokens_per_s=p10,
            decode_p25_tokens_per_s=p25,
            prefill_tokens_per_s=self.reported_prefill,
        )
        self._snap = snap
        self._snap_until = self.breaker.open_until
        self._snap_version = s.version
        return snap

    def expire(self) -> float:
        """Drop the samples older than ``sample_max_age_s``; returns when the oldest one
        left expires (clock seconds; inf when none is left).

        Called off the request path, by the registry's load poller (every
        ``load_poll_interval_s``), so that reading a snapshot stays a cached read. A
        caller may skip calls until ``min(returned, now + sample_max_age_s)``: samples
        recorded meanwhile expire later than that.
        """
        s = self._s
        ttft_at, decode_at, service_at = s.ttft_at, s.decode_at, s.service_at
        horizon = self._clock() - self._max_age
        dropped = False
        if ttft_at and ttft_at[0] <= horizon:
            dropped = True
            window, ordered = s.ttft, s.ttft_sorted
            while ttft_at and ttft_at[0] <= horizon:
                ttft_at.popleft()
                del ordered[bisect.bisect_left(ordered, window.popleft())]
        if decode_at and decode_at[0] <= horizon:
            dropped = True
            rates = s.rates_sorted
            while decode_at and decode_at[0] <= horizon:
                decode_at.popleft()
                tokens, ms = s.decode.popleft()
                s.decode_tokens -= tokens
                s.decode_ms -= ms
                del rates[bisect.bisect_left(rates, tokens / ms * 1000.0)]
            if not decode_at:  # no float residue once the window is empty
                s.decode_tokens, s.decode_ms = 0, 0.0
        if service_at and service_at[0] <= horizon:
            dropped = True
            while service_at and service_at[0] <= horizon:
                service_at.popleft()
                s.service_ms -= s.service.popleft()
            if not service_at:
                s.service_ms = 0.0
        if dropped:
            s.version += 1
            self._snap = None
        oldest = _INF
        for q in (ttft_at, decode_at, service_at):
            if q and q[0] < oldest:
                oldest = q[0]
        return oldest + self._max_age
