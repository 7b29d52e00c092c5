"""When a failed call is tried again: only where it cannot run a model twice.

``Route`` and ``ListBackends`` call no model; ``Generate`` is retried only when the
router answered before sending any event (the Decision comes before any backend is
called, so no event means no model ran), never after the first event. Only UNAVAILABLE
by default (the router unreachable, or refusing before it decided), at most
``max_attempts`` calls, ``backoff_s`` then doubling (at most 1 s, or the server's
``retry_after`` when longer), and only while the call's deadline leaves time for a real
attempt.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybrid_router.client.errors import OptionError, RouterCallError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_s: float = 0.05
    codes: frozenset[str] = frozenset({"UNAVAILABLE"})

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise OptionError("max_attempts", "must be >= 1")
        if self.backoff_s < 0:
            raise OptionError("backoff_s", "must be >= 0")

    def delay(self, err: RouterCallError, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        pause = min(self.backoff_s * (2 ** (attempt - 1)), 1.0)
        return max(pause, err.retry_after or 0.0)

    def retry(
        self, err: RouterCallError, *, attempt: int, events: int, time_left: float | None
    ) -> float | None:
        """The delay before another attempt, or None when there is none to make.
        ``time_left``: seconds to the call's deadline (None: no deadline)."""
        if events or err.code not in self.codes or attempt >= self.max_attempts:
            return None
        delay = self.delay(err, attempt)
        if time_left is not None and time_left <= delay + 0.05:
            return None
        return delay
