"""The post-swap watchdog's decision: is a freshly swapped-in model version failing?

A version that passes its smoke test (a 4-token generation) can still fail real requests.
For ``seconds`` after a swap the version is *on probation*: each request it serves counts
as completed or failed (an engine error: the engine raised "unavailable" or crashed; a
client cancellation, a deadline cut or a bad request counts as neither). Once at least
``min_requests`` requests have an outcome and more than ``max_error_rate`` of them failed,
the version fails its probation and the agent rolls back to the version it replaced
(``greengrass.sync``). When the window ends without that, the version passes, however few
requests it saw.

Pure logic: no I/O, the clock is injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

PROBATION_S = 300.0
MIN_REQUESTS = 4
MAX_ERROR_RATE = 0.5


@dataclass(frozen=True, slots=True)
class ProbationPolicy:
    #: Length of the window after a swap (0 = no probation, no automatic rollback).
    seconds: float = PROBATION_S
    #: Outcomes needed before judging (fewer: never judged as failing).
    min_requests: int = MIN_REQUESTS
    #: Fails when failed / outcomes is above this (0.5: more than half failed).
    max_error_rate: float = MAX_ERROR_RATE

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError(
                f"probation.seconds (--probation-s): must be >= 0, got {self.seconds!r}"
            )
        if self.min_requests < 1:
            raise ValueError(
                "probation.minRequests (--probation-min-requests): must be >= 1, "
                f"got {self.min_requests!r}"
            )
        if not 0.0 <= self.max_error_rate < 1.0:
            raise ValueError(
                f"probation.maxErrorRate (--probation-max-error-rate): must be in [0, 1) "
                f"(0.5 = more than half failed), got {self.max_error_rate!r}"
            )

    @property
    def enabled(self) -> bool:
        return self.seconds > 0


@dataclass(frozen=True, slots=True)
class Verdict:
    version: str
    previous: str
    failed: int
    total: int

    @property
    def reason(self) -> str:
        return f"{self.failed} of {self.total} requests failed in probation"


class Probation:
    """One version's probation, started at its swap. ``record`` each outcome; a Verdict
    comes back (once) when the version fails."""

    def __init__(
        self,
        version: str,
        previous: str,
        policy: ProbationPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.version = version
        self.previous = previous
        self.policy = policy
        self._clock = clock
        self._ends = clock() + policy.seconds
        self.completed = 0
        self.failed = 0
        self.verdict: Verdict | None = None

    @property
    def total(self) -> int:
        return self.completed + self.failed

    @property
    def open(self) -> bool:
        """Still judging: within the window and not failed yet."""
        return self.verdict is None and self._clock() < self._ends

    def seconds_left(self) -> float:
        return max(0.0, self._ends - self._clock())

    def record(self, ok: bool) -> Verdict | None:
        """Count one outcome (True: completed, False: engine failure). Returns the Verdict
        when this outcome makes the version fail; None otherwise (also after the window,
        and after a verdict was already given)."""
        if not self.open:
            return None
        if ok:
            self.completed += 1
        else:
            self.failed += 1
        total = self.total
        if total >= self.policy.min_requests and self.failed > self.policy.max_error_rate * total:
            self.verdict = Verdict(self.version, self.previous, self.failed, total)
            return self.verdict
        return None
