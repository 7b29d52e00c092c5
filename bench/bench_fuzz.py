"""Reliability: a live router under generated bad input (BENCHMARKS.md, Reliability).

Starts a scripted model server and ``hybrid-router serve`` (separate processes, 127.0.0.1),
then sends ``--requests`` generated requests to ``Generate`` and ``Route`` (and a few
``SessionService`` calls) from ``--concurrency`` concurrent callers, as raw bytes:

- ``random``: random bytes (0-600 of them);
- ``mutated``: a valid request (from a pool of realistic ones: tools, schemas, sessions,
  templates, pins, budgets) with bytes flipped, inserted, deleted or cut;
- ``boundary``: valid protobuf with values the router must refuse or clamp cleanly: the
  largest numbers, NaN and infinities, unknown enum numbers, huge repeated fields, long
  strings, deeply nested JSON schemas, invalid session ids and template names.

It prints the statuses seen per kind, every INTERNAL / UNKNOWN with its details (the
target is none), whether the router is still alive and answering, and its RSS, read every 1% of the
run: the median of the readings from 10% to 30% (after the warm-up) against the median of
the last 20% (target: under 10% growth; single readings swing by about 10% either way as
the allocator takes and returns multi-megabyte requests). Exit status 1 when a target is
missed.

    .venv/bin/python bench/bench_fuzz.py                      # 100,000 requests
    .venv/bin/python bench/bench_fuzz.py --requests 5000 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import procs
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb

GENERATE = "/hybrid_router.v1.InferenceRouter/Generate"
ROUTE = "/hybrid_router.v1.InferenceRouter/Route"
SESSION_METHODS = (
    "/hybrid_router.v1.SessionService/GetSession",
    "/hybrid_router.v1.SessionService/CreateSession",
    "/hybrid_router.v1.SessionService/ListSessions",
)
BAD_CODES = ("INTERNAL", "UNKNOWN")


# --- request generators ------------------------------------------------------------------


def _valid_pool() -> list[bytes]:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    pool = [
        rpb.GenerateRequest(messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content="hello")]),
        rpb.GenerateRequest(
            messages=[
                tpb.ChatMessage(role=tpb.ROLE_SYSTEM, content="be brief"),
                tpb.ChatMessage(role=tpb.ROLE_USER, content="weather in Oslo?"),
            ],
            max_output_tokens=16,
            sampling=tpb.SamplingParams(temperature=0.5, top_p=0.9, seed=7, stop=["\n"]),
            latency_budget=rpb.LatencyBudget(ttft_ms=500, total_ms=3000),
            max_cost_usd=0.01,
            data_class=tpb.DATA_CLASS_PUBLIC,
            pin_tiers=[tpb.TIER_GPU],
            exclude_backends=["none"],
            objective=rpb.OBJECTIVE_FASTEST,
        ),
        rpb.GenerateRequest(
            messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content="call a tool")],
            tools=[tpb.ToolDefinition(name="get_weather", parameters_json=json.dumps(schema))],
            tool_choice=tpb.ToolChoice(mode=tpb.TOOL_CHOICE_MODE_REQUIRED),
        ),
        rpb.GenerateRequest(
            messages=[
                tpb.ChatMessage(role=tpb.ROLE_USER, content="q"),
                tpb.ChatMessage(
                    role=tpb.ROLE_ASSISTANT,
                    tool_calls=[tpb.ToolCall(id="c1", name="f", arguments='{"a": 1}')],
                ),
                tpb.ChatMessage(role=tpb.ROLE_TOOL, tool_call_id="c1", content="42"),
            ],
            response_format=tpb.ResponseFormat(
                type=tpb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema_json=json.dumps(schema)
            ),
            validate_before_streaming=True,
        ),
        rpb.GenerateRequest(
            messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content="next turn")],
            session_id="fuzz-session-1",
        ),
        rpb.GenerateRequest(template="greeting", template_variables={"name": "Ada"}),
    ]
    return [r.SerializeToString() for r in pool]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if op < 0.4 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op < 0.6:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        elif op < 0.8 and b:
            del b[rng.randrange(len(b))]
        elif b:
            del b[rng.randrange(len(b)) :]
    return bytes(b)


def _nested(depth: int) -> str:
    return '{"type": "object", "properties": {"a": ' * depth + "{}" + "}}" * depth


def _boundary(rng: random.Random) -> bytes:
    big = 2**32 - 1
    floats = [float("nan"), float("inf"), -float("inf"), 3.4e38, -1.0, 0.0, 1e-45]
    msg = tpb.ChatMessage(role=rng.choice([0, 1, 2, 3, 4, 5, 99, 2**31 - 1]), content="x")
    req = rpb.GenerateRequest(messages=[msg])
    choice = rng.randrange(14)
    if choice == 0:
        req.max_output_tokens = rng.choice([big, 2**31, 1_000_000])
    elif choice == 1:
        req.sampling.temperature = rng.choice(floats)
        req.sampling.top_p = rng.choice(floats)
    elif choice == 2:
        req.max_cost_usd = rng.choice([*floats, 1e308])
    elif choice == 3:
        req.data_class = rng.choice([4, 99, -1, 2**31 - 1])  # type: ignore[assignment]
        req.objective = rng.choice([4, 99, -5])  # type: ignore[assignment]
    elif choice == 4:
        req.pin_tiers.extend([rng.choice([0, 4, 5, 99]) for _ in range(rng.randint(1, 50))])
        req.exclude_tiers.extend([rng.choice([0, 4, 7]) for _ in range(3)])
    elif choice == 5:
        req.pin_backends.extend(["b" * rng.choice([0, 65, 10_000])] * rng.randint(1, 500))
    elif choice == 6:
        req.sampling.stop.extend(["s"] * rng.randint(9, 5000))
    elif choice == 7:
        req.messages.extend([tpb.ChatMessage(role=tpb.ROLE_USER, content="m")] * 2000)
    elif choice == 8:
        req.messages[0].content = "\u0000" * rng.randint(1, 50_000)
    elif choice == 9:
        depth = rng.choice([50, 500, 5000])
        req.tools.add(name="deep", parameters_json=_nested(depth))
    elif choice == 10:
        req.response_format.type = rng.choice([2, 3, 9])  # type: ignore[assignment]
        req.response_format.schema_json = rng.choice(
            ["", "{", "[]", '{"type": 5}', _nested(3000), "1" * 100_000]
        )
    elif choice == 11:
        req.session_id = rng.choice(["", "a" * 129, "bad id!", "\u00e9" * 40, "../../etc"])
        req.context_strategy = rng.choice([1, 2, 3, 9])  # type: ignore[assignment]
    elif choice == 12:
        req.template = rng.choice(["", "x" * 200, "no-such", "../t"])
        req.template_version = rng.choice(["", "v" * 100, "1"])
        req.template_variables["k" * rng.randint(1, 300)] = "v" * rng.randint(0, 10_000)
    else:
        req.tools.extend(
            [tpb.ToolDefinition(name=f"t{i}", parameters_json="{}") for i in range(300)]
        )
        req.tool_choice.mode = rng.choice([1, 2, 3, 4, 9])  # type: ignore[assignment]
        req.tool_choice.name = rng.choice(["", "t1", "zzz"])
    return req.SerializeToString()


def generate_case(rng: random.Random, pool: list[bytes]) -> tuple[str, str, bytes]:
    """(kind, method, bytes) of one case."""
    r = rng.random()
    if r < 0.3:
        kind, body = "random", rng.randbytes(rng.randint(0, 600))
    elif r < 0.7:
        kind, body = "mutated", _mutate(rng, rng.choice(pool))
    else:
        kind, body = "boundary", _boundary(rng)
    m = rng.random()
    method = GENERATE if m < 0.6 else ROUTE if m < 0.95 else rng.choice(SESSION_METHODS)
    return kind, method, body


# --- the run -------------------------------------------------------------------------------


async def _fire(
    channel: grpc.aio.Channel, method: str, body: bytes, timeout: float
) -> tuple[str, str]:
    ident = bytes  # the requests and responses stay raw bytes
    try:
        if method == GENERATE:
            call = channel.unary_stream(
                method, request_serializer=ident, response_deserializer=ident
            )
            async for _ in call(body, timeout=timeout):
                pass
        else:
            unary = channel.unary_unary(
                method, request_serializer=ident, response_deserializer=ident
            )
            await unary(body, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, exc.details() or ""
    return "OK", ""


async def run_load(address: str, args: argparse.Namespace, router_pid: int) -> dict[str, Any]:
    rng = random.Random(args.seed)
    pool = _valid_pool()
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    bad: list[dict[str, str]] = []
    done = 0
    rss_curve: list[tuple[int, int]] = []
    t0 = time.monotonic()
    queue: asyncio.Queue[tuple[str, str, bytes] | None] = asyncio.Queue(maxsize=1000)

    async def producer() -> None:
        for _ in range(args.requests):
            await queue.put(generate_case(rng, pool))
        for _ in range(args.concurrency):
            await queue.put(None)

    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as channel:

        async def worker() -> None:
            nonlocal done
            while (case := await queue.get()) is not None:
                kind, method, body = case
                code, details = await _fire(channel, method, body, args.timeout)
                counts[kind][code] += 1
                if code in BAD_CODES and len(bad) < 50:
                    bad.append({"kind": kind, "method": method, "code": code, "details": details})
                done += 1
                if done % max(1, args.requests // 100) == 0:
                    rss_curve.append((done, procs.rss_kb(router_pid)))
                if done % max(1, args.requests // 20) == 0:
                    rate = done / (time.monotonic() - t0)
                    rss = rss_curve[-1][1] if rss_curve else 0
                    print(
                        f"  {done:,}/{args.requests:,} ({rate:,.0f}/s, rss {rss:,} kB)", flush=True
                    )

        await asyncio.gather(producer(), *(worker() for _ in range(args.concurrency)))
        alive_code, _ = await _fire(
            channel,
            GENERATE,
            rpb.GenerateRequest(
                messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content="still there?")]
            ).SerializeToString(),
            10.0,
        )
    elapsed = time.monotonic() - t0
    # Single readings swing by +-10% with the large (multi-megabyte) requests the
    # allocator takes and returns, so compare medians: 10-30% of the run (after the
    # warm-up) against the last 20%.
    n = len(rss_curve)
    warm = [r for d, r in rss_curve if args.requests * 0.1 <= d <= args.requests * 0.3]
    late = [r for _, r in rss_curve[n - max(1, n // 5) :]] if n else []
    rss_warm = int(statistics.median(warm)) if warm else 0
    rss_end = int(statistics.median(late)) if late else procs.rss_kb(router_pid)
    total_bad = sum(c[code] for c in counts.values() for code in BAD_CODES)
    return {
        "requests": args.requests,
        "seconds": round(elapsed, 1),
        "per_second": round(args.requests / elapsed),
        "statuses": {k: dict(v.most_common()) for k, v in sorted(counts.items())},
        "internal_or_unknown": total_bad,
        "examples": bad[:10],
        "alive_after": alive_code == "OK",
        "rss_kb_after_warmup": rss_warm,
        "rss_kb_end": rss_end,
        "rss_kb_max": max((r for _, r in rss_curve), default=0),
        "rss_kb_curve": rss_curve[:: max(1, n // 20)],
        "rss_growth_pct": round(100.0 * (rss_end - rss_warm) / rss_warm, 1) if rss_warm else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    backend, bport = procs.scripted_backend(work, "--tokens-per-s", "0", "--reply-tokens", "4")
    router, rport = procs.router(work, bport)
    try:
        print(f"fuzzing 127.0.0.1:{rport} with {args.requests:,} requests", flush=True)
        res = asyncio.run(run_load(f"127.0.0.1:{rport}", args, router.pid))
        res["router_exit"] = router.poll()
    finally:
        procs.stop(router, backend)
    log = (work / "router.log").read_text(errors="replace")
    res["router_log_tracebacks"] = log.count("Traceback")
    res["router_log_lines"] = log.count("\n")
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    ok = (
        res["internal_or_unknown"] == 0
        and res["alive_after"]
        and (res["rss_growth_pct"] or 0) < 10
        and res["router_log_tracebacks"] == 0
    )
    print("targets:", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
