"""Hosted-path overhead: what the router adds in front of an OpenAI-compatible or Anthropic
HTTP upstream, beside what it adds in front of a ModelService backend, in one run.

Separate processes, all on 127.0.0.1 (the process, sampling and statistics helpers are
bench/bench_overhead.py's):

- the upstream (``_upstream`` mode of this script, uvloop): one HTTP/1.1 server that speaks
  both wire formats, ``POST /v1/chat/completions`` (OpenAI: ``data: {chunk}`` events, a
  usage chunk, ``data: [DONE]``) and ``POST /v1/messages`` (Anthropic: ``message_start``,
  ``content_block_start``, ``content_block_delta`` ... ``message_stop``), chunked transfer
  encoding, keep-alive, provider-like response headers. Each request waits a fixed TTFT
  (``--ttft-ms``, default 20), then writes the status line, the headers, the opening events
  and the first token in one write, then one event per token at ``--tokens-per-s`` per
  stream, ``max_tokens`` tokens;
- the ModelService backend: ``python -m serving.model_server --engine scripted --ttft-ms
  20 --tokens-per-s R`` (the same TTFT and rate, over gRPC);
- routers: ``hybrid-router serve`` with one backend each: ``openai`` and ``anthropic`` (the
  upstream) and ``model_service`` (the scripted server); with ``--baseline-src DIR`` also an
  ``openai`` and an ``anthropic`` router from that source tree ("before");
- floor relays (bench-only yardsticks): ``ms-floor`` is bench_overhead.py's do-nothing
  grpc.aio relay to the ModelService backend; ``http-floor`` (``_floor_http``) is a
  do-nothing grpc.aio relay to the HTTP upstream (raw socket, chunked framing only, one
  fixed delta per body chunk, no SSE or JSON parsing);
- the load generators: routed calls use bench_overhead.py's ``_loadgen`` (grpc.aio on raw
  bytes); ``direct`` for the HTTP paths is this script's ``_httpgen`` (asyncio streams on
  raw sockets, one keep-alive connection per stream, the chunked body read frame by frame:
  about the least a Python client can do); ``direct`` for ModelService is ``_loadgen``'s
  direct mode.

TTFT = call start -> first token (routed: first delta event; direct HTTP: the first body
chunk, which carries the first token). "added" = routed TTFT p50 - direct TTFT p50 of the
same upstream, measured in the same run. The two "direct" clients are not alike (a grpc.aio
call costs more than a raw HTTP socket), so "added" is not comparable between the gRPC and
the HTTP paths; "routed - floor" is: what the router adds beyond the least a Python
grpc.aio relay to the same upstream costs. Every path of one stream count runs in rotating
order (``--rounds``), the tables show medians over rounds.

Phase ``clients`` (``--phases clients``): the HTTP clients (httpx, aiohttp, a raw socket)
and the adapters themselves in one process on uvloop, one request at a time against the
upstream without TTFT or pacing: CPU per request at ``--client-tokens`` tokens and, from
their difference, per token; the adapters also from ``--baseline-src``.

It measures; it asserts nothing. Usage::

    .venv/bin/python bench/bench_hosted_overhead.py --quick
    .venv/bin/python bench/bench_hosted_overhead.py --phases clients,latency \\
        --baseline-src /tmp/hosted_base --rounds 3 --nice -5

A baseline tree: the working tree with the adapters' files from a commit (BENCHMARKS.md,
"Hosted path overhead", has the commands).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_overhead as bo  # noqa: E402  (sibling script: process and statistics helpers)

REPO = Path(__file__).resolve().parents[1]
THIS = str(Path(__file__).resolve())
PROMPT = "hello world"
ANTHROPIC_KEY_ENV = "BENCH_HOSTED_ANTHROPIC_KEY"

# --------------------------------------------------------------------------------------
# the upstream (child process: ``bench_hosted_overhead.py _upstream --ttft-ms T --tps R``)
# --------------------------------------------------------------------------------------

_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"transfer-encoding: chunked\r\n"
    b"connection: keep-alive\r\n"
    b"cache-control: no-cache, must-revalidate\r\n"
    b"x-request-id: req_0123456789abcdef0123456789abcdef\r\n"
    b"openai-processing-ms: 20\r\n"
    b"x-ratelimit-limit-requests: 10000\r\n"
    b"x-ratelimit-remaining-requests: 9999\r\n"
    b"x-ratelimit-reset-requests: 6ms\r\n"
    b"strict-transport-security: max-age=31536000; includeSubDomains; preload\r\n"
    b"x-content-type-options: nosniff\r\n"
    b"server: bench-upstream\r\n"
    b"\r\n"
)

_OPENAI_CHUNK = (
    '{"id":"chatcmpl-bench0123456789","object":"chat.completion.chunk","created":1767225600,'
    '"model":"bench-model","service_tier":"default","system_fingerprint":"fp_0123456789",'
    '"choices":[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}],"usage":null}'
)


def _openai_event(delta: str, finish: str = "null") -> bytes:
    return b"data: " + (_OPENAI_CHUNK % (delta, finish)).encode() + b"\n\n"


_OPENAI_FIRST = _openai_event('{"role":"assistant","content":"","refusal":null}')
_OPENAI_TOKEN = _openai_event('{"content":" tok"}')
_OPENAI_END = (
    _openai_event("{}", '"stop"')
    + b'data: {"id":"chatcmpl-bench0123456789","object":"chat.completion.chunk",'
    b'"created":1767225600,"model":"bench-model","choices":[],"usage":{"prompt_tokens":9,'
    b'"completion_tokens":%d,"total_tokens":%d}}\n\ndata: [DONE]\n\n'
)
_ANTHROPIC_FIRST = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_bench0123456789","type":"message",'
    b'"role":"assistant","model":"bench-model","content":[],"stop_reason":null,'
    b'"stop_sequence":null,"usage":{"input_tokens":9,"cache_creation_input_tokens":0,'
    b'"cache_read_input_tokens":0,"output_tokens":1}}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
    b'\n\nevent: ping\ndata: {"type": "ping"}\n\n'
)
_ANTHROPIC_TOKEN = (
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" tok"}}'
    b"\n\n"
)
_ANTHROPIC_END = (
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":0}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},'
    b'"usage":{"output_tokens":%d}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _UpstreamConn(asyncio.Protocol):
    """One keep-alive connection: requests one at a time (HTTP/1.1 without pipelining)."""

    def __init__(self, ttft_s: float, tps: float) -> None:
        self.ttft_s = ttft_s
        self.interval_s = 1.0 / tps if tps > 0 else 0.0
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._next()

    def _next(self) -> None:
        if self.task is not None and not self.task.done():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buf) < end + 4 + length:
            return
        body = bytes(self.buf[end + 4 : end + 4 + length])
        del self.buf[: end + 4 + length]
        path = head[0].split(" ")[1]
        started = asyncio.get_running_loop().time()
        self.task = asyncio.ensure_future(self._respond(path, body, started))
        self.task.add_done_callback(lambda _t: self._next())

    async def _respond(self, path: str, raw: bytes, started: float) -> None:
        loop = asyncio.get_running_loop()
        n = max(1, int(json.loads(raw).get("max_tokens") or 1))
        anthropic = path.endswith("/messages")
        first, token = (
            (_ANTHROPIC_FIRST, _ANTHROPIC_TOKEN) if anthropic else (_OPENAI_FIRST, _OPENAI_TOKEN)
        )
        end = _ANTHROPIC_END % n if anthropic else _OPENAI_END % (n, n + 9)
        await asyncio.sleep(max(0.0, started + self.ttft_s - loop.time()))
        t = self.transport
        if t is None:
            return
        t.write(_HEAD + _chunk(first + token))
        for i in range(1, n):
            await asyncio.sleep(max(0.0, started + self.ttft_s + i * self.interval_s - loop.time()))
            if self.transport is None:
                return
            t.write(_chunk(token))
        t.write(_chunk(end) + b"0\r\n\r\n")


async def _upstream(ttft_ms: float, tps: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _UpstreamConn(ttft_ms / 1000.0, tps), "127.0.0.1", 0, backlog=1024
    )
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {port}", flush=True)
    await stop.wait()
    server.close()


def upstream_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="bench_hosted_overhead.py _upstream")
    p.add_argument("--ttft-ms", type=float, required=True)
    p.add_argument("--tps", type=float, required=True)
    args = p.parse_args(argv)
    import uvloop

    uvloop.install()
    asyncio.run(_upstream(args.ttft_ms, args.tps))
    return 0


# --------------------------------------------------------------------------------------
# direct HTTP load generator (child: ``bench_hosted_overhead.py _httpgen '<json spec>'``)
# --------------------------------------------------------------------------------------


def _http_request(kind: str, port: int, max_tokens: int) -> bytes:
    """The request the adapter would send (same body shape and size, roughly)."""
    if kind == "anthropic":
        path = "/v1/messages"
        body: dict[str, Any] = {
            "model": "bench-model",
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
        }
        extra = "x-api-key: bench\r\nanthropic-version: 2023-06-01\r\n"
    else:
        path = "/v1/chat/completions"
        body = {
            "model": "bench-model",
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        extra = ""
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
        f"Content-Type: application/json\r\n{extra}Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def _httpgen(spec: dict[str, Any]) -> dict[str, Any]:
    host, _, port = spec["target"].rpartition(":")
    streams: int = spec["streams"]
    payload = _http_request(spec["kind_http"], int(port), spec["max_tokens"])
    clock = time.monotonic
    start = clock()
    t0 = start + spec["warmup_s"]
    t1 = t0 + spec["measure_s"]
    tally = bo._Tally(t0, t1)
    ramp = spec["ramp_s"]

    async def worker(i: int) -> None:
        if streams > 1 and ramp > 0:
            await asyncio.sleep(ramp * i / streams)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while True:
                ts = clock()
                if ts >= t1:
                    return
                counted = ts >= t0
                gaps: list[float] = []
                first = last = None
                msgs = 0
                writer.write(payload)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    key = head.split(b" ", 2)[1].decode()
                    tally.errors[key] = tally.errors.get(key, 0) + 1
                    return
                while True:
                    size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
                    now = clock()
                    if last is None:
                        first = now
                    else:
                        gaps.append(now - last)
                    last = now
                    msgs += 1
                if not counted:
                    continue
                tally.requests += 1
                tally.delta_msgs += msgs
                tally.tokens += spec["max_tokens"]
                if first is not None:
                    tally.ttft.append(first - ts)
                tally.gaps.extend(gaps)
        finally:
            writer.close()

    await asyncio.gather(*(worker(i) for i in range(streams)))
    return {
        "mode": "direct-http",
        "streams": streams,
        "window": [t0, t1],
        "requests": tally.requests,
        "errors": tally.errors,
        "delta_msgs": tally.delta_msgs,
        "tokens": tally.tokens,
        "tokens_per_delta": 1.0,
        "ttft_ms": bo.summary_ms(tally.ttft),
        "decision_ms": bo.summary_ms([]),
        "itl_ms": bo.summary_ms(tally.gaps),
    }


def httpgen_main(raw_spec: str) -> int:
    result = asyncio.run(_httpgen(json.loads(raw_spec)))
    print(json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------------------
# client costs in process (child: ``bench_hosted_overhead.py _clients '<json spec>'``)
# --------------------------------------------------------------------------------------

#: Client variants of the ``clients`` phase; ``adapter-*`` are the router's adapters from
#: the tree the child runs in (this one, or --baseline-src).
CLIENTS = (
    "raw-socket",
    "httpx-lines",
    "httpx-raw",
    "aiohttp-lines",
    "aiohttp-any",
    "adapter-openai",
    "adapter-anthropic",
)


async def _client(name: str, port: int, max_tokens: int) -> tuple[Any, Any]:
    """(one request -> seconds to its first body bytes or chunk, close) for one client."""
    base = f"http://127.0.0.1:{port}"
    body = json.loads(_http_request("openai", port, max_tokens).partition(b"\r\n\r\n")[2])
    headers = {"Accept": "text/event-stream"}
    clock = time.perf_counter
    if name == "raw-socket":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = _http_request("openai", port, max_tokens)

        async def raw() -> float:
            t = clock()
            first = 0.0
            writer.write(payload)
            await reader.readuntil(b"\r\n\r\n")
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                await reader.readexactly(size + 2)
                first = first or clock() - t
                if size == 0:
                    return first

        async def close_raw() -> None:
            writer.close()

        return raw, close_raw
    if name.startswith("httpx"):
        import httpx

        hc = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=None))

        async def via_httpx() -> float:
            t = clock()
            first = 0.0
            async with hc.stream(
                "POST", f"{base}/v1/chat/completions", json=body, headers=headers
            ) as r:
                parts = r.aiter_lines() if name == "httpx-lines" else r.aiter_raw()
                async for _ in parts:
                    first = first or clock() - t
            return first

        return via_httpx, hc.aclose
    if name.startswith("aiohttp"):
        import aiohttp

        session = aiohttp.ClientSession()

        async def via_aiohttp() -> float:
            t = clock()
            first = 0.0
            async with session.post(f"{base}/v1/chat/completions", json=body, headers=headers) as r:
                parts = r.content if name == "aiohttp-lines" else r.content.iter_any()
                async for _ in parts:
                    first = first or clock() - t
            return first

        return via_aiohttp, session.close
    from router.backends import create_backend
    from router.config import BackendConfig
    from router.types import BackendCall, InferenceRequest, Message, Role

    kind = name.removeprefix("adapter-")
    cfg = BackendConfig(
        name=f"bench-{kind}",
        tier="hosted",
        kind=kind,
        endpoint=base + ("/v1" if kind == "openai" else ""),
        model="bench-model",
        context_window=8192,
        **({"api_key_env": "BENCH_KEY"} if kind == "anthropic" else {}),
    )
    backend = create_backend(cfg, environ={"BENCH_KEY": "bench-key"})
    await backend.start()
    request = InferenceRequest(
        messages=(Message(Role.USER, PROMPT),), max_output_tokens=max_tokens, request_id="r-1"
    )

    async def via_adapter() -> float:
        t = clock()
        first = 0.0
        call = BackendCall(request, deadline=time.monotonic() + 60.0)
        async for _ in backend.stream(call):
            first = first or clock() - t
        return first

    return via_adapter, backend.close


async def _clients(spec: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name in spec["clients"]:
        for max_tokens in spec["tokens"]:
            one, close = await _client(name, spec["port"], max_tokens)
            for _ in range(20):
                await one()
            firsts = []
            cpu0 = time.process_time()
            for _ in range(spec["requests"]):
                firsts.append(await one())
            cpu = (time.process_time() - cpu0) / spec["requests"]
            await close()
            firsts.sort()
            out.append(
                {
                    "client": name,
                    "tokens": max_tokens,
                    "cpu_us_per_request": cpu * 1e6,
                    "first_p50_us": firsts[len(firsts) // 2] * 1e6,
                }
            )
    return out


def clients_main(raw_spec: str) -> int:
    import uvloop

    uvloop.install()
    print(json.dumps(asyncio.run(_clients(json.loads(raw_spec)))), flush=True)
    return 0


def run_clients(bench: Bench, a: argparse.Namespace) -> list[dict[str, Any]]:
    """CPU per request of each client, in process, on uvloop, one request at a time against
    an upstream without TTFT or pacing (``--client-tokens`` tokens, one chunk each): the
    per-request and (from the difference between token counts) per-token cost."""
    upstream, uport = bench.start("upstream-clients", [sys.executable, THIS, "_upstream",
                                  "--ttft-ms", "0", "--tps", "0"])  # fmt: skip
    trees: list[tuple[str, Path | None]] = [("current", None)]
    if a.baseline_src is not None:
        trees.append(("before", a.baseline_src))
    rows: list[dict[str, Any]] = []
    try:
        for rnd in range(a.rounds):
            for tree, src in trees if rnd % 2 == 0 else trees[::-1]:
                names = (
                    list(CLIENTS) if tree == "current" else [c for c in CLIENTS if "adapter" in c]
                )
                spec = {"port": uport, "clients": names, "tokens": a.client_tokens,
                        "requests": a.client_requests}  # fmt: skip
                env = bench.env if src is None else {**bench.env, "PYTHONPATH": str(src)}
                done = subprocess.run(
                    [sys.executable, THIS, "_clients", json.dumps(spec)],
                    capture_output=True, cwd=src or REPO, env=env, timeout=900, check=True,
                )  # fmt: skip
                for row in json.loads(done.stdout.decode().strip().splitlines()[-1]):
                    row.update(tree=tree, round=rnd)
                    rows.append(row)
                    print(
                        f"  {tree:<7} {row['client']:<18} {row['tokens']:>4} tokens: "
                        f"{row['cpu_us_per_request']:7.0f} us CPU/request, first bytes p50 "
                        f"{row['first_p50_us']:5.0f} us",
                        flush=True,
                    )
    finally:
        bench.stop(upstream)
    return rows


def clients_table(rows: list[dict[str, Any]], tokens: Sequence[int]) -> str:
    few, many = min(tokens), max(tokens)

    def med(tree: str, client: str, n: int, key: str) -> float:
        return bo._median(
            [r[key] for r in rows if (r["tree"], r["client"], r["tokens"]) == (tree, client, n)]
        )

    out = [
        f"| client | CPU per request, {few} tokens | per token (from {few} -> {many}) | "
        "first bytes p50 |",
        "|---|---:|---:|---:|",
    ]
    for tree in ("before", "current"):
        for client in CLIENTS:
            cpu_few = med(tree, client, few, "cpu_us_per_request")
            if math.isnan(cpu_few):
                continue
            per_token = (med(tree, client, many, "cpu_us_per_request") - cpu_few) / (many - few)
            label = f"{client} ({tree})" if client.startswith("adapter") else client
            out.append(
                f"| {label} | {cpu_few:.0f} us | {per_token:.1f} us | "
                f"{med(tree, client, few, 'first_p50_us'):.0f} us |"
            )
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# HTTP floor relay (child: ``bench_hosted_overhead.py _floor_http UPSTREAM_PORT``)
# --------------------------------------------------------------------------------------


async def _floor_http(upstream_port: int) -> None:
    """The least a grpc.aio relay in front of an HTTP upstream can do: InferenceRouter.Generate
    on raw bytes -> an empty Decision, ``POST /v1/chat/completions`` on a pooled raw socket,
    one fixed delta event per body chunk (the chunked framing read, nothing parsed), an empty
    Usage. No policy, no SSE or JSON, no domain objects. Not a router: a yardstick, like
    bench_overhead.py's floor relay for the ModelService path."""
    import grpc
    from hybrid_router.v1 import router_pb2, types_pb2

    delta = router_pb2.GenerateEvent(
        delta=types_pb2.TextDelta(text=" tok", tokens=1)
    ).SerializeToString()
    pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def generate(raw: bytes, context: grpc.aio.ServicerContext) -> None:
        req = router_pb2.GenerateRequest.FromString(raw)
        payload = _http_request("openai", upstream_port, req.max_output_tokens)
        await context.write(b"\x0a\x00")  # GenerateEvent(decision=Decision())
        conn = pool.pop() if pool else await asyncio.open_connection("127.0.0.1", upstream_port)
        reader, writer = conn
        reusable = False
        try:
            writer.write(payload)
            await reader.readuntil(b"\r\n\r\n")
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
                await context.write(delta)
            reusable = True
            await context.write(b"\x22\x00")  # GenerateEvent(usage=Usage())
        finally:
            if reusable:
                pool.append(conn)
            else:
                writer.close()

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler = grpc.unary_stream_rpc_method_handler(
        generate, request_deserializer=None, response_serializer=None
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(bo.ROUTER_SERVICE, {"Generate": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {port}", flush=True)
    await stop.wait()
    await server.stop(1.0)


def floor_http_main(argv: Sequence[str]) -> int:
    import uvloop

    uvloop.install()
    asyncio.run(_floor_http(int(argv[0])))
    return 0


# --------------------------------------------------------------------------------------
# orchestration
# --------------------------------------------------------------------------------------


class Bench(bo.Bench):
    """bench_overhead's Bench; the direct HTTP paths run this script's ``_httpgen``."""

    def _loadgen_once(
        self, spec: dict[str, Any], watch: dict[str, int], py_spy: str | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if spec["mode"] != "http":
            return super()._loadgen_once(spec, watch, py_spy)
        if self.args.wait_idle > 0:
            bo.wait_for_quiet(self.args.wait_idle, self.args.idle_threshold)
        argv = [sys.executable, THIS, "_httpgen", json.dumps(spec)]
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=self.env,
            start_new_session=True,
        )
        try:
            with bo.Sampler({**watch, "loadgen": proc.pid}) as sampler:
                out, err = proc.communicate(timeout=spec["warmup_s"] + spec["measure_s"] + 180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        if proc.returncode != 0:
            raise RuntimeError(f"http load generator failed: {err.decode()[-2000:]}")
        result = json.loads(out.decode().strip().splitlines()[-1])
        return result, sampler.window(*result["window"])


def router_yaml(kind: str, endpoint: str) -> str:
    if kind == "model_service":
        backend = f"""\
  - name: bench-ms
    tier: gpu
    kind: model_service
    endpoint: {endpoint}
    model: scripted
"""
    else:
        key = f"    api_key_env: {ANTHROPIC_KEY_ENV}\n" if kind == "anthropic" else ""
        backend = f"""\
  - name: bench-{kind}
    tier: hosted
    kind: {kind}
    endpoint: {endpoint}
    model: bench-model
{key}"""
    return f"""\
# generated by bench/bench_hosted_overhead.py
server:
  address: 127.0.0.1:0
  grace_period_s: 1
  reflection: false
policy:
  ttft_timeout_ms: 60000
backends:
{backend}    context_window: 8192
    max_concurrency: 4096
    max_queue: 0
    timeout_s: 60
"""


#: path -> (upstream kind, what the load generator calls: None = the upstream itself,
#: "current" / "before" = a router from this tree / from --baseline-src, "floor" = a relay)
PATHS: dict[str, tuple[str, str | None]] = {
    "ms-direct": ("model_service", None),
    "ms-routed": ("model_service", "current"),
    "ms-floor": ("model_service", "floor"),
    "openai-direct": ("openai", None),
    "openai-routed": ("openai", "current"),
    "openai-before": ("openai", "before"),
    "anthropic-direct": ("anthropic", None),
    "anthropic-routed": ("anthropic", "current"),
    "anthropic-before": ("anthropic", "before"),
    "http-floor": ("openai", "floor"),
}


def start_router(bench: Bench, kind: str, endpoint: str, tag: str, src: Path | None) -> Any:
    cfg = bench.workdir / f"router-{tag}.yaml"
    cfg.write_text(router_yaml(kind, endpoint))
    argv = [sys.executable, "-m", "hybrid_router_cli.main", "serve", "--config", str(cfg)]
    return bench.start(f"router-{tag}", argv, src)


def start_relays(
    bench: Bench, a: argparse.Namespace, paths: list[str], n: int, uport: int, ms_port: int | None
) -> dict[str, tuple[Any, int]]:
    """The routers and floor relays of ``paths``, by path."""
    out: dict[str, tuple[Any, int]] = {}
    for path in paths:
        kind, via = PATHS[path]
        if via is None:
            continue
        if via == "floor":
            argv = (
                [sys.executable, bo.__file__, "_floor", f"127.0.0.1:{ms_port}", "--uvloop"]
                if kind == "model_service"
                else [sys.executable, THIS, "_floor_http", str(uport)]
            )
            out[path] = bench.start(f"{path}-{n}", argv)
            continue
        endpoint = (
            f"127.0.0.1:{ms_port}"
            if kind == "model_service"
            else f"http://127.0.0.1:{uport}" + ("/v1" if kind == "openai" else "")
        )
        src = a.baseline_src if via == "before" else None
        out[path] = start_router(bench, kind, endpoint, f"{path}-{n}", src)
    return out


def run(bench: Bench, a: argparse.Namespace) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    paths = [p for p in a.paths if not (PATHS[p][1] == "before" and not a.baseline_src)]
    for n in a.streams:
        rate = bo.stream_rate(a, n)
        max_tokens = a.single_stream_tokens if n == 1 else a.max_tokens
        req_s = a.ttft_ms / 1000.0 + max_tokens / rate
        upstream, uport = bench.start(
            f"upstream-{n}",
            [
                sys.executable,
                THIS,
                "_upstream",
                "--ttft-ms",
                f"{a.ttft_ms:g}",
                "--tps",
                f"{rate:g}",
            ],
        )
        ms = ms_port = None
        if any(PATHS[p][0] == "model_service" for p in paths):
            ms, ms_port = bench.start(
                f"ms-{n}",
                [
                    sys.executable, "-m", "serving.model_server", "--engine", "scripted",
                    "--port", "0", "--tokens-per-s", f"{rate:g}", "--ttft-ms", f"{a.ttft_ms:g}",
                    "--max-concurrency", "4096", "--log-level", "WARNING", "--grace-s", "1",
                ],
            )  # fmt: skip
        relays = start_relays(bench, a, paths, n, uport, ms_port)
        time.sleep(1.0)
        # Rounds rotate the order of the paths, so that no path always runs first or last.
        order = [
            (rnd, paths[(i + rnd) % len(paths)])
            for rnd in range(a.rounds)
            for i in range(len(paths))
        ]
        for rnd, path in order:
            kind, via = PATHS[path]
            spec: dict[str, Any] = {
                "kind": "latency",
                "tag": path,
                "streams": n,
                "channels": 1,
                "max_tokens": max_tokens,
                "ramp_s": req_s if n > 1 else 0.0,
                "warmup_s": (req_s if n > 1 else 0.0) + a.warmup_s,
                "measure_s": a.measure_s,
                "uvloop": False,
            }
            watch = {"upstream": ms.pid if kind == "model_service" and ms else upstream.pid}
            if via is not None:
                relay, rport = relays[path]
                spec.update(mode="routed", target=f"127.0.0.1:{rport}")
                watch["router"] = relay.pid
            elif kind == "model_service":
                spec.update(mode="direct", target=f"127.0.0.1:{ms_port}")
            else:
                spec.update(mode="http", kind_http=kind, target=f"127.0.0.1:{uport}")
            py_spy = a.py_spy if via == "current" else None
            res, win = bench.loadgen(spec, watch, py_spy)
            res.update(path=path, round=rnd, proc=win)
            runs.append(res)
            t = res["ttft_ms"]
            cpu = win.get("cpu_pct", {})
            print(
                f"  {n:>3} streams  {path:<17} round {rnd}: TTFT p50 {t['p50']:6.2f}  "
                f"p99 {t['p99']:6.2f} ms  n={res['requests']:<4} errors={res['errors'] or 0}  "
                f"CPU router {cpu.get('router', 0):3.0f}% upstream {cpu.get('upstream', 0):3.0f}% "
                f"loadgen {cpu.get('loadgen', 0):3.0f}% other {win.get('other_cpu_pct', 0):3.0f}%",
                flush=True,
            )
        for child in [r[0] for r in relays.values()] + [c for c in (ms, upstream) if c]:
            bench.stop(child)
    return runs


def table(runs: list[dict[str, Any]], streams: Sequence[int]) -> str:
    """Medians over rounds. added = routed - direct; own = routed - floor (what the router
    adds beyond a do-nothing Python grpc.aio relay to the same upstream)."""

    def fig(n: int, path: str, q: str = "p50", key: str = "ttft_ms") -> float:
        return bo._median([r[key][q] for r in runs if r["streams"] == n and r["path"] == path])

    def cpu(n: int, path: str) -> float:
        return bo._median(
            [
                r["proc"].get("cpu_pct", {}).get("router", math.nan)
                for r in runs
                if r["streams"] == n and r["path"] == path
            ]
        )

    f = bo._f
    out = [
        "| streams | upstream | TTFT p50 direct | routed | **added p50** | added p50 before | "
        "floor relay added | routed - floor (before) | TTFT p99 direct / routed / before | "
        "router CPU (before) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in streams:
        for kind, floor, label in (
            ("ms", "ms-floor", "ModelService"),
            ("openai", "http-floor", "OpenAI-compatible"),
            ("anthropic", "http-floor", "Anthropic"),
        ):
            direct = fig(n, f"{kind}-direct")
            routed = fig(n, f"{kind}-routed")
            before = fig(n, f"{kind}-before")
            fl = fig(n, floor) if kind == "ms" else fig(n, floor) - fig(n, "openai-direct") + direct
            p99 = " / ".join(
                f(fig(n, f"{kind}-{x}", "p99")) for x in ("direct", "routed", "before")
            )
            out.append(
                f"| {n} | {label} | {f(direct)} | {f(routed)} | **{f(routed - direct)}** | "
                f"{f(before - direct)} | {f(fl - direct)} | {f(routed - fl)} ({f(before - fl)}) | "
                f"{p99} | {f(cpu(n, f'{kind}-routed'), 0)}% ({f(cpu(n, f'{kind}-before'), 0)}%) |"
            )
    return (
        "\n".join(out) + "\n\n(ms; p50 and p99 are the medians over rounds of each window's figure)"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/bench_hosted_overhead.py",
        description="TTFT added by the router in front of OpenAI-compatible and Anthropic HTTP "
        "upstreams, beside the ModelService path, in one run. Measures; asserts nothing.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="4 s windows, 1 round, no retries")
    p.add_argument("--json", metavar="PATH", help="write all results as JSON to PATH")
    p.add_argument(
        "--phases",
        default="latency",
        help="latency (routers as processes, TTFT added) and/or clients (HTTP clients and the "
        "adapters in process: CPU per request and per token)",
    )
    p.add_argument("--streams", default="1,8,32", help="comma-separated stream counts")
    p.add_argument("--paths", default=",".join(PATHS), help="paths to run")
    p.add_argument("--ttft-ms", type=float, default=20.0, help="upstream TTFT")
    p.add_argument("--tokens-per-s", type=float, default=50.0, help="upstream rate per stream")
    p.add_argument("--aggregate-cap", type=float, default=0.0, help="cap streams x rate (0: none)")
    p.add_argument("--max-tokens", type=int, default=50, help="tokens per request")
    p.add_argument("--single-stream-tokens", type=int, default=10, help="tokens at 1 stream")
    p.add_argument("--measure-s", type=float, help="window per path, s (default 10, quick 4)")
    p.add_argument("--warmup-s", type=float, default=1.0, help="warm-up after the ramp")
    p.add_argument("--rounds", type=int, help="rounds per path (default 2, quick 1)")
    p.add_argument("--baseline-src", type=Path, metavar="DIR", help="'before' routers' tree")
    p.add_argument("--nice", type=int, default=0, help="niceness of every process")
    p.add_argument("--wait-idle", type=float, help="wait up to S s for a quiet machine")
    p.add_argument("--idle-threshold", type=float, default=25.0, metavar="PCT")
    p.add_argument("--noise-limit", type=float, default=30.0, metavar="PCT")
    p.add_argument("--retries", type=int, help="reruns of a noisy window (default 2, quick 0)")
    p.add_argument("--keep-logs", metavar="DIR", help="copy the children's logs to DIR")
    p.add_argument("--py-spy", metavar="DIR", help="py-spy the current hosted routers")
    p.add_argument("--client-tokens", default="10,100", help="clients phase: tokens per request")
    p.add_argument("--client-requests", type=int, default=300, help="clients phase: requests")
    a = p.parse_args(argv)
    a.streams = [int(s) for s in a.streams.split(",") if s.strip()]
    a.phases = [s.strip() for s in a.phases.split(",") if s.strip()]
    a.client_tokens = [int(s) for s in a.client_tokens.split(",") if s.strip()]
    a.paths = [s.strip() for s in a.paths.split(",") if s.strip()]
    bad = [x for x in a.paths if x not in PATHS]
    if bad:
        p.error(f"--paths: unknown {', '.join(bad)} (use {', '.join(PATHS)})")
    if a.baseline_src is not None:
        a.baseline_src = a.baseline_src.resolve()
    if a.measure_s is None:
        a.measure_s = 4.0 if a.quick else 10.0
    if a.rounds is None:
        a.rounds = 1 if a.quick else 2
    if a.wait_idle is None:
        a.wait_idle = 10.0 if a.quick else 60.0
    if a.retries is None:
        a.retries = 0 if a.quick else 2
    a.backend_no_coalesce = False
    return a


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_upstream":
        return upstream_main(argv[1:])
    if argv and argv[0] == "_httpgen":
        return httpgen_main(argv[1])
    if argv and argv[0] == "_floor_http":
        return floor_http_main(argv[1:])
    if argv and argv[0] == "_clients":
        return clients_main(argv[1])
    a = parse_args(argv)
    command = "bench/bench_hosted_overhead.py " + " ".join(shlex.quote(x) for x in argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH", "")) if x)
    env[ANTHROPIC_KEY_ENV] = "bench-key"
    if a.nice:
        os.nice(a.nice)
    info = bo.machine_info()
    print(f"# {command}")
    print(f"# {info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with tempfile.TemporaryDirectory(prefix="bench-hosted-") as tmp:
        bench = Bench(a, Path(tmp), env)
        runs: list[dict[str, Any]] = []
        clients: list[dict[str, Any]] = []
        try:
            if "clients" in a.phases:
                print("## clients (in process)", flush=True)
                clients = run_clients(bench, a)
            if "latency" in a.phases:
                print("## latency (TTFT through routers)", flush=True)
                runs = run(bench, a)
        except KeyboardInterrupt:
            return 130
        except Exception:
            for child in bench.children:
                with contextlib.suppress(OSError):
                    tail = child.log_path.read_text(errors="replace")[-1500:]
                    print(f"--- {child.name} log tail:\n{tail}", file=sys.stderr)
            raise
        finally:
            bench.stop_all()
    print()
    if clients:
        print(clients_table(clients, a.client_tokens), end="\n\n")
    if runs:
        others = [r["proc"].get("other_cpu_pct", 0.0) for r in runs]
        print(table(runs, a.streams))
        noise = f"{min(others):.0f}-{max(others):.0f}%"
        print(f"\nother work on the machine per window: {noise} of a core")
    if a.json:
        report = {"command": command, "machine": info, "runs": runs, "clients": clients}
        Path(a.json).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
