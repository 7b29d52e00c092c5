"""lambda_edge pure parts: status table, settings, deadlines, trace context, API key cache,
request validation and the OpenAI model names; and the import rule (contract + own
modules only, never router internals), checked by import inspection."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hybrid_router.client import (
    lambda_timeout_s,
    make_request,
    traceparent_from_xray,
    valid_traceparent,
)
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from pydantic import ValidationError
from testkit import FakeClock

from lambda_edge.credentials import ApiKeyProvider, CredentialsError
from lambda_edge.openai_compat import ChatCompletionRequest, UnsupportedParameter
from lambda_edge.payloads import GenerateBody, Job, describe
from lambda_edge.settings import Settings, SettingsError
from lambda_edge.status import http_status, permanent, retry_after_header

PKG = Path(__file__).resolve().parents[2] / "lambda_edge"


class Ctx:
    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


# --- statuses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "status"),
    [
        ("UNAVAILABLE", "every candidate failed", 503),
        ("INVALID_ARGUMENT", "messages: ...", 400),
        ("RESOURCE_EXHAUSTED", "rate limit for tenant t", 429),
        # A router from before the split: the message still makes it 413.
        ("RESOURCE_EXHAUSTED", "largest context window ... is 512 tokens", 413),
        ("OUT_OF_RANGE", "largest context window ... is 512 tokens", 413),
        ("OUT_OF_RANGE", "rate limit: tenant 't' may use at most 50 tokens at once", 413),
        ("FAILED_PRECONDITION", "max_cost_usd $0.000100 is below every candidate's", 422),
        ("DEADLINE_EXCEEDED", "", 504),
        ("UNAUTHENTICATED", "", 401),
        ("PERMISSION_DENIED", "", 403),
        ("FAILED_PRECONDITION", "data class restricted may not go to", 422),
        ("INTERNAL", "", 502),
        ("SOMETHING_NEW", "", 502),
    ],
)
def test_grpc_to_http(code: str, message: str, status: int) -> None:
    assert http_status(code, message) == status


def test_permanent_failures() -> None:
    assert permanent("INVALID_ARGUMENT") and permanent("FAILED_PRECONDITION")
    assert permanent("OUT_OF_RANGE") and permanent("RESOURCE_EXHAUSTED", "no context window")
    assert not permanent("RESOURCE_EXHAUSTED", "rate limit")
    assert not permanent("UNAVAILABLE") and not permanent("DEADLINE_EXCEEDED")


def test_retry_after_header_only_for_retryable_answers_in_whole_seconds() -> None:
    assert retry_after_header("RESOURCE_EXHAUSTED", "rate limit", 1.2) == {"Retry-After": "2"}
    assert retry_after_header("RESOURCE_EXHAUSTED", "rate limit", 3.0) == {"Retry-After": "3"}
    assert retry_after_header("RESOURCE_EXHAUSTED", "rate limit", 0.0) == {"Retry-After": "0"}
    assert retry_after_header("RESOURCE_EXHAUSTED", "open streams", None) == {}
    assert retry_after_header("OUT_OF_RANGE", "at most 50 tokens at once", 5.0) == {}


# --- settings -------------------------------------------------------------------------------


def test_settings_defaults_and_errors() -> None:
    s = Settings.from_env({"HYBRID_ROUTER_ADDRESS": "router:50051"})
    assert s.deadline_margin_s == 1.0 and s.max_body_bytes == 1_048_576
    assert s.ws_max_frame_bytes <= 32 * 1024
    with pytest.raises(SettingsError, match="HYBRID_ROUTER_ADDRESS is not set"):
        Settings.from_env({})
    with pytest.raises(SettingsError, match="HYBRID_ROUTER_ADDRESS='router': must be host:port"):
        Settings.from_env({"HYBRID_ROUTER_ADDRESS": "router"})
    with pytest.raises(SettingsError, match="HYBRID_ROUTER_WS_MAX_FRAME_BYTES='40000'"):
        Settings.from_env(
            {"HYBRID_ROUTER_ADDRESS": "r:1", "HYBRID_ROUTER_WS_MAX_FRAME_BYTES": "40000"}
        )
    with pytest.raises(SettingsError, match="both set"):
        Settings.from_env(
            {
                "HYBRID_ROUTER_ADDRESS": "r:1",
                "HYBRID_ROUTER_API_KEY": "k",
                "HYBRID_ROUTER_API_KEY_SECRET": "s",
            }
        )
    with pytest.raises(SettingsError, match="HYBRID_ROUTER_JOBS_BUCKET is not set"):
        Settings.from_env({"HYBRID_ROUTER_ADDRESS": "r:1"}, jobs=True)
    with pytest.raises(SettingsError, match="HYBRID_ROUTER_DEADLINE_MARGIN_MS='soon'"):
        Settings.from_env(
            {"HYBRID_ROUTER_ADDRESS": "r:1", "HYBRID_ROUTER_DEADLINE_MARGIN_MS": "soon"}
        )


# --- deadlines ------------------------------------------------------------------------------


def test_lambda_timeout() -> None:
    assert lambda_timeout_s(Ctx(10_000), margin_s=1.0) == 9.0
    assert lambda_timeout_s(Ctx(60_000), margin_s=1.0, cap_s=29.0) == 29.0
    assert lambda_timeout_s(Ctx(500), margin_s=1.0) == 0.05  # floor: fail fast, not never


def test_runtime_deadline_counts_time_spent_since_the_gateway_took_the_request() -> None:
    from lambda_edge.runtime import Runtime

    now = 1_700_000_000.0
    rt = Runtime(Settings.from_env({"HYBRID_ROUTER_ADDRESS": "127.0.0.1:1"}), clock=lambda: now)
    try:
        # 5 s already spent (cold start): 30 - 5 - 1 s margin.
        assert rt.timeout_s(
            Ctx(900_000), gateway_limit_s=30.0, started_ms=int((now - 5) * 1000)
        ) == pytest.approx(24.0)
        # The Lambda's own time is shorter: it wins.
        assert rt.timeout_s(Ctx(8_000), gateway_limit_s=30.0, started_ms=int(now * 1000)) == 7.0
        # No gateway (SQS): only the Lambda's time.
        assert rt.timeout_s(Ctx(120_000)) == 119.0
        # A clock skew into the future counts as nothing spent.
        assert rt.timeout_s(
            Ctx(900_000), gateway_limit_s=29.0, started_ms=int((now + 3) * 1000)
        ) == pytest.approx(28.0)
    finally:
        rt.close()


# --- trace context --------------------------------------------------------------------------


def test_xray_header_to_traceparent() -> None:
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    assert traceparent_from_xray(header) == (
        "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
    )
    assert traceparent_from_xray(header, parent_id="1111222233334444").endswith(
        "-1111222233334444-01"
    )
    assert traceparent_from_xray(header.replace("Sampled=1", "Sampled=0")).endswith("-00")
    assert traceparent_from_xray("Root=1-5759e988-bd862e3fe1be46a994272793") is None
    assert traceparent_from_xray("") is None and traceparent_from_xray(None) is None


def test_traceparent_validation() -> None:
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert valid_traceparent(good) == good
    assert valid_traceparent(" " + good + " ") == good
    assert valid_traceparent(good.upper()) is None
    assert valid_traceparent("00-" + "0" * 32 + "-b7ad6b7169203331-01") is None
    assert valid_traceparent("00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01") is None
    assert valid_traceparent("junk") is None


# --- API key --------------------------------------------------------------------------------


def test_secret_is_fetched_once_per_ttl_and_on_invalidate() -> None:
    clock = FakeClock(0.0)
    fetched: list[str] = []

    def fetch(secret_id: str) -> str:
        fetched.append(secret_id)
        return json.dumps({"api_key": f"hr_key_{len(fetched)}"})

    p = ApiKeyProvider(secret_id="arn:s", ttl_s=300, fetch=fetch, clock=clock)
    assert p() == "hr_key_1" and p() == "hr_key_1"
    clock.advance(299.0)
    assert p() == "hr_key_1"
    clock.advance(1.0)  # 300 s: the TTL
    assert p() == "hr_key_2"
    p.invalidate()
    assert p() == "hr_key_3" and fetched == ["arn:s"] * 3
    assert ApiKeyProvider(key="k")() == "k" and ApiKeyProvider()() is None


@pytest.mark.parametrize(
    ("value", "words"),
    [("{oops", "looks like JSON"), ('{"key": "x"}', "'api_key' field"), ("   ", "is empty")],
)
def test_bad_secret_values_are_named(value: str, words: str) -> None:
    p = ApiKeyProvider(secret_id="arn:s", fetch=lambda _: value)
    with pytest.raises(CredentialsError, match=words):
        p()


def test_fetch_errors_say_what_to_fix() -> None:
    def fetch(_: str) -> str:
        raise RuntimeError("AccessDeniedException")

    with pytest.raises(CredentialsError, match="secretsmanager:GetSecretValue"):
        ApiKeyProvider(secret_id="arn:s", fetch=fetch)()


# --- bodies ---------------------------------------------------------------------------------


def test_generate_body_to_proto() -> None:
    body = GenerateBody.model_validate(
        {
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
            "max_output_tokens": 32,
            "sampling": {"temperature": 0.5, "stop": ["\n"]},
            "latency_budget": {"ttft_ms": 300},
            "max_cost_usd": 0.01,
            "data_class": "restricted",
            "pin_tiers": ["gpu", "edge"],
            "exclude_backends": ["slow"],
            "edge_affinity": {"site": "plant-7"},
            "objective": "fastest",
        }
    )
    pb = body.to_proto(request_id="rq")
    assert [m.role for m in pb.messages] == [tpb.ROLE_SYSTEM, tpb.ROLE_USER]
    assert pb.max_output_tokens == 32 and pb.sampling.temperature == 0.5
    assert list(pb.sampling.stop) == ["\n"] and not pb.sampling.HasField("top_p")
    assert pb.latency_budget.ttft_ms == 300 and pb.max_cost_usd == 0.01
    assert pb.data_class == tpb.DATA_CLASS_RESTRICTED
    assert list(pb.pin_tiers) == [tpb.TIER_GPU, tpb.TIER_EDGE]
    assert list(pb.exclude_backends) == ["slow"] and pb.edge_affinity.site == "plant-7"
    assert pb.objective == rpb.OBJECTIVE_FASTEST and pb.request_id == "rq"
    # Unset stays unset: the router applies its defaults.
    bare = GenerateBody.model_validate({"messages": [{"role": "user", "content": "u"}]})
    pb = bare.to_proto()
    assert not pb.HasField("max_cost_usd") and pb.data_class == tpb.DATA_CLASS_UNSPECIFIED


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"job_id": "a/b", "request": {"messages": [{"role": "user", "content": "x"}]}}, "job_id"),
        ({"job_id": "j"}, "request"),
        ({"job_id": "j", "request": {"messages": [{"role": "user", "content": 1}]}},
         "request.messages[0].content"),
    ],
)  # fmt: skip
def test_job_errors_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        Job.model_validate(data)
    assert describe(err.value)[0] == field


def test_make_request_rejects_bad_names() -> None:
    with pytest.raises(ValueError, match="messages\\[0\\].role"):
        make_request(messages=[("robot", "x")])
    with pytest.raises(ValueError, match="pin_tiers: 'cloud'"):
        make_request(prompt="x", pin_tiers=["cloud"])
    with pytest.raises(ValueError, match="either prompt or messages"):
        make_request()


# --- OpenAI -----------------------------------------------------------------------------------


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_openai_model_names_pin_the_route() -> None:
    assert list(chat(model="tier/edge").to_proto(request_id="r").pin_tiers) == [tpb.TIER_EDGE]
    assert list(chat(model="backend/gpu-a").to_proto(request_id="r").pin_backends) == ["gpu-a"]
    assert chat(model="family/gemma3").to_proto(request_id="r").model_family == "gemma3"
    pb = chat(
        max_completion_tokens=7,
        stop="END",
        messages=[
            {"role": "developer", "content": "rules"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
        ],
        hybrid_router={"data_class": "public", "latency_budget": {"total_ms": 900}},
        presence_penalty=0.5,  # unknown to the router: ignored, as OpenAI clients expect
    ).to_proto(request_id="r")
    assert [m.role for m in pb.messages] == [tpb.ROLE_SYSTEM, tpb.ROLE_USER]
    assert pb.messages[1].content == "ab" and pb.max_output_tokens == 7
    assert list(pb.sampling.stop) == ["END"] and pb.latency_budget.total_ms == 900


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": "gpt-4o"}, "model"),
        ({"model": "tier/cloud"}, "model"),
        ({"stream": True}, "stream"),
        ({"n": 2}, "n"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"functions": [{"name": "f"}]}, "functions"),
    ],
)
def test_openai_unsupported_parameters_are_named(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameter) as err:
        chat(**fields).to_proto(request_id="r")
    assert err.value.param == param


# --- the import rule ------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_lambda_edge_imports_only_the_contract_and_itself() -> None:
    allowed_third_party = {"grpc", "aws_lambda_powertools", "pydantic", "boto3", "botocore"}
    stdlib = set(sys.stdlib_module_names)
    for path in sorted(PKG.glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in {"router", "serving", "greengrass"}, f"{path.name} imports {name}"
            assert (
                top in stdlib
                or top in allowed_third_party
                or top == "lambda_edge"
                or name.startswith(("hybrid_router.v1", "hybrid_router.client"))
                # the shared variable names and reference resolver (stdlib only)
                or name in ("hybrid_router.env", "hybrid_router.refs")
            ), f"{path.name} imports {name}"


def test_the_client_library_is_dependency_light() -> None:
    """The layer's library (hybrid_router.client): stdlib, grpc, the contract and the
    variable names, nothing else (no lambda_edge, no router, no pydantic)."""
    client = PKG.parent / "proto" / "hybrid_router" / "client"
    ours = ("hybrid_router.client", "hybrid_router.v1", "hybrid_router.env")
    for path in sorted(client.glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top in set(sys.stdlib_module_names) | {"grpc"} or name.startswith(ours), (
                f"{path.name} imports {name}"
            )


def test_importing_the_handlers_loads_no_router_internals() -> None:
    code = (
        "import sys, lambda_edge.http_api, lambda_edge.websocket, lambda_edge.jobs, "
        "hybrid_router.client\n"
        "tops = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(tops & {'router', 'serving', 'greengrass'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"
