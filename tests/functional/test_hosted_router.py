"""The hosted tier through a real router: Bedrock, Anthropic and OpenAI-compatible backends,
each a local server speaking the provider's wire format over real HTTP.

Each case is what a caller of ``Generate`` notices: the events and their order, the backend
that answered and why, the usage and cost in the final event, and the gRPC status.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from anthropic_wire import AnthropicWire
from anthropic_wire import Scenario as AScenario
from awsenv import aws_env  # noqa: F401  (fixture)
from bedrock_wire import BedrockWire
from bedrock_wire import Scenario as BScenario
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from openai_wire import Scenario as OScenario
from openai_wire import WireServer
from rtutil import collect, kinds, stub_for, text_of, user_request

pytestmark = pytest.mark.usefixtures("aws_env")

KEY = "sk-ant-router-test"
PRICES = {"input_per_mtok_usd": 3.0, "output_per_mtok_usd": 15.0, "source": "test figures"}


@dataclass
class Hosted:
    bedrock: BedrockWire
    anthropic: AnthropicWire
    openai: WireServer

    def entry(self, kind: str, name: str, **overrides: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": name,
            "tier": "hosted",
            "kind": kind,
            "model": name,  # each backend's model name picks its scenario on the server
            "context_window": 200_000,
            "max_concurrency": 4,
            "priors": {"ttft_ms": 50, "decode_tokens_per_s": 100},
            "cost": dict(PRICES),
            "timeout_s": 10,
        }
        if kind == "bedrock":
            entry.update(endpoint=self.bedrock.url, region="us-east-1")
        elif kind == "anthropic":
            entry.update(endpoint=self.anthropic.url, api_key_env="ANTHROPIC_ROUTER_TEST_KEY")
        else:
            entry.update(endpoint=self.openai.base_url)
        entry.update(overrides)
        return entry

    def scenario(self, kind: str, name: str, **fields: Any) -> None:
        if kind == "bedrock":
            self.bedrock.scenarios[name] = BScenario(**fields)
        elif kind == "anthropic":
            self.anthropic.scenarios[name] = AScenario(**fields)
        else:
            self.openai.scenarios[name] = OScenario(**fields)

    def requests(self, kind: str) -> list[Any]:
        server: Any = {"bedrock": self.bedrock, "anthropic": self.anthropic}.get(kind, self.openai)
        return list(server.requests)


@pytest.fixture
async def hosted(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Hosted]:
    monkeypatch.setenv("ANTHROPIC_ROUTER_TEST_KEY", KEY)
    bedrock, anthropic, openai = BedrockWire(), AnthropicWire(), WireServer()
    for server in (bedrock, anthropic, openai):
        await server.start()
    try:
        yield Hosted(bedrock, anthropic, openai)
    finally:
        for server in (bedrock, anthropic, openai):
            await server.stop()


def shape(events: list[rpb.GenerateEvent]) -> list[str]:
    """Event kinds with runs of deltas folded into one (the router may coalesce deltas)."""
    out: list[str] = []
    for k in kinds(events):
        if not (k == "delta" and out and out[-1] == "delta"):
            out.append(k)
    return out


def cheap(prices: float = 0.5) -> dict[str, Any]:
    """Cost figures that make a backend the cheapest (so the policy picks it first)."""
    return {"input_per_mtok_usd": prices, "output_per_mtok_usd": prices, "source": "test"}


# --- the normal stream: usage and cost in the final event --------------------------------

USAGE = {"bedrock": (12, 3), "anthropic": (25, 3), "openai": (7, 3)}


@pytest.mark.parametrize("kind", ["bedrock", "anthropic", "openai"])
async def test_usage_and_cost_come_from_the_provider(
    hosted: Hosted, start_router: Any, channel_to: Any, kind: str
) -> None:
    router = await start_router([hosted.entry(kind, f"{kind}-a")])
    events = await collect(stub_for(channel_to(router)).Generate(user_request("Say hello")))
    assert shape(events) == ["decision", "delta", "usage"]
    assert text_of(events) == "Hello, world"
    usage = events[-1].usage
    input_tokens, output_tokens = USAGE[kind]
    assert (usage.input_tokens, usage.output_tokens) == (input_tokens, output_tokens)
    assert usage.cost_usd == pytest.approx((input_tokens * 3.0 + output_tokens * 15.0) / 1e6)
    assert usage.complete and not usage.tokens_estimated
    assert usage.finish_reason == tpb.FINISH_REASON_STOP
    assert usage.backend == f"{kind}-a" and usage.tier == tpb.TIER_HOSTED


async def test_a_server_that_reports_no_usage_gets_estimated_tokens(
    hosted: Hosted, start_router: Any, channel_to: Any
) -> None:
    hosted.scenario("openai", "quiet", usage=None, deltas=("a", "b", "c", "d"))
    router = await start_router([hosted.entry("openai", "quiet")])
    events = await collect(stub_for(channel_to(router)).Generate(user_request("Say hello")))
    usage = events[-1].usage
    assert usage.complete and usage.tokens_estimated
    assert usage.output_tokens == 4
    assert usage.input_tokens > 0 and usage.cost_usd > 0


# --- throttling before the first token: failover ----------------------------------------

THROTTLED = {
    "bedrock": {
        "status": 429,
        "error_code": "ThrottlingException",
        "message": "Too many requests, please wait before trying again.",
    },
    "anthropic": {"status": 529, "message": "Overloaded"},
    "openai": {"status": 429, "error": {"message": "Rate limit reached", "type": "requests"}},
}
EXPECTED_REASON = {"bedrock": "ThrottlingException", "anthropic": "HTTP 529", "openai": "HTTP 429"}


@pytest.mark.parametrize(
    ("primary", "fallback"),
    [("bedrock", "anthropic"), ("anthropic", "bedrock"), ("openai", "bedrock")],
)
async def test_throttling_before_the_first_token_fails_over(
    hosted: Hosted, start_router: Any, channel_to: Any, primary: str, fallback: str
) -> None:
    hosted.scenario(primary, "first", **THROTTLED[primary])
    router = await start_router(
        [
            hosted.entry(primary, "first", cost=cheap()),
            hosted.entry(fallback, "second"),
        ]
    )
    events = await collect(stub_for(channel_to(router)).Generate(user_request("Say hello")))
    assert shape(events) == ["decision", "failover", "delta", "usage"]
    assert events[0].decision.backend == "first"
    failover = events[1].failover
    assert (failover.from_backend, failover.to_backend, failover.attempt) == ("first", "second", 2)
    assert "retryable" in failover.reason and EXPECTED_REASON[primary] in failover.reason
    usage = events[-1].usage
    assert usage.backend == "second" and usage.attempts == 2 and usage.complete
    assert len(hosted.requests(primary)) == 1  # no retries of the throttled backend


async def test_retry_after_holds_the_backend_off_without_opening_its_circuit(
    hosted: Hosted, start_router: Any, channel_to: Any
) -> None:
    hosted.scenario(
        "anthropic", "claude", status=429, message="rate limited", headers=(("retry-after", "30"),)
    )
    router = await start_router(
        [
            hosted.entry("anthropic", "claude", cost=cheap()),
            hosted.entry("bedrock", "bedrock-b"),
        ],
        policy={"circuit": {"consecutive_failures": 1}},
    )
    stub = stub_for(channel_to(router))
    first = await collect(stub.Generate(user_request("Say hello")))
    assert first[-1].usage.backend == "bedrock-b"
    second = await stub.Route(user_request("Say hello"))
    assert second.backend == "bedrock-b"
    (claude,) = [c for c in second.candidates if c.backend == "claude"]
    assert not claude.accepted and claude.rejected_by == "health"
    assert "retry after" in claude.reason
    listing = await stub.ListBackends(rpb.ListBackendsRequest())
    (status,) = [b for b in listing.backends if b.name == "claude"]
    assert status.circuit == rpb.CIRCUIT_STATE_CLOSED  # one 429 did not open it
    assert len(hosted.requests("anthropic")) == 1


# --- a failure after the first token: a clear status, complete=false ----------------------

MID_STREAM = {
    "anthropic": ({"stream_error": ("overloaded_error", "Overloaded")}, "overloaded_error"),
    "bedrock": (
        {"stream_exception": ("modelStreamErrorException", "The model stream failed")},
        "ModelStreamErrorException",
    ),
}


@pytest.mark.parametrize("kind", ["anthropic", "bedrock"])
async def test_an_error_mid_stream_ends_with_complete_false_and_a_clear_status(
    hosted: Hosted, start_router: Any, channel_to: Any, kind: str
) -> None:
    fields, expected = MID_STREAM[kind]
    hosted.scenario(kind, "primary", deltas=("Once", " upon"), **fields)
    other = "bedrock" if kind == "anthropic" else "anthropic"
    router = await start_router(
        [hosted.entry(kind, "primary", cost=cheap()), hosted.entry(other, "spare")]
    )
    call = stub_for(channel_to(router)).Generate(user_request("Tell a story"))
    events: list[rpb.GenerateEvent] = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for event in call:
            events.append(event)
    assert shape(events) == ["decision", "delta", "usage"]
    assert text_of(events) == "Once upon"
    usage = events[-1].usage
    assert not usage.complete and usage.finish_reason == tpb.FINISH_REASON_ERROR
    assert expected in usage.error
    assert usage.output_tokens > 0 and usage.tokens_estimated
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "output is incomplete" in str(info.value.details()) and expected in str(
        info.value.details()
    )
    assert hosted.requests(other) == []  # no continuation on another backend


# --- context length: the larger window takes it -------------------------------------------

TOO_LONG = {
    "bedrock": {
        "status": 400,
        "error_code": "ValidationException",
        "message": "Input is too long for requested model.",
    },
    "anthropic": {"status": 400, "message": "prompt is too long: 210266 tokens > 200000 maximum"},
    "openai": {
        "status": 400,
        "error": {
            "message": "This model's maximum context length is 8192 tokens.",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        },
    },
}


@pytest.mark.parametrize(
    ("small", "large"), [("bedrock", "anthropic"), ("anthropic", "bedrock"), ("openai", "bedrock")]
)
async def test_a_context_length_error_moves_to_the_larger_window(
    hosted: Hosted, start_router: Any, channel_to: Any, small: str, large: str
) -> None:
    hosted.scenario(small, "small", **TOO_LONG[small])
    router = await start_router(
        [
            hosted.entry(small, "small", context_window=8192, cost=cheap()),
            hosted.entry(large, "large", context_window=1_000_000),
        ],
        policy={"circuit": {"consecutive_failures": 1}},
    )
    stub = stub_for(channel_to(router))
    events = await collect(stub.Generate(user_request("A long document ...")))
    assert events[0].decision.backend == "small"
    assert kinds(events)[1] == "failover"
    assert events[1].failover.to_backend == "large"
    assert "too_large" in events[1].failover.reason
    assert events[-1].usage.backend == "large" and events[-1].usage.complete
    listing = await stub.ListBackends(rpb.ListBackendsRequest())
    (status,) = [b for b in listing.backends if b.name == "small"]
    assert status.circuit == rpb.CIRCUIT_STATE_CLOSED  # too large says nothing of health


# --- auth errors: the right status, no retries ---------------------------------------------

AUTH: dict[str, tuple[dict[str, Any], grpc.StatusCode]] = {
    "anthropic": ({"status": 401, "message": "invalid x-api-key"}, grpc.StatusCode.UNAUTHENTICATED),
    "bedrock": (
        {
            "status": 403,
            "error_code": "AccessDeniedException",
            "message": "You don't have access to the model with the specified model ID.",
        },
        grpc.StatusCode.PERMISSION_DENIED,
    ),
    "openai": (
        {"status": 401, "error": {"message": "Incorrect API key provided"}},
        grpc.StatusCode.UNAUTHENTICATED,
    ),
}


@pytest.mark.parametrize("kind", ["anthropic", "bedrock", "openai"])
async def test_an_auth_error_surfaces_without_retries(
    hosted: Hosted, start_router: Any, channel_to: Any, kind: str
) -> None:
    fields, code = AUTH[kind]
    hosted.scenario(kind, "primary", **fields)
    other = "openai" if kind != "openai" else "anthropic"
    router = await start_router(
        [hosted.entry(kind, "primary", cost=cheap()), hosted.entry(other, "spare")]
    )
    call = stub_for(channel_to(router)).Generate(user_request("Say hello"))
    events: list[rpb.GenerateEvent] = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for event in call:
            events.append(event)
    assert kinds(events) == ["decision"]
    assert info.value.code() == code
    message = str(info.value.details())
    assert str(fields.get("message") or fields["error"]["message"])[:20] in message
    assert len(hosted.requests(kind)) == 1
    assert hosted.requests(other) == []


# --- a slow first token: TTFT timeout failover ----------------------------------------------


@pytest.mark.parametrize(("slow", "fast"), [("bedrock", "anthropic"), ("anthropic", "bedrock")])
async def test_a_slow_first_token_fails_over_on_the_ttft_timeout(
    hosted: Hosted, start_router: Any, channel_to: Any, slow: str, fast: str
) -> None:
    hosted.scenario(slow, "slow", first_event_delay_s=60.0)
    router = await start_router(
        [hosted.entry(slow, "slow", cost=cheap()), hosted.entry(fast, "fast")],
        # The fallback's first call gets this long too: enough for a cold boto3 client
        # on a busy CI machine (700 ms was not, once).
        policy={"ttft_timeout_ms": 2500},
    )
    events = await asyncio.wait_for(
        collect(stub_for(channel_to(router)).Generate(user_request("Say hello"))), 30
    )
    assert shape(events) == ["decision", "failover", "delta", "usage"]
    assert "no first token within 2500 ms" in events[1].failover.reason
    assert events[-1].usage.backend == "fast" and events[-1].usage.complete
    # the slow call was dropped, so the provider stops generating
    (req,) = hosted.requests(slow)
    await asyncio.wait_for(req.disconnected.wait(), 20)
