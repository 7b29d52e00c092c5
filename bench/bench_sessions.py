"""Sessions: what a session turn adds to TTFT, per store, and how long fitting takes.

1. ``ttft``: a real router and a real scripted ModelService server (TTFT 0, as fast as
   read), in this process, and a grpc.aio client. For each store (SQLite file,
   ``redis-server`` on loopback, DynamoDB on a local moto server) and each concurrency
   (``--concurrency``, default 1 and 64), N sessions each run ``--turns`` turns back to back;
   alongside, in the same run, the same number of stateless streams send the same prompts
   (the history the session turn would carry, sent whole). TTFT = call start -> first
   delta. Reported: p50/p90 of both and the difference of the medians ("added"). The
   difference includes the store read before the decision and the fitting; the append
   happens after the answer, so it is outside TTFT (its own median is reported).
2. ``fitting``: ``Conversation.fit`` for histories of 10, 100 and 1,000 turns against
   three backends of different windows (estimate tokenizer): cold (first call: every turn
   counted) and warm (counts cached, as on every later turn), and the pure ``fit()``.

It measures; it asserts nothing. Usage::

    .venv/bin/python bench/bench_sessions.py                    # ~2 minutes
    .venv/bin/python bench/bench_sessions.py --stores sqlite --concurrency 1 --turns 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import router_pb2_grpc
from hybrid_router.v1 import types_pb2 as tpb

from router.config import parse_config
from router.server.app import create_server
from serving.engines.scripted import ScriptedEngine
from serving.model_server import create_server as create_model_server

_SERIAL_MOTO = """
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app,
)
app = DomainDispatcherApplication(create_backend_app)
run_simple(sys.argv[1], int(sys.argv[2]), app, threaded=False,
           request_handler=MotoRequestHandler)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not open port {port} in 60 s")


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found: apt-get install redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_port(port, proc, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def moto_dynamodb() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERIAL_MOTO, "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_port(port, proc, "moto")
        url = f"http://127.0.0.1:{port}"
        import boto3

        from router.sessions.dynamodb import create_table

        client = boto3.client(
            "dynamodb", region_name="us-east-1", endpoint_url=url,
            aws_access_key_id="bench", aws_secret_access_key="bench",
        )  # fmt: skip
        create_table(client, "bench-sessions")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _chat(role: int, text: str) -> tpb.ChatMessage:
    return tpb.ChatMessage(role=role, content=text)


async def _ttft(stub: Any, request: rpb.GenerateRequest) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    first = None
    text: list[str] = []
    async for ev in stub.Generate(request):
        if ev.HasField("delta"):
            if first is None:
                first = time.perf_counter() - t0
            text.append(ev.delta.text)
    assert first is not None
    return first * 1000.0, text


async def run_ttft(store: str, sessions_cfg: dict[str, Any], concurrency: int, turns: int) -> dict:
    engine = ScriptedEngine(reply_tokens=8, max_concurrency=4096)
    await engine.start()
    ms, port = await create_model_server(engine, "127.0.0.1:0")
    await ms.start()
    cfg = parse_config(
        {
            "server": {"address": "127.0.0.1:0"},
            "backends": [
                {"name": "gpu-1", "tier": "gpu", "kind": "model_service",
                 "endpoint": f"127.0.0.1:{port}", "model": "scripted",
                 "context_window": 8192, "max_concurrency": 4096, "max_queue": 0,
                 "priors": {"ttft_ms": 10, "decode_tokens_per_s": 1000},
                 "cost": {"gpu_hourly_usd": 1, "gpu_throughput_tokens_per_s": 1000,
                          "source": "bench"}},
            ],
            "sessions": sessions_cfg,
        },
        source="bench",
    )  # fmt: skip
    router = await create_server(cfg)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{router.port}")
    stub = router_pb2_grpc.InferenceRouterStub(channel)
    session_ttft: list[float] = []
    stateless_ttft: list[float] = []
    prefix = f"{store}-{concurrency}-{time.monotonic_ns()}"

    async def conversation(i: int) -> None:
        history: list[tpb.ChatMessage] = []
        sid = f"{prefix}-{i}"
        for t in range(turns):
            new = _chat(tpb.ROLE_USER, f"turn {t} of session {i}: tell me more about item {t}")
            ttft, text = await _ttft(
                stub, rpb.GenerateRequest(messages=[new], session_id=sid, max_output_tokens=8)
            )
            session_ttft.append(ttft)
            # The same prompt without a session: the whole history sent by the caller.
            ttft2, _ = await _ttft(
                stub, rpb.GenerateRequest(messages=[*history, new], max_output_tokens=8)
            )
            stateless_ttft.append(ttft2)
            history += [new, _chat(tpb.ROLE_ASSISTANT, "".join(text))]

    try:
        await asyncio.gather(*(conversation(i) for i in range(concurrency)))
    finally:
        await channel.close()
        await router.stop(0)
        await ms.stop(0)
    s50, n50 = statistics.median(session_ttft), statistics.median(stateless_ttft)
    return {
        "store": store,
        "concurrency": concurrency,
        "turns": len(session_ttft),
        "session_p50_ms": s50,
        "session_p90_ms": _pct(session_ttft, 0.9),
        "stateless_p50_ms": n50,
        "stateless_p90_ms": _pct(stateless_ttft, 0.9),
        "added_p50_ms": s50 - n50,
    }


def run_fitting(rounds: int) -> list[dict]:
    from router.config import PolicyConfig, SessionsConfig
    from router.sessions.context import Conversation, Sessions
    from router.sessions.fitting import fit
    from router.sessions.model import Session, SessionInfo, Turn
    from router.tokenizers import Tokenizers
    from router.types import (
        BackendSnapshot,
        BackendSpec,
        InferenceRequest,
        Message,
        Priors,
        Role,
        Tier,
    )

    def spec(name: str, window: int) -> tuple[BackendSpec, BackendSnapshot]:
        return (
            BackendSpec(name=name, tier=Tier.GPU, kind="model_service", endpoint="x", model="m",
                        context_window=window, max_payload_bytes=10**8, max_concurrency=1,
                        max_queue=0, data_classes=frozenset(), priors=Priors(10, 10)),
            BackendSnapshot(name=name),
        )  # fmt: skip

    pairs = [spec("edge", 2048), spec("gpu", 16384), spec("hosted", 200_000)]
    out = []
    for n in (10, 100, 1000):
        turns = tuple(
            Turn(role="user" if i % 2 == 0 else "assistant",
                 content=f"turn {i}: " + "some words of the conversation " * 6, seq=i)
            for i in range(n)
        )  # fmt: skip
        info = SessionInfo("t", f"s{n}", 1, 1, 10**15, 86400, turn_count=n)
        request = InferenceRequest(
            messages=(Message(Role.USER, "and the next question?"),),
            max_output_tokens=256, request_id="r", session_id=f"s{n}",
        )  # fmt: skip
        cold, warm, pure = [], [], []
        for _ in range(rounds):
            sessions = Sessions(None, SessionsConfig(), Tokenizers(PolicyConfig().token_estimate))  # type: ignore[arg-type]
            conv = Conversation(sessions, request, Session(info, turns), None, "sliding", False)
            t0 = time.perf_counter()
            conv.fit(pairs, 256)
            cold.append((time.perf_counter() - t0) * 1000)
            conv2 = Conversation(sessions, request, Session(info, turns), None, "sliding", False)
            t0 = time.perf_counter()
            conv2.fit(pairs, 256)
            warm.append((time.perf_counter() - t0) * 1000)
            counts = [40] * n
            roles = [t.role for t in turns]
            t0 = time.perf_counter()
            fit(counts, roles, fixed=20, budget=2048 - 256, strategy="sliding")
            pure.append((time.perf_counter() - t0) * 1000)
        out.append(
            {
                "turns": n,
                "cold_p50_ms": statistics.median(cold),
                "warm_p50_ms": statistics.median(warm),
                "pure_fit_p50_ms": statistics.median(pure),
            }
        )
    return out


async def main_async(args: argparse.Namespace) -> None:
    results = {"ttft": [], "fitting": run_fitting(args.fit_rounds)}
    for row in results["fitting"]:
        print(
            f"fitting {row['turns']:>5} turns x 3 backends: cold {row['cold_p50_ms']:.3f} ms, "
            f"warm {row['warm_p50_ms']:.3f} ms, pure fit() {row['pure_fit_p50_ms']:.4f} ms",
            flush=True,
        )
    with (
        tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        stores: dict[str, dict[str, Any]] = {}
        for store in args.stores.split(","):
            if store == "sqlite":
                stores[store] = {"store": "sqlite", "sqlite": {"path": f"{tmp}/s.sqlite3"}}
            elif store == "redis":
                url = stack.enter_context(redis_server(Path(tmp)))
                stores[store] = {"store": "redis", "redis": {"url": url}}
            elif store == "dynamodb":
                url = stack.enter_context(moto_dynamodb())
                os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
                os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
                table = {"table": "bench-sessions", "region": "us-east-1", "endpoint_url": url}
                stores[store] = {"store": "dynamodb", "dynamodb": table}
            else:
                raise SystemExit(f"--stores: unknown store {store!r} (sqlite, redis, dynamodb)")
        for store, scfg in stores.items():
            for c in (int(x) for x in args.concurrency.split(",")):
                row = await run_ttft(store, scfg, c, args.turns)
                results["ttft"].append(row)
                print(
                    f"ttft {store:>8} x{c:<3} session p50 {row['session_p50_ms']:.2f} ms "
                    f"(p90 {row['session_p90_ms']:.2f}) · stateless p50 "
                    f"{row['stateless_p50_ms']:.2f} ms (p90 {row['stateless_p90_ms']:.2f}) · "
                    f"added p50 {row['added_p50_ms']:+.2f} ms · {row['turns']} turns",
                    flush=True,
                )
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(results, indent=2))


def main() -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)  # the routers' start-up notices are not figures
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--stores", default="sqlite,redis,dynamodb")
    p.add_argument("--concurrency", default="1,64", help="sessions at once (comma list)")
    p.add_argument("--turns", type=int, default=10, help="turns per session")
    p.add_argument("--fit-rounds", type=int, default=30)
    p.add_argument("--json", metavar="FILE")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
