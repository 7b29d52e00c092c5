"""The rate limits' arithmetic: GCRA (the generic cell rate algorithm, a token bucket kept
as one number). Pure: plain numbers in, plain numbers out; the caller passes ``now``.

A limit of ``rate`` units per second with a burst of ``burst`` units keeps one value per
counted thing, its *TAT* (theoretical arrival time): the time at which the bucket would be
full again. With ``interval = 1 / rate`` and ``tau = burst * interval``:

- a charge of ``cost`` units moves the TAT to ``max(TAT, now) + cost * interval``;
- it is admitted when the new TAT is at most ``now + tau`` (the bucket had ``cost``
  units); otherwise it would be admitted ``new TAT - tau - now`` seconds later, and
  nothing changes;
- a charge above ``burst`` is never admitted, however long the caller waits;
- a correction of ``delta`` units after the fact moves the TAT by ``delta * interval``:
  forward from ``max(TAT, now)`` (more was used than charged: a debt later charges wait
  for), back at most to ``now`` (less was used: the bucket is never fuller than full).

Several limits act on one request (a tenant's requests and tokens, its key's): the request
is admitted only when every one of them admits it, and then all of them are charged
(:func:`admit_all`); a refusal charges none. The Redis store runs the same arithmetic in
one Lua script (``router/controls/limits_redis.py``), where the values are milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Slack for float rounding: a charge that fits to within it fits.
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_s`` units per second, at most ``burst`` units at once."""

    per_s: float
    burst: float

    @property
    def interval(self) -> float:
        """Seconds one unit takes to come back."""
        return 1.0 / self.per_s

    @property
    def tau(self) -> float:
        """The burst as time: how far ahead of ``now`` the TAT may run."""
        return self.burst / self.per_s

    @classmethod
    def per_minute(cls, per_min: float, burst: float | None = None) -> Rate:
        """``per_min`` units a minute; the burst defaults to one minute's worth (at least
        one unit)."""
        return cls(per_min / 60.0, max(1.0, per_min if burst is None else burst))


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :func:`admit` or :func:`admit_all` decided."""

    admitted: bool
    #: The TATs to keep: the new ones when admitted, the old ones otherwise.
    tats: tuple[float, ...]
    #: Seconds until the same charge would be admitted (0 when admitted; ``inf`` when it
    #: never would: more than a burst).
    wait: float = 0.0
    #: The index of the limit that refused (the longest wait), -1 when admitted.
    refused_by: int = -1

    @property
    def never(self) -> bool:
        """The charge exceeds a limit's burst: no wait admits it."""
        return self.wait == float("inf")


def fits_burst(cost: float, rate: Rate) -> bool:
    return cost <= rate.burst * (1.0 + EPSILON)


def admit(tat: float, now: float, cost: float, rate: Rate) -> Verdict:
    """Charge ``cost`` units against one limit whose TAT is ``tat`` (0 when never used)."""
    return admit_all(((tat, cost, rate),), now)


def admit_all(charges: Sequence[tuple[float, float, Rate]], now: float) -> Verdict:
    """Charge each ``(tat, cost, rate)`` at once: all are admitted, or none is.

    The wait of a refusal is the longest of the limits' waits (after it, every one of
    them would admit the same charges, if nothing else were charged meanwhile)."""
    new: list[float] = []
    wait = 0.0
    worst = -1
    for i, (tat, cost, rate) in enumerate(charges):
        if not fits_burst(cost, rate):
            return Verdict(False, tuple(c[0] for c in charges), float("inf"), i)
        after = max(tat, now) + cost * rate.interval
        new.append(after)
        late = after - rate.tau - now
        if late > EPSILON * max(1.0, rate.tau) and late > wait:
            wait, worst = late, i
    if worst >= 0:
        return Verdict(False, tuple(c[0] for c in charges), wait, worst)
    return Verdict(True, tuple(new))


def adjust(tat: float, now: float, delta: float, rate: Rate) -> float:
    """The TAT after correcting a charge by ``delta`` units (negative: a refund)."""
    if delta >= 0:
        return max(tat, now) + delta * rate.interval
    return max(tat + delta * rate.interval, now)


def remaining(tat: float, now: float, rate: Rate) -> float:
    """Units a charge could take now (the bucket's level; negative while in debt)."""
    return (rate.tau - max(tat - now, 0.0)) / rate.interval
