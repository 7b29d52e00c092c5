"""Pure routing decision: request features + backend snapshots -> an ordered Plan.

No I/O and no clock of its own (callers pass ``now``); see docs/policy.md.

    features = TokenCounter(cfg.token_estimate).features(request, tokenizer_ids)
    plan = router.policy.plan(features, [(spec, stats.snapshot()), ...], cfg, now)
"""

from router.policy.estimate import cost_usd, gpu_cost_per_output_token
from router.policy.filters import FILTERS, RequestFilter
from router.policy.objectives import TIER_ORDER, meets_budget, rank
from router.policy.planner import explain, plan
from router.policy.tokens import TokenCounter

__all__ = [
    "FILTERS",
    "TIER_ORDER",
    "RequestFilter",
    "TokenCounter",
    "cost_usd",
    "explain",
    "gpu_cost_per_output_token",
    "meets_budget",
    "plan",
    "rank",
]
