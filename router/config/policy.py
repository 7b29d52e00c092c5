"""``policy:``: objective, weights, fallbacks, circuit breaker, token estimate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from router.config._base import _Model
from router.types import Objective


class CircuitConfig(_Model):
    #: Consecutive failures that open the circuit.
    consecutive_failures: int = Field(5, ge=1)
    #: Error rate over the window that opens the circuit (with at least min_requests).
    error_rate: float = Field(0.5, gt=0, le=1)
    window: int = Field(20, ge=1)
    min_requests: int = Field(10, ge=1)
    #: Seconds the circuit stays open before one half-open probe.
    cooldown_s: float = Field(30.0, gt=0)


class WeightsConfig(_Model):
    """Weights of the ``weighted`` objective: score = cost * cost/min_cost + latency * t/min_t."""

    cost: float = Field(1.0, ge=0)
    latency: float = Field(10.0, ge=0)


class TokenEstimateConfig(_Model):
    """Token estimate for backends without an offline tokenizer: ceil(chars / chars_per_token
    * margin) + per_message_overhead per message."""

    chars_per_token: float = Field(3.0, gt=0)
    margin: float = Field(1.15, ge=1.0)
    per_message_overhead: int = Field(4, ge=0)


class OutputEstimateConfig(_Model):
    """Expected answer lengths for latency estimates (router/output_lengths.py)."""

    #: Off (the default: BENCHMARKS.md, Routing): latency estimates count max_output_tokens.
    enabled: bool = False
    #: The quantile of each tenant's answer/max_output_tokens ratio a request is expected
    #: to use (1.0: the longest answer seen).
    quantile: float = Field(0.75, gt=0, le=1)
    #: Answers remembered per tenant.
    window: int = Field(256, ge=1, le=100_000)
    #: Answers needed before the estimate replaces max_output_tokens.
    min_samples: int = Field(20, ge=1)


class PolicyConfig(_Model):
    objective: Objective = Objective.BALANCED
    weights: WeightsConfig = WeightsConfig()
    #: The ``balanced`` objective's room to spare: for a request with a latency budget it
    #: takes the cheapest candidate whose estimates stay within this share of each budget,
    #: else the cheapest that meets them (docs/policy.md, 6; 0.5 from a sweep of 0.5-0.8
    #: in ``hybrid-router simulate``: BENCHMARKS.md, Routing).
    headroom: float = Field(0.5, gt=0, le=1)
    #: Fallbacks kept in a plan after the primary.
    max_fallbacks: int = Field(2, ge=0, le=16)
    #: Time to first token before the router moves to the next candidate, ms.
    ttft_timeout_ms: float = Field(10_000, gt=0)
    #: max_output_tokens used when a request gives 0.
    default_max_output_tokens: int = Field(256, ge=1)
    #: Largest max_output_tokens accepted.
    max_output_tokens_limit: int = Field(32_768, ge=1)
    #: Observations needed before live stats replace config priors.
    min_samples: int = Field(3, ge=1)
    #: Seconds a latency sample (TTFT, decode rate, service time) counts: a backend the
    #: router stopped choosing is judged by its priors again once its samples are this
    #: old, and tried again, instead of by the samples that made it lose, forever
    #: (docs/policy.md; 120 s from a sweep of 30-300 s in `hybrid-router simulate`).
    sample_max_age_s: float = Field(120.0, gt=0)
    #: Whose answers a backend's latency estimates learn from: its own (backend), or
    #: every backend of its tier and kind serving the same model (model: the replicas of
    #: one Ray Serve application share one set of windows; load, errors and the circuit
    #: breaker stay per backend). More samples per window where many replicas (of the
    #: router and of the model) split the traffic (docs/policy.md).
    learn_by: Literal["backend", "model"] = "backend"
    circuit: CircuitConfig = CircuitConfig()
    token_estimate: TokenEstimateConfig = TokenEstimateConfig()
    #: Seconds between polls of backends' own load signals.
    load_poll_interval_s: float = Field(0.5, gt=0)
    output_estimate: OutputEstimateConfig = OutputEstimateConfig()
    #: The observed TTFT quantile estimates use: p90 (a budget met by nine requests in
    #: ten; the default) or p50 (typical: cheaper, more budgets missed).
    ttft_estimate: Literal["p50", "p90"] = "p90"
    #: Samples' worth of the prior in the TTFT estimate: (n x observed + w x prior) /
    #: (n + w) over a window of n samples, so a quantile of a few samples (the p90 of
    #: three is their maximum) does not swing the choice; 0: the observed quantile alone.
    ttft_prior_weight: float = Field(0.0, ge=0, le=10_000)
    #: The observed decode rate total-latency estimates use: p25 (the rate the slowest
    #: quarter of recent answers stayed under; the default), p10 (the slowest tenth) or
    #: mean (tokens over decode time): total budgets judged by the slow answers, as TTFT
    #: by its p90 (docs/policy.md; p25 from `hybrid-router simulate`'s scenarios).
    decode_estimate: Literal["mean", "p25", "p10"] = "p25"
    #: Spread load over equivalent candidates (same cost, budget verdict, and latency
    #: within spread_tolerance): the least loaded, ties by the request's hash
    #: (least_loaded), two picked per request and the less loaded first (power_of_two:
    #: for dozens of router replicas), or none (off: the name decides).
    spread: Literal["power_of_two", "least_loaded", "off"] = "least_loaded"
    spread_tolerance: float = Field(0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _limits(self) -> PolicyConfig:
        if self.default_max_output_tokens > self.max_output_tokens_limit:
            raise ValueError(
                "default_max_output_tokens must not exceed max_output_tokens_limit "
                f"({self.default_max_output_tokens} > {self.max_output_tokens_limit})"
            )
        return self
