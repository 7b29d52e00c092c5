"""The providers' official SDKs read the wire servers' tool-call streams (and their tool
histories pass the servers' checks), so the servers that test_hosted_tools.py runs the
adapters against cannot share a misreading of the format with the adapters: ``openai``
(the streaming helper accumulates ``tool_calls``), ``anthropic`` (``messages.stream``
parses the ``tool_use`` input) and boto3 / botocore (ConverseStream and Converse).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import boto3
import botocore.config
import openai
import pytest
from anthropic_wire import AnthropicWire
from anthropic_wire import Scenario as AScenario
from awsenv import aws_env  # noqa: F401  (fixture)
from bedrock_wire import BedrockWire
from bedrock_wire import Scenario as BScenario
from openai_wire import Scenario as OScenario
from openai_wire import WireServer
from wire_calls import WireCall, split_every

pytestmark = pytest.mark.usefixtures("aws_env")

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
ARGS = json.dumps({"city": 'Oslo "Sentrum"', "note": "café \\ ok"})
FRAGMENTS = split_every(ARGS, 3)
CALLS = (WireCall("call_a1", "get_weather", FRAGMENTS), WireCall("call_b2", "now", ("{", "}")))


@pytest.fixture
async def oa() -> AsyncIterator[WireServer]:
    server = WireServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_the_openai_sdk_accumulates_the_wire_servers_tool_calls(oa: WireServer) -> None:
    oa.scenarios["m"] = OScenario(deltas=(), tool_calls=CALLS, finish_reason="tool_calls")
    tools: Any = [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}},
    ]
    history: Any = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Bergen"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "rain"},
        {"role": "user", "content": "And Oslo, and the time?"},
    ]
    client = openai.AsyncOpenAI(base_url=oa.base_url, api_key="sk-sdk", max_retries=0)
    try:
        async with client.chat.completions.stream(
            model="m", messages=history, tools=tools, tool_choice="required"
        ) as stream:
            fragments = [
                e.arguments_delta
                async for e in stream
                if e.type == "tool_calls.function.arguments.delta" and e.index == 0
            ]
            final = await stream.get_final_completion()
        choice = final.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert [
            (c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or ()
        ] == [
            ("call_a1", "get_weather", ARGS),
            ("call_b2", "now", "{}"),
        ]
        assert [f for f in fragments if f] == list(FRAGMENTS)  # the opening one is ""

        whole = await client.chat.completions.create(model="m", messages=history, tools=tools)
        assert whole.choices[0].message.content is None
        assert [c.function.arguments for c in whole.choices[0].message.tool_calls or ()] == [
            ARGS,
            "{}",
        ]

        with pytest.raises(openai.BadRequestError) as bad:  # the server checks tool turns
            await client.chat.completions.create(
                model="m", messages=history[:1] + history[2:], tools=tools
            )
        assert "must be a response to a preceeding message with 'tool_calls'" in str(bad.value)
    finally:
        await client.close()


async def test_the_anthropic_sdk_parses_the_wire_servers_tool_use() -> None:
    history: Any = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Looking."},
                {
                    "type": "tool_use",
                    "id": "toolu_0",
                    "name": "get_weather",
                    "input": {"city": "Bergen"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_0", "content": "rain"},
                {"type": "text", "text": "And Oslo, and the time?"},
            ],
        },
    ]
    tools: Any = [
        {"name": "get_weather", "input_schema": WEATHER},
        {"name": "now", "input_schema": {"type": "object"}},
    ]
    async with AnthropicWire() as wire:
        wire.scenarios["m"] = AScenario(
            deltas=("On it.",), tool_calls=CALLS, stop_reason="tool_use"
        )
        client = anthropic.AsyncAnthropic(base_url=wire.url, api_key="sk-ant", max_retries=0)
        try:
            async with client.messages.stream(
                model="m", max_tokens=64, messages=history, tools=tools, tool_choice={"type": "any"}
            ) as stream:
                partial = [e.partial_json async for e in stream if e.type == "input_json"]
                final = await stream.get_final_message()
            assert final.stop_reason == "tool_use"
            text, weather, now = final.content
            assert text.type == "text" and text.text == "On it."
            assert weather.type == "tool_use" and now.type == "tool_use"
            assert (weather.id, weather.name, weather.input) == (
                "call_a1",
                "get_weather",
                json.loads(ARGS),
            )
            assert (now.id, now.name, now.input) == ("call_b2", "now", {})
            assert "".join(partial) == ARGS + "{}"

            whole = await client.messages.create(
                model="m", max_tokens=64, messages=history, tools=tools
            )
            assert [b.type for b in whole.content] == ["text", "tool_use", "tool_use"]

            with pytest.raises(anthropic.BadRequestError) as bad:  # the server checks tool turns
                await client.messages.create(
                    model="m", max_tokens=64, messages=history[2:], tools=tools
                )
            assert "unexpected `tool_use_id` found in `tool_result` blocks: toolu_0" in str(
                bad.value
            )
        finally:
            await client.close()


async def test_botocore_parses_the_wire_servers_tool_use() -> None:
    tool_config: Any = {
        "tools": [
            {"toolSpec": {"name": "get_weather", "inputSchema": {"json": WEATHER}}},
            {"toolSpec": {"name": "now", "inputSchema": {"json": {"type": "object"}}}},
        ],
        "toolChoice": {"any": {}},
    }
    history: Any = [
        {"role": "user", "content": [{"text": "Weather?"}]},
        {
            "role": "assistant",
            "content": [
                {"toolUse": {"toolUseId": "t0", "name": "get_weather", "input": {"city": "Bergen"}}}
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "t0", "content": [{"text": "rain"}]}},
                {"text": "And Oslo, and the time?"},
            ],
        },
    ]
    async with BedrockWire() as wire:
        wire.scenarios["m"] = BScenario(deltas=(), tool_calls=CALLS, stop_reason="tool_use")
        client = boto3.client(
            "bedrock-runtime",
            region_name="us-east-1",
            endpoint_url=wire.url,
            config=botocore.config.Config(retries={"total_max_attempts": 1}),
        )

        def stream() -> list[dict[str, Any]]:
            resp = client.converse_stream(modelId="m", messages=history, toolConfig=tool_config)
            return list(resp["stream"])

        try:
            events = await asyncio.to_thread(stream)
            starts = [e["contentBlockStart"] for e in events if "contentBlockStart" in e]
            assert starts == [
                {
                    "start": {"toolUse": {"toolUseId": "call_a1", "name": "get_weather"}},
                    "contentBlockIndex": 0,
                },
                {
                    "start": {"toolUse": {"toolUseId": "call_b2", "name": "now"}},
                    "contentBlockIndex": 1,
                },
            ]
            pieces = [
                e["contentBlockDelta"]["delta"]["toolUse"]["input"]
                for e in events
                if "contentBlockDelta" in e and e["contentBlockDelta"]["contentBlockIndex"] == 0
            ]
            assert pieces == list(FRAGMENTS)
            assert events[-2]["messageStop"]["stopReason"] == "tool_use"

            whole = await asyncio.to_thread(
                lambda: client.converse(modelId="m", messages=history, toolConfig=tool_config)
            )
            uses = [b["toolUse"] for b in whole["output"]["message"]["content"]]
            assert uses == [
                {"toolUseId": "call_a1", "name": "get_weather", "input": json.loads(ARGS)},
                {"toolUseId": "call_b2", "name": "now", "input": {}},
            ]
            assert whole["stopReason"] == "tool_use"

            with pytest.raises(client.exceptions.ValidationException) as bad:
                await asyncio.to_thread(lambda: client.converse(modelId="m", messages=history))
            assert "The toolConfig field must be defined" in str(bad.value)
        finally:
            client.close()
