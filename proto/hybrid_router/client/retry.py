"""When a failed call is tried again: only where it cannot run a model twice, or make
a thing twice.

``Route`` and ``ListBackends`` call no model; ``Generate`` is retried only when the
router answered before sending any event (the Decision comes before any backend is
called, so no event means no model ran), never after the first event. Of the session
calls, ``GetSession``, ``ListSessions`` and ``DeleteSession`` are retried (reads, and a
delete that leaves the same state twice); ``CreateSession`` never is (an attempt whose
answer was lost may have made the session). Only UNAVAILABLE
by default (the router unreachable, or refusing before it decided), at most
``max_attempts`` calls, ``backoff_s`` then doubling (at most 1 s, or the server's
``retry_after`` when longer), and only while the call's deadline leaves time for a real
attempt.

The router keeps RESOURCE_EXHAUSTED for refusals that waiting cures (a rate limit, with
its wait in ``retry_after``; open streams). What no retry cures has its own status and is
never retried, whatever ``codes`` says (:data:`NEVER_RETRIED`): a bad request, a prompt no
context window holds or one request above a rate limit's burst (OUT_OF_RANGE), a cost cap
below every backend's estimate or a data class no tier takes (FAILED_PRECONDITION), auth.
"""

from __future__ import annotations

from hybrid_router.client.errors import OptionError, RouterCallError

__all__ = ["NEVER_RETRIED", "RetryPolicy"]

#: Statuses the same request fails with again, however long the caller waits.
NEVER_RETRIED = frozenset(
    {
        "INVALID_ARGUMENT",
        "OUT_OF_RANGE",
        "FAILED_PRECONDITION",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "UNIMPLEMENTED",
    }
)


class RetryPolicy:
    """``max_attempts`` calls at most, ``backoff_s`` after the first failure, doubling;
    only for the status names in ``codes``."""

    __slots__ = ("backoff_s", "codes", "max_attempts")

    def __init__(
        self,
        max_attempts: int = 3,
        backoff_s: float = 0.05,
        codes: frozenset[str] = frozenset({"UNAVAILABLE"}),
    ) -> None:
        if max_attempts < 1:
            raise OptionError("max_attempts", "must be >= 1")
        if backoff_s < 0:
            raise OptionError("backoff_s", "must be >= 0")
        never = sorted(codes & NEVER_RETRIED)
        if never:
            raise OptionError("codes", f"{', '.join(never)} cannot pass on a retry")
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.codes = codes

    def __repr__(self) -> str:
        return f"RetryPolicy(max_attempts={self.max_attempts}, backoff_s={self.backoff_s})"

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
