"""PII guard: what scanning a prompt costs, per 1,000 tokens (taken as 4,000 characters,
English text's average with the usual BPE vocabularies).

Phases (``--phases``, default all):

1. ``scan``: ``router.controls.pii_detect.find`` (every kind) over three generated
   corpora of the same size: ``prose`` (English sentences, a few numbers), ``code`` (JSON,
   logs, versions, timestamps, hashes, paths: digits everywhere, no PII) and ``pii``
   (prose with a PII value every ~250 characters). Reported: the median of
   ``--repeat`` timings, in microseconds per 1k tokens, at 1k, 10k and 100k tokens, and
   what was found (the clean corpora must find nothing).
2. ``kinds``: each kind alone over ``code`` and ``prose`` (1k tokens).
3. ``guard``: ``Guard.apply`` for a one-message request (1k and 10k tokens of ``pii``
   text, action ``redact``) including the redacted copy dispatch would make; then a
   session's hosted copy (100 turns of ~100 tokens) made cold and again (the memo).
4. ``library``: the maintained alternative for the hardest kind, ``phonenumbers``
   (Google's libphonenumber, ``PhoneNumberMatcher``, region US) over the same ``pii``
   corpus, against ours for phones alone. Skipped when it is not installed (it is not a
   dependency; ``pip install phonenumberslite`` into a scratch ``--target`` and put it on
   ``PYTHONPATH`` to run it).
5. ``e2e``: a real router on 127.0.0.1 over a real scripted ModelService server, the same
   1k-token clean prompt sent ``--requests`` times with ``controls.pii`` off and with
   ``route``: time to the first token, p50 and p90, and the difference of the medians.

It measures; it asserts nothing. Usage::

    .venv/bin/python bench/bench_pii.py                    # ~1 minute
    .venv/bin/python bench/bench_pii.py --phases scan,kinds --repeat 50 --stat min
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

from router.config.pii import PiiConfig
from router.controls import pii_detect
from router.controls.pii import Guard, ScanMemo
from router.security.authn import Principal
from router.types import InferenceRequest, Message, Role

CHARS_PER_1K_TOKENS = 4000

_WORDS = (
    "the router picks a backend for each request and streams the answer back while the "
    "policy weighs cost latency and the data class of the prompt against every tier that "
    "could take it then it tries the next one when a backend fails before its first token "
    "we measured the queue the window and the price of each model before we chose"
).split()

_CODE = [
    '{"id": 48213, "ttl_s": 86400, "ratio": 0.6, "at": "2024-05-01T10:30:45Z"}',
    "2024-05-01 10:30:45,123 INFO request_id=9f86d081 backend=gpu-a ttft_ms=41.7",
    "pip install hybrid-router==1.2.3 && make test -j4  # v3.11.4, build 20240501",
    "commit 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12 (HEAD -> main, tag: v0.9.1)",
    "def plan(x: int) -> int:\n    return x * 1_000_000 + 42  # O(n log n), n <= 65536",
    "GET /api/v1/users/12345/orders?page=2&size=50 HTTP/1.1 200 1532 0.004s",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "std::vector<int> v(128); for (auto& x : v) x = rand() % 1000;  // 12:30:45",
]

_PII = [
    "alice.smith@example.com",
    "+44 20 7946 0958",
    "(415) 555-2671",
    "4111 1111 1111 1111",
    "DE89 3704 0044 0532 0130 00",
    "10.20.30.40",
    "2001:db8::8a2e:370:7334",
    "AKIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
]


def _prose(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    n = 0
    while n < chars:
        sentence = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 20)))
        if rng.random() < 0.2:
            sentence += f" in {rng.randint(2, 60)} ms on {rng.randint(1, 28)} May"
        sentence = sentence.capitalize() + ". "
        out.append(sentence)
        n += len(sentence)
    return "".join(out)[:chars]


def corpus(kind: str, chars: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    if kind == "prose":
        return _prose(rng, chars)
    if kind == "code":
        out: list[str] = []
        n = 0
        while n < chars:
            line = rng.choice(_CODE) + "\n"
            out.append(line)
            n += len(line)
        return "".join(out)[:chars]
    # pii: prose with a value every ~250 characters (cut at a sentence, never inside one)
    out = []
    n = 0
    while n < chars:
        piece = _prose(rng, 230) + " " + rng.choice(_PII) + ". "
        out.append(piece)
        n += len(piece)
    return "".join(out)


#: Which statistic of the repeated timings is reported: "median", or "min" (the least
#: disturbed by other load on a shared machine).
STAT = "median"


def _median_us(fn: Callable[[], object], repeat: int) -> float:
    number = 1
    while True:  # enough calls per timing to be above the clock's noise
        t = timeit.timeit(fn, number=number)
        if t > 0.02 or number >= 1000:
            break
        number *= 4
    times = timeit.repeat(fn, number=number, repeat=repeat)
    best = min(times) if STAT == "min" else statistics.median(times)
    return best / number * 1e6


def scan_phase(repeat: int) -> None:
    print("## scan: pii_detect.find, every kind (us per 1k tokens)")
    print("| corpus | 1k tokens | 10k tokens | 100k tokens | found in 1k |")
    print("|---|---|---|---|---|")
    for kind in ("prose", "code", "pii"):
        cells = []
        found = 0
        for ktok in (1, 10, 100):
            text = corpus(kind, ktok * CHARS_PER_1K_TOKENS)
            us = _median_us(lambda text=text: pii_detect.find(text), max(3, repeat // ktok))
            cells.append(f"{us / ktok:.1f}")
            if ktok == 1:
                found = len(pii_detect.find(text))
        print(f"| {kind} | {' | '.join(cells)} | {found} |")


def kinds_phase(repeat: int) -> None:
    print("\n## kinds: one kind alone, 1k tokens (us)")
    print("| kind | prose | code |")
    print("|---|---|---|")
    texts = {k: corpus(k, CHARS_PER_1K_TOKENS) for k in ("prose", "code")}
    for kind in pii_detect.KINDS:
        cells = [
            f"{_median_us(lambda t=texts[c], k=kind: pii_detect.find(t, (k,)), repeat):.1f}"
            for c in ("prose", "code")
        ]
        print(f"| {kind} | {' | '.join(cells)} |")


def guard_phase(repeat: int) -> None:
    print("\n## guard: Guard.apply (+ the redacted copy dispatch makes), per request (us)")
    guard = Guard(PiiConfig.model_validate({"default": {"action": "redact"}}))
    anon = Principal(tenant="")

    async def per_request(request: InferenceRequest, copy: bool, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            out = await guard.apply(anon, request)
            if copy and out.hosted_copy is not None:
                out.hosted_copy(out)
        return (time.perf_counter() - t0) / n * 1e6

    for label, kind, ktok, copy in (
        ("clean prose, 1k tokens", "prose", 1, False),
        ("clean code, 1k tokens", "code", 1, False),
        ("pii, 1k tokens, + redacted copy", "pii", 1, True),
        ("pii, 10k tokens, + redacted copy", "pii", 10, True),
    ):
        text = corpus(kind, ktok * CHARS_PER_1K_TOKENS, seed=ktok)
        request = InferenceRequest(
            messages=(Message(Role.USER, text),), max_output_tokens=64, request_id="b"
        )
        guard.memo = ScanMemo(max_chars=0)  # no memo: each request scans
        n = max(20, 2000 // ktok)
        runs = [asyncio.run(per_request(request, copy, n)) for _ in range(max(3, repeat // 5))]
        us = min(runs) if STAT == "min" else statistics.median(runs)
        print(f"- {label}: {us:.0f} us")
    # A session: 100 stored turns of ~100 tokens; the hosted copy is made on every turn.
    turns = [
        Message(Role.USER if i % 2 == 0 else Role.ASSISTANT, corpus("prose", 400, seed=i))
        for i in range(100)
    ]
    turns.insert(50, Message(Role.USER, "mail alice.smith@example.com"))
    sent = InferenceRequest(messages=tuple(turns), max_output_tokens=64, request_id="s")
    guard.memo = ScanMemo()  # the default memo
    request = InferenceRequest(
        messages=(Message(Role.USER, "go on"),), max_output_tokens=64, request_id="s",
        session_id="s1",
    )  # fmt: skip
    marked = asyncio.run(guard.apply(anon, request))
    copy = marked.hosted_copy
    assert copy is not None

    def cold() -> None:
        guard.memo = ScanMemo()
        copy(sent)

    first = _median_us(cold, repeat)
    again = _median_us(lambda: copy(sent), repeat)
    guard.memo = ScanMemo(max_chars=0)
    none = _median_us(lambda: copy(sent), repeat)
    print(
        f"- a session's hosted copy, 101 turns (~10k tokens): {none:.0f} us without the "
        f"memo; with it {first:.0f} us the first time, then {again:.0f} us (each turn of "
        f"{ScanMemo().min_chars} characters or more is scanned once)"
    )


def library_phase(repeat: int) -> None:
    print("\n## library: phonenumbers (libphonenumber) vs ours, phones only, 1k tokens")
    try:
        import phonenumbers  # type: ignore[import-not-found]
    except ImportError:
        print("- skipped: phonenumbers is not installed (see the module doc)")
        return
    for kind in ("prose", "pii"):
        text = corpus(kind, CHARS_PER_1K_TOKENS)
        lib = _median_us(lambda t=text: list(phonenumbers.PhoneNumberMatcher(t, "US")), repeat)
        ours = _median_us(lambda t=text: pii_detect.find(t, ("phone",)), repeat)
        ours_all = _median_us(lambda t=text: pii_detect.find(t), repeat)
        n_lib = len(list(phonenumbers.PhoneNumberMatcher(text, "US")))
        n_ours = len(pii_detect.find(text, ("phone",)))
        print(
            f"- {kind}: phonenumbers {lib:.0f} us ({n_lib} found); ours, phones "
            f"{ours:.0f} us ({n_ours} found), every kind {ours_all:.0f} us"
        )


async def _e2e(requests: int) -> None:
    import grpc
    from hybrid_router.v1 import router_pb2 as rpb
    from hybrid_router.v1 import router_pb2_grpc
    from hybrid_router.v1 import types_pb2 as tpb

    from router.config import parse_config
    from router.server.app import create_server
    from serving.engines.scripted import ScriptedEngine
    from serving.model_server import create_server as create_model_server

    engine = ScriptedEngine(reply_tokens=4)
    await engine.start()
    ms, port = await create_model_server(engine, "127.0.0.1:0")
    await ms.start()
    backends: list[dict[str, Any]] = [
        {"name": name, "tier": tier, "kind": "model_service", "endpoint": f"127.0.0.1:{port}",
         "model": "scripted", "context_window": 32768, "max_concurrency": 64,
         "priors": {"ttft_ms": 5, "decode_tokens_per_s": 1000},
         "cost": cost}
        for name, tier, cost in (
            ("gpu-1", "gpu", {"gpu_hourly_usd": 50, "gpu_throughput_tokens_per_s": 100,
                              "source": "bench"}),
            ("hosted-1", "hosted", {"input_per_mtok_usd": 0.01, "output_per_mtok_usd": 0.01,
                                    "source": "bench"}),
        )
    ]  # fmt: skip
    prompt = corpus("prose", CHARS_PER_1K_TOKENS)
    routers = {}
    for label, action in (("allow (guard off)", "allow"), ("route", "route")):
        cfg = parse_config(
            {
                "server": {"address": "127.0.0.1:0", "grace_period_s": 1},
                "backends": backends,
                "telemetry": {"logs": {"requests": False}},
                "controls": {"pii": {"default": {"action": action}}},
            },
            source="bench",
        )
        routers[label] = await create_server(cfg)
    results: dict[str, list[float]] = {label: [] for label in routers}
    req = rpb.GenerateRequest(
        messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content=prompt)], max_output_tokens=4
    )
    channels = {
        label: grpc.aio.insecure_channel(f"127.0.0.1:{r.port}") for label, r in routers.items()
    }
    stubs = {label: router_pb2_grpc.InferenceRouterStub(ch) for label, ch in channels.items()}
    # Alternate the two routers request by request: load from elsewhere hits both alike.
    for i in range(requests + 20):
        for label, stub in stubs.items():
            t0 = time.perf_counter()
            call = stub.Generate(req)
            async for ev in call:
                if ev.WhichOneof("event") == "delta":
                    if i >= 20:  # warm-up
                        results[label].append((time.perf_counter() - t0) * 1000)
                    break
            call.cancel()
    for ch in channels.values():
        await ch.close()
    for r in routers.values():
        await r.stop(0)
    await ms.stop(0)
    print("| controls.pii | TTFT p50 (ms) | p90 (ms) |")
    print("|---|---|---|")
    for label, xs in results.items():
        xs.sort()
        print(f"| {label} | {statistics.median(xs):.3f} | {xs[int(len(xs) * 0.9)]:.3f} |")
    off, on = (statistics.median(xs) for xs in results.values())
    print(f"\nroute - allow (medians): {(on - off) * 1000:.0f} us")


def e2e_phase(requests: int) -> None:
    print(f"\n## e2e: TTFT through a real router, 1k-token clean prompt, {requests} requests")
    logging.getLogger("router").setLevel(logging.ERROR)  # the loopback/no-auth warning
    asyncio.run(_e2e(requests))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phases", default="scan,kinds,guard,library,e2e")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument(
        "--stat", choices=("median", "min"), default="median",
        help="of the repeated timings (min: the least disturbed by other load)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    global STAT
    STAT = args.stat
    phases = args.phases.split(",")
    print(
        f"python {sys.version.split()[0]}; 1k tokens = {CHARS_PER_1K_TOKENS} characters; "
        f"{STAT} of the repeated timings\n"
    )
    if "scan" in phases:
        scan_phase(args.repeat)
    if "kinds" in phases:
        kinds_phase(args.repeat)
    if "guard" in phases:
        guard_phase(args.repeat)
    if "library" in phases:
        library_phase(args.repeat)
    if "e2e" in phases:
        e2e_phase(args.requests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
