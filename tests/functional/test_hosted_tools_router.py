"""Tools and JSON answers through a real router to each hosted kind (OpenAI-compatible,
Anthropic, Bedrock), each a wire server over real HTTP: what a caller of ``Generate``
sees. A tool call arrives as ``tool_call`` events whose arguments join exactly, the answer
ends with FINISH_REASON_TOOL_CALLS and ``Usage.tool_calls``; a JSON answer (Anthropic and
Bedrock: through the forced answer tool) arrives as text that passes the router's schema
check (``Usage.format_error`` empty).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from anthropic_wire import AnthropicWire
from anthropic_wire import Scenario as AScenario
from awsenv import aws_env  # noqa: F401  (fixture)
from bedrock_wire import BedrockWire
from bedrock_wire import Scenario as BScenario
from hybrid_router.client import make_request
from hybrid_router.v1 import types_pb2 as tpb
from openai_wire import Scenario as OScenario
from openai_wire import WireServer
from rtutil import collect, stub_for, text_of
from wire_calls import WireCall, split_every

pytestmark = pytest.mark.usefixtures("aws_env")

KINDS = ["openai", "anthropic", "bedrock"]
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"name": "get_weather", "description": "Weather", "parameters": WEATHER}]
ARGS = json.dumps({"city": 'Oslo "Sentrum" \\ café'})
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
    "required": ["city", "celsius"],
}
ANSWER = json.dumps({"city": "Oslo", "celsius": 4.5})


@pytest.fixture
async def servers(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, Any]]:
    monkeypatch.setenv("ANTHROPIC_TOOLS_ROUTER_KEY", "sk-ant-x")
    out: dict[str, Any] = {
        "openai": WireServer(),
        "anthropic": AnthropicWire(),
        "bedrock": BedrockWire(),
    }
    for server in out.values():
        await server.start()
    try:
        yield out
    finally:
        for server in out.values():
            await server.stop()


def entry(kind: str, server: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "name": f"{kind}-b",
        "tier": "hosted",
        "kind": kind,
        "model": "m",
        "context_window": 200_000,
        "priors": {"ttft_ms": 50, "decode_tokens_per_s": 100},
        "timeout_s": 10,
    }
    if kind == "openai":
        e["endpoint"] = server.base_url
    elif kind == "anthropic":
        e.update(endpoint=server.url, api_key_env="ANTHROPIC_TOOLS_ROUTER_KEY")
    else:
        e.update(endpoint=server.url, region="us-east-1")
    return e


def scenario(kind: str, **fields: Any) -> Any:
    if kind == "openai":
        if fields.get("stop_reason") == "tool_use":
            fields.pop("stop_reason")
            fields["finish_reason"] = "tool_calls"
        return OScenario(**fields)
    return (AScenario if kind == "anthropic" else BScenario)(**fields)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_tool_call_reaches_the_caller_in_fragments(
    kind: str, servers: dict[str, Any], start_router: Any, channel_to: Any
) -> None:
    server = servers[kind]
    call = WireCall("call_7", "get_weather", split_every(ARGS, 3))
    server.scenarios["m"] = scenario(kind, deltas=(), tool_calls=(call,), stop_reason="tool_use")
    router = await start_router([entry(kind, server)])
    events = await collect(
        stub_for(channel_to(router)).Generate(
            make_request("Weather in Oslo?", tools=TOOLS, tool_choice="required")
        )
    )
    deltas = [ev.tool_call for ev in events if ev.WhichOneof("event") == "tool_call"]
    assert (deltas[0].index, deltas[0].id, deltas[0].name) == (0, "call_7", "get_weather")
    assert "".join(d.arguments for d in deltas) == ARGS
    usage = events[-1].usage
    assert usage.complete and usage.backend == f"{kind}-b"
    assert usage.finish_reason == tpb.FINISH_REASON_TOOL_CALLS
    assert usage.tool_calls == 1 and usage.format_error == ""


@pytest.mark.parametrize("kind", KINDS)
async def test_a_json_answer_reaches_the_caller_as_checked_text(
    kind: str, servers: dict[str, Any], start_router: Any, channel_to: Any
) -> None:
    server = servers[kind]
    if kind == "openai":
        server.scenarios["m"] = OScenario(deltas=split_every(ANSWER, 4))
    else:  # the forced answer tool (named after the format, "json_answer" by default)
        call = WireCall("tool_1", "json_answer", split_every(ANSWER, 4))
        server.scenarios["m"] = scenario(
            kind, deltas=(), tool_calls=(call,), stop_reason="tool_use"
        )
    router = await start_router([entry(kind, server)])
    events = await collect(
        stub_for(channel_to(router)).Generate(make_request("Weather?", json_schema=SCHEMA))
    )
    assert text_of(events) == ANSWER
    usage = events[-1].usage
    assert usage.complete and usage.format_error == ""
    assert usage.finish_reason == tpb.FINISH_REASON_STOP and usage.tool_calls == 0
