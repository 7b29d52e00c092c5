"""Tools on the edge tier end to end: a real agent process (scripted engine) registers its
engine's capabilities, the router routes a tool request to the device by them (the edge
backend is configured with ``chat`` only), and the call streams back over the link."""

from __future__ import annotations

import json

import edgeutil
import jsonschema
from edgeutil import wait_for_device
from hybrid_router.client import make_request
from hybrid_router.v1 import types_pb2 as tpb
from rtutil import collect, stub_for, text_of

edge_router = edgeutil.edge_router
start_agent = edgeutil.start_agent

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"name": "get_weather", "description": "Weather for a city", "parameters": WEATHER}]


async def test_a_device_takes_tool_requests_by_its_engines_capabilities_and_streams_the_call(
    edge_router, start_agent, channel_to
):  # type: ignore[no-untyped-def]
    router = await edge_router()
    agent = start_agent(router, "dev-1")
    await agent.ready()
    await wait_for_device(router, "dev-1")
    stub = stub_for(channel_to(router))

    decision = await stub.Route(make_request("Weather in Oslo?", tools=TOOLS))
    assert decision.backend == "edge-dev-1"

    events = await collect(
        stub.Generate(
            make_request(
                "Weather in Oslo?", tools=TOOLS, tool_choice="required", max_output_tokens=32
            )  # fmt: skip
        )
    )
    calls = [e.tool_call for e in events if e.WhichOneof("event") == "tool_call"]
    assert text_of(events) == "" and len(calls) >= 2
    assert calls[0].name == "get_weather" and calls[0].id.startswith("call_")
    jsonschema.validate(json.loads("".join(c.arguments for c in calls)), WEATHER)
    usage = events[-1].usage
    assert usage.backend == "edge-dev-1" and usage.complete and usage.format_error == ""
    assert usage.finish_reason == tpb.FINISH_REASON_TOOL_CALLS and usage.tool_calls == 1

    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    events = await collect(stub.Generate(make_request("Fine?", json_schema=schema)))
    assert json.loads(text_of(events)) == {"ok": False}
    assert events[-1].usage.format_error == ""
