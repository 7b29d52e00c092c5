"""Conversation sessions through the Lambda front-ends (issue 13, item 6): the real HTTP,
OpenAI-compatible, streaming and WebSocket handlers against a real router (its sessions
in a SQLite file under tmp_path) with a scripted ModelService backend, and moto for the
WebSocket Management API. Each path holds a two-turn conversation that the router keeps:
the second turn's decision counts the first turn and its answer (``session_turns == 2``),
and the model is sent more prompt tokens (the history) than the first time."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from lambda_events import (
    LambdaContext,
    function_url_event,
    http_event,
    prompt_body,
    ws_connect_event,
    ws_disconnect_event,
    ws_message_event,
)
from rtutil import ms_backend

from lambda_edge.http_api import make_http_handler
from lambda_edge.runtime import Runtime
from lambda_edge.settings import Settings
from lambda_edge.stream_server import StreamServer, make_stream_server
from lambda_edge.telemetry import Telemetry
from lambda_edge.websocket import connection_session_id, make_ws_handler
from serving.engines.scripted import ScriptedEngine

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
RULE_WORDS = "1-128 of letters, digits"


async def invoke(handler: Handler, event: dict[str, Any]) -> dict[str, Any]:
    """A sync Lambda handler, off the event loop (the router runs on the loop)."""
    return await asyncio.to_thread(handler, event, LambdaContext())


def body_of(resp: dict[str, Any]) -> Any:
    return json.loads(resp["body"])


@pytest.fixture
async def gpu(model_server, start_router):  # type: ignore[no-untyped-def]
    engine = ScriptedEngine(reply_tokens=5)
    router = await start_router([ms_backend("gpu-a", "gpu", await model_server(engine))])
    return engine, router


@pytest.fixture
def runtime_for() -> Iterator[Callable[[int], Runtime]]:
    made: list[Runtime] = []

    def make(port: int) -> Runtime:
        settings = Settings.from_env({"HYBRID_ROUTER_ADDRESS": f"127.0.0.1:{port}"})
        tel = Telemetry(service="sessions-test", namespace="SessionsTest", tracing=False)
        rt = Runtime(settings, telemetry=tel)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


# --- HTTP: the router's own JSON --------------------------------------------------------------


async def test_http_two_turns_in_one_session(gpu, runtime_for):
    engine, router = gpu
    handler = make_http_handler(runtime_for(router.port))

    async def generate(text: str, **fields: Any) -> dict[str, Any]:
        resp = await invoke(handler, http_event("/v1/generate", prompt_body(text, **fields)))
        assert resp["statusCode"] == 200, resp["body"]
        return body_of(resp)  # type: ignore[no-any-return]

    first = await generate("red green blue", session_id="http-chat-1")
    d1 = first["decision"]
    assert (d1["session_id"], d1["session_turns"], d1["context_strategy"]) == (
        "http-chat-1",
        0,
        "sliding",  # the router's default
    )
    assert d1["candidates"][0]["context"]["turns_kept"] == 0
    second = await generate("and yellow", session_id="http-chat-1", context_strategy="strict")
    d2 = second["decision"]
    assert d2["session_id"] == "http-chat-1" and d2["session_turns"] == 2
    assert d2["context_strategy"] == "strict"
    fit = d2["candidates"][0]["context"]
    assert fit["turns_kept"] == 2 and fit["turns_dropped"] == 0
    # The model was sent the stored history: the first turn and its answer.
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]
    assert second["text"] == "and yellow and yellow and"

    # /v1/route is a dry run: it sees the session (4 turns now) and stores nothing.
    resp = await invoke(
        handler, http_event("/v1/route", prompt_body("x", session_id="http-chat-1"))
    )
    assert resp["statusCode"] == 200, resp["body"]
    assert body_of(resp)["session_turns"] == 4
    third = await generate("again", session_id="http-chat-1")
    assert third["decision"]["session_turns"] == 4

    # Without session_id nothing is kept, and the decision says so.
    plain = await generate("red green blue")
    assert plain["decision"]["session_id"] == "" and plain["decision"]["session_turns"] == 0
    assert "context" not in plain["decision"]["candidates"][0]
    assert len(engine.started) == 4


async def test_http_strict_history_too_long_is_413(model_server, start_router, runtime_for):
    """strict never cuts the history: once it outgrows every window the router refuses
    (OUT_OF_RANGE naming the largest window), which the front-end answers 413."""
    engine = ScriptedEngine(context_window=300, reply_tokens=10)
    backend = ms_backend("edge-a", "edge", await model_server(engine), context_window=300)
    router = await start_router([backend])
    handler = make_http_handler(runtime_for(router.port))
    words = " ".join(f"w{i}" for i in range(30))
    statuses = []
    for _ in range(10):
        body = prompt_body(
            words, max_output_tokens=10, session_id="strict-1", context_strategy="strict"
        )
        resp = await invoke(handler, http_event("/v1/generate", body))
        statuses.append(resp["statusCode"])
        if resp["statusCode"] != 200:
            break
    assert statuses[0] == 200 and statuses[-1] == 413, statuses
    err = body_of(resp)["error"]
    assert err["status"] == "OUT_OF_RANGE" and "context window" in err["message"]


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"session_id": "two words"}, "session_id", RULE_WORDS),
        ({"session_id": "x" * 129}, "session_id", RULE_WORDS),
        ({"session_id": ""}, "session_id", RULE_WORDS),
        ({"session_id": 7}, "session_id", "valid string"),
        ({"session_id": "s", "context_strategy": "window"}, "context_strategy",
         "'sliding', 'summarize' or 'strict'"),
        ({"context_strategy": "strict"}, "context_strategy", "give session_id too"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("path", ["/v1/generate", "/v1/route"])
async def test_http_bad_session_fields_are_400_naming_the_field(
    gpu, runtime_for, path, fields, field, words
):
    engine, router = gpu
    handler = make_http_handler(runtime_for(router.port))
    resp = await invoke(handler, http_event(path, prompt_body(**fields)))
    assert resp["statusCode"] == 400, resp["body"]
    err = body_of(resp)["error"]
    assert err["status"] == "INVALID_ARGUMENT" and err["field"] == field
    assert err["message"].startswith(f"{field}: ") and words in err["message"]
    assert engine.started == []


# --- OpenAI-compatible (buffered HTTP function) -----------------------------------------------


def openai_client(handler: Handler, **kw: Any) -> Any:
    """The OpenAI SDK whose HTTP requests become Function URL events for ``handler``."""
    import openai

    def transport(request: httpx.Request) -> httpx.Response:
        event = function_url_event(
            request.url.path,
            raw=request.read(),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        result = handler(event, LambdaContext())
        return httpx.Response(
            result["statusCode"],
            headers=result.get("headers") or {},
            content=result.get("body", "").encode(),
        )

    http = httpx.Client(transport=httpx.MockTransport(transport))
    return openai.OpenAI(
        base_url="https://fn.lambda-url.us-east-1.on.aws/v1",
        api_key="unused",
        max_retries=0,
        http_client=http,
        **kw,
    )


async def test_openai_two_turns_with_the_session_header(gpu, runtime_for):
    engine, router = gpu
    handler = make_http_handler(runtime_for(router.port))
    client = openai_client(handler, default_headers={"X-Session-Id": "oa-chat-1"})

    def ask(text: str, **kw: Any) -> Any:
        return client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": text}], max_tokens=5, **kw
        )

    try:
        first = await asyncio.to_thread(ask, "red green blue")
        second = await asyncio.to_thread(
            ask, "and yellow", extra_body={"hybrid_router": {"context_strategy": "summarize"}}
        )
    finally:
        client.close()
    ext1 = first.model_extra["hybrid_router"]
    ext2 = second.model_extra["hybrid_router"]
    assert ext1["session_id"] == "oa-chat-1" and ext1["session_turns"] == 0
    assert ext2["session_id"] == "oa-chat-1" and ext2["session_turns"] == 2
    assert ext2["context_strategy"] == "summarize"
    assert second.choices[0].message.content == "and yellow and yellow and"
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


async def test_openai_two_turns_with_the_extension_field(gpu, runtime_for):
    _, router = gpu
    handler = make_http_handler(runtime_for(router.port))
    client = openai_client(handler)

    def ask(text: str) -> Any:
        return client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": text}],
            max_tokens=5,
            extra_body={"hybrid_router": {"session_id": "oa-chat-2"}},
        )

    try:
        await asyncio.to_thread(ask, "one two")
        second = await asyncio.to_thread(ask, "three")
        # Without a session the extension has no session facts.
        plain = await asyncio.to_thread(
            client.chat.completions.create,
            model="auto",
            messages=[{"role": "user", "content": "x"}],
            max_tokens=1,
        )
    finally:
        client.close()
    assert second.model_extra["hybrid_router"]["session_turns"] == 2
    assert "session_id" not in plain.model_extra["hybrid_router"]


@pytest.mark.parametrize(
    ("extra_body", "headers", "param", "words"),
    [
        ({"hybrid_router": {"session_id": "s", "context_strategy": "forget"}}, {},
         "hybrid_router.context_strategy", "'sliding', 'summarize' or 'strict'"),
        ({"hybrid_router": {"session_id": "no spaces"}}, {}, "hybrid_router.session_id",
         RULE_WORDS),
        ({"hybrid_router": {"context_strategy": "strict"}}, {},
         "hybrid_router.context_strategy", "X-Session-Id"),
        ({}, {"X-Session-Id": "a/b"}, "X-Session-Id", RULE_WORDS),
        ({"hybrid_router": {"session_id": "a"}}, {"X-Session-Id": "b"}, "X-Session-Id",
         "differs"),
        ({"session_id": "top"}, {}, "session_id", "hybrid_router.session_id"),
    ],
)  # fmt: skip
async def test_openai_bad_session_fields_are_400_in_openais_shape(
    gpu, runtime_for, extra_body, headers, param, words
):
    import openai

    engine, router = gpu
    client = openai_client(make_http_handler(runtime_for(router.port)))
    try:
        with pytest.raises(openai.BadRequestError) as bad:
            await asyncio.to_thread(
                client.chat.completions.create,
                model="auto",
                messages=[{"role": "user", "content": "x"}],
                extra_body=extra_body,
                extra_headers=headers,
            )
    finally:
        client.close()
    assert bad.value.status_code == 400
    err = bad.value.body
    assert isinstance(err, dict)
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_argument"
    assert err["param"] == param and words in err["message"]
    assert engine.started == []


# --- OpenAI-compatible, streamed (the streaming function) -----------------------------------


async def test_openai_stream_two_turns_with_the_session_header(gpu, runtime_for):
    import openai

    _, router = gpu
    server: StreamServer = make_stream_server(runtime_for(router.port), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{server.port}/v1",
        api_key="unused",
        max_retries=0,
        timeout=60,
        default_headers={"X-Session-Id": "sse-chat-1"},
    )

    def ask(text: str) -> list[Any]:
        stream = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": text}], max_tokens=5, stream=True
        )
        return list(stream)

    try:
        await asyncio.to_thread(ask, "red green blue")
        chunks = await asyncio.to_thread(ask, "and yellow")
    finally:
        client.close()
        server.shutdown()
        server.server_close()
        thread.join(10)
    ext = chunks[-1].model_extra["hybrid_router"]
    assert ext["session_id"] == "sse-chat-1" and ext["session_turns"] == 2
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == (
        "and yellow and yellow and"
    )


# --- WebSocket --------------------------------------------------------------------------------


def connection_id() -> str:
    """An id shaped like API Gateway's (base64 of 11 bytes: ``L0SM9cOFvHcCIhw=``), without
    ``/`` and ``+``, which moto's Management API cannot route (the unit tests map them)."""
    return base64.b64encode(os.urandom(11)).decode().replace("/", "Q").replace("+", "P")


def posted(recording: list[dict[str, Any]], connection: str) -> list[dict[str, Any]]:
    """The frames posted to one connection (its id is URL-encoded in the path: ``=``)."""
    frames = []
    for r in recording:
        if r["method"] == "POST" and unquote(r["url"]).endswith(f"/@connections/{connection}"):
            body = r["body"]
            data = base64.b64decode(body) if r.get("body_encoded") else body.encode()
            frames.append(json.loads(data))
    return frames


@pytest.fixture
def ws(aws_env, gpu, runtime_for):  # type: ignore[no-untyped-def]
    """send(connection, message) -> the frames posted to that connection."""
    _, router = gpu
    handler = make_ws_handler(runtime_for(router.port))

    async def send(conn: str, message: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
        aws_env.start_recording()
        resp = await invoke(handler, ws_message_event(conn, message))
        return resp["statusCode"], posted(aws_env.stop_recording(), conn)

    send.handler = handler  # type: ignore[attr-defined]
    return send


def decision_of(frames: list[dict[str, Any]]) -> dict[str, Any]:
    (d,) = [f["decision"] for f in frames if f["type"] == "decision"]
    return d  # type: ignore[no-any-return]


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "delta")


async def test_websocket_keeps_one_session_per_connection(ws):
    conn, other = connection_id(), connection_id()
    handler = ws.handler
    assert (await invoke(handler, ws_connect_event(conn)))["statusCode"] == 200
    status, first = await ws(conn, {"action": "generate", "request": prompt_body("red green")})
    assert status == 200 and first[-1]["type"] == "usage"
    d1 = decision_of(first)
    assert d1["session_id"] == connection_session_id(conn) and d1["session_id"].startswith("ws-")
    assert d1["session_turns"] == 0
    status, second = await ws(conn, {"request": prompt_body("and blue")})
    assert status == 200
    d2 = decision_of(second)
    assert d2["session_id"] == d1["session_id"] and d2["session_turns"] == 2
    assert text_of(second) == "and blue and blue and"
    assert second[-1]["usage"]["input_tokens"] > first[-1]["usage"]["input_tokens"]

    # Another connection has its own session.
    _, elsewhere = await ws(other, {"request": prompt_body("hello")})
    assert decision_of(elsewhere)["session_turns"] == 0
    assert decision_of(elsewhere)["session_id"] == connection_session_id(other)

    # "session": false: stateless, and the connection's session is left as it was.
    _, stateless = await ws(conn, {"session": False, "request": prompt_body("aside")})
    assert decision_of(stateless)["session_id"] == ""
    assert decision_of(stateless)["session_turns"] == 0
    # The route action is a dry run of the connection's session: 4 turns, none added.
    _, routed = await ws(conn, {"action": "route", "request": prompt_body("peek")})
    assert [f["type"] for f in routed] == ["decision"]
    assert decision_of(routed)["session_turns"] == 4

    # $disconnect deletes nothing: the session expires by the router's TTL.
    assert (await invoke(handler, ws_disconnect_event(conn)))["statusCode"] == 200


async def test_websocket_messages_may_share_a_named_session(ws):
    a, b = connection_id(), connection_id()
    request = prompt_body("first", session_id="shared-ws-1", context_strategy="strict")
    await ws(a, {"request": request})
    _, frames = await ws(b, {"request": prompt_body("second", session_id="shared-ws-1")})
    d = decision_of(frames)
    assert d["session_id"] == "shared-ws-1" and d["session_turns"] == 2


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ({"request": prompt_body(session_id="no spaces")},
         f"request.session_id: must be {RULE_WORDS}"),
        ({"request": prompt_body(context_strategy="window")},
         "request.context_strategy: Input should be 'sliding', 'summarize' or 'strict'"),
        ({"session": False, "request": prompt_body(session_id="s")},
         "session: false conflicts with request.session_id"),
        ({"session": "off", "request": prompt_body()}, "session: Input should be a valid boolean"),
    ],
)  # fmt: skip
async def test_websocket_bad_session_fields_get_an_error_frame(ws, gpu, message, words):
    engine, _ = gpu
    status, frames = await ws(connection_id(), message)
    assert status == 400
    assert [f["type"] for f in frames] == ["error"]
    assert frames[0]["status"] == "INVALID_ARGUMENT" and frames[0]["http_status"] == 400
    assert frames[0]["message"].startswith(words)
    assert engine.started == []
