"""What the demo runs: the stand-ins, the router config and the requests (pure data).

Every stand-in serves the same real model (Gemma 3 270M, Q4_K_M GGUF, llama.cpp on the
CPU); each is given the properties of the tier it poses as, so that the size, latency,
cost and data-class rules each decide something. The figures and why they were chosen
are in docs/demo.md. Context windows are scaled down about 8x from real deployments so
that prompts prefill in seconds on a CPU.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, replace
from typing import Any

from hybrid_router.client import RequestOptions

MODEL = "gemma3-270m"
MODEL_FAMILY = "gemma3"
#: Tokenizer id the router understands: the packaged GGUF's own vocabulary (exact counts).
GGUF_TOKENIZER = {"kind": "gguf", "path": "gemma3-270m"}
PRICE_SOURCE = "illustrative demo figure, not a provider's price list"
#: Seconds between the router's polls of each model server's load (policy.load_poll_interval_s).
LOAD_POLL_INTERVAL_S = 0.25


@dataclass(frozen=True, slots=True)
class StandIn:
    name: str
    tier: str
    #: What it is and what it pretends to be, shown next to it everywhere.
    label: str
    context_window: int
    #: "model_server" (our ModelService over llama.cpp), "openai" (llama_cpp.server) or
    #: "ray_serve" (the GPU tier's Ray Serve app, serving/ray_app, on CPU).
    server: str
    threads: int
    max_decode_tokens_per_s: float = 0.0


EDGE = StandIn(
    name="edge-site-a",
    tier="edge",
    label=(
        "stand-in: local llama.cpp gemma3-270m posing as the edge tier "
        "(ModelService; 512-token window, decode capped at 15 tok/s, one request at a time, "
        "near-zero marginal cost)"
    ),
    context_window=512,
    server="model_server",
    threads=1,
    max_decode_tokens_per_s=15.0,
)
GPU = StandIn(
    name="gpu-pool",
    tier="gpu",
    label=(
        "stand-in: local llama.cpp gemma3-270m posing as the GPU tier "
        "(ModelService like the Ray Serve app; 1024-token window, full CPU speed, "
        "amortised node cost)"
    ),
    context_window=1024,
    server="model_server",
    threads=2,
)
HOSTED = StandIn(
    name="hosted-api",
    tier="hosted",
    label=(
        "stand-in: llama_cpp.server (a real OpenAI-compatible HTTP server) with gemma3-270m "
        "posing as a hosted LLM API (8192-token window, per-token prices)"
    ),
    context_window=8192,
    server="openai",
    threads=2,
)
GPU_RAY = StandIn(
    name="gpu-pool",
    tier="gpu",
    label=(
        "stand-in: the GPU tier's real Ray Serve app (serving/ray_app) on CPU, not a GPU: "
        "ModelService through "
        "Serve's gRPC proxy, 1 replica of llama.cpp gemma3-270m, deployment-wide load "
        "board (1024-token window, amortised node cost)"
    ),
    context_window=1024,
    server="ray_serve",
    threads=2,
)
STAND_INS: tuple[StandIn, ...] = (EDGE, GPU, HOSTED)
#: Name of the Ray Serve application (its load board is "<name>-load").
RAY_APP = "gpu"


#: CPUs below which every stand-in decodes on one thread (:func:`stand_ins`).
MIN_CPUS_FOR_TWO_THREADS = 4


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS tells it, else the count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def stand_ins(ray: bool = False, cpus: int | None = None) -> tuple[StandIn, ...]:
    """The demo's stand-ins; ``ray``: the GPU tier is the real Ray Serve app.

    With fewer than :data:`MIN_CPUS_FOR_TWO_THREADS` CPUs (``cpus``, by default
    :func:`available_cpus`) every stand-in decodes on one thread: llama.cpp's threads wait
    for each other at every step of a token, so two threads on a 2-core machine that
    anything else is using decoded at about 1 token/s in the demo (one thread: its usual
    speed), while on an idle one a second thread is only about 20% faster."""
    chosen = (EDGE, GPU_RAY, HOSTED) if ray else STAND_INS
    if (available_cpus() if cpus is None else cpus) < MIN_CPUS_FOR_TWO_THREADS:
        chosen = tuple(replace(s, threads=1) for s in chosen)
    return chosen


def model_server_argv(s: StandIn, model_path: str) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "serving.model_server",
        "--engine",
        "llamacpp",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--model-path",
        model_path,
        "--model-name",
        MODEL,
        "--model-family",
        MODEL_FAMILY,
        "--replica-id",
        f"demo-{s.name}",
        "--n-ctx",
        str(s.context_window),
        "--n-threads",
        str(s.threads),
        "--grace-s",
        "2",
        "--log-level",
        "WARNING",
    ]
    if s.max_decode_tokens_per_s:
        argv += ["--max-decode-tokens-per-s", f"{s.max_decode_tokens_per_s:g}"]
    return argv


def ray_serve_argv(s: StandIn, model_path: str) -> list[str]:
    """A local Ray instance running the GPU tier's Serve apps; prints READY <grpc port>."""
    engine = {"model_path": model_path, "n_ctx": s.context_window, "n_threads": s.threads}
    return [
        sys.executable,
        "-m",
        "serving.ray_app",
        "--name",
        RAY_APP,
        "--engine",
        "llamacpp",
        "--engine-options",
        json.dumps(engine),
        "--model-id",
        MODEL,
        "--model-family",
        MODEL_FAMILY,
        "--replicas",
        "1",
        "--num-cpus",
        "1",
        # One decoding slot; up to 8 more wait in the replica, where the load board
        # counts them (the router's max_queue for this backend).
        "--max-ongoing-requests",
        "9",
        "--ray-cpus",
        "2",
        "--log-level",
        "WARNING",
    ]


def openai_server_argv(s: StandIn, model_path: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        model_path,
        "--model_alias",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(s.context_window),
        "--n_threads",
        str(s.threads),
        "--n_threads_batch",
        str(s.threads),
        # Same Gemma turn format as serving/engines/prompt.py renders for the others.
        "--chat_format",
        "gemma",
        # Finish every request; by default a new request interrupts the running one.
        "--interrupt_requests",
        "False",
        # Logits for the prompt tokens are not needed and triple the prefill time.
        "--logits_all",
        "False",
        "--use_mlock",
        "False",
        "--verbose",
        "False",
    ]


def router_config(
    ports: dict[str, int],
    address: str = "127.0.0.1:0",
    *,
    ray: bool = False,
    sessions_path: str = "",
) -> dict[str, Any]:
    """The router.yaml of the demo as a mapping (``router.config.parse_config`` input).

    ``ray``: the GPU backend is the Ray Serve app (kind ``ray_serve``: the application
    metadata on each call, the load board's deployment-wide load as its load signal).
    ``sessions_path``: the SQLite file of the demo's sessions (its work directory).
    """
    config: dict[str, Any] = {
        "server": {"address": address, "grace_period_s": 2.0},
        # The conversation keeps its history in the router; older turns are summarised.
        "sessions": {
            "store": "sqlite",
            "sqlite": {"path": sessions_path},
            "strategy": "summarize",
            "summaries": {"max_output_tokens": CONVERSATION_SUMMARY_TOKENS},
        },
        "policy": {
            "objective": "cheapest",
            "max_fallbacks": 2,
            # CPU prefill of a long prompt takes seconds: do not fail over for that.
            "ttft_timeout_ms": 30_000,
            "default_max_output_tokens": 40,
            "min_samples": 3,
            "load_poll_interval_s": LOAD_POLL_INTERVAL_S,
        },
        "backends": [
            {
                "name": EDGE.name,
                "tier": "edge",
                "kind": "model_service",
                "endpoint": f"127.0.0.1:{ports[EDGE.name]}",
                "model": MODEL,
                "model_family": MODEL_FAMILY,
                "capabilities": ["chat"],
                "context_window": EDGE.context_window,
                "max_concurrency": 1,
                "max_queue": 4,
                # Devices sit on customer sites: cleared for public and internal data only.
                "data_classes": ["public", "internal"],
                "priors": {"ttft_ms": 150, "decode_tokens_per_s": 15},
                "cost": {"edge_per_mtok_usd": 0.05, "source": PRICE_SOURCE},
                "tokenizer": GGUF_TOKENIZER,
                "site": "site-a",
                "device_id": "demo-edge-1",
                "description": EDGE.label,
            },
            {
                "name": GPU.name,
                "tier": "gpu",
                "kind": "model_service",
                "endpoint": f"127.0.0.1:{ports[GPU.name]}",
                "model": MODEL,
                "model_family": MODEL_FAMILY,
                "capabilities": ["chat"],
                "context_window": GPU.context_window,
                # llama.cpp decodes one sequence at a time (vLLM on a GPU would batch).
                "max_concurrency": 1,
                "max_queue": 8,
                # Our own VPC: the only tier cleared for restricted data.
                "data_classes": ["public", "internal", "restricted"],
                "priors": {"ttft_ms": 120, "decode_tokens_per_s": 60},
                "cost": {
                    "gpu_hourly_usd": 1.21,
                    "gpu_throughput_tokens_per_s": 400,
                    "gpu_utilization": 0.6,
                    "gpu_prefill_ratio": 0.1,
                    "source": PRICE_SOURCE,
                },
                "tokenizer": GGUF_TOKENIZER,
                "description": GPU.label,
            },
            {
                "name": HOSTED.name,
                "tier": "hosted",
                "kind": "openai",
                "endpoint": f"http://127.0.0.1:{ports[HOSTED.name]}/v1",
                "model": MODEL,
                "model_family": MODEL_FAMILY,
                "capabilities": ["chat", "long-context"],
                "context_window": HOSTED.context_window,
                "max_concurrency": 4,
                "max_queue": 16,
                "data_classes": ["public", "internal"],
                "priors": {"ttft_ms": 400, "decode_tokens_per_s": 50},
                "cost": {
                    "input_per_mtok_usd": 1.0,
                    "output_per_mtok_usd": 4.0,
                    "source": PRICE_SOURCE,
                },
                # A hosted API's tokenizer is not available offline: the router estimates.
                "tokenizer": {"kind": "estimate"},
                "timeout_s": 60,
                "description": HOSTED.label,
            },
        ],
    }
    if ray:
        gpu = next(b for b in config["backends"] if b["name"] == GPU_RAY.name)
        gpu.update(kind="ray_serve", serve_application=RAY_APP, description=GPU_RAY.label)
    return config


# --- requests ------------------------------------------------------------------------

_NOTES = (
    "blade pitch recalibrated",
    "no faults",
    "gearbox oil topped up",
    "yaw motor noise checked",
    "sensor firmware updated",
    "icing alarm cleared",
    "brake pads inspected",
    "grid curtailment in the evening",
)


def maintenance_log(days: int) -> str:
    """A plain-text log (about 38 tokens a day) ending where a summary should start."""
    lines = ["Maintenance log, wind farm North Ridge."]
    for d in range(1, days + 1):
        lines.append(
            f"Day {d}: turbine T-{10 + d % 7} ran {14 + (d * 5) % 10} hours, produced "
            f"{20 + (d * 37) % 41} MWh, vibration {1 + (d * 3) % 9 / 10:.1f} mm/s; "
            f"{_NOTES[d % len(_NOTES)]}."
        )
    lines.append("Summary of the month:")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    title: str
    #: The rule this request is meant to exercise, in words.
    rule: str
    #: Tiers the demo expects the request to go to ("refused": an error is expected).
    expected: tuple[str, ...]
    options: RequestOptions
    #: "generate" streams the answer; "route" asks for the decision only.
    mode: str = "generate"


#: ~616 tokens: over the edge window (512), inside the GPU window (1024).
LONG_PROMPT_DAYS = 16
#: ~1100 tokens: over the GPU window (1024), inside the hosted window (8192).
HUGE_PROMPT_DAYS = 29


#: Sampling for every demo request: a base model rambles less at a lower temperature, and
#: a fixed seed makes a run repeatable on one machine.
TEMPERATURE = 0.5
SEED = 1


def _request(**kw: Any) -> RequestOptions:
    kw.setdefault("temperature", TEMPERATURE)
    return RequestOptions(seed=SEED, **kw)


def scenarios() -> tuple[Scenario, ...]:
    huge = maintenance_log(HUGE_PROMPT_DAYS)
    return (
        Scenario(
            key="small-public",
            title="short public prompt, loose budget (20 s)",
            rule="cost: every tier fits and meets the budget; the edge device costs least",
            expected=("edge",),
            options=_request(
                prompt="Once upon a time, in a small village by the sea,",
                data_class="public",
                max_output_tokens=40,
                total_budget_ms=20_000,
                request_id="demo-small-public",
            ),
        ),
        Scenario(
            key="restricted",
            title="restricted data",
            rule="data class: only the GPU tier (our VPC) may see restricted data",
            expected=("gpu",),
            options=_request(
                prompt="Internal memo, restricted: the new product launch is planned for",
                data_class="restricted",
                max_output_tokens=40,
                request_id="demo-restricted",
            ),
        ),
        Scenario(
            key="long-prompt",
            title="long prompt (~600 tokens): over the edge window",
            rule="size: prompt + max output exceed the edge's 512 tokens; GPU is next cheapest",
            expected=("gpu",),
            options=_request(
                prompt=maintenance_log(LONG_PROMPT_DAYS),
                data_class="public",
                max_output_tokens=40,
                request_id="demo-long-prompt",
            ),
        ),
        Scenario(
            key="tight-latency",
            title="answer within 2.5 s (48 tokens)",
            rule="latency: the edge decodes at 15 tok/s and misses the budget; GPU meets it",
            expected=("gpu",),
            options=_request(
                prompt="The best way to learn a new language is",
                data_class="public",
                max_output_tokens=48,
                total_budget_ms=2_500,
                request_id="demo-tight-latency",
            ),
        ),
        Scenario(
            key="huge-prompt",
            title="very long prompt (~1,100 tokens): over the GPU window",
            rule="size: only the hosted API's window (8192) fits; it costs most but is the one",
            expected=("hosted",),
            options=_request(
                prompt=huge,
                data_class="public",
                max_output_tokens=40,
                request_id="demo-huge-prompt",
            ),
        ),
        Scenario(
            key="huge-restricted",
            title="the same very long prompt, but restricted (dry run)",
            rule="data class beats size: restricted data is refused rather than sent to hosted",
            expected=("refused",),
            options=_request(
                prompt=huge,
                data_class="restricted",
                max_output_tokens=40,
                request_id="demo-huge-restricted",
            ),
            mode="route",
        ),
    )


#: The conversation: one session, a site report per turn (~120 tokens each with its
#: answer); by the fourth turn the history outgrows the edge's 512-token window.
CONVERSATION_SESSION = "demo-conversation"
CONVERSATION_TURNS = 7
CONVERSATION_SUMMARY_TOKENS = 48


def conversation_turns() -> tuple[RequestOptions, ...]:
    """The conversation's turns: only the new turn each time (the router keeps the rest)."""
    out = []
    for i in range(CONVERSATION_TURNS):
        day = 3 * i
        lines = [
            f"Day {day + d}: turbine T-{10 + (day + d) % 7} produced "
            f"{20 + ((day + d) * 37) % 41} MWh; {_NOTES[(day + d) % len(_NOTES)]}."
            for d in range(1, 4)
        ]
        out.append(
            _request(
                prompt=f"Site report {i + 1}, wind farm North Ridge.\n"
                + "\n".join(lines)
                + "\nWhat stands out so far:",
                data_class="public",
                max_output_tokens=40,
                session_id=CONVERSATION_SESSION,
                request_id=f"demo-conversation-{i + 1}",
            )
        )
    return tuple(out)


#: The request whose decision the burst changes (TTFT budget of 1 s).
def burst_probe(request_id: str) -> RequestOptions:
    return _request(
        prompt="The old lighthouse keeper looked at the storm and",
        data_class="public",
        max_output_tokens=32,
        ttft_budget_ms=1_000,
        request_id=request_id,
    )


BURST_SIZE = 3


def burst_requests() -> tuple[RequestOptions, ...]:
    """Requests pinned to the edge tier to load it (each ~2 s at 15 tok/s)."""
    prompts = (
        "The tallest mountain in the world is",
        "A good breakfast includes",
        "The river flows through the valley and",
    )
    return tuple(
        _request(
            prompt=prompts[i % len(prompts)],
            data_class="public",
            max_output_tokens=32,
            pin_tiers=("edge",),
            request_id=f"demo-burst-{i + 1}",
        )
        for i in range(BURST_SIZE)
    )


# --- the tool round trip (docs/tools.md) -------------------------------------------------

TOOL_QUESTION = "How much did turbine T-12 produce yesterday? Use the tool."
TURBINE_TOOL = {
    "name": "turbine_output",
    "description": "Energy a wind turbine produced yesterday, in MWh",
    "parameters": {
        "type": "object",
        "properties": {"turbine": {"type": "string", "description": "e.g. T-12"}},
        "required": ["turbine"],
    },
}
#: The JSON answer after the tool's result: the real model is held to this schema.
REPORT_SCHEMA = {
    "type": "object",
    "properties": {
        "turbine": {"type": "string"},
        "mwh": {"type": "number"},
        "summary": {"type": "string", "maxLength": 80},
    },
    "required": ["turbine", "mwh", "summary"],
}


def run_turbine_tool(arguments: str) -> str:
    """The demo's tool: a fixed reading for whatever turbine the model asked about."""
    import json

    try:
        turbine = str(json.loads(arguments).get("turbine", "T-12"))
    except (ValueError, AttributeError):
        turbine = "T-12"
    return json.dumps({"turbine": turbine, "mwh": 41.5, "note": "gearbox vibration normal"})


def tool_call_request() -> RequestOptions:
    """1/2: the model must call the tool (a grammar holds llama.cpp to the call's shape)."""
    return _request(
        prompt=TOOL_QUESTION,
        data_class="public",
        max_output_tokens=64,
        temperature=0.0,
        pin_tiers=("gpu",),
        tools=(TURBINE_TOOL,),
        tool_choice="required",
        request_id="demo-tool-call",
    )


def tool_answer_request(call_id: str, name: str, arguments: str) -> RequestOptions:
    """2/2: the tool's result goes back; the answer must be JSON valid for REPORT_SCHEMA."""
    return _request(
        messages=(
            ("user", TOOL_QUESTION),
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": call_id, "function": {"name": name, "arguments": arguments}}],
            },
            {"role": "tool", "tool_call_id": call_id, "content": run_turbine_tool(arguments)},
        ),
        data_class="public",
        max_output_tokens=128,
        temperature=0.0,  # greedy: the answer under its grammar is the same every run
        pin_tiers=("gpu",),
        tools=(TURBINE_TOOL,),
        tool_choice="none",
        json_schema=REPORT_SCHEMA,
        validate_before_streaming=True,
        request_id="demo-tool-answer",
    )
