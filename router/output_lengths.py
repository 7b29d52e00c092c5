"""Expected answer lengths: what share of ``max_output_tokens`` a tenant's answers use.

Callers ask for room (``max_output_tokens``) and mostly use less. Planning latency for the
whole of it sends requests past backends that would meet their budget with the answer
they really get (a slow edge device, a busy GPU pool): ``hybrid-router simulate`` measured
it (BENCHMARKS.md, Routing). Each tenant's recent complete answers give the ratio
``output / max_output_tokens``; a request is expected to produce the ``quantile`` of that
ratio times its own ``max_output_tokens`` (``policy.output_estimate``), once
``min_samples`` answers are in. Latency estimates use it; cost estimates and the window
check keep ``max_output_tokens``.

Not thread-safe: used from the event loop's thread (dispatch), like ``router.stats``.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict, deque

from router.config import OutputEstimateConfig

#: Tenants remembered (least recently seen dropped first).
MAX_TENANTS = 4096


class _Window:
    __slots__ = ("ratios", "ordered")

    def __init__(self, size: int) -> None:
        self.ratios: deque[float] = deque(maxlen=size)
        self.ordered: list[float] = []


class OutputLengths:
    """Per-tenant windows of answer/room ratios (see the module doc)."""

    def __init__(self, cfg: OutputEstimateConfig) -> None:
        self.enabled = cfg.enabled
        self.quantile = cfg.quantile
        self.window = cfg.window
        self.min_samples = cfg.min_samples
        self._tenants: OrderedDict[str, _Window] = OrderedDict()

    def record(self, tenant: str, max_output_tokens: int, output_tokens: int) -> None:
        """A complete answer of ``output_tokens`` to a request that allowed
        ``max_output_tokens``."""
        if not self.enabled or max_output_tokens <= 0 or output_tokens < 0:
            return
        w = self._tenants.get(tenant)
        if w is None:
            if len(self._tenants) >= MAX_TENANTS:
                self._tenants.popitem(last=False)
            w = self._tenants[tenant] = _Window(self.window)
        else:
            self._tenants.move_to_end(tenant)
        ratio = min(1.0, output_tokens / max_output_tokens)
        if len(w.ratios) == self.window:
            del w.ordered[bisect.bisect_left(w.ordered, w.ratios[0])]
        w.ratios.append(ratio)
        bisect.insort(w.ordered, ratio)

    def expected(self, tenant: str, max_output_tokens: int) -> int | None:
        """Tokens a request of ``tenant`` allowing ``max_output_tokens`` is expected to
        produce; None until ``min_samples`` answers are in (or when disabled)."""
        if not self.enabled:
            return None
        w = self._tenants.get(tenant)
        if w is None or len(w.ordered) < self.min_samples:
            return None
        n = len(w.ordered)
        ratio = w.ordered[min(n - 1, max(0, math.ceil(self.quantile * n) - 1))]
        return max(1, min(max_output_tokens, math.ceil(ratio * max_output_tokens)))
