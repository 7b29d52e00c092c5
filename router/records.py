"""Plain records built from the pydantic configuration, for code that must not see pydantic.

The policy (``router/policy/``) depends on frozen, slotted records only; this is where
they are built from ``router.yaml``'s models, once, when the router starts (the
dispatcher does it). Backend specs have their own converter, ``BackendConfig.to_spec``.
"""

from __future__ import annotations

from router.config import PolicyConfig
from router.policy.records import PolicyParams, Weights


def policy_params(cfg: PolicyConfig) -> PolicyParams:
    """The fields of ``policy:`` that ``router.policy.plan`` reads."""
    return PolicyParams(
        objective=cfg.objective,
        weights=Weights(cost=cfg.weights.cost, latency=cfg.weights.latency),
        headroom=cfg.headroom,
        max_fallbacks=cfg.max_fallbacks,
        default_max_output_tokens=cfg.default_max_output_tokens,
        min_samples=cfg.min_samples,
        ttft_p90=cfg.ttft_estimate == "p90",
        ttft_prior_weight=cfg.ttft_prior_weight,
        decode_estimate=cfg.decode_estimate,
        spread=cfg.spread,
        spread_tolerance=cfg.spread_tolerance,
    )
