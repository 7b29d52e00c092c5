"""hybrid_router.client's pure parts: the enum tables, request options (errors name the
option), the channel settings, the retry rule and the one error type."""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path

import grpc
import pytest
from hybrid_router.client import (
    BACKEND_TIERS,
    CIRCUIT_STATES,
    CONTEXT_STRATEGIES,
    DATA_CLASSES,
    FINISH_REASONS,
    OBJECTIVES,
    RESPONSE_FORMATS,
    ROLES,
    TIERS,
    TOOL_CHOICES,
    ChannelConfig,
    OptionError,
    RequestOptions,
    RetryPolicy,
    RouterCallError,
    build_request,
    call_error,
    make_request,
    valid_session_id,
)
from hybrid_router.client.channel import call_metadata
from hybrid_router.client.sessions import (
    create_request,
    delete_request,
    get_request,
    list_request,
)
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import sessions_pb2 as spb
from hybrid_router.v1 import types_pb2 as tpb

# --- enums ----------------------------------------------------------------------------------


def test_tables_name_every_value_of_the_contract() -> None:
    assert dict(TIERS) == {
        "hosted": tpb.TIER_HOSTED,
        "gpu": tpb.TIER_GPU,
        "edge": tpb.TIER_EDGE,
        "cache": tpb.TIER_CACHE,
    }
    assert BACKEND_TIERS == ("hosted", "gpu", "edge")  # what pin_tiers may name
    assert DATA_CLASSES.names == ("public", "internal", "restricted")
    assert OBJECTIVES.names == ("cheapest", "fastest", "weighted", "balanced")
    assert ROLES.names == ("system", "user", "assistant", "tool")
    assert FINISH_REASONS.names == ("stop", "length", "cancelled", "error", "tool_calls")
    assert CIRCUIT_STATES.names == ("closed", "open", "half_open")
    assert CONTEXT_STRATEGIES.names == ("sliding", "summarize", "strict")
    # Every non-zero value of each proto enum has a name, and only those.
    for table, enum in (
        (TIERS, tpb.Tier),
        (DATA_CLASSES, tpb.DataClass),
        (ROLES, tpb.Role),
        (FINISH_REASONS, tpb.FinishReason),
        (OBJECTIVES, rpb.Objective),
        (CIRCUIT_STATES, rpb.CircuitState),
        (CONTEXT_STRATEGIES, spb.ContextStrategy),
    ):
        assert sorted(table.values()) == sorted(v for v in enum.values() if v != 0)


def test_the_router_uses_the_same_names() -> None:
    """The names are router.yaml's and router.types' (one vocabulary end to end)."""
    from router import types

    assert set(TIERS) == {t.value for t in types.Tier}
    assert BACKEND_TIERS == tuple(t.value for t in types.BACKEND_TIERS)
    assert set(DATA_CLASSES) == {d.value for d in types.DataClass}
    assert set(OBJECTIVES) == {o.value for o in types.Objective}
    assert set(CIRCUIT_STATES) == {c.value for c in types.CircuitState}
    assert set(FINISH_REASONS) == {f.value for f in types.FinishReason}
    assert set(ROLES) == {r.value for r in types.Role}
    assert set(TOOL_CHOICES) == {m.value for m in types.ToolChoiceMode}
    assert set(RESPONSE_FORMATS) == {f.value for f in types.FormatType}
    from router.sessions.model import STRATEGIES

    assert CONTEXT_STRATEGIES.names == STRATEGIES


def test_lambda_body_literals_match_the_tables() -> None:
    from lambda_edge import payloads

    hints = typing.get_type_hints(payloads.GenerateBody)
    tier = typing.get_args(typing.get_args(hints["pin_tiers"])[0])
    assert tier == BACKEND_TIERS
    assert typing.get_args(typing.get_args(hints["data_class"])[0]) == DATA_CLASSES.names
    assert typing.get_args(typing.get_args(hints["objective"])[0]) == OBJECTIVES.names


def test_names_and_numbers_both_ways() -> None:
    assert TIERS.name(tpb.TIER_EDGE) == "edge"
    assert TIERS.name(0) == "" and TIERS.name(0, "?") == "?" and TIERS.name(99, "?") == "?"
    assert TIERS.number("gpu") == tpb.TIER_GPU and TIERS.number("") == 0
    assert TIERS.numbers(["gpu", "edge"]) == [tpb.TIER_GPU, tpb.TIER_EDGE]
    with pytest.raises(OptionError) as err:
        TIERS.number("cloud", "pin_tiers")
    assert err.value.option == "pin_tiers"
    assert str(err.value) == "pin_tiers: 'cloud' is not one of hosted, gpu, edge, cache"
    with pytest.raises(OptionError, match="^tier: ''"):
        TIERS.numbers([""])
    assert sorted(TIERS) == ["cache", "edge", "gpu", "hosted"] and "gpu" in TIERS
    assert len(TIERS) == 4


# --- options --------------------------------------------------------------------------------


def test_every_option_lands_in_its_field() -> None:
    req = build_request(
        RequestOptions(
            prompt="Hello there",
            system="Be brief.",
            max_output_tokens=64,
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            seed=42,
            stop=("\n\n",),
            ttft_budget_ms=300,
            total_budget_ms=2000,
            max_cost_usd=0.01,
            data_class="restricted",
            pin_tiers=("gpu", "edge"),
            pin_backends=("gpu-1",),
            exclude_tiers=("hosted",),
            exclude_backends=("edge-2",),
            model_family="gemma3",
            capabilities=("chat",),
            site="plant-7",
            device_id="dev-3",
            request_id="req-9",
            objective="fastest",
        )
    )
    assert [(m.role, m.content) for m in req.messages] == [
        (tpb.ROLE_SYSTEM, "Be brief."),
        (tpb.ROLE_USER, "Hello there"),
    ]
    assert req.max_output_tokens == 64 and req.sampling.top_k == 40 and req.sampling.seed == 42
    assert req.sampling.temperature == pytest.approx(0.2)
    assert req.sampling.top_p == pytest.approx(0.9)
    assert list(req.sampling.stop) == ["\n\n"]
    assert (req.latency_budget.ttft_ms, req.latency_budget.total_ms) == (300, 2000)
    assert req.max_cost_usd == pytest.approx(0.01) and req.data_class == tpb.DATA_CLASS_RESTRICTED
    assert list(req.pin_tiers) == [tpb.TIER_GPU, tpb.TIER_EDGE]
    assert list(req.exclude_tiers) == [tpb.TIER_HOSTED]
    assert list(req.pin_backends) == ["gpu-1"] and list(req.exclude_backends) == ["edge-2"]
    assert req.model_family == "gemma3" and list(req.capabilities) == ["chat"]
    assert (req.edge_affinity.site, req.edge_affinity.device_id) == ("plant-7", "dev-3")
    assert req.request_id == "req-9" and req.objective == rpb.OBJECTIVE_FASTEST


def test_a_session_turn_names_its_session_and_strategy() -> None:
    req = make_request(prompt="And in French?", session_id="chat-1", context_strategy="strict")
    assert req.session_id == "chat-1" and req.context_strategy == spb.CONTEXT_STRATEGY_STRICT
    assert [m.content for m in req.messages] == ["And in French?"]  # the new turn only
    plain = make_request(prompt="hi", session_id="a.b:c-d_1")
    assert plain.session_id == "a.b:c-d_1"
    assert plain.context_strategy == spb.CONTEXT_STRATEGY_UNSPECIFIED


def test_unset_options_stay_unset() -> None:
    req = make_request(prompt="hi")
    assert not req.HasField("max_cost_usd")
    assert not req.sampling.HasField("temperature") and not req.sampling.HasField("seed")
    assert req.data_class == tpb.DATA_CLASS_UNSPECIFIED
    assert req.objective == rpb.OBJECTIVE_UNSPECIFIED
    assert req.session_id == "" and req.context_strategy == spb.CONTEXT_STRATEGY_UNSPECIFIED
    assert RequestOptions(prompt="hi").to_proto() == req


def test_make_request_takes_messages_and_lists() -> None:
    req = make_request(
        messages=[("system", "s"), ("user", "u"), ("assistant", "a")], pin_tiers=["edge"]
    )
    assert [m.role for m in req.messages] == [tpb.ROLE_SYSTEM, tpb.ROLE_USER, tpb.ROLE_ASSISTANT]
    assert list(req.pin_tiers) == [tpb.TIER_EDGE]
    with pytest.raises(TypeError, match="colour"):
        make_request(prompt="x", colour="blue")


@pytest.mark.parametrize(
    ("options", "option", "words"),
    [
        ({"messages": (("robot", "x"),)}, "messages[0].role", "system, user, assistant"),
        ({"prompt": "x", "pin_tiers": ("cloud",)}, "pin_tiers", "'cloud' is not one of"),
        ({"prompt": "x", "pin_tiers": ("cache",)}, "pin_tiers", "'cache' is not a backend's"),
        ({"prompt": "x", "exclude_tiers": ("",)}, "exclude_tiers", "is not one of"),
        ({"prompt": "x", "data_class": "secret"}, "data_class", "public, internal, restricted"),
        (
            {"prompt": "x", "objective": "cheap"},
            "objective",
            "cheapest, fastest, weighted, balanced",
        ),
        ({"prompt": "x", "max_output_tokens": -1}, "max_output_tokens", "must be >= 0"),
        ({"prompt": "x", "max_cost_usd": float("nan")}, "max_cost_usd", "must be a finite number"),
        ({"prompt": "x", "temperature": float("inf")}, "temperature", "must be a finite number"),
        ({"prompt": "x", "max_output_tokens": 2**32}, "max_output_tokens", "at most 4294967295"),
        ({"prompt": "x", "seed": 2**64}, "seed", "at most 18446744073709551615"),
        ({"prompt": "x", "ttft_budget_ms": 2**32}, "ttft_budget_ms", "at most 4294967295"),
        ({"prompt": "x", "temperature": -0.5}, "temperature", "must be >= 0"),
        ({"prompt": "x", "session_id": "bad id"}, "session_id", "1-128 of letters"),
        ({"prompt": "x", "session_id": "-x"}, "session_id", "starting with a letter or digit"),
        ({"prompt": "x", "session_id": "x" * 129}, "session_id", "1-128 of letters"),
        (
            {"prompt": "x", "session_id": "s", "context_strategy": "window"},
            "context_strategy",
            "'window' is not one of sliding, summarize, strict",
        ),
        ({"prompt": "x", "context_strategy": "strict"}, "context_strategy", "give a session id"),
        ({}, "prompt", "either prompt or messages"),
        ({"prompt": "x", "messages": (("user", "y"),)}, "prompt", "either prompt or messages"),
    ],
)
def test_bad_options_are_named(options: dict[str, object], option: str, words: str) -> None:
    with pytest.raises(OptionError) as err:
        build_request(RequestOptions(**options))  # type: ignore[arg-type]
    assert err.value.option == option and words in str(err.value)
    assert str(err.value).startswith(f"{option}: ")
    assert isinstance(err.value, ValueError)  # callers that catch ValueError still do


def test_session_requests_are_checked_before_sending() -> None:
    assert create_request() == spb.CreateSessionRequest()
    made = create_request("team-1", system="Be brief.", ttl_s=120, strategy="summarize")
    assert made == spb.CreateSessionRequest(
        session_id="team-1",
        system="Be brief.",
        ttl_s=120,
        strategy=spb.CONTEXT_STRATEGY_SUMMARIZE,
    )
    assert get_request("a").session_id == delete_request("a").session_id == "a"
    assert list_request(2, "p1") == spb.ListSessionsRequest(page_size=2, page_token="p1")
    assert valid_session_id("x" * 128) and not valid_session_id("x" * 129)
    assert not valid_session_id("") and not valid_session_id("a b")
    for call, option, words in (
        (lambda: create_request("a b"), "session_id", "got 'a b'"),
        (lambda: create_request(strategy="window"), "strategy", "not one of sliding"),
        (lambda: create_request(ttl_s=-1), "ttl_s", "must be >= 0"),
        (lambda: create_request(ttl_s=2**32), "ttl_s", "at most 4294967295"),
        (lambda: get_request(""), "session_id", "got ''"),
        (lambda: delete_request("x" * 200), "session_id", "'xxx"),
        (lambda: list_request(-1), "page_size", "must be >= 0"),
    ):
        with pytest.raises(OptionError) as err:
            call()
        assert err.value.option == option and words in str(err.value), str(err.value)
    # A long id is not quoted whole.
    with pytest.raises(OptionError) as err:
        get_request("y" * 500)
    assert len(str(err.value)) < 200


# --- channel --------------------------------------------------------------------------------


def test_channel_settings() -> None:
    plain = ChannelConfig("127.0.0.1:50051")
    assert not plain.use_tls and plain.credentials() is None
    opts = dict(plain.options())
    assert (
        opts["grpc.keepalive_time_ms"] == 30_000 and opts["grpc.max_reconnect_backoff_ms"] == 1000
    )
    assert opts["grpc.max_receive_message_length"] == 16 * 1024 * 1024
    assert ChannelConfig("r:1", server_name="router.internal").use_tls
    named = dict(ChannelConfig("r:1", server_name="n").options())
    assert named["grpc.ssl_target_name_override"] == "n"
    assert ChannelConfig("[::1]:50051").address == "[::1]:50051"


@pytest.mark.parametrize("address", ["router", ":50051", "router:http", "router:0", "r:70000"])
def test_bad_targets_are_named(address: str) -> None:
    with pytest.raises(OptionError, match=r"^address: must be host:port"):
        ChannelConfig(address)


def test_pem_files_and_pairs(tmp_path: Path) -> None:
    with pytest.raises(OptionError) as err:
        ChannelConfig("r:1", ca_bundle=str(tmp_path / "missing.pem")).with_files_read()
    assert err.value.option == "ca_bundle" and "cannot be read" in str(err.value)
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    read = ChannelConfig("r:1", ca_bundle=str(pem)).with_files_read()
    assert read.ca_bundle == b"-----BEGIN CERTIFICATE-----\n" and read.use_tls
    text = ChannelConfig("r:1", ca_bundle="-----BEGIN CERTIFICATE-----\n").with_files_read()
    assert text.ca_bundle == read.ca_bundle
    with pytest.raises(OptionError, match="^client_key: a client certificate and its key"):
        ChannelConfig("r:1", client_cert=str(pem))


def test_environment() -> None:
    env = {
        "HYBRID_ROUTER_ADDRESS": "router:443",
        "HYBRID_ROUTER_TLS": "yes",
        "HYBRID_ROUTER_TLS_SERVER_NAME": "router.internal",
    }
    cfg = ChannelConfig.from_env(env)
    assert (cfg.address, cfg.tls, cfg.server_name) == ("router:443", True, "router.internal")
    assert ChannelConfig.from_env(env, address="other:1").address == "other:1"
    with pytest.raises(OptionError, match="^HYBRID_ROUTER_ADDRESS is not set"):
        ChannelConfig.from_env({})
    with pytest.raises(OptionError, match="^HYBRID_ROUTER_TLS='maybe': use true or false"):
        ChannelConfig.from_env({**env, "HYBRID_ROUTER_TLS": "maybe"})


def test_call_metadata() -> None:
    tp = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
    assert call_metadata(api_key="k", request_id="r1", traceparent=tp, extra=[("a", "b")]) == [
        ("authorization", "Bearer k"),
        ("x-request-id", "r1"),
        ("traceparent", tp),
        ("a", "b"),
    ]
    assert call_metadata(traceparent="junk") == []


# --- retries and errors ---------------------------------------------------------------------


def test_retry_only_before_any_event_and_while_time_is_left() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_s=0.05)
    down = RouterCallError("UNAVAILABLE", "connection refused")
    assert policy.retry(down, attempt=1, events=0, time_left=10.0) == 0.05
    assert policy.retry(down, attempt=2, events=0, time_left=None) == 0.1
    assert policy.retry(down, attempt=3, events=0, time_left=10.0) is None  # attempts used up
    assert policy.retry(down, attempt=1, events=1, time_left=10.0) is None  # a model ran
    assert policy.retry(down, attempt=1, events=0, time_left=0.08) is None  # no time left
    bad = RouterCallError("INVALID_ARGUMENT", "messages: empty")
    assert policy.retry(bad, attempt=1, events=0, time_left=10.0) is None
    pushback = RouterCallError("UNAVAILABLE", "busy", retry_after=0.5)
    assert policy.retry(pushback, attempt=1, events=0, time_left=10.0) == 0.5
    with pytest.raises(OptionError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, initial=(), trailing=()) -> None:  # type: ignore[no-untyped-def]
        self._code, self._details = code, details
        self._initial, self._trailing = initial, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self):  # type: ignore[no-untyped-def]
        return self._initial

    def trailing_metadata(self):  # type: ignore[no-untyped-def]
        return self._trailing


def test_one_error_type_for_every_rpc_error() -> None:
    exc = FakeRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "rate limit for tenant t",
        initial=(("x-request-id", "rid-7"),),
        trailing=(("retry-after", "2"),),
    )
    err = call_error(exc, events=0, attempts=2)
    assert (err.code, err.message, err.request_id) == (
        "RESOURCE_EXHAUSTED",
        "rate limit for tenant t",
        "rid-7",
    )
    assert (
        err.retry_after == 2.0
        and err.attempts == 2
        and err.status is grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert str(err) == "RESOURCE_EXHAUSTED: rate limit for tenant t"
    # A given request id wins; gRPC's pushback is in milliseconds; no details: the name.
    bare = call_error(
        FakeRpcError(
            grpc.StatusCode.UNAVAILABLE, "", trailing=(("grpc-retry-pushback-ms", "250"),)
        ),
        request_id="mine",
    )
    assert bare.request_id == "mine" and bare.retry_after == 0.25 and bare.message == "unavailable"
    odd = call_error(grpc.RpcError())
    assert odd.code == "UNKNOWN" and odd.retry_after is None and odd.request_id == ""


def test_the_package_imports_nothing_heavy() -> None:
    import subprocess

    code = (
        "import sys, hybrid_router.client\n"
        "heavy = {'router', 'lambda_edge', 'pydantic', 'boto3', 'aws_lambda_powertools'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


# --- metadata gRPC cannot send is refused before any call -----------------------------------


@pytest.mark.parametrize(
    ("pairs", "words"),
    [
        ([("bad key", "1")], "key 'bad key' is not a gRPC metadata key"),
        ([("Upper", "1")], "key 'Upper' is not a gRPC metadata key"),
        ([("grpc-timeout", "1")], "keys starting grpc- are reserved"),
        ([("x-team", "a\nb")], "value of 'x-team' must be printable ASCII on one line"),
        ([("x-team", "é")], "value of 'x-team' must be printable ASCII"),
    ],
)
def test_metadata_grpc_cannot_send_is_named(pairs, words):
    with pytest.raises(OptionError) as err:
        call_metadata(extra=pairs)
    assert err.value.option == "metadata" and words in str(err.value)


def test_good_metadata_and_binary_values_pass():
    md = call_metadata(api_key="hr_a_b", extra=[("x-team", "a b"), ("trace-bin", b"\x00\x01")])
    assert md == [
        ("authorization", "Bearer hr_a_b"),
        ("x-team", "a b"),
        ("trace-bin", b"\x00\x01"),
    ]


@pytest.mark.parametrize("key", ["a\nb", "hr_a b", "hr_é"])
def test_an_api_key_that_cannot_travel_is_refused_without_quoting_it(key):
    with pytest.raises(OptionError) as err:
        call_metadata(api_key=key)
    assert err.value.option == "api_key"
    assert key not in str(err.value)


def test_tools_and_formats_build_their_fields() -> None:
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    req = make_request(
        messages=[
            ("user", "Weather in Oslo?"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "4 C, rain"},
        ],
        tools=[weather, {"name": "noop"}],
        tool_choice="get_weather",
        json_schema={"type": "object"},
        validate_before_streaming=True,
    )
    assert [t.name for t in req.tools] == ["get_weather", "noop"]
    assert json.loads(req.tools[0].parameters_json)["properties"]["city"] == {"type": "string"}
    assert req.tools[1].parameters_json == ""
    assert req.tool_choice.mode == tpb.TOOL_CHOICE_MODE_NAMED
    assert req.tool_choice.name == "get_weather"
    assert req.response_format.type == tpb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    assert req.validate_before_streaming
    call = req.messages[1].tool_calls[0]
    assert (call.id, call.name, json.loads(call.arguments)) == (
        "c1",
        "get_weather",
        {"city": "Oslo"},
    )
    assert req.messages[2].role == tpb.ROLE_TOOL and req.messages[2].tool_call_id == "c1"
    assert make_request("hi", tools=[weather], tool_choice="required").tool_choice.mode == (
        tpb.TOOL_CHOICE_MODE_REQUIRED
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tools": [{"name": "bad name"}]}, "tools[0].name: must be 1-64 characters"),
        ({"tools": [{"name": "t", "parameters": "{nope"}]}, "tools[0] (t).parameters: is not JSON"),
        ({"tools": [{"name": "t"}], "tool_choice": "other"}, "tool_choice: 'other' is not one of"),
        ({"response_format": "yaml"}, "response_format: 'yaml' is not one of"),
        ({"response_format": "json_schema"}, "json_schema: response_format json_schema needs"),
        ({"response_format": "text", "json_schema": {}}, "json_schema: a schema needs response"),
    ],
)
def test_tool_options_name_the_bad_value(options: dict, message: str) -> None:
    with pytest.raises(OptionError) as err:
        make_request("hi", **options)
    assert message in str(err.value)


def test_completion_reassembles_tool_call_fragments() -> None:
    from hybrid_router.client.completion import Gather
    from hybrid_router.v1 import router_pb2 as rpb

    g = Gather()
    for frag in (
        tpb.ToolCallDelta(index=0, id="c1", name="get_weather", arguments='{"ci'),
        tpb.ToolCallDelta(index=1, id="c2", name="noop"),
        tpb.ToolCallDelta(index=0, arguments='ty": "Os'),
        tpb.ToolCallDelta(index=0, arguments='lo"}'),
    ):
        g.add(rpb.GenerateEvent(tool_call=frag))
    calls = g.result("r").tool_calls
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("c1", "get_weather", '{"city": "Oslo"}'),
        ("c2", "noop", "{}"),
    ]
