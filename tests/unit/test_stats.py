"""Live backend stats and the circuit breaker, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import math
import time

import pytest
from testkit import FakeClock

from router.config import CircuitConfig, PolicyConfig
from router.errors import ErrorClass
from router.stats import RATE_WINDOW, TTFT_WINDOW, BackendStats, CircuitBreaker
from router.types import CircuitState, Priors

CIRCUIT = CircuitConfig(
    consecutive_failures=3, error_rate=0.5, window=10, min_requests=6, cooldown_s=30.0
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(CIRCUIT, clock)


def make_stats(clock: FakeClock, min_samples: int = 3) -> BackendStats:
    return BackendStats("gpu-a", PolicyConfig(min_samples=min_samples, circuit=CIRCUIT), clock)


def complete(stats: BackendStats, ttft: float, total: float, tokens: int, decode: float) -> None:
    stats.begin()
    stats.record_first_token(ttft)
    stats.record_success(total, tokens, decode)
    stats.end()


# --- circuit breaker ------------------------------------------------------------------


def test_consecutive_failures_open_the_circuit(breaker: CircuitBreaker) -> None:
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the run
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow()
    assert breaker.opened == 1


def test_error_rate_opens_the_circuit_once_min_requests_are_in(breaker: CircuitBreaker) -> None:
    # alternate failures and successes: never 3 in a row, error rate 50%
    for _ in range(2):
        breaker.record_failure()
        breaker.record_success()
    breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED  # 3/5: below min_requests (6)
    breaker.record_success()
    breaker.record_failure()  # 4/7 >= 50%
    assert breaker.state is CircuitState.OPEN
    assert breaker.error_rate == pytest.approx(4 / 7)


def test_error_rate_counts_only_the_last_window_outcomes(breaker: CircuitBreaker) -> None:
    for _ in range(4):
        breaker.record_failure()
        breaker.record_success()
        breaker.record_success()
    # 12 outcomes, window 10: the oldest two (F, S) dropped -> 3 failures in 10
    assert breaker.error_rate == pytest.approx(0.3)
    assert breaker.state is CircuitState.CLOSED


def test_open_circuit_turns_half_open_after_the_cooldown(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    for _ in range(3):
        breaker.record_failure()
    assert breaker.open_until == pytest.approx(130.0)
    clock.advance(29.9)
    assert breaker.state is CircuitState.OPEN and not breaker.allow()
    clock.advance(0.1)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.open_until == float("inf")


def test_half_open_admits_one_probe_at_a_time(breaker: CircuitBreaker, clock: FakeClock) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.advance(30.0)
    assert breaker.allow()  # the probe
    assert not breaker.allow()
    assert not breaker.allow()
    breaker.release_probe()  # e.g. the probe was cancelled: no verdict
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow()


def test_probe_success_closes_and_clears_the_window(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.advance(30.0)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.error_rate == 0.0 and breaker.consecutive_failures == 0
    assert breaker.allow() and breaker.allow()


def test_probe_failure_reopens_for_another_cooldown(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.advance(30.0)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN and breaker.opened == 2
    clock.advance(29.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()


def test_a_probe_that_never_reports_expires_after_the_cooldown(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.advance(30.0)
    assert breaker.allow()
    clock.advance(29.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()


# --- BackendStats: signals ------------------------------------------------------------


def test_in_flight_counts_open_streams(clock: FakeClock) -> None:
    stats = make_stats(clock)
    stats.begin()
    stats.begin()
    assert stats.snapshot().in_flight == 2
    stats.end()
    stats.end()
    stats.end()  # never below zero
    assert stats.snapshot().in_flight == 0


def test_a_reported_prefill_rate_reaches_the_snapshot_and_wins_over_the_priors(
    clock: FakeClock,
) -> None:
    stats = BackendStats("a", PolicyConfig(), clock)
    with_rate = Priors(ttft_ms=100.0, decode_tokens_per_s=20.0, prefill_tokens_per_s=900.0)
    assert stats.snapshot().prefill_tokens_per_s is None
    assert stats.prefill_rate(with_rate) == 900.0  # nothing reported: the priors'
    stats.set_reported_prefill(4000.0)
    assert stats.snapshot().prefill_tokens_per_s == 4000.0  # a new snapshot, not the cache
    assert stats.prefill_rate(with_rate) == 4000.0
    for gone in (None, 0.0):  # a backend that stops reporting: the priors again
        stats.set_reported_prefill(4000.0)
        stats.set_reported_prefill(gone)
        assert stats.snapshot().prefill_tokens_per_s is None
        assert stats.prefill_rate(with_rate) == 900.0


def test_observed_values_stay_none_until_min_samples(clock: FakeClock) -> None:
    stats = make_stats(clock, min_samples=3)
    complete(stats, 100.0, 1100.0, 50, 1000.0)
    complete(stats, 200.0, 1200.0, 50, 1000.0)
    snap = stats.snapshot()
    assert snap.requests == 2
    assert (snap.ttft_p50_ms, snap.ttft_p90_ms, snap.decode_tokens_per_s) == (None, None, None)
    assert snap.mean_service_ms is None
    complete(stats, 300.0, 1300.0, 50, 1000.0)
    snap = stats.snapshot()
    assert snap.requests == 3
    assert snap.ttft_p50_ms == 200.0
    assert snap.ttft_p90_ms == 300.0
    assert snap.decode_tokens_per_s == pytest.approx(50.0)  # 150 tokens in 3 s
    assert snap.mean_service_ms == pytest.approx(1200.0)


def test_ttft_quantiles_are_nearest_rank_over_a_bounded_window(clock: FakeClock) -> None:
    stats = make_stats(clock, min_samples=1)
    for ms in range(1, 101):
        stats.record_first_token(float(ms))
    assert stats.ttft_quantile(0.5) == 50.0
    assert stats.ttft_quantile(0.9) == 90.0
    assert stats.ttft_quantile(0.0) == 1.0 and stats.ttft_quantile(1.0) == 100.0
    for _ in range(TTFT_WINDOW):
        stats.record_first_token(1000.0)
    assert stats.ttft_quantile(0.0) == 1000.0  # the old samples left the window


def test_a_snapshot_carries_the_quantiles_and_how_many_samples_they_stand_on(
    clock: FakeClock,
) -> None:
    stats = make_stats(clock, min_samples=3)
    for ms in (300.0, 100.0):
        complete(stats, ms, ms + 500.0, 10, 500.0)
    snap = stats.snapshot()  # two requests: not live yet
    assert (snap.ttft_p50_ms, snap.ttft_p90_ms, snap.ttft_samples) == (None, None, 0)
    complete(stats, 200.0, 700.0, 10, 500.0)
    snap = stats.snapshot()
    assert (snap.ttft_p50_ms, snap.ttft_p90_ms, snap.ttft_samples) == (200.0, 300.0, 3)
    assert snap.ttft_p50_ms == stats.ttft_quantile(0.5)
    assert snap.ttft_p90_ms == stats.ttft_quantile(0.9)


def test_the_slow_decode_rates_are_nearest_rank_and_follow_the_window(clock: FakeClock) -> None:
    stats = make_stats(clock, min_samples=1)
    for rate in range(1, 21):  # 20 answers of 100 tokens at 1..20 tokens/s
        complete(stats, 10.0, 10.0 + 100_000.0 / rate, 100, 100_000.0 / rate)
    snap = stats.snapshot()
    assert snap.decode_p10_tokens_per_s == pytest.approx(2.0)  # rank ceil(0.1 x 20) = 2
    assert snap.decode_p25_tokens_per_s == pytest.approx(5.0)  # rank 5
    for _ in range(RATE_WINDOW):  # the window slides: only the new rates are left
        complete(stats, 10.0, 1010.0, 50, 1000.0)
    snap = stats.snapshot()
    assert snap.decode_p10_tokens_per_s == pytest.approx(50.0)
    assert snap.decode_p25_tokens_per_s == pytest.approx(50.0)
    assert len(stats._s.rates_sorted) == RATE_WINDOW
    clock.advance(1000.0)  # every sample expires: no rate left, no quantile
    stats.expire()
    assert stats._s.rates_sorted == []
    assert stats.snapshot().decode_p10_tokens_per_s is None


def test_decode_rate_is_tokens_over_decode_time(clock: FakeClock) -> None:
    stats = make_stats(clock, min_samples=2)
    complete(stats, 50.0, 2050.0, 100, 2000.0)  # 50 tok/s
    complete(stats, 50.0, 1050.0, 100, 1000.0)  # 100 tok/s
    complete(stats, 50.0, 50.0, 1, 0.0)  # no decode phase: not a rate sample
    assert stats.snapshot().decode_tokens_per_s == pytest.approx(200 / 3.0)


def test_load_and_health_are_reported(clock: FakeClock) -> None:
    stats = make_stats(clock)
    stats.set_reported_load(7)
    stats.set_healthy(False, "load probe failed: refused")
    snap = stats.snapshot()
    assert (snap.reported_load, snap.healthy, snap.detail) == (
        7,
        False,
        "load probe failed: refused",
    )
    stats.set_reported_load(None)
    stats.set_healthy(True)
    snap = stats.snapshot()
    assert (snap.reported_load, snap.healthy, snap.detail) == (None, True, "")


def test_snapshot_is_cached_until_something_changes(clock: FakeClock) -> None:
    stats = make_stats(clock)
    first = stats.snapshot()
    assert stats.snapshot() is first
    stats.set_reported_load(None)  # unchanged: still cached
    assert stats.snapshot() is first
    stats.begin()
    second = stats.snapshot()
    assert second is not first and second.in_flight == 1
    assert stats.allow()  # a closed circuit's gate changes nothing: still cached
    assert stats.snapshot() is second


# --- BackendStats: failures and the circuit ---------------------------------------------


def test_a_failure_is_the_last_error_with_its_wall_clock_time(clock: FakeClock) -> None:
    stats = make_stats(clock)
    snap = stats.snapshot()
    assert (snap.last_error, snap.last_error_unix_ms) == ("", 0)
    before = time.time_ns() // 1_000_000
    stats.record_failure(ErrorClass.RETRYABLE, message="UNAVAILABLE: connection refused")
    after = time.time_ns() // 1_000_000
    snap = stats.snapshot()  # the cached snapshot was dropped
    assert snap.last_error == "UNAVAILABLE: connection refused"
    assert before <= snap.last_error_unix_ms <= after
    complete(stats, 10.0, 50.0, 4, 40.0)  # a success keeps the last error
    assert stats.snapshot().last_error == "UNAVAILABLE: connection refused"
    stats.record_failure(ErrorClass.FATAL)  # without a message: the class
    assert stats.snapshot().last_error == "fatal failure"


def test_a_probe_that_starts_failing_is_the_last_error_once(clock: FakeClock) -> None:
    stats = make_stats(clock)
    stats.set_healthy(True)
    assert stats.snapshot().last_error == ""
    stats.set_healthy(False, "load probe failed: refused")
    first = stats.snapshot()
    assert first.last_error == "load probe failed: refused" and first.last_error_unix_ms
    stats.last_error_unix_ms = 1  # the same verdict again does not stamp it anew
    stats.set_healthy(False, "load probe failed: refused")
    assert stats.last_error_unix_ms == 1
    stats.set_healthy(True)
    assert stats.snapshot().last_error == "load probe failed: refused"


def test_retryable_failures_open_the_circuit(clock: FakeClock) -> None:
    stats = make_stats(clock)
    for _ in range(3):
        assert stats.allow()
        stats.begin()
        stats.record_failure(ErrorClass.RETRYABLE)
        stats.end()
    snap = stats.snapshot()
    assert snap.circuit is CircuitState.OPEN
    assert (snap.requests, snap.failures, snap.error_rate) == (3, 3, 1.0)
    assert not stats.allow()


def test_too_large_and_fatal_do_not_count_against_the_circuit(clock: FakeClock) -> None:
    stats = make_stats(clock)
    for _ in range(10):
        stats.record_failure(ErrorClass.TOO_LARGE)
        stats.record_failure(ErrorClass.FATAL)
    snap = stats.snapshot()
    assert snap.circuit is CircuitState.CLOSED and snap.error_rate == 0.0
    assert (snap.requests, snap.failures) == (20, 20)
    assert stats.allow()


def test_retry_after_holds_the_backend_off_without_opening_the_circuit(
    clock: FakeClock,
) -> None:
    stats = make_stats(clock)
    for _ in range(5):
        stats.record_failure(ErrorClass.RETRYABLE, retry_after_s=20.0)
    snap = stats.snapshot()
    assert snap.circuit is CircuitState.CLOSED
    assert snap.retry_after_until == pytest.approx(120.0)
    clock.advance(5.0)
    stats.record_failure(ErrorClass.RETRYABLE, retry_after_s=1.0)  # never shortens it
    assert stats.snapshot().retry_after_until == pytest.approx(120.0)
    stats.record_failure(ErrorClass.RETRYABLE, retry_after_s=30.0)
    assert stats.snapshot().retry_after_until == pytest.approx(135.0)


def test_snapshot_shows_half_open_once_the_cooldown_passes(clock: FakeClock) -> None:
    stats = make_stats(clock)
    for _ in range(3):
        stats.record_failure(ErrorClass.RETRYABLE)
    assert stats.snapshot().circuit is CircuitState.OPEN
    clock.advance(30.0)
    assert stats.snapshot().circuit is CircuitState.HALF_OPEN
    assert stats.circuit is CircuitState.HALF_OPEN


def test_probe_through_stats_success_closes(clock: FakeClock) -> None:
    stats = make_stats(clock)
    for _ in range(3):
        stats.record_failure(ErrorClass.RETRYABLE)
    clock.advance(30.0)
    assert stats.allow()
    assert not stats.allow()  # one probe at a time
    complete(stats, 100.0, 500.0, 10, 400.0)
    assert stats.snapshot().circuit is CircuitState.CLOSED
    assert stats.allow() and stats.allow()


def test_a_probe_ending_without_a_verdict_frees_the_slot(clock: FakeClock) -> None:
    stats = make_stats(clock)
    for _ in range(3):
        stats.record_failure(ErrorClass.RETRYABLE)
    clock.advance(30.0)
    assert stats.allow()
    stats.begin()
    stats.end()  # cancelled: no outcome recorded
    assert stats.circuit is CircuitState.HALF_OPEN
    assert stats.allow()
    stats.begin()
    stats.record_failure(ErrorClass.TOO_LARGE)  # says nothing about health
    stats.end()
    assert stats.circuit is CircuitState.HALF_OPEN
    assert stats.allow()
    stats.begin()
    stats.record_failure(ErrorClass.RETRYABLE)
    stats.end()
    assert stats.circuit is CircuitState.OPEN


def test_reported_load_follows_the_routers_own_streams_between_polls(clock: FakeClock) -> None:
    stats = make_stats(clock)
    stats.begin()
    assert stats.snapshot().reported_load is None  # no signal yet: nothing invented
    stats.set_reported_load(3)  # a poll: 3 queued + running, ours included
    stats.begin()
    assert stats.snapshot().reported_load == 4
    stats.end()
    stats.end()
    assert stats.snapshot().reported_load == 2  # no phantom queue until the next poll
    stats.set_reported_load(0)
    stats.end()  # a late end never goes below zero
    assert stats.snapshot().reported_load == 0


def test_samples_older_than_the_max_age_no_longer_count(clock: FakeClock) -> None:
    # A backend the router stopped choosing keeps the samples that made it lose; once
    # they are sample_max_age_s old it is judged by its priors again, and tried again.
    cfg = PolicyConfig(min_samples=3, circuit=CIRCUIT, sample_max_age_s=300)
    stats = BackendStats("gpu-a", cfg, clock)
    for ttft in (2000.0, 2100.0, 2200.0):
        complete(stats, ttft, 4000.0, 100, 2000.0)
    clock.advance(100.0)
    complete(stats, 500.0, 1500.0, 100, 1000.0)
    snap = stats.snapshot()
    assert (snap.ttft_p50_ms, snap.ttft_p90_ms) == (2000.0, 2200.0)
    assert snap.decode_tokens_per_s == pytest.approx(400 / 7000 * 1000)
    assert snap.mean_service_ms == pytest.approx(13500 / 4)
    clock.advance(200.0)  # the first three are 300 s old: only the fourth is left
    assert stats.snapshot().ttft_p50_ms == 2000.0  # until expire() runs (the load poller)
    assert stats.expire() == pytest.approx(clock() + 100.0)  # when the fourth one expires
    snap = stats.snapshot()
    assert (snap.ttft_p50_ms, snap.ttft_p90_ms) == (None, None)  # 1 < min_samples
    assert snap.decode_tokens_per_s is None and snap.mean_service_ms is None
    assert snap.requests == 4  # counts stay
    for ttft in (400.0, 600.0):
        complete(stats, ttft, 1500.0, 100, 1000.0)
    snap = stats.snapshot()
    assert (snap.ttft_p50_ms, snap.ttft_p90_ms) == (500.0, 600.0)
    assert snap.decode_tokens_per_s == pytest.approx(100.0)
    assert snap.mean_service_ms == pytest.approx(1500.0)
    clock.advance(300.0)
    assert stats.expire() == math.inf  # nothing left
    snap = stats.snapshot()
    assert snap.ttft_p50_ms is None and snap.decode_tokens_per_s is None
    assert stats.ttft_quantile(0.5) is None  # the sorted copy is emptied too


def test_a_figure_taken_before_a_stream_closed_brings_no_phantom_back(clock: FakeClock) -> None:
    stats = make_stats(clock)
    stats.set_reported_load(0)
    stats.begin()
    mark = stats.load_mark()  # a poll goes out while the stream runs...
    stats.end()  # ...the stream closes...
    stats.set_reported_load(1, mark)  # ...and the poll answers with the figure it took before
    assert stats.snapshot().reported_load == 0
    # Opens since the mark are not in the figure; closes are taken off (never below zero).
    mark = stats.load_mark()
    stats.begin()
    stats.begin()
    stats.end()
    stats.set_reported_load(3, mark)
    assert stats.snapshot().reported_load == 4
    stats.set_reported_load(0, (stats.begins, stats.ends - 2))
    assert stats.snapshot().reported_load == 0
    stats.set_reported_load(2)  # a figure without a mark is taken as it is
    assert stats.snapshot().reported_load == 2


def test_a_probe_failing_for_another_reason_keeps_the_time_it_started_failing():
    stats = BackendStats("gpu-a", PolicyConfig(circuit=CIRCUIT), FakeClock())
    stats.set_healthy(False, "load probe failed: connection reset")
    started = stats.last_error_unix_ms
    time.sleep(0.005)
    stats.set_healthy(False, "load probe failed: connection refused")
    assert stats.last_error == "load probe failed: connection refused"
    assert stats.last_error_unix_ms == started
    stats.set_healthy(True)
    time.sleep(0.005)
    stats.set_healthy(False, "load probe failed: timeout")
    assert stats.last_error_unix_ms > started
