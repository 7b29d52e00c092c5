"""The WebSocket handler: real API Gateway WebSocket events, a real router on loopback, and
the Management API served by moto (happy path) or by a local server that answers 410
GoneException in the Management API's wire format (moto never raises Gone)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from lambda_events import (
    FRAME_LIMIT,
    LambdaContext,
    free_port,
    posted_frames,
    prompt_body,
    unique,
    ws_connect_event,
    ws_disconnect_event,
    ws_message_event,
)
from rtutil import ms_backend
from testkit import wait_until

from lambda_edge.runtime import Runtime
from lambda_edge.settings import Settings
from lambda_edge.websocket import make_ws_handler, management_endpoint
from serving.engines.scripted import ScriptedEngine

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


async def invoke(handler: Handler, event: dict[str, Any], ctx: Any = None) -> dict[str, Any]:
    return await asyncio.to_thread(handler, event, ctx or LambdaContext())


@pytest.fixture
def make_handler(runtimes_ws: list[Runtime]) -> Callable[..., Handler]:
    def make(port: int, **env: str) -> Handler:
        rt = Runtime(Settings.from_env({"HYBRID_ROUTER_ADDRESS": f"127.0.0.1:{port}", **env}))
        runtimes_ws.append(rt)
        return make_ws_handler(rt)

    return make


@pytest.fixture
def runtimes_ws() -> Iterator[list[Runtime]]:
    made: list[Runtime] = []
    yield made
    for rt in made:
        rt.close()


async def test_connect_and_disconnect(aws_env, make_handler):
    handler = make_handler(free_port())
    assert (await invoke(handler, ws_connect_event("conn-1")))["statusCode"] == 200
    assert (await invoke(handler, ws_disconnect_event("conn-1")))["statusCode"] == 200


async def test_stream_relayed_as_frames_in_order(aws_env, model_server, start_router, make_handler):
    engine = ScriptedEngine(reply_tokens=12)
    router = await start_router([ms_backend("gpu-a", "gpu", await model_server(engine))])
    handler = make_handler(router.port, HYBRID_ROUTER_WS_FLUSH_MS="0")
    conn = unique("conn")
    aws_env.start_recording()
    resp = await invoke(
        handler,
        ws_message_event(
            conn, {"action": "generate", "request": prompt_body("a b c", request_id="ws-1")}
        ),
    )
    frames = posted_frames(aws_env.stop_recording(), conn)
    assert resp["statusCode"] == 200
    types = [f["type"] for f in frames]
    assert types[0] == "decision" and types[-1] == "usage"
    assert set(types[1:-1]) == {"delta"}
    assert all(f["request_id"] == "ws-1" for f in frames)
    assert frames[0]["decision"]["backend"] == "gpu-a"
    assert "".join(f["text"] for f in frames if f["type"] == "delta") == "a b c a b c a b c a b c"
    assert sum(f["tokens"] for f in frames if f["type"] == "delta") == 12
    assert frames[-1]["usage"]["output_tokens"] == 12 and frames[-1]["usage"]["complete"]


async def test_deltas_coalesce_and_frames_stay_under_32kb(
    aws_env, model_server, start_router, make_handler
):
    """A 3,000-token answer (about 90 KB once JSON-escaped) with a long flush interval:
    the first delta goes out at once, the rest is held and posted in frames that fill up
    to the limit, so the whole answer costs a handful of posts."""
    # A quote, a backslash, 2- and 3-byte UTF-8 and a control character: all escaped.
    word = 'sup"er\\cali\u00e9\u4e2d\u0001'
    engine = ScriptedEngine(reply_tokens=3000)
    router = await start_router(
        [ms_backend("gpu-a", "gpu", await model_server(engine), context_window=16384)]
    )
    handler = make_handler(router.port, HYBRID_ROUTER_WS_FLUSH_MS="60000")
    conn = unique("conn")
    aws_env.start_recording()
    resp = await invoke(
        handler,
        ws_message_event(
            conn, {"request": prompt_body(word, max_output_tokens=3000, request_id="big-1")}
        ),
    )
    frames = posted_frames(aws_env.stop_recording(), conn)  # asserts each <= 32 KB
    assert resp["statusCode"] == 200
    deltas = [f for f in frames if f["type"] == "delta"]
    text = "".join(f["text"] for f in deltas)
    assert text == " ".join([word] * 3000)
    assert sum(f["tokens"] for f in deltas) == 3000
    total = len(json.dumps(text, ensure_ascii=False).encode())  # as escaped in the frames
    assert total > 2 * FRAME_LIMIT
    # decision + the first delta + ceil(rest / frame) + usage: far fewer than 3,000 posts.
    assert len(frames) <= 3 + total // 30_000 + 2
    assert frames[-1]["type"] == "usage"


async def test_route_action_posts_the_decision_only(
    aws_env, model_server, start_router, make_handler
):
    engine = ScriptedEngine()
    router = await start_router([ms_backend("gpu-a", "gpu", await model_server(engine))])
    conn = unique("conn")
    aws_env.start_recording()
    await invoke(
        make_handler(router.port),
        ws_message_event(conn, {"action": "route", "request": prompt_body()}),
    )
    frames = posted_frames(aws_env.stop_recording(), conn)
    assert [f["type"] for f in frames] == ["decision"]
    assert frames[0]["decision"]["backend"] == "gpu-a"
    assert engine.started == []


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (
            {"request": {"messages": [{"role": "user"}]}},
            "request.messages[0].content: Field required",
        ),
        ({"action": "dance", "request": prompt_body()}, "action: Input should be 'generate'"),
        ({}, "request: Field required"),
    ],
)
async def test_bad_message_gets_an_error_frame_naming_the_field(
    aws_env, make_handler, message, words
):
    conn = unique("conn")
    aws_env.start_recording()
    resp = await invoke(make_handler(free_port()), ws_message_event(conn, message))
    frames = posted_frames(aws_env.stop_recording(), conn)
    assert resp["statusCode"] == 400
    assert len(frames) == 1 and frames[0]["type"] == "error"
    assert frames[0]["status"] == "INVALID_ARGUMENT" and frames[0]["http_status"] == 400
    assert frames[0]["message"].startswith(words)


async def test_router_unavailable_gets_a_503_error_frame(aws_env, make_handler):
    conn = unique("conn")
    aws_env.start_recording()
    await invoke(make_handler(free_port()), ws_message_event(conn, {"request": prompt_body()}))
    frames = posted_frames(aws_env.stop_recording(), conn)
    assert [f["type"] for f in frames] == ["error"]
    assert frames[0]["status"] == "UNAVAILABLE" and frames[0]["http_status"] == 503
    assert frames[0]["message"]


# --- a client that went away ------------------------------------------------------------


class GoneAfter:
    """The API Gateway Management API's POST /@connections/{id}: the first ``ok`` posts
    succeed (200 ``{}``), then the connection is gone: 410 with ``x-amzn-ErrorType:
    GoneException`` as API Gateway answers it."""

    def __init__(self, ok: int) -> None:
        outer = self
        self.ok = ok
        self.posts: list[bytes] = []
        self.gone = 0

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                data = self.rfile.read(int(self.headers.get("content-length") or 0))
                assert "/@connections/" in self.path
                if len(outer.posts) < outer.ok:
                    outer.posts.append(data)
                    self._reply(200, b"{}", {})
                else:
                    outer.gone += 1
                    self._reply(410, b'{"message":null}', {"x-amzn-ErrorType": "GoneException"})

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), H)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


async def test_client_gone_mid_stream_cancels_the_router_stream(
    aws_env, model_server, start_router, make_handler
):
    engine = ScriptedEngine(tokens_per_s=20, reply_tokens=400)  # 20 s if nobody stopped it
    router = await start_router([ms_backend("gpu-a", "gpu", await model_server(engine))])
    gone = GoneAfter(ok=3)
    os.environ["AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"] = gone.url
    try:
        handler = make_handler(router.port, HYBRID_ROUTER_WS_FLUSH_MS="0")
        resp = await invoke(
            handler, ws_message_event("conn-gone", {"request": prompt_body(request_id="gone-1")})
        )
        assert resp["statusCode"] == 410
        assert len(gone.posts) == 3 and gone.gone == 1  # no post after the first 410
        assert json.loads(gone.posts[0])["type"] == "decision"
        # The router cancelled the backend call: the engine saw its consumer go away.
        await wait_until(
            lambda: "gone-1" in engine.cancelled,
            "the engine to see the cancellation",
            timeout_s=15.0,
        )
        assert engine.started == ["gone-1"]
    finally:
        gone.close()


def test_management_endpoint_comes_from_the_event() -> None:
    api = "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com"
    assert management_endpoint(api, "prod", "a1b2c3d4e5", "eu-west-1", env={}) == (
        f"https://{api}/prod"
    )
    # Behind a custom domain: the execute-api host of the API.
    assert management_endpoint("chat.example.com", "prod", "a1b2c3d4e5", "eu-west-1", env={}) == (
        "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/prod"
    )
    # A configured endpoint (local emulator) is left to boto3.
    env = {"AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI": "http://127.0.0.1:1"}
    assert management_endpoint(api, "prod", "a1b2c3d4e5", "eu-west-1", env=env) is None
