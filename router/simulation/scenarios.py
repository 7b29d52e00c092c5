"""Built-in scenarios: a fleet and a trace generator each (``hybrid-router simulate
--scenario NAME``; docs/simulate.md lists what each stresses).

Every scenario runs on one reference fleet (``reference_router()``: two edge devices, two
Ray Serve GPU replicas, a small and a large hosted model; illustrative prices and speeds)
with its own traffic and faults; ``gpu-pool`` splits its GPU tier into eight replicas
(:func:`pool_fleet`). Traces are deterministic for a seed. The request mix:

    chat         40%  prompt ~300 tok, answer ~120, TTFT <= 1 s, total <= 8 s
    interactive  25%  prompt ~500, answer ~60, TTFT <= 600 ms, total <= 3 s
    batch        20%  prompt ~2,000, answer ~400, total <= 30 s
    restricted   10%  prompt ~800, answer ~150, total <= 10 s, data class restricted
    long         5%   prompt 20,000-60,000, answer ~300, total <= 20 s
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from router.config import parse_config
from router.errors import ConfigError
from router.simulation.fleet import BackendBehaviour, Fleet, build_fleet
from router.simulation.trace import TraceRequest
from router.types import DataClass

_ALL = ["public", "internal", "restricted"]


def _hosted(
    name: str,
    kind: str,
    window: int,
    ttft_ms: float,
    rate: float,
    input_usd: float,
    output_usd: float,
    **extra: Any,
) -> dict[str, Any]:
    """A hosted backend of the reference fleet (prices per million tokens)."""
    return {
        "name": name,
        "tier": "hosted",
        "kind": kind,
        "endpoint": "http://127.0.0.1:1" + ("/v1" if kind == "openai" else ""),
        "model": name.replace("hosted-", "") + "-hosted",
        "context_window": window,
        "max_concurrency": 256,
        "data_classes": ["public", "internal"],
        "priors": {"ttft_ms": ttft_ms, "decode_tokens_per_s": rate},
        "cost": {
            "input_per_mtok_usd": input_usd,
            "output_per_mtok_usd": output_usd,
            "source": "illustrative",
        },
        **extra,
    }


def reference_router(**policy: Any) -> dict[str, Any]:
    """The reference fleet's router configuration (a router.yaml mapping)."""
    gpu_cost = {
        "gpu_hourly_usd": 1.2,
        "gpu_throughput_tokens_per_s": 1200,
        "gpu_utilization": 0.6,
        "gpu_prefill_ratio": 0.1,
        "source": "illustrative",
    }
    backends: list[dict[str, Any]] = []
    for name in ("edge-a", "edge-b"):
        backends.append(
            {
                "name": name,
                "tier": "edge",
                "kind": "model_service",
                "endpoint": "127.0.0.1:1",
                "model": "gemma-3-1b",
                "context_window": 4096,
                "max_concurrency": 2,
                "max_queue": 4,
                "data_classes": _ALL,
                "priors": {"ttft_ms": 200, "decode_tokens_per_s": 18},
                "cost": {"edge_per_mtok_usd": 0.05, "source": "illustrative"},
            }
        )
    for name in ("gpu-a", "gpu-b"):
        backends.append(
            {
                "name": name,
                "tier": "gpu",
                "kind": "ray_serve",
                "serve_application": "gpu",
                "endpoint": "127.0.0.1:1",
                "model": "llama-3.1-8b-instruct",
                "context_window": 16384,
                "max_concurrency": 16,
                "max_queue": 32,
                "data_classes": _ALL,
                "priors": {"ttft_ms": 250, "decode_tokens_per_s": 40},
                "cost": gpu_cost,
            }
        )
    backends.append(_hosted("hosted-mini", "openai", 128_000, 500, 80, 0.15, 0.60))
    backends.append(
        _hosted(
            "hosted-large",
            "anthropic",
            200_000,
            700,
            60,
            3.0,
            15.0,
            api_key_env="SIMULATED_KEY",  # never read: nothing is called
        )
    )
    return {"policy": dict(policy), "backends": backends}


def reference_behaviour() -> dict[str, dict[str, Any]]:
    """How the reference fleet's backends really behave (fleet file ``backends:``)."""
    edge = {
        "ttft_ms": 150,
        "ttft_p90_ms": 320,
        "decode_tokens_per_s": 20,
        "slots": 2,
        "batch_slowdown": 0.3,
        "poll_ms": 60,  # a site over the WAN
    }
    gpu = {
        "ttft_ms": 180,
        "ttft_p90_ms": 450,
        "decode_tokens_per_s": 45,
        "slots": 16,
        "batch_slowdown": 0.4,
        "poll_ms": 10,  # in the cluster, through Ray Serve's proxy
    }
    return {
        "edge-a": dict(edge),
        "edge-b": dict(edge),
        "gpu-a": dict(gpu),
        "gpu-b": dict(gpu),
        "hosted-mini": {
            "ttft_ms": 450,
            "ttft_p90_ms": 1100,
            "decode_tokens_per_s": 85,
            "error_rate": 0.002,
        },
        "hosted-large": {
            "ttft_ms": 650,
            "ttft_p90_ms": 1500,
            "decode_tokens_per_s": 55,
            "error_rate": 0.002,
        },
    }


def reference_fleet(behaviour: dict[str, dict[str, Any]] | None = None, **policy: Any) -> Fleet:
    return _fleet(reference_router(**policy), reference_behaviour(), behaviour)


def _fleet(
    router: dict[str, Any],
    merged: dict[str, dict[str, Any]],
    behaviour: dict[str, dict[str, Any]] | None = None,
) -> Fleet:
    config = parse_config(router, source="reference fleet")
    for name, extra in (behaviour or {}).items():
        merged.setdefault(name, {}).update(extra)
    return build_fleet(
        config,
        {k: BackendBehaviour.model_validate(v) for k, v in merged.items()},
        document={"router": router, "backends": merged},
    )


#: The GPU pool scenario's replicas: eight of a quarter the size (the same 32 slots).
POOL_REPLICAS = 8
POOL_SLOTS = 4
#: The GPU fleet scenario: four times the pool (32 replicas of 4 slots) for four times the
#: traffic.
FLEET_REPLICAS = 32
FLEET_SCALE = 4.0


def pool_fleet(replicas: int = POOL_REPLICAS) -> Fleet:
    """The reference fleet with its GPU tier as ``replicas`` replicas of four slots
    (gpu-1 .. gpu-N) instead of two of sixteen: by default the same capacity, more
    equivalent candidates."""
    router = reference_router()
    behaviour = reference_behaviour()
    template = next(b for b in router["backends"] if b["name"] == "gpu-a")
    model = behaviour["gpu-a"]
    backends = [b for b in router["backends"] if b["tier"] != "gpu"]
    for i in range(1, replicas + 1):
        name = f"gpu-{i}"
        backends.append(
            {**template, "name": name, "max_concurrency": POOL_SLOTS, "max_queue": 2 * POOL_SLOTS}
        )
        behaviour[name] = {**model, "slots": POOL_SLOTS}
    del behaviour["gpu-a"], behaviour["gpu-b"]
    router["backends"] = backends
    return _fleet(router, behaviour)


# --- traffic ------------------------------------------------------------------------

#: (share, prompt median, answer median, ttft budget, total budget, data class)
MIX: tuple[tuple[float, int, int, float | None, float | None, DataClass], ...] = (
    (0.40, 300, 120, 1000.0, 8000.0, DataClass.INTERNAL),
    (0.25, 500, 60, 600.0, 3000.0, DataClass.INTERNAL),
    (0.20, 2000, 400, None, 30000.0, DataClass.INTERNAL),
    (0.10, 800, 150, None, 10000.0, DataClass.RESTRICTED),
    (0.05, 0, 300, None, 20000.0, DataClass.INTERNAL),  # long: prompt drawn separately
)
_CUM = [sum(m[0] for m in MIX[: i + 1]) for i in range(len(MIX))]


def _request(rng: random.Random, at: float, tenant: str = "") -> TraceRequest:
    u = rng.random()
    k = next(i for i, c in enumerate(_CUM) if u <= c)
    _, prompt, answer, ttft_b, total_b, dc = MIX[k]
    if prompt == 0:
        prompt_tokens = rng.randint(20_000, 60_000)
    else:
        prompt_tokens = max(8, int(prompt * math.exp(0.5 * rng.gauss(0.0, 1.0))))
    out = max(1, int(answer * math.exp(0.5 * rng.gauss(0.0, 1.0))))
    return TraceRequest(
        at_s=at,
        prompt_tokens=prompt_tokens,
        output_tokens=out,
        max_output_tokens=max(out, int(answer * 2)),
        tenant=tenant,
        data_class=dc,
        ttft_budget_ms=ttft_b,
        total_budget_ms=total_b,
    )


def _arrivals(
    rng: random.Random, n: int, rate: Callable[[float], float], peak: float
) -> Iterator[float]:
    """``n`` arrival times of a Poisson process with rate ``rate(t)`` <= ``peak`` (thinning)."""
    t = 0.0
    made = 0
    while made < n:
        t += rng.expovariate(peak)
        if rng.random() * peak <= rate(t):
            made += 1
            yield t


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    #: requests, seed -> (fleet, trace)
    build: Callable[[int, int], tuple[Fleet, list[TraceRequest]]]


#: Mean arrival rate of the steady scenarios, requests per second: about 70% of what the
#: private tiers (edge + GPU) serve of the mix, so the cheap tiers are busy, not full.
BASE_RATE = 6.0


def _steady_trace(n: int, seed: int, rate: float = BASE_RATE) -> list[TraceRequest]:
    rng = random.Random(seed)
    return [_request(rng, t) for t in _arrivals(rng, n, lambda t: rate, rate)]


def _steady(n: int, seed: int) -> tuple[Fleet, list[TraceRequest]]:
    return reference_fleet(), _steady_trace(n, seed)


def _diurnal(n: int, seed: int) -> tuple[Fleet, list[TraceRequest]]:
    rng = random.Random(seed)
    day = n / BASE_RATE  # one day over the trace: quiet nights, a peak at 2x the mean

    def rate(t: float) -> float:
        return BASE_RATE * (1.0 - 0.8 * math.cos(2 * math.pi * t / day))

    trace = [_request(rng, t) for t in _arrivals(rng, n, rate, BASE_RATE * 1.8)]
    return reference_fleet(), trace


def _spike(n: int, seed: int) -> tuple[Fleet, list[TraceRequest]]:
    rng = random.Random(seed)
    span = n / BASE_RATE
    spikes = [(span * f, span * f + 60.0) for f in (0.2, 0.5, 0.8)]

    def rate(t: float) -> float:
        return BASE_RATE * (4.0 if any(a <= t < b for a, b in spikes) else 0.9)

    trace = [_request(rng, t) for t in _arrivals(rng, n, rate, BASE_RATE * 4.0)]
    return reference_fleet(), trace


def _edge_outage(n: int, seed: int) -> tuple[Fleet, list[TraceRequest]]:
    rng = random.Random(seed)
    span = n / BASE_RATE
    window = [[span * 0.3, span * 0.5]]
    fleet = reference_fleet({"edge-a": {"outages": window}, "edge-b": {"outages": window}})
    trace = [_request(rng, t) for t in _arrivals(rng, n, lambda t: BASE_RATE, BASE_RATE)]
    return fleet, trace


def _throttling(n: int, seed: int) -> tuple[Fleet, list[TraceRequest]]:
    rng = random.Random(seed)
    span = n / BASE_RATE
    windows = [
        {"from_s": span * f, "to_s": span * f + 120.0, "retry_after_s": 20.0}
        for f in (0.1, 0.4, 0.7)
    ]
    fleet = reference_fleet({"hosted-mini": {"throttle": windows}})
    # Busier than steady, so the hosted tier matters.
    rate = BASE_RATE * 1.5
    trace = [_request(rng, t) for t in _arrivals(rng, n, lambda t: rate, rate)]
    return fleet, trace


def _pool(n: int, seed: int) -> tuple[Fleet, list[TraceRequest]]:
    """Steady traffic on :func:`pool_fleet`: spreading over eight equivalent replicas."""
    return pool_fleet(), _steady_trace(n, seed)


def _gpu_fleet(n: int, seed: int) -> tuple[Fleet, list[TraceRequest]]:
    """Steady traffic at four times the rate on 32 GPU replicas of four slots: the scale
    where several router replicas, each seeing only its own streams between load polls,
    pick the same replica (herding; ``bench/bench_replicas.py``)."""
    return pool_fleet(FLEET_REPLICAS), _steady_trace(n, seed, BASE_RATE * FLEET_SCALE)


def _conversations(n: int, seed: int) -> tuple[Fleet, list[TraceRequest]]:
    """Conversations of up to 30 turns whose prompt is the whole history: they outgrow the
    edge window (4,096) after a few turns and the GPU window (16,384) after ~20."""
    rng = random.Random(seed)
    out: list[TraceRequest] = []
    live: list[list[Any]] = []  # [session id, prompt tokens, next turn time, turns left]
    sid = 0
    t = 0.0
    new_every = 1.0 / (BASE_RATE / 8.0)
    next_new = 0.0
    while len(out) < n:
        if not live or next_new <= min(c[2] for c in live):
            t = next_new
            sid += 1
            live.append([f"s{sid}", rng.randint(100, 400), t, rng.randint(5, 30)])
            next_new = t + rng.expovariate(1.0 / new_every)
            continue
        conv = min(live, key=lambda c: c[2])
        t = conv[2]
        answer = max(1, int(180 * math.exp(0.5 * rng.gauss(0.0, 1.0))))
        out.append(
            TraceRequest(
                at_s=t,
                prompt_tokens=conv[1],
                output_tokens=answer,
                max_output_tokens=max(answer, 360),
                session=conv[0],
                ttft_budget_ms=1500.0,
                total_budget_ms=15000.0,
            )
        )
        conv[1] += answer + rng.randint(30, 300)
        conv[2] = t + 5.0 + rng.expovariate(1.0 / 20.0)
        conv[3] -= 1
        if conv[3] <= 0:
            live.remove(conv)
    out.sort(key=lambda r: r.at_s)
    return reference_fleet(), out


#: Prompt tokens each backend of the reference fleet reads per second before its first
#: token, in the ``long-prompts`` scenario (illustrative: a 1B model on a device's CPU, an
#: 8B model on one GPU busy decoding, two hosted APIs).
PREFILL_TOKENS_PER_S = {
    "edge-a": 300.0,
    "edge-b": 300.0,
    "gpu-a": 5000.0,
    "gpu-b": 5000.0,
    "hosted-mini": 20000.0,
    "hosted-large": 10000.0,
}

#: The share of their pace the requests a backend serves lose while it reads another
#: prompt, on ``long-prompts``' fleet with ``interference`` (:func:`prefill_fleet`,
#: bench/bench_interference.py; the scenario itself has none). Illustrative: vLLM's
#: chunked prefill keeps decoding beside a prompt's chunks; llama.cpp's server on a
#: device's CPU reads a prompt's batch between its slots' decode steps. The hosted APIs'
#: are the provider's.
PREFILL_INTERFERENCE = {"edge-a": 0.9, "edge-b": 0.9, "gpu-a": 0.5, "gpu-b": 0.5}

#: The ``long-prompts`` mix: (share, prompt tokens low, high (log-uniform), answer median,
#: ttft budget, total budget, data class). Prompts from a chat turn to a long document.
LONG_MIX: tuple[tuple[float, int, int, int, float | None, float, DataClass], ...] = (
    (0.30, 100, 800, 120, 1000.0, 8000.0, DataClass.INTERNAL),  # chat
    (0.40, 1500, 12_000, 200, 2500.0, 12_000.0, DataClass.INTERNAL),  # retrieval-augmented
    (0.20, 15_000, 60_000, 300, 8000.0, 25_000.0, DataClass.INTERNAL),  # a document
    (0.10, 1000, 10_000, 150, None, 15_000.0, DataClass.RESTRICTED),  # private documents
)
_LONG_CUM = [sum(m[0] for m in LONG_MIX[: i + 1]) for i in range(len(LONG_MIX))]


def prefill_fleet(router_knows: bool = True, interference: bool = False) -> Fleet:
    """The reference fleet whose backends take :data:`PREFILL_TOKENS_PER_S` to read a
    prompt; with ``router_knows`` its router configuration gives those rates as
    ``priors.prefill_tokens_per_s`` (else the router judges TTFT without the prompt's
    length, as before the setting existed); with ``interference`` a prompt's reading
    slows the other requests on the edge devices and GPU replicas
    (:data:`PREFILL_INTERFERENCE`; the ``long-prompts`` scenario has none)."""
    router = reference_router()
    behaviour = reference_behaviour()
    for backend in router["backends"]:
        rate = PREFILL_TOKENS_PER_S[backend["name"]]
        behaviour[backend["name"]]["prefill_tokens_per_s"] = rate
        if interference:
            share = PREFILL_INTERFERENCE.get(backend["name"], 0.0)
            behaviour[backend["name"]]["prefill_interference"] = share
        if router_knows:
            backend["priors"] = {**backend["priors"], "prefill_tokens_per_s": rate}
    return _fleet(router, behaviour)


def _long_request(rng: random.Random, at: float) -> TraceRequest:
    u = rng.random()
    k = next(i for i, c in enumerate(_LONG_CUM) if u <= c)
    _, low, high, answer, ttft_b, total_b, dc = LONG_MIX[k]
    prompt = int(math.exp(rng.uniform(math.log(low), math.log(high))))
    out = max(1, int(answer * math.exp(0.5 * rng.gauss(0.0, 1.0))))
    return TraceRequest(
        at_s=at,
        prompt_tokens=prompt,
        output_tokens=out,
        max_output_tokens=max(out, answer * 2),
        data_class=dc,
        ttft_budget_ms=ttft_b,
        total_budget_ms=total_b,
    )


def _long_prompts(n: int, seed: int) -> tuple[Fleet, list[TraceRequest]]:
    """Prompts from 100 to 60,000 tokens on backends that read them at their own rate
    (:data:`PREFILL_TOKENS_PER_S`): where a prompt can go within a TTFT budget depends on
    its length."""
    rng = random.Random(seed)
    trace = [_long_request(rng, t) for t in _arrivals(rng, n, lambda t: BASE_RATE, BASE_RATE)]
    return prefill_fleet(), trace


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("steady", "steady mixed traffic at ~70% of the private tiers", _steady),
        Scenario("diurnal", "one day: quiet night, a peak at 1.8x the mean", _diurnal),
        Scenario("gpu-spike", "three 60 s bursts at 4x: the GPU pool fills", _spike),
        Scenario(
            "edge-outage", "both edge devices (one site) down for 20% of the run", _edge_outage
        ),
        Scenario(
            "throttling",
            "the small hosted model answers 429 + Retry-After 20 s, 3 x 2 min",
            _throttling,
        ),
        Scenario(
            "long-conversations",
            "conversations outgrow the edge, then the GPU window",
            _conversations,
        ),
        Scenario(
            "gpu-pool",
            "steady traffic, the GPU tier as 8 replicas of 4 slots: spreading decides",
            _pool,
        ),
        Scenario(
            "gpu-fleet",
            "4x the steady traffic on 32 GPU replicas of 4 slots: router replicas herd",
            _gpu_fleet,
        ),
        Scenario(
            "long-prompts",
            "prompts of 100-60,000 tokens; TTFT grows with the prompt (prefill)",
            _long_prompts,
        ),
    )
}


def build(name: str, requests: int, seed: int = 1) -> tuple[Fleet, list[TraceRequest]]:
    """The fleet and the trace of scenario ``name``."""
    scenario = SCENARIOS.get(name)
    if scenario is None:
        raise ConfigError(
            f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})", key="--scenario"
        )
    if requests < 1:
        raise ConfigError("must be at least 1", key="--requests")
    return scenario.build(requests, seed)
