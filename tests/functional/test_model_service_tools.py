"""Tools and JSON answers on the self-hosted path: the real ModelService server over the
scripted engine, the router's model_service adapter, and a real router in front.

A tool call streams as ``tool_call`` events (several fragments), the adapter turns them
into ``Chunk.tool_calls`` and ``router.tools.calls.ToolCallBuffer`` reassembles them
exactly; tool definitions, choices, formats and a history with calls and results reach
the engine; the server's Info capabilities join the backend's spec, which is how the
router comes to send tool requests to a backend configured with ``chat`` only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import grpc
import jsonschema
import pytest
from hybrid_router.client import make_request
from hybrid_router.v1 import model_service_pb2 as pb
from hybrid_router.v1 import model_service_pb2_grpc
from hybrid_router.v1 import types_pb2 as tpb
from rtutil import collect, ms_backend, stub_for, text_of
from testkit import collect_chunks

from router.backends.model_service import ModelServiceBackend
from router.config import BackendConfig
from router.tools.calls import ToolCallBuffer
from router.types import (
    BackendCall,
    FinishReason,
    FormatType,
    InferenceRequest,
    Message,
    ResponseFormat,
    Role,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    ToolSpec,
)
from serving.engines.base import EngineChunk, EngineRequest
from serving.engines.base import ToolCall as EngineToolCall
from serving.engines.scripted import FRAGMENT_CHARS, ScriptedEngine, call_id
from serving.model_server import create_server

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "minLength": 2}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}
TOOL = ToolSpec("get_weather", "Weather for a city", json.dumps(WEATHER))


class Recording(ScriptedEngine):
    """The scripted engine, keeping the requests it was given."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.requests: list[EngineRequest] = []

    def generate(self, request: EngineRequest) -> AsyncGenerator[EngineChunk, None]:
        self.requests.append(request)
        return super().generate(request)


def backend_for(endpoint: str, capabilities: tuple[str, ...] = ("chat",)) -> ModelServiceBackend:
    cfg = BackendConfig(
        name="gpu-a", tier="gpu", kind="model_service", endpoint=endpoint, model="scripted",
        context_window=8192, capabilities=capabilities,
    )  # fmt: skip
    return ModelServiceBackend(cfg.to_spec(), timeout_s=10.0)


def tool_request(mode: ToolChoiceMode = ToolChoiceMode.REQUIRED, **kw: Any) -> InferenceRequest:
    fields: dict[str, Any] = {
        "messages": (Message(Role.USER, "Weather in Oslo?"),),
        "max_output_tokens": 64,
        "request_id": "req-tools",
        "tools": (TOOL,),
        "tool_choice": ToolChoice(mode),
    }
    fields.update(kw)
    return InferenceRequest(**fields)


async def test_a_tool_call_streams_through_the_server_and_reassembles_exactly(
    model_server: Any,
) -> None:
    engine = Recording()
    backend = backend_for(await model_server(engine))
    await backend.start()
    try:
        chunks = await collect_chunks(backend, BackendCall(request=tool_request()))
    finally:
        await backend.close()
    *fragments, final = chunks
    assert all(c.text == "" and len(c.tool_calls) == 1 for c in fragments)
    assert len(fragments) >= 3  # the id and name, then the arguments in pieces
    buffer = ToolCallBuffer()
    for chunk in fragments:
        buffer.add(chunk.tool_calls[0])
    (call,) = buffer.calls()
    expected_id = call_id("req-tools", 0)
    assert (call.id, call.name) == (expected_id, "get_weather")
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    # exactly the engine's text: fragments joined in order, none lost or merged wrongly
    pieces = [c.tool_calls[0].arguments for c in fragments]
    assert pieces[0] == "" and all(len(p) <= FRAGMENT_CHARS for p in pieces)
    assert call.arguments == json.dumps({"city": "aa", "days": 0})
    assert final.finish_reason is FinishReason.TOOL_CALLS and final.output_tokens == len(fragments)
    (seen,) = engine.requests
    assert seen.tools[0] == ("get_weather", "Weather for a city", json.dumps(WEATHER))
    assert seen.tool_choice == ("required", "") and seen.response_format == ("text", "", "")


async def test_the_history_with_calls_and_results_and_a_json_format_reach_the_engine(
    model_server: Any,
) -> None:
    engine = Recording(reply_tokens=4)
    backend = backend_for(await model_server(engine))
    history = (
        Message(Role.USER, "Weather in Oslo?"),
        Message(Role.ASSISTANT, "", (ToolCall("call_1", "get_weather", '{"city": "Oslo"}'),)),
        Message(Role.TOOL, '{"celsius": 4.5}', tool_call_id="call_1", name="get_weather"),
    )
    schema = {"type": "object", "properties": {"celsius": {"type": "number"}}}
    fmt = ResponseFormat(FormatType.JSON_SCHEMA, json.dumps({**schema, "required": ["celsius"]}))
    request = tool_request(ToolChoiceMode.AUTO, messages=history, response_format=fmt)
    await backend.start()
    try:
        chunks = await collect_chunks(backend, BackendCall(request=request))
    finally:
        await backend.close()
    assert json.loads("".join(c.text for c in chunks)) == {"celsius": 0}
    assert chunks[-1].finish_reason is FinishReason.STOP
    (seen,) = engine.requests
    assert [(m.role, m.content, m.tool_calls, m.tool_call_id, m.name) for m in seen.messages] == [
        ("user", "Weather in Oslo?", (), "", ""),
        ("assistant", "", (EngineToolCall("call_1", "get_weather", '{"city": "Oslo"}'),), "", ""),
        ("tool", '{"celsius": 4.5}', (), "call_1", "get_weather"),
    ]
    assert seen.response_format.type == "json_schema"
    assert chunks[-1].input_tokens == engine.count_tokens(seen.messages, seen.tools)


async def test_plain_requests_carry_no_tool_fields(model_server: Any) -> None:
    engine = Recording(reply_tokens=2)
    backend = backend_for(await model_server(engine))
    request = InferenceRequest(messages=(Message(Role.USER, "hi"),), max_output_tokens=4,
                               request_id="plain")  # fmt: skip
    await backend.start()
    try:
        await collect_chunks(backend, BackendCall(request=request))
    finally:
        await backend.close()
    from router.backends.model_service import to_proto

    wire = to_proto(request)
    assert not wire.HasField("tool_choice") and not wire.HasField("response_format")
    assert engine.requests[0].tool_choice == ("auto", "")


async def test_info_capabilities_join_the_configured_ones_on_each_poll(model_server: Any) -> None:
    endpoint = await model_server(ScriptedEngine())
    backend = backend_for(endpoint, capabilities=("chat", "vision"))
    await backend.start()
    try:
        info = await backend.info()
        assert list(info.capabilities) == ["chat", "tools", "json_schema", "prefill"]
        assert backend.spec.capabilities == frozenset({"chat", "vision"})
        assert await backend.poll_load() == 0
        assert backend.spec.capabilities == frozenset(
            {"chat", "vision", "tools", "json_schema", "prefill"}
        )
        # a server that stops reporting them (a model swap) takes them back
        backend.note_capabilities(pb.InfoResponse())
        assert backend.spec.capabilities == frozenset({"chat", "vision"})
    finally:
        await backend.close()


async def test_tool_call_events_are_never_merged_with_text(model_server: Any) -> None:
    """The server merges text deltas while a write is pending, never tool-call fragments."""
    endpoint = await model_server(ScriptedEngine())
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = pb.ModelGenerateRequest(
            request_id="r",
            messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content="x")],
            max_output_tokens=64,
            tools=[tpb.ToolDefinition(name="get_weather", parameters_json=json.dumps(WEATHER))],
            tool_choice=tpb.ToolChoice(mode=tpb.TOOL_CHOICE_MODE_NAMED, name="get_weather"),
        )
        events = [e async for e in stub.Generate(request)]
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds[-1] == "done" and set(kinds[:-1]) == {"tool_call"}
        assert events[0].tool_call.name == "get_weather" and events[0].tool_call.id
        assert events[-1].done.finish_reason == tpb.FINISH_REASON_TOOL_CALLS
        bad = pb.ModelGenerateRequest(
            request_id="b",
            messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content="x")],
            max_output_tokens=4,
            tool_choice=tpb.ToolChoice(mode=tpb.TOOL_CHOICE_MODE_REQUIRED),
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            [e async for e in stub.Generate(bad)]
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            caught.value.details() == "tool_choice: 'required' needs tools (the request has none)"
        )


async def test_the_router_routes_tools_to_a_server_that_reports_them_and_relays_the_call(
    start_router: Any, channel_to: Any
) -> None:
    engine = ScriptedEngine()
    await engine.start()
    server, port = await create_server(engine, "127.0.0.1:0")
    await server.start()
    try:
        # configured with chat only: tools come from the server's Info (poll_load)
        router = await start_router(
            [ms_backend("gpu-a", "gpu", f"127.0.0.1:{port}", capabilities=["chat"])],
            policy={"load_poll_interval_s": 0.05},
        )
        stub = stub_for(channel_to(router))
        tools = [{"name": "get_weather", "description": "Weather", "parameters": WEATHER}]

        async def routed() -> bool:
            try:
                await stub.Route(make_request("Weather in Oslo?", tools=tools))
            except grpc.aio.AioRpcError:
                return False
            return True

        for _ in range(100):
            if await routed():
                break
            await asyncio.sleep(0.05)
        events = await collect(
            stub.Generate(make_request("Weather in Oslo?", tools=tools, tool_choice="required"))
        )
        deltas = [e.tool_call for e in events if e.WhichOneof("event") == "tool_call"]
        assert len(deltas) >= 3 and text_of(events) == ""
        assert deltas[0].name == "get_weather" and deltas[0].id
        arguments = "".join(d.arguments for d in deltas)
        jsonschema.validate(json.loads(arguments), WEATHER)
        usage = events[-1].usage
        assert usage.backend == "gpu-a" and usage.complete and usage.format_error == ""
        assert usage.finish_reason == tpb.FINISH_REASON_TOOL_CALLS
        assert usage.tool_calls == 1
    finally:
        await server.stop(0)
        await engine.close()
