"""Pure routing decision: request features + backend snapshots -> an ordered Plan.

No I/O, no locks or caches, no clock of its own (callers pass ``now``); it imports only
``router.types`` and ``router.errors``. Its inputs are plain records: the features (prompt
token counts come from dispatch's ``router.tokenizers.TokenCounter``), the backend specs
and snapshots, and :class:`PolicyParams` (``router.records.policy_params``). See
docs/policy.md.

    features = router.tokenizers.features(request, counter, tokenizer_ids)
    plan = router.policy.plan(features, [(spec, stats.snapshot()), ...], params, now)
"""

from router.policy.estimate import (
    cost_usd,
    gpu_cost_per_output_token,
    prefill_ms,
    prefill_rate,
    ttft_sample_ms,
)
from router.policy.filters import FILTERS, RequestFilter
from router.policy.objectives import TIER_ORDER, meets_budget, rank
from router.policy.planner import explain, plan
from router.policy.records import PolicyParams, Weights

__all__ = [
    "FILTERS",
    "TIER_ORDER",
    "PolicyParams",
    "RequestFilter",
    "Weights",
    "cost_usd",
    "explain",
    "gpu_cost_per_output_token",
    "meets_budget",
    "plan",
    "prefill_ms",
    "prefill_rate",
    "rank",
    "ttft_sample_ms",
]
