"""Latency and cost estimates for one backend (formulas in docs/policy.md).

    decode rate   live: decode_tokens_per_s (the mean; ``decode="mean"``) or the slow
                  quantile decode_p25_tokens_per_s / decode_p10_tokens_per_s
                  (policy.decode_estimate: p25, the default, or p10); else
                  priors.decode_tokens_per_s
    ttft base     live ttft_p50_ms (ttft_p90_ms with policy.ttft_estimate: p90), else
                  priors.ttft_ms (priors.ttft_p90_ms with p90: by default
                  PRIOR_TTFT_P90_FACTOR x priors.ttft_ms); live with
                  policy.ttft_prior_weight w > 0: (n x live + w x prior) / (n + w) over
                  the snapshot's n TTFT samples
    load          max(in_flight, reported_load)
    waiting       max(0, load - max_concurrency + 1)
    service       live mean_service_ms, else ttft base + out / decode rate * 1000
    queue wait    waiting * service / max_concurrency * QUEUE_WAIT_TAIL (ln 10: the
                  p90 of an exponential wait, not its mean)
    prefill       prompt tokens / the backend's prompt reading rate * 1000: the rate it
                  reports (snapshot.prefill_tokens_per_s), else
                  priors.prefill_tokens_per_s (:func:`prefill_rate`, :func:`prefill_ms`;
                  then the TTFT samples are kept without their own prefill, so ttft base
                  is an empty prompt's); 0 when neither gives one
    ttft          queue wait + ttft base + prefill
    total         ttft + out / decode rate * 1000
    cost          of the prompt and max_out output tokens (the most the call may cost)

``out`` is the expected output (``Features.expected_output_tokens``: the answers the
caller's tenant really got, ``policy.output_estimate``; docs/policy.md) when known, else
max_out.

"Live" means the snapshot holds the value and ``snapshot.requests >= min_samples``.
"""

from __future__ import annotations

import math

from router.types import (
    BackendSnapshot,
    BackendSpec,
    Estimate,
    Prices,
    Priors,
    Tier,
    TokenCount,
    frozen_factory,
)

#: The queue-wait estimate's tail factor. A request that waits for a slot waits for the
#: first of ``max_concurrency`` running requests to end: ``service / max_concurrency`` on
#: average, but spread like an exponential, whose 90th percentile is ln(10) = 2.3 times
#: its mean. Planned with the mean, requests that queued near a tight TTFT budget missed
#: it: two thirds of the router's misses in `hybrid-router simulate`'s long-conversations
#: scenario (SLO met 87.2% with the mean, 95.3% with the p90).
QUEUE_WAIT_TAIL = math.log(10.0)

_HOSTED = Tier.HOSTED
_GPU = Tier.GPU
_EDGE = Tier.EDGE


_new_estimate = frozen_factory(Estimate)


def prefill_rate(priors: Priors, snap: BackendSnapshot) -> float:
    """The prompt reading rate of a backend, prompt tokens/s: what it reports
    (``snap.prefill_tokens_per_s``: a model server's Info, a device's heartbeat), else
    ``priors.prefill_tokens_per_s``; 0.0: not modelled. ``BackendStats.prefill_rate``
    answers the same from the live stats."""
    return snap.prefill_tokens_per_s or priors.prefill_tokens_per_s


def prefill_ms(rate: float, prompt_tokens: int) -> float:
    """How long a backend reading ``rate`` prompt tokens a second (:func:`prefill_rate`)
    takes to read a prompt of ``prompt_tokens`` before its first token, ms; 0.0 when the
    rate is 0 (not modelled)."""
    return prompt_tokens / rate * 1000.0 if rate > 0.0 else 0.0


def ttft_sample_ms(rate: float, prompt_tokens: int, ttft_ms: float) -> float:
    """A first-token time as the backend's TTFT window keeps it: without the prompt's own
    prefill at ``rate`` (:func:`prefill_ms`), which each estimate adds for its own
    prompt; at least 0. Dispatch and the simulator record through it."""
    rest = ttft_ms - prefill_ms(rate, prompt_tokens)
    return rest if rest > 0.0 else 0.0


def gpu_cost_per_output_token(prices: Prices) -> float:
    """Amortised USD per output token of a GPU node:
    hourly / 3600 / (throughput * utilisation). 0.0 when not configured."""
    rate = prices.gpu_throughput_tokens_per_s * prices.gpu_utilization
    if prices.gpu_hourly_usd <= 0.0 or rate <= 0.0:
        return 0.0
    return prices.gpu_hourly_usd / 3600.0 / rate


def cost_usd(spec: BackendSpec, input_tokens: int, output_tokens: int) -> float:
    """Cost of a call to ``spec`` in USD, by tier (also used to price actual usage).

    hosted: input * input_per_mtok / 1e6 + output * output_per_mtok / 1e6
    gpu:    (output + input * gpu_prefill_ratio) * gpu_cost_per_output_token
    edge:   output * edge_per_mtok / 1e6
    """
    p = spec.prices
    tier = spec.tier
    if tier is _HOSTED:
        return (input_tokens * p.input_per_mtok_usd + output_tokens * p.output_per_mtok_usd) / 1e6
    if tier is _GPU:
        rate = p.gpu_throughput_tokens_per_s * p.gpu_utilization
        if p.gpu_hourly_usd <= 0.0 or rate <= 0.0:
            return 0.0
        # == (output + input * prefill_ratio) * gpu_cost_per_output_token(p)
        return (
            (output_tokens + input_tokens * p.gpu_prefill_ratio) * p.gpu_hourly_usd / 3600.0 / rate
        )
    if tier is _EDGE:
        return output_tokens * p.edge_per_mtok_usd / 1e6
    return 0.0


def estimate(
    spec: BackendSpec,
    snap: BackendSnapshot,
    prompt: TokenCount,
    max_output_tokens: int,
    min_samples: int,
    expected_output_tokens: int | None = None,
    ttft_p90: bool = False,
    prior_weight: float = 0.0,
    decode: str = "mean",
) -> Estimate:
    """Estimated TTFT, total latency and cost of sending the request to ``spec`` now.

    ``plan()`` calls it once per backend that passes the filters. Latency counts
    ``expected_output_tokens`` (when given and below ``max_output_tokens``), cost counts
    ``max_output_tokens``. ``prior_weight``: ``policy.ttft_prior_weight`` (0: the live
    quantile alone); ``decode``: ``policy.decode_estimate`` ("mean", "p25", "p10").
    """
    out = max_output_tokens
    if expected_output_tokens is not None and 0 < expected_output_tokens < out:
        out = expected_output_tokens
    priors = spec.priors
    live = snap.requests >= min_samples
    from_priors = False

    if not live:
        rate = None
    elif decode == "p25":  # the default first
        rate = snap.decode_p25_tokens_per_s
    elif decode == "mean":
        rate = snap.decode_tokens_per_s
    else:
        rate = snap.decode_p10_tokens_per_s
    if rate is None or rate <= 0.0:
        rate = priors.decode_tokens_per_s
        from_priors = True
    ttft_base = (snap.ttft_p90_ms if ttft_p90 else snap.ttft_p50_ms) if live else None
    if ttft_base is None:
        ttft_base = priors.ttft_p90() if ttft_p90 else priors.ttft_ms
        from_priors = True
    elif prior_weight > 0.0:  # a few samples' quantile, pulled toward the prior
        n = snap.ttft_samples
        prior = priors.ttft_p90() if ttft_p90 else priors.ttft_ms
        ttft_base = (n * ttft_base + prior_weight * prior) / (n + prior_weight)

    load = snap.in_flight
    reported = snap.reported_load
    if reported is not None and reported > load:
        load = reported
    slots = spec.max_concurrency
    waiting = load - slots + 1
    if waiting > 0:
        service = snap.mean_service_ms if live else None
        if service is None:
            service = ttft_base + out / rate * 1000.0
        queue_wait = waiting * service / slots * QUEUE_WAIT_TAIL
    else:
        queue_wait = 0.0

    # cost_usd(spec, prompt.tokens, max_output_tokens), inlined (hot path; tests compare)
    tokens = prompt.tokens
    p = spec.prices
    tier = spec.tier
    if tier is _HOSTED:
        cost = (tokens * p.input_per_mtok_usd + max_output_tokens * p.output_per_mtok_usd) / 1e6
    elif tier is _GPU:
        hourly = p.gpu_hourly_usd
        paid_rate = p.gpu_throughput_tokens_per_s * p.gpu_utilization
        if hourly > 0.0 and paid_rate > 0.0:
            per_token = hourly / 3600.0 / paid_rate
            cost = (max_output_tokens + tokens * p.gpu_prefill_ratio) * per_token
        else:
            cost = 0.0
    elif tier is _EDGE:
        cost = max_output_tokens * p.edge_per_mtok_usd / 1e6
    else:
        cost = 0.0

    ttft = queue_wait + ttft_base
    reading = snap.prefill_tokens_per_s or priors.prefill_tokens_per_s  # prefill_rate()
    if reading > 0.0:  # prefill_ms(reading, tokens), inlined
        ttft += tokens / reading * 1000.0
    return _new_estimate(
        ttft,  # ttft_ms
        ttft + out / rate * 1000.0,  # total_ms
        cost,
        queue_wait,
        from_priors,
        tokens,
        prompt.exact,  # tokens_exact
    )
