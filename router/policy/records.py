"""The policy's configuration inputs: plain frozen, slotted records, not the yaml models.

``plan()`` reads these fields of the policy configuration and nothing else. They are built
from router.yaml's ``PolicyConfig`` once, when the router starts, by
:func:`router.records.policy_params`, outside the policy. Backend specs are already
records (``router.types.BackendSpec``, built by ``BackendConfig.to_spec``).

The defaults equal the configuration's defaults (tests/unit/test_policy_purity.py checks).
"""

from __future__ import annotations

from dataclasses import dataclass

from router.types import Objective


@dataclass(frozen=True, slots=True)
class Weights:
    """Weights of the ``weighted`` objective (docs/policy.md#6-objectives)."""

    cost: float = 1.0
    latency: float = 10.0


#: ``policy.headroom``'s default: the share of a latency budget a ``balanced`` choice's
#: estimates should stay within (router/config/policy.py holds the same value).
DEFAULT_HEADROOM = 0.5


@dataclass(frozen=True, slots=True)
class PolicyParams:
    """What ``plan()`` needs of ``policy:`` in router.yaml."""

    #: Used when the request names no objective.
    objective: Objective = Objective.BALANCED
    weights: Weights = Weights()
    #: The share of a latency budget a ``balanced`` choice's estimates should stay within
    #: (policy.headroom).
    headroom: float = DEFAULT_HEADROOM
    #: Fallbacks kept in a plan after the primary.
    max_fallbacks: int = 2
    #: max_output_tokens used when a request gives 0.
    default_max_output_tokens: int = 256
    #: Observations needed before live stats replace a backend's priors.
    min_samples: int = 3
    #: Estimate TTFT from the observed p90 (True, the default) or the p50
    #: (policy.ttft_estimate).
    ttft_p90: bool = True
    #: Samples' worth of the prior in the TTFT estimate (policy.ttft_prior_weight).
    ttft_prior_weight: float = 0.0
    #: The observed decode rate estimates use: "mean", "p25" or "p10" (the rate the
    #: slowest quarter / tenth of recent answers stayed under; policy.decode_estimate).
    decode_estimate: str = "p25"
    #: Load spreading among equivalent candidates: power_of_two, least_loaded or off
    #: (router.policy.objectives.spread).
    spread: str = "least_loaded"
    #: Relative latency difference within which candidates count as equivalent.
    spread_tolerance: float = 0.2
