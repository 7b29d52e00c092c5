"""The streaming server for a Function URL in RESPONSE_STREAM mode (lambda_edge.stream_server,
what the Lambda Web Adapter forwards to) on 127.0.0.1:0, against a real router on loopback
with scripted ModelService backends. Clients: httpx, reading the SSE bytes as they come,
and the official OpenAI SDK with ``stream=True``. No timing assertions: waits are on
conditions with generous timeouts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hybrid_router.client import make_request
from lambda_events import free_port, prompt_body, sse_events
from rtutil import ms_backend
from testkit import wait_until

from lambda_edge.runtime import Runtime
from lambda_edge.settings import Settings
from lambda_edge.stream_server import LAMBDA_CONTEXT_HEADER, StreamServer, make_stream_server
from lambda_edge.telemetry import Telemetry
from serving.engines.scripted import ScriptedEngine

REPO = Path(__file__).resolve().parents[3]
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "x"}]}


def runtime_for(port: int, **env: str) -> Runtime:
    settings = Settings.from_env({"HYBRID_ROUTER_ADDRESS": f"127.0.0.1:{port}", **env})
    tel = Telemetry(service="stream-test", namespace="StreamTest", tracing=False)
    return Runtime(settings, telemetry=tel)


class Served:
    """A stream server in a thread, and what a test needs to call it."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.server: StreamServer = make_stream_server(rt, "127.0.0.1", 0)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
        self.rt.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    made: list[Served] = []

    def start(router_port: int, **env: str) -> Served:
        s = Served(runtime_for(router_port, **env))
        made.append(s)
        return s

    yield start
    for s in made:
        s.close()


@pytest.fixture
async def gpu(model_server, start_router):  # type: ignore[no-untyped-def]
    engine = ScriptedEngine()
    router = await start_router([ms_backend("gpu-a", "gpu", await model_server(engine))])
    return engine, router


def post(url: str, body: Any, **kw: Any) -> httpx.Response:
    with httpx.Client(timeout=60) as c:
        return c.post(url, json=body, **kw)


async def router_text(rt: Runtime, text: str, max_tokens: int) -> str:
    """What the router itself answers for this prompt (buffered, same channel)."""
    req = make_request(prompt=text, max_output_tokens=max_tokens)
    return (await asyncio.to_thread(rt.client.complete, req)).text


# --- OpenAI SSE ----------------------------------------------------------------------------


async def test_openai_sdk_streams_the_routers_text_and_usage(gpu, serve):
    import openai

    engine, router = gpu
    s = serve(router.port)
    expected = await router_text(s.rt, "red green blue", 7)
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=60)

    def run() -> list[Any]:
        stream = client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "red green blue"}],
            max_tokens=7,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"hybrid_router": {"data_class": "public"}},
        )
        return list(stream)

    try:
        chunks = await asyncio.to_thread(run)
    finally:
        client.close()
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected == "red green blue red green blue red"
    assert all(c.object == "chat.completion.chunk" and c.model == "gpu-a" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    # include_usage: a last chunk with no choices and the router's usage.
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 7
    assert chunks[-1].usage.prompt_tokens > 0
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 7
    ext = chunks[-2].model_extra["hybrid_router"]  # type: ignore[index]
    assert ext["backend"] == "gpu-a" and ext["tier"] == "gpu" and ext["failovers"] == 0


async def test_openai_sse_bytes_follow_openais_format(gpu, serve):
    engine, router = gpu
    s = serve(router.port)
    body = {
        "model": "tier/gpu",
        "messages": [{"role": "user", "content": "one two"}],
        "max_tokens": 3,
        "stream": True,
    }
    resp = await asyncio.to_thread(
        post, s.url + "/v1/chat/completions", body, headers={"x-request-id": "sse-1"}
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["x-request-id"] == "sse-1"
    assert resp.headers["transfer-encoding"] == "chunked"
    events = sse_events(resp.content)
    assert all(name is None for name, _ in events)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "one two one"
    assert all(c["id"] == "chatcmpl-sse-1" for c in chunks)
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }
    # Without stream_options.include_usage no chunk carries usage.
    assert all("usage" not in c for c in chunks)
    assert engine.started == ["sse-1"]


async def test_stream_false_answers_buffered(gpu, serve):
    _, router = gpu
    s = serve(router.port)
    body = {"model": "auto", "messages": [{"role": "user", "content": "a b"}], "max_tokens": 3}
    resp = await asyncio.to_thread(post, s.url + "/v1/chat/completions", body)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    done = resp.json()
    assert done["object"] == "chat.completion"
    assert done["choices"][0]["message"]["content"] == "a b a"
    assert done["usage"]["completion_tokens"] == 3


# --- the router's own events ---------------------------------------------------------------


async def test_generate_stream_sends_the_routers_events(gpu, serve):
    engine, router = gpu
    s = serve(router.port)
    expected = await router_text(s.rt, "alpha beta gamma", 5)
    body = prompt_body("alpha beta gamma", max_output_tokens=5, request_id="gen-1")
    resp = await asyncio.to_thread(post, s.url + "/v1/generate/stream", body)
    assert resp.status_code == 200
    assert resp.headers["x-request-id"] == "gen-1"
    events = [(name, json.loads(data)) for name, data in sse_events(resp.content)]
    kinds = [name for name, _ in events]
    assert kinds[0] == "decision" and kinds[-1] == "usage"
    assert set(kinds[1:-1]) == {"delta"}
    assert all(frame["type"] == name and frame["request_id"] == "gen-1" for name, frame in events)
    assert events[0][1]["decision"]["backend"] == "gpu-a"
    assert "".join(f["text"] for n, f in events if n == "delta") == expected
    assert sum(f["tokens"] for n, f in events if n == "delta") == 5
    usage = events[-1][1]["usage"]
    assert usage["output_tokens"] == 5 and usage["complete"] is True
    assert usage["backend"] == "gpu-a"
    assert "gen-1" in engine.started


async def test_failover_before_the_first_token_is_streamed_with_the_decision(
    model_server, start_router, serve
):
    bad = ScriptedEngine(fail_before_first_token="unavailable")
    good = ScriptedEngine()
    router = await start_router(
        [
            ms_backend("edge-bad", "edge", await model_server(bad), priors={"ttft_ms": 1}),
            ms_backend("gpu-good", "gpu", await model_server(good), priors={"ttft_ms": 500}),
        ],
        policy={"objective": "fastest"},
    )
    s = serve(router.port)
    body = prompt_body("x y", max_output_tokens=2)
    resp = await asyncio.to_thread(post, s.url + "/v1/generate/stream", body)
    assert resp.status_code == 200
    events = [(name, json.loads(data)) for name, data in sse_events(resp.content)]
    kinds = [name for name, _ in events]
    assert kinds[:2] == ["decision", "failover"]
    assert events[1][1]["failover"]["to_backend"] == "gpu-good"
    assert events[-1][1]["usage"]["backend"] == "gpu-good"


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/generate/stream", {"messages": [{"role": "user"}]}, "messages[0].content"),
        ("/v1/generate/stream", prompt_body(colour="blue"), "colour"),
        ("/v1/chat/completions", {**CHAT, "model": "gpt-4o"}, "model"),
        ("/v1/chat/completions", {"model": "auto", "messages": []}, "messages"),
        ("/v1/chat/completions", {**CHAT, "stream": True, "n": 2}, "n"),
    ],
)
async def test_bad_bodies_are_400_naming_the_field(gpu, serve, path, body, field):
    engine, router = gpu
    s = serve(router.port)
    resp = await asyncio.to_thread(post, s.url + path, body)
    assert resp.status_code == 400
    err = resp.json()["error"]
    if path == "/v1/chat/completions":  # OpenAI's error shape
        assert err["param"] == field and err["type"] == "invalid_request_error"
        assert err["code"] == "invalid_argument"
    else:
        assert err["field"] == field and err["status"] == "INVALID_ARGUMENT"
    assert err["message"].startswith(f"{field}: ")
    assert engine.started == []


async def test_oversize_and_empty_bodies(gpu, serve):
    _, router = gpu
    s = serve(router.port, HYBRID_ROUTER_MAX_BODY_BYTES="2048")
    resp = await asyncio.to_thread(post, s.url + "/v1/generate/stream", prompt_body("word " * 600))
    assert resp.status_code == 413
    assert "HYBRID_ROUTER_MAX_BODY_BYTES" in resp.json()["error"]["message"]
    with httpx.Client(timeout=30) as c:
        resp = await asyncio.to_thread(c.post, s.url + "/v1/generate/stream", content=b"")
    assert resp.status_code == 400
    assert resp.json()["error"]["message"].startswith("body: empty")


async def test_router_unreachable_is_503_before_streaming(serve):
    s = serve(free_port())
    resp = await asyncio.to_thread(post, s.url + "/v1/generate/stream", prompt_body())
    assert resp.status_code == 503
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]["status"] == "UNAVAILABLE"
    chat = {
        "model": "auto",
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    resp = await asyncio.to_thread(post, s.url + "/v1/chat/completions", chat)
    assert resp.status_code == 503
    err = resp.json()["error"]
    assert err["code"] == "unavailable" and err["type"] == "server_error" and err["message"]


async def test_every_candidate_failing_is_503_with_the_decision(model_server, start_router, serve):
    engine = ScriptedEngine(fail_before_first_token="unavailable")
    router = await start_router([ms_backend("gpu-x", "gpu", await model_server(engine))])
    s = serve(router.port)
    resp = await asyncio.to_thread(post, s.url + "/v1/generate/stream", prompt_body())
    assert resp.status_code == 503
    body = resp.json()
    assert "every candidate failed" in body["error"]["message"]
    assert body["partial"]["decision"]["backend"] == "gpu-x"


async def test_failure_after_the_first_token_is_an_sse_error_event(
    model_server, start_router, serve
):
    import openai

    engine = ScriptedEngine(fail_after_tokens=3)
    router = await start_router([ms_backend("gpu-f", "gpu", await model_server(engine))])
    s = serve(router.port)
    body = prompt_body("a b c d e f", max_output_tokens=10)
    resp = await asyncio.to_thread(post, s.url + "/v1/generate/stream", body)
    assert resp.status_code == 200
    events = [(name, json.loads(data)) for name, data in sse_events(resp.content)]
    assert "".join(f["text"] for n, f in events if n == "delta") == "a b c"
    assert events[-2][0] == "usage" and events[-2][1]["usage"]["complete"] is False
    assert events[-1][0] == "error"
    assert events[-1][1]["status"] == "UNAVAILABLE" and events[-1][1]["http_status"] == 503

    # The OpenAI SDK raises it as an APIError after the text it received.
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    got: list[str] = []

    def run() -> None:
        stream = client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "a b c d e f"}],
            max_tokens=10,
            stream=True,
        )
        for c in stream:
            got.append(c.choices[0].delta.content or "")

    try:
        with pytest.raises(openai.APIError) as err:
            await asyncio.to_thread(run)
    finally:
        client.close()
    assert "".join(got) == "a b c"
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "unavailable"


async def test_the_lambda_context_header_sets_the_deadline_and_request_id(
    model_server, start_router, serve
):
    """The adapter's x-amzn-lambda-context: its request id becomes the router's, and its
    deadline (minus the margin) bounds the call, answered as an HTTP error before any byte."""
    slow = ScriptedEngine(ttft_ms=60_000)
    router = await start_router(
        [ms_backend("slow", "gpu", await model_server(slow))],
        policy={"ttft_timeout_ms": 120_000},
    )
    s = serve(router.port, HYBRID_ROUTER_DEADLINE_MARGIN_MS="500")
    ctx = {"request_id": "lambda-req-1", "deadline": int((time.time() + 5) * 1000)}
    headers = {LAMBDA_CONTEXT_HEADER: json.dumps(ctx)}
    body = prompt_body("p q")
    resp = await asyncio.to_thread(post, s.url + "/v1/generate/stream", body, headers=headers)
    # DEADLINE_EXCEEDED (504), or UNAVAILABLE (503) when the router's first-token timeout,
    # cut to the time left, fires first.
    assert resp.status_code in (503, 504), resp.text
    assert resp.json()["error"]["status"] in ("DEADLINE_EXCEEDED", "UNAVAILABLE")
    assert resp.headers["content-type"] == "application/json"
    assert slow.started == ["lambda-req-1"]


# --- a caller that leaves ------------------------------------------------------------------


async def _leave_after_the_first_bytes(url: str, body: dict[str, Any]) -> None:
    def run() -> None:
        with httpx.Client(timeout=60) as c, c.stream("POST", url, json=body) as resp:
            assert resp.status_code == 200
            next(resp.iter_raw())

    await asyncio.to_thread(run)


async def test_client_disconnect_mid_stream_cancels_the_model(model_server, start_router, serve):
    engine = ScriptedEngine(tokens_per_s=20)
    router = await start_router([ms_backend("gpu-s", "gpu", await model_server(engine))])
    s = serve(router.port)
    body = {
        "model": "auto",
        "stream": True,
        "max_tokens": 2000,
        "messages": [{"role": "user", "content": "on and on"}],
    }
    await _leave_after_the_first_bytes(s.url + "/v1/chat/completions", body)
    await wait_until(
        lambda: len(engine.cancelled) == 1, "the engine to record the cancel", timeout_s=60.0
    )
    assert engine.cancelled == engine.started


async def test_client_disconnect_before_the_first_token_cancels_the_model(
    model_server, start_router, serve
):
    engine = ScriptedEngine(ttft_ms=120_000)
    router = await start_router(
        [ms_backend("gpu-w", "gpu", await model_server(engine))],
        policy={"ttft_timeout_ms": 300_000},
    )
    s = serve(router.port)
    body = prompt_body("wait for it", max_output_tokens=5, request_id="leaver-1")
    # Nothing is written before the first token, so only the watcher can notice the
    # caller leaving: a raw socket sends the request and closes once the engine started.
    raw = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", s.server.port), timeout=30)
    try:
        sock.sendall(
            b"POST /v1/generate/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(raw)}\r\n\r\n".encode()
            + raw
        )
        await wait_until(
            lambda: engine.started == ["leaver-1"], "the engine to start", timeout_s=60.0
        )
    finally:
        sock.close()
    await wait_until(
        lambda: engine.cancelled == ["leaver-1"], "the engine to record the cancel", timeout_s=60.0
    )


# --- health, routes, the entry point ------------------------------------------------------


async def test_healthz_and_unknown_routes(serve):
    s = serve(free_port())
    with httpx.Client(timeout=30) as c:
        resp = await asyncio.to_thread(c.get, s.url + "/healthz")
        assert resp.status_code == 200 and resp.json()["status"] == "ok"
        resp = await asyncio.to_thread(c.post, s.url + "/v1/nothing", json={})
        assert resp.status_code == 404
        assert "POST /v1/generate/stream" in resp.json()["error"]["message"]


@pytest.mark.parametrize("how", ["module", "run_stream.sh"])
async def test_entry_point_serves_and_stops_on_sigterm(gpu, how):
    """What the adapter starts: the module (or the layer's bootstrap script) reads the
    environment, listens on AWS_LWA_PORT, answers the readiness path and streams; SIGTERM
    (the adapter's shutdown) stops it cleanly."""
    _, router = gpu
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "HYBRID_ROUTER_ADDRESS": f"127.0.0.1:{router.port}",
        "AWS_LWA_PORT": str(port),
        "LAMBDA_TASK_ROOT": str(REPO),
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
    }
    if how == "module":
        cmd = [sys.executable, "-m", "lambda_edge.stream_server"]
    else:
        cmd = ["/bin/sh", str(REPO / "lambda_edge" / "run_stream.sh")]
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            assert line, (await proc.stderr.read()).decode()[-2000:]  # type: ignore[union-attr]
            if line.startswith(b"READY "):
                break
        assert int(line.split()[1]) == port
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=30) as c:
            assert (await asyncio.to_thread(c.get, url + "/healthz")).status_code == 200
        resp = await asyncio.to_thread(
            post, url + "/v1/generate/stream", prompt_body("u v", max_output_tokens=2)
        )
        assert resp.status_code == 200
        assert sse_events(resp.content)[-1][0] == "usage"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
