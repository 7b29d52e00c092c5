"""The edge agent with tools: it registers its engine's capabilities for the model it
serves, and a request's tools reach the engine, whose tool-call fragments go back on the
link as ``tool_call`` events (the scripted engine, no link)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from hybrid_router.v1 import edge_link_pb2 as epb
from hybrid_router.v1 import model_service_pb2 as mpb
from hybrid_router.v1 import types_pb2 as tpb

from greengrass.agent import Agent
from greengrass.config import AgentConfig
from greengrass.engines import build_engine, bundled_model
from greengrass.runner import RequestRunner
from greengrass.slot import EngineSlot

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


async def test_the_agent_registers_what_its_engine_offers(tmp_path: Path) -> None:
    cfg = AgentConfig(router="127.0.0.1:1", device_id="dev-1", engine="scripted",
                      insecure=True, work_dir=str(tmp_path))  # fmt: skip
    agent = Agent(cfg)
    assert agent.register_message().models == []  # nothing loaded yet
    model = bundled_model(cfg)
    assert model is not None
    engine = build_engine(cfg, model)
    await engine.start()
    agent.slot.swap(engine, model)
    (registered,) = agent.register_message().models
    assert list(registered.capabilities) == ["chat", "tools", "json_schema", "prefill"]
    assert list(agent.heartbeat_message().models[0].capabilities) == list(registered.capabilities)
    await agent.slot.close()


async def test_a_linked_request_with_tools_streams_its_tool_call_back() -> None:
    cfg = AgentConfig(engine="scripted")
    model = bundled_model(cfg)
    assert model is not None
    slot = EngineSlot()
    engine = build_engine(cfg, model)
    await engine.start()
    slot.swap(engine, model)
    runner = RequestRunner(slot)
    sent: list[epb.DeviceMessage] = []
    request = mpb.ModelGenerateRequest(
        request_id="r1",
        messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content="Weather in Oslo?")],
        max_output_tokens=32,
        tools=[tpb.ToolDefinition(name="get_weather", parameters_json=json.dumps(SCHEMA))],
        tool_choice=tpb.ToolChoice(mode=tpb.TOOL_CHOICE_MODE_REQUIRED),
    )
    runner.start(request, sent.append)
    async with asyncio.timeout(5):
        while runner.in_flight:
            await asyncio.sleep(0.01)
    events = [m.event.event for m in sent]
    assert all(m.event.request_id == "r1" for m in sent)
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"tool_call"} and len(kinds) >= 3
    assert events[0].tool_call.name == "get_weather"
    arguments = "".join(e.tool_call.arguments for e in events[:-1])
    assert json.loads(arguments) == {"city": ""}
    assert events[-1].done.finish_reason == tpb.FINISH_REASON_TOOL_CALLS
    # a bad tool choice is the engine's "invalid": fatal on the link, naming the field
    bad = mpb.ModelGenerateRequest(
        request_id="r2",
        messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content="x")],
        max_output_tokens=4,
        tool_choice=tpb.ToolChoice(mode=tpb.TOOL_CHOICE_MODE_NAMED, name="nope"),
    )
    runner.start(bad, sent.append)
    async with asyncio.timeout(5):
        while runner.in_flight:
            await asyncio.sleep(0.01)
    error = sent[-1].error
    assert (error.request_id, error.error_class) == ("r2", "fatal")
    assert error.message.startswith("tool_choice: 'named' needs tools")
    await slot.close()
