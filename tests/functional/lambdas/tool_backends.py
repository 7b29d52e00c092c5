"""A router whose backends answer with tool calls and JSON, for the Lambda tests of tools and
structured output: OpenAI-compatible wire servers over real HTTP (tests/functional/
openai_wire.py, the real SSE format with ``delta.tool_calls`` fragments) behind ``openai``
backends of a real router. Each backend's ``model`` picks its scenario; a request pins one
(``backend/<name>`` as the OpenAI model, ``pin_backends`` in the router's body).

- ``tool-caller``: one ``get_weather`` call, its arguments split inside a string.
- ``two-calls``: a sentence, then two calls.
- ``writer``: text (the answer after a tool result).
- ``json-exact``: JSON that fits :data:`WEATHER_SCHEMA`; ``json-sloppy`` (the cheapest):
  text around JSON that misses ``celsius``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from openai_wire import Scenario, WireServer
from rtutil import openai_backend
from wire_calls import WireCall

from router.server.app import RouterServer

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
#: The tool, in OpenAI's shape.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": WEATHER_PARAMETERS,
    },
}
#: The same tool in the router body's flat shape.
WEATHER_TOOL_FLAT = WEATHER_TOOL["function"]
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
    "required": ["city", "celsius"],
    "additionalProperties": False,
}

OSLO = WireCall("call_oslo_1", "get_weather", ('{"ci', 'ty": "Os', 'lo"}'))
BERGEN = WireCall("call_bergen_2", "get_weather", ('{"city"', ': "Ber', "gen", '"}'))
TWO_CALLS_TEXT = "Checking both."
WRITER_TEXT = "It is 4.5 C in Oslo."
EXACT_JSON = ('{"city": "Oslo",', ' "celsius": 4.5}')
SLOPPY_JSON = ("Sure! ", '{"city": "Oslo"}')

SCENARIOS = {
    "tool-caller": Scenario(deltas=(), tool_calls=(OSLO,), finish_reason="tool_calls"),
    "two-calls": Scenario(
        deltas=(TWO_CALLS_TEXT,), tool_calls=(OSLO, BERGEN), finish_reason="tool_calls"
    ),
    "writer": Scenario(deltas=(WRITER_TEXT,)),
    "json-exact": Scenario(deltas=EXACT_JSON),
    "json-sloppy": Scenario(deltas=SLOPPY_JSON),
}
PRICES = {"json-sloppy": 0.1, "json-exact": 5.0}


def as_json(call: WireCall) -> dict[str, Any]:
    """The call as the Lambda's router-shaped answers carry it."""
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def hosted(wire: WireServer, name: str) -> dict[str, Any]:
    return openai_backend(wire.base_url, name, PRICES.get(name, 1.0))


@dataclass
class ToolRouter:
    wire: WireServer
    router: RouterServer

    @property
    def port(self) -> int:
        return self.router.port

    def sent(self, i: int = -1) -> dict[str, Any]:
        """The body of the ``i``-th request the backends got (as the router sent it)."""
        return dict(self.wire.requests[i].body)


async def make_tool_router(
    wire: WireServer, start_router: Callable[..., Awaitable[RouterServer]]
) -> ToolRouter:
    """A router with one backend per scenario on ``wire`` (started by the caller)."""
    wire.scenarios.update(SCENARIOS)
    router = await start_router([hosted(wire, name) for name in SCENARIOS])
    return ToolRouter(wire, router)
