"""Tools and JSON answers through a real router (docs/tools.md): routing by capability,
the answer checked against its schema (flagged in Usage, or with validate_before_streaming
held and failed over), and bad tool definitions refused naming the tool.

The backends are OpenAI-compatible wire servers over real HTTP (tests/functional/
openai_wire.py); Route calls no model, so a model_service entry there needs no server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from hybrid_router.client import make_request
from hybrid_router.v1 import types_pb2 as tpb
from openai_wire import Scenario, WireServer, serve_wire
from rtutil import collect, kinds, ms_backend, openai_backend, stub_for, text_of

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
    "required": ["city", "celsius"],
}
WEATHER_TOOL = {"name": "get_weather", "parameters": {"type": "object"}}


@pytest.fixture
async def wire() -> AsyncIterator[WireServer]:
    async with serve_wire() as server:
        yield server


def hosted(wire: WireServer, name: str, price: float, **overrides: Any) -> dict[str, Any]:
    return openai_backend(wire.base_url, name, price, **overrides)


async def test_tool_less_backends_are_rejected_with_the_missing_capability(
    wire: WireServer, start_router: Any, channel_to: Any
) -> None:
    router = await start_router(
        [
            # The cheapest, but it offers chat only (model_service: chat + what Info reports).
            ms_backend("gpu-chat", "gpu", "127.0.0.1:9", cost={"gpu_hourly_usd": 0.0}),
            hosted(wire, "hosted-tools", 1.0),
            hosted(wire, "hosted-plain", 0.5, capabilities=["chat"]),
        ]
    )
    stub = stub_for(channel_to(router))
    decision = await stub.Route(make_request("Weather in Oslo?", tools=[WEATHER_TOOL]))
    assert decision.backend == "hosted-tools"
    reports = {c.backend: c for c in decision.candidates}
    assert reports["gpu-chat"].rejected_by == "capability"
    assert reports["gpu-chat"].reason == "missing capability tools (offers chat)"
    assert reports["hosted-plain"].reason == "missing capability tools (offers chat)"
    assert reports["hosted-tools"].accepted

    schema_only = await stub.Route(make_request("Weather?", json_schema=SCHEMA))
    assert schema_only.backend == "hosted-tools"
    assert {c.backend: c.reason for c in schema_only.candidates}["gpu-chat"] == (
        "missing capability json_schema (offers chat)"
    )


async def test_tool_definitions_count_toward_the_window(
    wire: WireServer, start_router: Any, channel_to: Any
) -> None:
    router = await start_router([hosted(wire, "hosted-tools", 1.0)])
    stub = stub_for(channel_to(router))
    plain = await stub.Route(make_request("Weather in Oslo?"))
    big_tool = {
        "name": "search",
        "description": "Search the archive. " * 200,
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    with_tools = await stub.Route(make_request("Weather in Oslo?", tools=[big_tool]))
    grew = with_tools.estimate.prompt_tokens - plain.estimate.prompt_tokens
    assert grew >= len(big_tool["description"]) // 8  # the estimate's ~4 chars a token


async def test_no_backend_with_tools_is_a_clear_refusal(
    wire: WireServer, start_router: Any, channel_to: Any
) -> None:
    router = await start_router([hosted(wire, "hosted-plain", 0.5, capabilities=["chat"])])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub_for(channel_to(router)).Route(
            make_request("Weather?", tools=[WEATHER_TOOL], tool_choice="required")
        )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # as for any request no backend takes
    assert err.value.details() == (
        "no backend can take this request: hosted-plain: capability "
        "(missing capability tools (offers chat))"
    )


async def test_bad_tool_definitions_are_invalid_argument_naming_the_tool(
    wire: WireServer, start_router: Any, channel_to: Any
) -> None:
    router = await start_router([hosted(wire, "hosted-tools", 1.0)])
    bad = {"name": "get_weather", "parameters": {"type": "object", "required": "city"}}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(stub_for(channel_to(router)).Generate(make_request("hi", tools=[bad])))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(
        "tools[0] (get_weather).parameters_json: not a valid JSON Schema at required: "
    )
    assert wire.requests == []  # no model was called


async def test_a_streamed_answer_that_misses_the_schema_is_flagged_in_usage(
    wire: WireServer, start_router: Any, channel_to: Any
) -> None:
    wire.scenarios["hosted-json"] = Scenario(deltas=('{"city": ', '"Oslo"}'))
    router = await start_router([hosted(wire, "hosted-json", 1.0)])
    events = await collect(
        stub_for(channel_to(router)).Generate(make_request("Weather?", json_schema=SCHEMA))
    )
    assert text_of(events) == '{"city": "Oslo"}'
    usage = events[-1].usage
    assert usage.complete
    assert usage.format_error == (
        "the answer does not match the schema: 'celsius' is a required property"
    )
    sent = wire.requests[0].body
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == SCHEMA


async def test_validate_before_streaming_fails_an_invalid_answer_over(
    wire: WireServer, start_router: Any, channel_to: Any
) -> None:
    wire.scenarios["cheap-sloppy"] = Scenario(deltas=("Sure! ", '{"city": "Oslo"}'))
    wire.scenarios["dear-exact"] = Scenario(deltas=('{"city": "Oslo",', ' "celsius": 4.5}'))
    router = await start_router(
        [hosted(wire, "cheap-sloppy", 0.1), hosted(wire, "dear-exact", 5.0)]
    )
    events = await collect(
        stub_for(channel_to(router)).Generate(
            make_request("Weather?", json_schema=SCHEMA, validate_before_streaming=True)
        )
    )
    assert [k for k in kinds(events) if k != "delta"] == ["decision", "failover", "usage"]
    assert events[0].decision.backend == "cheap-sloppy"
    failover = events[1].failover
    assert failover.to_backend == "dear-exact"
    assert failover.reason.startswith("invalid answer: the answer is not JSON")
    # Nothing of the invalid answer reached the caller.
    assert json.loads(text_of(events)) == {"city": "Oslo", "celsius": 4.5}
    usage = events[-1].usage
    assert usage.backend == "dear-exact" and usage.attempts == 2 and usage.format_error == ""
    assert usage.finish_reason == tpb.FINISH_REASON_STOP
