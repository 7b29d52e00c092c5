"""Tool use in a session through a real router (issue 15, item 4): the assistant's tool
calls and the caller's tool results are stored as turns, and an agent loop's next step
(the caller sends only its tool results, with the session id) reaches the backend with
the assistant's tool-call turn right before them.

The backends are OpenAI-compatible wire servers over real HTTP (openai_wire.py), which
refuse a request as OpenAI does when a tool result answers no preceding call or a call
is left unanswered; the router keeps its sessions in a SQLite file under tmp_path.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import sessions_pb2 as spb
from hybrid_router.v1 import sessions_pb2_grpc
from hybrid_router.v1 import types_pb2 as tpb
from openai_wire import Scenario, WireServer, serve_wire
from rtutil import collect, openai_backend, stub_for, text_of
from wire_calls import WireCall

WEATHER = tpb.ToolDefinition(
    name="get_weather",
    description="The weather in a city now.",
    parameters_json=json.dumps({"type": "object", "properties": {"city": {"type": "string"}}}),
)
CALL = WireCall("call_oslo", "get_weather", ('{"ci', 'ty": "Oslo"}'))
ASKS_FOR_WEATHER = Scenario(deltas=(), tool_calls=(CALL,), finish_reason="tool_calls")
ANSWERS = Scenario(deltas=("It is ", "12 °C in Oslo."))


@pytest.fixture
async def wire() -> AsyncIterator[WireServer]:
    async with serve_wire() as server:
        yield server


def hosted(wire: WireServer, name: str, price: float, **overrides: Any) -> dict[str, Any]:
    return openai_backend(wire.base_url, name, price, **overrides)


def message(role: int, content: str = "", **fields: Any) -> tpb.ChatMessage:
    return tpb.ChatMessage(role=role, content=content, **fields)


def turn(session_id: str, *messages: tpb.ChatMessage, **fields: Any) -> rpb.GenerateRequest:
    return rpb.GenerateRequest(
        messages=list(messages),
        session_id=session_id,
        max_output_tokens=64,
        tools=[WEATHER],
        **fields,
    )


def sent(wire: WireServer, model: str) -> list[dict[str, Any]]:
    """The messages of the last request ``model`` got."""
    bodies = [r.body for r in wire.requests if r.body.get("model") == model]
    assert bodies, f"{model} got no request"
    return list(bodies[-1]["messages"])


def calls_of(events: list[rpb.GenerateEvent]) -> list[rpb.GenerateEvent]:
    return [ev for ev in events if ev.WhichOneof("event") == "tool_call"]


async def test_an_agent_loop_sends_only_its_tool_results(
    wire: WireServer, start_router: Any, channel_to: Any
) -> None:
    router = await start_router([hosted(wire, "agent", 1.0)])
    channel = channel_to(router)
    stub, sessions = stub_for(channel), sessions_pb2_grpc.SessionServiceStub(channel)

    # 1. The question; the model answers with a tool call (streamed in two fragments).
    wire.scenarios["agent"] = ASKS_FOR_WEATHER
    first = await collect(stub.Generate(turn("loop-1", message(tpb.ROLE_USER, "Oslo?"))))
    assert first[-1].usage.complete and first[-1].usage.tool_calls == 1
    assert first[-1].usage.finish_reason == tpb.FINISH_REASON_TOOL_CALLS
    assert calls_of(first)[0].tool_call.id == "call_oslo"

    # 2. The caller runs the tool and sends only its result, with the session id.
    wire.scenarios["agent"] = ANSWERS
    result = message(tpb.ROLE_TOOL, '{"celsius": 12}', tool_call_id="call_oslo", name="get_weather")
    second = await collect(stub.Generate(turn("loop-1", result)))
    assert second[-1].usage.complete, second[-1].usage.error
    assert text_of(second) == "It is 12 °C in Oslo."
    # The backend got the question, the assistant's call, then the result (the wire server
    # would have refused a result without its call: 400).
    assert sent(wire, "agent") == [
        {"role": "user", "content": "Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_oslo",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_oslo", "content": '{"celsius": 12}'},
    ]
    decision = second[0].decision
    assert decision.session_turns == 2

    # 3. GetSession gives the turns back with their calls and ids.
    got = await sessions.GetSession(spb.GetSessionRequest(session_id="loop-1"))
    assert [t.role for t in got.turns] == [
        tpb.ROLE_USER, tpb.ROLE_ASSISTANT, tpb.ROLE_TOOL, tpb.ROLE_ASSISTANT,
    ]  # fmt: skip
    call_turn, result_turn, answer = got.turns[1], got.turns[2], got.turns[3]
    assert call_turn.content == "" and call_turn.backend == "agent"
    assert [(c.id, c.name, c.arguments) for c in call_turn.tool_calls] == [
        ("call_oslo", "get_weather", '{"city": "Oslo"}')
    ]
    assert call_turn.tokens > 0  # the call's name and arguments are counted
    assert (result_turn.tool_call_id, result_turn.name) == ("call_oslo", "get_weather")
    assert result_turn.content == '{"celsius": 12}'
    assert answer.content == "It is 12 °C in Oslo." and not answer.tool_calls
    assert got.turn_count == 4 and got.history_tokens == sum(t.tokens for t in got.turns)


async def test_an_unanswered_call_is_not_sent_again(
    wire: WireServer, start_router: Any, channel_to: Any
) -> None:
    """The caller drops a tool call and asks something else: the stored call has no
    result, so it is left out of what the backend gets (a provider refuses it)."""
    router = await start_router([hosted(wire, "agent", 1.0)])
    stub = stub_for(channel_to(router))
    wire.scenarios["agent"] = ASKS_FOR_WEATHER
    await collect(stub.Generate(turn("drop-1", message(tpb.ROLE_USER, "Oslo?"))))
    wire.scenarios["agent"] = ANSWERS
    events = await collect(stub.Generate(turn("drop-1", message(tpb.ROLE_USER, "Never mind."))))
    assert events[-1].usage.complete, events[-1].usage.error
    assert sent(wire, "agent") == [
        {"role": "user", "content": "Oslo?"},
        {"role": "user", "content": "Never mind."},
    ]


async def test_a_backend_without_tools_gets_the_tool_turns_as_text(
    wire: WireServer, start_router: Any, channel_to: Any
) -> None:
    """Once the loop is done, a plain question may go to a backend that takes no tools:
    it gets the calls and results as text, user and assistant turns alternating."""
    router = await start_router(
        [hosted(wire, "agent", 1.0), hosted(wire, "plain", 0.1, capabilities=["chat"])]
    )
    stub = stub_for(channel_to(router))
    wire.scenarios["agent"] = ASKS_FOR_WEATHER
    await collect(stub.Generate(turn("text-1", message(tpb.ROLE_USER, "Oslo?"))))
    wire.scenarios["agent"] = ANSWERS
    result = message(tpb.ROLE_TOOL, "12", tool_call_id="call_oslo", name="get_weather")
    await collect(stub.Generate(turn("text-1", result)))
    follow_up = rpb.GenerateRequest(
        messages=[message(tpb.ROLE_USER, "Thanks!")], session_id="text-1", max_output_tokens=64
    )
    events = await collect(stub.Generate(follow_up))
    assert events[0].decision.backend == "plain"  # the cheaper one: no tools needed
    assert events[-1].usage.complete, events[-1].usage.error
    assert sent(wire, "plain") == [
        {"role": "user", "content": "Oslo?"},
        {"role": "assistant", "content": 'get_weather({"city": "Oslo"})'},
        {"role": "user", "content": "[result of get_weather call_oslo] 12"},
        {"role": "assistant", "content": "It is 12 °C in Oslo."},
        {"role": "user", "content": "Thanks!"},
    ]
