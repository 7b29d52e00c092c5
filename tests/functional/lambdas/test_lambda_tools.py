"""Tools and structured output through the Lambda front-ends (issue 15, item 4): the real
HTTP handler (behind a local Function URL stand-in), the streaming server and the WebSocket
handler, against a real router whose ``openai`` backends are OpenAI wire servers answering
with tool calls and JSON (tool_backends.py). The official ``openai`` SDK checks the
OpenAI-compatible shapes, streaming and not, including its own helpers that parse tool
arguments and JSON answers (``chat.completions.parse`` / ``.stream``). The SQS path is in
test_lambda_jobs.py. Pure checks of the frame builder and the SSE formatter close the file.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from lambda_events import (
    FunctionUrlEmulator,
    LambdaContext,
    http_event,
    posted_frames,
    sse_events,
    unique,
    ws_message_event,
)
from pydantic import BaseModel
from testkit import FakeClock
from tool_backends import (
    BERGEN,
    EXACT_JSON,
    OSLO,
    TWO_CALLS_TEXT,
    WEATHER_PARAMETERS,
    WEATHER_SCHEMA,
    WEATHER_TOOL,
    WEATHER_TOOL_FLAT,
    WRITER_TEXT,
    ToolRouter,
    as_json,
)

from lambda_edge.http_api import make_http_handler
from lambda_edge.payloads import GenerateBody, Job
from lambda_edge.runtime import Runtime
from lambda_edge.settings import Settings
from lambda_edge.sse import OpenAIStream, RouterEventStream, Tracker
from lambda_edge.stream_server import StreamServer, make_stream_server
from lambda_edge.telemetry import Telemetry
from lambda_edge.websocket import make_ws_handler
from lambda_edge.ws_frames import FrameBuilder

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
USER = {"role": "user", "content": "Weather in Oslo?"}
NAMED = {"type": "function", "function": {"name": "get_weather"}}


class GetWeather(BaseModel):
    city: str


class Weather(BaseModel):
    city: str
    celsius: float


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def runtime_for() -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(port: int, **env: str) -> Runtime:
        settings = Settings.from_env({"HYBRID_ROUTER_ADDRESS": f"127.0.0.1:{port}", **env})
        tel = Telemetry(service="tools-test", namespace="ToolsTest", tracing=False)
        rt = Runtime(settings, telemetry=tel)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


@pytest.fixture
def http_handler(tool_router: ToolRouter, runtime_for: Callable[..., Runtime]) -> Handler:
    return make_http_handler(runtime_for(tool_router.port))


@pytest.fixture
def function_url(http_handler: Handler) -> Iterator[FunctionUrlEmulator]:
    emu = FunctionUrlEmulator(http_handler)
    yield emu
    emu.close()


@pytest.fixture
def stream_url(tool_router: ToolRouter, runtime_for: Callable[..., Runtime]) -> Iterator[str]:
    """The streaming function's server, as the Lambda Web Adapter reaches it."""
    server: StreamServer = make_stream_server(runtime_for(tool_router.port), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()
    server.server_close()
    thread.join(10)


def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)


async def invoke(handler: Handler, event: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(handler, event, LambdaContext())


def post(url: str, body: Any) -> httpx.Response:
    with httpx.Client(timeout=30) as c:
        return c.post(url, json=body)


# --- OpenAI-compatible, buffered (HTTP function) --------------------------------------------


async def test_openai_sdk_runs_a_tool_loop_through_the_buffered_function(
    tool_router: ToolRouter, function_url: FunctionUrlEmulator
) -> None:
    client = sdk(function_url.base_url)
    try:
        first = await asyncio.to_thread(
            client.chat.completions.create,
            model="backend/tool-caller",
            messages=[USER],
            tools=[WEATHER_TOOL],
            tool_choice=NAMED,
        )
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        message = choice.message
        assert message.content is None  # only tool calls, as OpenAI answers them
        assert message.tool_calls is not None and len(message.tool_calls) == 1
        call = message.tool_calls[0]
        assert call.type == "function" and call.id == OSLO.id
        assert call.function.name == "get_weather"
        assert call.function.arguments == OSLO.arguments  # the fragments, joined
        assert json.loads(call.function.arguments) == {"city": "Oslo"}
        ext = first.model_extra["hybrid_router"]  # type: ignore[index]
        assert ext["backend"] == "tool-caller" and ext["format_error"] == ""
        # What reached the provider: the tool and the named choice, in OpenAI's shape.
        sent = tool_router.sent()
        assert sent["tools"][0]["function"]["name"] == "get_weather"
        assert sent["tools"][0]["function"]["parameters"] == WEATHER_PARAMETERS
        assert sent["tool_choice"] == NAMED

        # The SDK's loop: the assistant message as it came, then the tool's result.
        second = await asyncio.to_thread(
            client.chat.completions.create,
            model="backend/writer",
            messages=[
                USER,
                message,  # type: ignore[list-item]
                {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 4.5}'},
            ],
            tools=[WEATHER_TOOL],
        )
        assert second.choices[0].message.content == WRITER_TEXT
        assert second.choices[0].message.tool_calls is None
        assert second.choices[0].finish_reason == "stop"
        history = tool_router.sent()["messages"]
        assert [m["role"] for m in history] == ["user", "assistant", "tool"]
        assert history[1]["tool_calls"] == [
            {
                "id": OSLO.id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": OSLO.arguments},
            }
        ]
        assert history[2]["tool_call_id"] == OSLO.id
        assert history[2]["content"] == '{"celsius": 4.5}'
    finally:
        client.close()


async def test_openai_sdk_parses_strict_tools_and_json_answers(
    tool_router: ToolRouter, function_url: FunctionUrlEmulator
) -> None:
    """``chat.completions.parse``: strict tools (``strict`` has no router field and is
    accepted) get ``parsed_arguments``; a Pydantic ``response_format`` is sent as a
    ``json_schema`` and the JSON answer comes back ``parsed``."""
    client = sdk(function_url.base_url)
    try:
        tool = openai.pydantic_function_tool(GetWeather, name="get_weather")
        called = await asyncio.to_thread(
            client.chat.completions.parse,
            model="backend/two-calls",
            messages=[USER],
            tools=[tool],
        )
        message = called.choices[0].message
        assert message.content == TWO_CALLS_TEXT
        assert message.tool_calls is not None
        assert [c.id for c in message.tool_calls] == [OSLO.id, BERGEN.id]
        assert [c.function.parsed_arguments for c in message.tool_calls] == [
            GetWeather(city="Oslo"),
            GetWeather(city="Bergen"),
        ]
        assert called.usage is not None and called.usage.completion_tokens > 0

        answered = await asyncio.to_thread(
            client.chat.completions.parse,
            model="backend/json-exact",
            messages=[USER],
            response_format=Weather,
        )
        assert answered.choices[0].message.parsed == Weather(city="Oslo", celsius=4.5)
        assert answered.choices[0].finish_reason == "stop"
        assert answered.model_extra["hybrid_router"]["format_error"] == ""  # type: ignore[index]
        fmt = tool_router.sent()["response_format"]
        assert fmt["type"] == "json_schema"
        assert fmt["json_schema"]["name"] == "Weather" and fmt["json_schema"]["strict"] is True
        assert fmt["json_schema"]["schema"]["required"] == ["city", "celsius"]
    finally:
        client.close()


async def test_json_object_and_a_missed_schema_are_reported(
    tool_router: ToolRouter, http_handler: Handler
) -> None:
    body = {
        "model": "backend/json-sloppy",
        "messages": [USER],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": WEATHER_SCHEMA},
        },
    }
    resp = await invoke(http_handler, http_event("/v1/chat/completions", body))
    assert resp["statusCode"] == 200, resp["body"]
    done = json.loads(resp["body"])
    # Streamed by default: the answer is returned as it is, and flagged.
    assert done["choices"][0]["message"]["content"] == "".join(("Sure! ", '{"city": "Oslo"}'))
    assert done["hybrid_router"]["format_error"].startswith("the answer is not JSON")
    sent = tool_router.sent()["response_format"]
    assert sent["json_schema"]["name"] == "weather"
    assert sent["json_schema"]["schema"] == WEATHER_SCHEMA

    body = {
        "model": "backend/json-exact",
        "messages": [USER],
        "response_format": {"type": "json_object"},
    }
    resp = await invoke(http_handler, http_event("/v1/chat/completions", body))
    done = json.loads(resp["body"])
    assert json.loads(done["choices"][0]["message"]["content"]) == {"city": "Oslo", "celsius": 4.5}
    assert done["hybrid_router"]["format_error"] == ""
    assert tool_router.sent()["response_format"] == {"type": "json_object"}


BAD = [
    ({"parallel_tool_calls": False}, "parallel_tool_calls", "run the calls in order"),
    ({"tools": [WEATHER_TOOL], "tool_choice": "lookup"}, "tool_choice", "get_weather"),
    (
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
        "tool_choice",
        "'x' is not one of auto, none, required, get_weather",
    ),
    ({"tools": [{"type": "web_search"}]}, "tools[0]", "only function tools"),
    ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].name", "pattern"),
    ({"functions": [WEATHER_TOOL["function"]]}, "functions", "send them as tools"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "w"}}},
        "response_format.json_schema.schema",
        "Field required",
    ),
    ({"response_format": {"type": "json_schema"}}, "response_format", "needs"),
    ({"response_format": {"type": "yaml"}}, "response_format.type", "'json_schema'"),
    (
        {"hybrid_router": {"validate_before_streaming": True}},
        "hybrid_router.validate_before_streaming",
        "needs a JSON response_format",
    ),
    (
        {"messages": [USER, {"role": "tool", "content": "4.5"}]},
        "messages[1].tool_call_id",
        "names the call it answers",
    ),
    (
        {"messages": [{**USER, "tool_calls": [{"id": "c", "function": {"name": "f"}}]}]},
        "messages[0].tool_calls",
        "only an assistant message",
    ),
    (
        {
            "messages": [
                USER,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "[1]"},
                        }
                    ],
                },
            ]
        },
        "messages[1].tool_calls[0].arguments",
        "one JSON object",
    ),
    ({"n": 2}, "n", "only n=1"),
]


@pytest.mark.parametrize(("fields", "param", "words"), BAD)
async def test_what_cannot_be_honoured_is_a_400_naming_it(
    tool_router: ToolRouter, http_handler: Handler, fields: dict[str, Any], param: str, words: str
) -> None:
    body = {"model": "backend/tool-caller", "messages": [USER], **fields}
    resp = await invoke(http_handler, http_event("/v1/chat/completions", body))
    assert resp["statusCode"] == 400, resp["body"]
    err = json.loads(resp["body"])["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"
    assert words in err["message"]
    assert tool_router.wire.requests == []  # nothing reached a model


async def test_a_bad_tool_schema_is_the_routers_400_naming_the_tool(
    tool_router: ToolRouter, http_handler: Handler
) -> None:
    bad = {"type": "function", "function": {"name": "get_weather", "parameters": {"required": 1}}}
    body = {"model": "auto", "messages": [USER], "tools": [bad]}
    resp = await invoke(http_handler, http_event("/v1/chat/completions", body))
    assert resp["statusCode"] == 400
    err = json.loads(resp["body"])["error"]
    assert err["message"].startswith("tools[0] (get_weather).parameters_json: not a valid JSON")
    assert tool_router.wire.requests == []


# --- OpenAI-compatible, streamed (streaming function) ---------------------------------------


async def test_openai_sdk_streams_tool_call_fragments(
    tool_router: ToolRouter, stream_url: str
) -> None:
    client = sdk(stream_url + "/v1")

    def run() -> list[Any]:
        return list(
            client.chat.completions.create(
                model="backend/two-calls",
                messages=[USER],
                tools=[WEATHER_TOOL],
                tool_choice="auto",
                stream=True,
                stream_options={"include_usage": True},
            )
        )

    try:
        chunks = await asyncio.to_thread(run)
    finally:
        client.close()
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TWO_CALLS_TEXT
    calls: dict[int, dict[str, Any]] = {}
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            if tc.index not in calls:  # the first fragment names the call
                assert tc.id and tc.type == "function" and tc.function and tc.function.name
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            else:
                assert tc.id is None and tc.type is None and tc.function.name is None
            calls[tc.index]["arguments"] += tc.function.arguments or ""
    assert [calls[i] for i in sorted(calls)] == [as_json(OSLO), as_json(BERGEN)]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "tool_calls" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    ext = chunks[-2].model_extra["hybrid_router"]  # type: ignore[index]
    assert ext["backend"] == "two-calls" and ext["format_error"] == ""


async def test_openai_sdk_stream_helper_assembles_the_calls(
    tool_router: ToolRouter, stream_url: str
) -> None:
    """The SDK's ``chat.completions.stream`` accumulates the fragments itself and parses
    strict tools' arguments: what an agent framework built on it sees."""
    client = sdk(stream_url + "/v1")
    tool = openai.pydantic_function_tool(GetWeather, name="get_weather")

    def run() -> tuple[list[str], Any]:
        with client.chat.completions.stream(
            model="backend/tool-caller", messages=[USER], tools=[tool], tool_choice="required"
        ) as stream:
            kinds = [e.type for e in stream]
            return kinds, stream.get_final_completion()

    try:
        kinds, final = await asyncio.to_thread(run)
    finally:
        client.close()
    assert "tool_calls.function.arguments.done" in kinds
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id == OSLO.id and call.function.name == "get_weather"
    assert call.function.parsed_arguments == GetWeather(city="Oslo")
    assert tool_router.sent()["tool_choice"] == "required"


async def test_tool_call_chunks_follow_openais_format(
    tool_router: ToolRouter, stream_url: str
) -> None:
    body = {
        "model": "backend/tool-caller",
        "messages": [USER],
        "tools": [WEATHER_TOOL],
        "stream": True,
    }
    resp = await asyncio.to_thread(post, stream_url + "/v1/chat/completions", body)
    assert resp.status_code == 200
    events = sse_events(resp.content)
    assert events[-1] == (None, "[DONE]")
    deltas = [json.loads(data)["choices"][0]["delta"] for _, data in events[:-1]]
    head = {"index": 0, "id": OSLO.id, "type": "function"}
    assert deltas[0] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [{**head, "function": {"name": "get_weather", "arguments": ""}}],
    }
    assert deltas[1:-1] == [
        {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]} for piece in OSLO.fragments
    ]
    assert deltas[-1] == {}
    assert json.loads(events[-2][1])["choices"][0]["finish_reason"] == "tool_calls"


async def test_validate_before_streaming_streams_only_a_valid_answer(
    tool_router: ToolRouter, stream_url: str
) -> None:
    client = sdk(stream_url + "/v1")

    def run() -> list[Any]:
        return list(
            client.chat.completions.create(
                model="auto",
                messages=[USER],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "weather", "schema": WEATHER_SCHEMA, "strict": True},
                },
                stream=True,
                extra_body={
                    "hybrid_router": {
                        "pin_backends": ["json-sloppy", "json-exact"],
                        "validate_before_streaming": True,
                    }
                },
            )
        )

    try:
        chunks = await asyncio.to_thread(run)
    finally:
        client.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(EXACT_JSON)  # nothing of the cheaper, invalid answer
    ext = chunks[-1].model_extra["hybrid_router"]  # type: ignore[index]
    assert ext["backend"] == "json-exact" and ext["failovers"] == 1
    assert ext["format_error"] == ""
    assert [r.body["model"] for r in tool_router.wire.requests] == ["json-sloppy", "json-exact"]


# --- the router's own JSON: /v1/generate and /v1/generate/stream ---------------------------


async def test_generate_carries_tool_calls_both_ways(
    tool_router: ToolRouter, http_handler: Handler
) -> None:
    body = {
        "messages": [USER],
        "tools": [WEATHER_TOOL_FLAT],
        "tool_choice": "required",
        "pin_backends": ["two-calls"],
    }
    resp = await invoke(http_handler, http_event("/v1/generate", body))
    assert resp["statusCode"] == 200, resp["body"]
    out = json.loads(resp["body"])
    assert out["text"] == TWO_CALLS_TEXT
    assert out["tool_calls"] == [as_json(OSLO), as_json(BERGEN)]
    assert out["format_error"] == ""
    assert out["usage"]["finish_reason"] == "tool_calls" and out["usage"]["tool_calls"] == 2
    assert tool_router.sent()["tool_choice"] == "required"

    # The next turn sends the calls back as they came, and each result.
    follow = {
        "messages": [
            USER,
            {"role": "assistant", "content": out["text"], "tool_calls": out["tool_calls"]},
            {"role": "tool", "tool_call_id": OSLO.id, "content": "4.5"},
            {"role": "tool", "tool_call_id": BERGEN.id, "name": "get_weather", "content": "9"},
        ],
        "tools": [WEATHER_TOOL],  # OpenAI's shape is taken too
        "pin_backends": ["writer"],
    }
    resp = await invoke(http_handler, http_event("/v1/generate", follow))
    assert resp["statusCode"] == 200, resp["body"]
    out = json.loads(resp["body"])
    assert out["text"] == WRITER_TEXT and out["tool_calls"] == []
    history = tool_router.sent()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in history[1]["tool_calls"]] == [OSLO.id, BERGEN.id]
    assert [m["tool_call_id"] for m in history[2:]] == [OSLO.id, BERGEN.id]


async def test_generate_refuses_bad_tool_fields_naming_them(
    tool_router: ToolRouter, http_handler: Handler
) -> None:
    cases = [
        ({"tools": [WEATHER_TOOL_FLAT], "tool_choice": "lookup"}, "tool_choice"),
        ({"tools": [{"name": "get_weather", "colour": 1}]}, "tools[0].colour"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"validate_before_streaming": True}, "validate_before_streaming"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "assistant"}]}, "messages[0].content"),
    ]
    handler = http_handler
    for fields, field in cases:
        body = {"messages": [USER], **fields}
        resp = await invoke(handler, http_event("/v1/generate", body))
        assert resp["statusCode"] == 400, (fields, resp["body"])
        err = json.loads(resp["body"])["error"]
        assert err["field"] == field, err
    assert tool_router.wire.requests == []


async def test_generate_stream_sends_tool_call_events(
    tool_router: ToolRouter, stream_url: str
) -> None:
    body = {
        "messages": [USER],
        "tools": [WEATHER_TOOL_FLAT],
        "pin_backends": ["tool-caller"],
        "request_id": "tools-sse-1",
    }
    resp = await asyncio.to_thread(post, stream_url + "/v1/generate/stream", body)
    assert resp.status_code == 200
    events = [(name, json.loads(data)) for name, data in sse_events(resp.content)]
    kinds = [name for name, _ in events]
    assert kinds == ["decision", "tool_call", "tool_call", "tool_call", "tool_call", "usage"]
    calls = [f for n, f in events if n == "tool_call"]
    assert calls[0] == {
        "type": "tool_call",
        "request_id": "tools-sse-1",
        "index": 0,
        "id": OSLO.id,
        "name": "get_weather",
        "arguments": "",
    }
    assert [f["arguments"] for f in calls[1:]] == list(OSLO.fragments)
    assert all(f["id"] == "" and f["name"] == "" for f in calls[1:])
    usage = events[-1][1]
    assert usage["tool_calls"] == [as_json(OSLO)]
    assert usage["usage"]["finish_reason"] == "tool_calls"


# --- WebSocket ------------------------------------------------------------------------------


async def test_websocket_frames_carry_coalesced_calls_and_the_whole_calls(
    aws_env: Any, tool_router: ToolRouter, runtime_for: Callable[..., Runtime]
) -> None:
    """A long flush interval: the text goes out at once; each call's fragments are held and
    posted as one frame when the next call (or the usage) comes; the usage frame has the
    calls whole."""
    handler = make_ws_handler(runtime_for(tool_router.port, HYBRID_ROUTER_WS_FLUSH_MS="60000"))
    conn = unique("conn")
    message = {
        "request": {
            "messages": [USER],
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "pin_backends": ["two-calls"],
            "request_id": "ws-tools-1",
        },
        "session": False,
    }
    aws_env.start_recording()
    resp = await invoke(handler, ws_message_event(conn, message))
    frames = posted_frames(aws_env.stop_recording(), conn)
    assert resp["statusCode"] == 200
    assert [f["type"] for f in frames] == ["decision", "delta", "tool_call", "tool_call", "usage"]
    assert frames[1]["text"] == TWO_CALLS_TEXT
    base = {"type": "tool_call", "request_id": "ws-tools-1", "name": "get_weather"}
    assert frames[2] == {**base, "index": 0, "id": OSLO.id, "arguments": OSLO.arguments}
    assert frames[3] == {**base, "index": 1, "id": BERGEN.id, "arguments": BERGEN.arguments}
    assert frames[4]["tool_calls"] == [as_json(OSLO), as_json(BERGEN)]
    assert frames[4]["usage"]["tool_calls"] == 2 and frames[4]["usage"]["format_error"] == ""
    assert tool_router.sent()["tool_choice"] == NAMED


async def test_websocket_bad_tool_message_is_an_error_frame(
    aws_env: Any, tool_router: ToolRouter, runtime_for: Callable[..., Runtime]
) -> None:
    handler = make_ws_handler(runtime_for(tool_router.port))
    conn = unique("conn")
    message = {"request": {"messages": [USER, {"role": "tool", "content": "4.5"}]}}
    aws_env.start_recording()
    resp = await invoke(handler, ws_message_event(conn, message))
    (frame,) = posted_frames(aws_env.stop_recording(), conn)
    assert resp["statusCode"] == 400
    assert frame["type"] == "error" and frame["status"] == "INVALID_ARGUMENT"
    assert frame["message"].startswith('request.messages[1].tool_call_id: a "tool" message')


# --- pure: the frame builder, the SSE formatter, the body models ----------------------------


def tool_call(index: int, arguments: str = "", id: str = "", name: str = "") -> rpb.GenerateEvent:
    return rpb.GenerateEvent(
        tool_call=tpb.ToolCallDelta(index=index, id=id, name=name, arguments=arguments)
    )


def text(t: str) -> rpb.GenerateEvent:
    return rpb.GenerateEvent(delta=tpb.TextDelta(text=t, tokens=1))


def usage(calls: int) -> rpb.GenerateEvent:
    return rpb.GenerateEvent(
        usage=rpb.Usage(
            backend="b",
            output_tokens=3,
            complete=True,
            finish_reason=tpb.FINISH_REASON_TOOL_CALLS,
            tool_calls=calls,
        )
    )


def decoded(frames: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(f) for f in frames]


def test_frames_with_no_interval_send_each_fragment_naming_the_call_once() -> None:
    fb = FrameBuilder("r", max_frame_bytes=32_000, flush_s=0.0, clock=FakeClock())
    out: list[bytes] = []
    for ev in (
        text("Hi"),
        tool_call(0, "", "c0", "get_weather"),
        tool_call(0, '{"city":'),
        tool_call(0, ' "Oslo"}'),
        tool_call(1, '{"city": "Bergen"}', "", "get_weather"),  # no id: call_1, as elsewhere
        usage(2),
    ):
        out += fb.add(ev)
    frames = decoded(out)
    calls = [(f["index"], f["id"], f["name"], f["arguments"]) for f in frames[1:-1]]
    assert calls == [
        (0, "c0", "get_weather", ""),
        (0, "", "", '{"city":'),
        (0, "", "", ' "Oslo"}'),
        (1, "call_1", "get_weather", '{"city": "Bergen"}'),
    ]
    assert frames[-1]["tool_calls"] == [
        {"id": "c0", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Bergen"}'},
    ]


def test_long_arguments_split_under_the_frame_limit() -> None:
    clock = FakeClock()
    fb = FrameBuilder("r", max_frame_bytes=256, flush_s=10.0, clock=clock)
    value = 'x"\u00e9' * 200  # escaped quotes and 2-byte characters
    args = json.dumps({"note": value})
    out = fb.add(tool_call(0, "", "c0", "save_note"))
    for i in range(0, len(args), 7):
        out += fb.add(tool_call(0, args[i : i + 7]))
    out += fb.flush()
    assert all(len(f) <= 256 for f in out)
    frames = decoded(out)
    assert frames[0]["id"] == "c0" and all(f["id"] == "" for f in frames[1:])
    assert "".join(f["arguments"] for f in frames) == args
    assert len(frames) < len(args) // 7  # full frames, not one per fragment


def test_openai_stream_text_then_calls() -> None:
    t = Tracker()
    s = OpenAIStream("r", created=1, include_usage=False, tracker=t)
    out: list[bytes] = []
    for ev in (
        text("Checking."),
        tool_call(0, "", "c0", "f"),
        tool_call(0, "{}"),
        tool_call(0, ""),  # nothing new: no chunk
        usage(1),
    ):
        out += s.add(ev, t.see(ev))
    out += s.end()
    chunks = [json.loads(f[len(b"data: ") :]) for f in out[:-1]]
    head = {"index": 0, "id": "c0", "type": "function"}
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "Checking."},
        {"tool_calls": [{**head, "function": {"name": "f", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_router_event_stream_usage_has_the_calls() -> None:
    t = Tracker()
    s = RouterEventStream("r", tracker=t)
    out: list[bytes] = []
    for ev in (tool_call(0, '{"a":', "c0", "f"), tool_call(0, " 1}"), usage(1)):
        out += s.add(ev, t.see(ev))
    names_and_data = sse_events(b"".join(out))
    assert [n for n, _ in names_and_data] == ["tool_call", "tool_call", "usage"]
    last = json.loads(names_and_data[-1][1])
    assert last["tool_calls"] == [{"id": "c0", "name": "f", "arguments": '{"a": 1}'}]


def test_a_job_without_tools_dumps_as_before() -> None:
    """The jobs' idempotency hashes the dumped request: new fields left empty are not in
    it, so a job sent before tools existed hashes the same."""
    job = Job.model_validate({"job_id": "j", "request": {"messages": [USER]}})
    dumped = job.model_dump(mode="json")["request"]
    assert not {"tools", "tool_choice", "response_format", "validate_before_streaming"} & set(
        dumped
    )
    assert dumped["messages"] == [USER]
    with_tools = {
        "messages": [
            USER,
            {"role": "assistant", "tool_calls": [as_json(OSLO)]},
            {"role": "tool", "tool_call_id": OSLO.id, "content": "4.5"},
        ],
        "tools": [WEATHER_TOOL],
        "response_format": "json_object",
    }
    body = GenerateBody.model_validate(with_tools)
    again = GenerateBody.model_validate(body.model_dump(mode="json"))
    assert again == body  # a job's request survives the idempotency round trip
    pb = body.to_proto()
    assert pb.messages[1].tool_calls[0].arguments == OSLO.arguments
    assert pb.messages[2].role == tpb.ROLE_TOOL and pb.tools[0].name == "get_weather"
    assert pb.response_format.type == tpb.RESPONSE_FORMAT_TYPE_JSON_OBJECT
