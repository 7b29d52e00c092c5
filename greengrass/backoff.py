"""Reconnect delays: exponential backoff with full jitter, injectable random source.

``delay = uniform(floor, min(cap, initial * 2**attempt))``: the first retry is quick,
repeated failures spread devices out so that a router restart is not met by the whole
fleet at the same instant. ``reset()`` after a link that registered.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(
        self,
        initial_s: float = 0.5,
        cap_s: float = 30.0,
        *,
        floor_s: float = 0.05,
        rand: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if initial_s <= 0 or cap_s < initial_s:
            raise ValueError("backoff: need 0 < initial_s <= cap_s")
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.floor_s = min(floor_s, initial_s)
        self._rand = rand
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.initial_s * (2.0 ** min(self.attempt, 32)))
        self.attempt += 1
        return self._rand(self.floor_s, ceiling)

    def reset(self) -> None:
        self.attempt = 0
