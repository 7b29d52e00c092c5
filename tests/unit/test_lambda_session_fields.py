"""Sessions in the Lambda front-ends' bodies (issue 13, item 6): ``session_id`` and
``context_strategy`` checked with errors naming the field, the WebSocket connection's own
session, the OpenAI facade's ``X-Session-Id`` header and ``hybrid_router`` fields, and the
session facts in the decision JSON. Pure: no router, no AWS."""

from __future__ import annotations

from typing import Any

import pytest
from hybrid_router.client import valid_session_id
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import sessions_pb2 as spb
from hybrid_router.v1 import types_pb2 as tpb
from pydantic import ValidationError

from lambda_edge.openai_compat import (
    SESSION_HEADER,
    ChatCompletionRequest,
    UnsupportedParameter,
    router_extension,
)
from lambda_edge.payloads import GenerateBody, Job, WsMessage, decision_dict, describe
from lambda_edge.websocket import connection_session_id, message_session_id

RULE_WORDS = "1-128 of letters, digits"


def body(**fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "next turn"}], **fields}


def error_of(model: Any, data: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as err:
        model.model_validate(data)
    return describe(err.value)


# --- the router's own JSON (HTTP, streaming, SQS) ---------------------------------------------


def test_session_fields_go_into_the_request() -> None:
    pb = GenerateBody.model_validate(
        body(session_id="chat-7:a.b_c", context_strategy="summarize")
    ).to_proto(request_id="r")
    assert pb.session_id == "chat-7:a.b_c"
    assert pb.context_strategy == spb.CONTEXT_STRATEGY_SUMMARIZE
    bare = GenerateBody.model_validate(body()).to_proto()
    assert bare.session_id == "" and bare.context_strategy == spb.CONTEXT_STRATEGY_UNSPECIFIED


@pytest.mark.parametrize(
    "session_id",
    ["", "two words", "-starts-with-a-dash", "a" * 129, "a/b", "caf\u00e9", "x\n"],
)
def test_bad_session_ids_are_named(session_id: str) -> None:
    field, message = error_of(GenerateBody, body(session_id=session_id))
    assert field == "session_id"
    assert message.startswith("session_id: must be ") and RULE_WORDS in message
    assert "more problem" not in message


@pytest.mark.parametrize("strategy", ["window", "SLIDING", "", 3, None])
def test_unknown_strategies_are_named(strategy: Any) -> None:
    if strategy is None:  # null is "not given": the session's own strategy applies
        GenerateBody.model_validate(body(session_id="s", context_strategy=None))
        return
    field, message = error_of(GenerateBody, body(session_id="s", context_strategy=strategy))
    assert field == "context_strategy"
    assert "'sliding', 'summarize' or 'strict'" in message


def test_a_strategy_needs_a_session() -> None:
    field, message = error_of(GenerateBody, body(context_strategy="strict"))
    assert (field, message) == (
        "context_strategy",
        "context_strategy: applies to a session: give session_id too",
    )
    # A bad session id is the one error reported, not also the strategy.
    field, message = error_of(GenerateBody, body(session_id="a b", context_strategy="strict"))
    assert field == "session_id" and "more problem" not in message


def test_jobs_carry_the_session_and_name_bad_fields() -> None:
    job = Job.model_validate({"job_id": "j-1", "request": body(session_id="batch-42")})
    assert job.request.to_proto(request_id=job.job_id).session_id == "batch-42"
    field, _ = error_of(Job, {"job_id": "j", "request": body(session_id="no way")})
    assert field == "request.session_id"
    field, _ = error_of(Job, {"job_id": "j", "request": body(context_strategy="sliding")})
    assert field == "request.context_strategy"


# --- WebSocket ------------------------------------------------------------------------------


CONN = "L0SM9cOFvHcCIhw="  # an API Gateway connection id


def test_a_connection_keeps_one_session_by_default() -> None:
    msg = WsMessage.model_validate({"request": body()})
    assert msg.session is True
    sid = message_session_id(msg, CONN)
    assert sid == "ws-L0SM9cOFvHcCIhw." and valid_session_id(sid)
    pb = msg.request.to_proto(request_id="r", session_id=sid)
    assert pb.session_id == sid
    # The strategy may come without session_id: it applies to the connection's session.
    msg = WsMessage.model_validate({"request": body(context_strategy="strict")})
    pb = msg.request.to_proto(request_id="r", session_id=message_session_id(msg, CONN))
    assert pb.session_id == sid and pb.context_strategy == spb.CONTEXT_STRATEGY_STRICT


def test_a_message_may_name_its_session_or_opt_out() -> None:
    named = WsMessage.model_validate({"request": body(session_id="shared-1")})
    assert message_session_id(named, CONN) == "shared-1"
    off = WsMessage.model_validate({"request": body(), "session": False})
    assert message_session_id(off, CONN) == ""
    assert off.request.to_proto(request_id="r", session_id="").session_id == ""


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"request": body(session_id="a b")}, "request.session_id", RULE_WORDS),
        ({"request": body(context_strategy="fifo")}, "request.context_strategy", "'sliding'"),
        ({"request": body(session_id="s"), "session": False}, "session", "conflicts"),
        ({"request": body(context_strategy="strict"), "session": False}, "session", "drop one"),
        ({"request": body(), "session": "no"}, "session", "valid boolean"),
        ({"request": body(), "session": 0}, "session", "valid boolean"),
    ],
)
def test_bad_websocket_session_fields_are_named(
    data: dict[str, Any], field: str, words: str
) -> None:
    got, message = error_of(WsMessage, data)
    assert got == field and message.startswith(f"{field}: ") and words in message


def test_connection_ids_map_to_distinct_valid_session_ids() -> None:
    ids = ["L0SM9cOFvHcCIhw=", "a+b/c=", "a-b_c.", "abc", "A" * 125, "A" * 126, "conn-1", "x y"]
    sessions = [connection_session_id(i) for i in ids]
    assert all(valid_session_id(s) for s in sessions), sessions
    assert len(set(sessions)) == len(ids)
    assert connection_session_id("a+b/c=") == "ws-a-b_c."
    # Not base64 (never from API Gateway): a digest, under its own prefix.
    assert connection_session_id("conn-1").startswith("ws:")
    assert connection_session_id(CONN) == connection_session_id(CONN)  # stable: no state


# --- OpenAI-compatible ------------------------------------------------------------------------


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_openai_session_from_the_header_or_the_extension() -> None:
    pb = chat().to_proto(request_id="r", session_header="conv-1")
    assert pb.session_id == "conv-1" and not pb.context_strategy
    pb = chat(hybrid_router={"session_id": "conv-2", "context_strategy": "sliding"}).to_proto(
        request_id="r"
    )
    assert pb.session_id == "conv-2" and pb.context_strategy == spb.CONTEXT_STRATEGY_SLIDING
    same = chat(hybrid_router={"session_id": "conv-3"})
    assert same.to_proto(request_id="r", session_header=" conv-3 ").session_id == "conv-3"
    # An empty header is no header.
    assert chat().to_proto(request_id="r", session_header="").session_id == ""


@pytest.mark.parametrize(
    ("fields", "header", "param", "words"),
    [
        ({}, "a b", SESSION_HEADER, RULE_WORDS),
        ({"hybrid_router": {"session_id": "x"}}, "y", SESSION_HEADER, "differs"),
        ({"hybrid_router": {"context_strategy": "strict"}}, None,
         "hybrid_router.context_strategy", SESSION_HEADER),
        ({"session_id": "top-level"}, None, "session_id", "hybrid_router.session_id"),
        ({"context_strategy": "strict"}, "s", "context_strategy", "hybrid_router."),
    ],
)  # fmt: skip
def test_openai_session_problems_name_the_parameter(
    fields: dict[str, Any], header: str | None, param: str, words: str
) -> None:
    with pytest.raises(UnsupportedParameter) as err:
        chat(**fields).to_proto(request_id="r", session_header=header)
    assert err.value.param == param and words in str(err.value)
    assert str(err.value).startswith(f"{param}: ")


@pytest.mark.parametrize(
    ("extension", "field"),
    [
        ({"session_id": "bad id"}, "hybrid_router.session_id"),
        ({"session_id": "s", "context_strategy": "forget"}, "hybrid_router.context_strategy"),
    ],
)
def test_openai_bad_extension_values_are_validation_errors(
    extension: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as err:
        chat(hybrid_router=extension)
    assert describe(err.value)[0] == field


# --- the decision JSON ------------------------------------------------------------------------


def _decision(session: bool) -> rpb.Decision:
    d = rpb.Decision(
        request_id="r",
        backend="edge-1",
        tier=tpb.TIER_EDGE,
        candidates=[
            rpb.CandidateReport(backend="edge-1", tier=tpb.TIER_EDGE, accepted=True),
            rpb.CandidateReport(backend="gpu-1", tier=tpb.TIER_GPU, rejected_by="window"),
        ],
    )
    if session:
        d.session_id = "chat-1"
        d.context_strategy = spb.CONTEXT_STRATEGY_SLIDING
        d.session_turns = 4
        d.candidates[0].context.CopyFrom(
            spb.ContextFit(turns_kept=2, turns_dropped=2, tokens_kept=90, tokens_dropped=80)
        )
        d.candidates[1].context.CopyFrom(spb.ContextFit(turns_kept=4, note="the whole history"))
    return d


def test_decision_json_has_the_session_facts() -> None:
    d = decision_dict(_decision(session=True))
    assert (d["session_id"], d["context_strategy"], d["session_turns"]) == ("chat-1", "sliding", 4)
    edge, gpu = d["candidates"]
    assert edge["context"] == {
        "turns_kept": 2,
        "turns_dropped": 2,
        "turns_summarized": 0,
        "tokens_kept": 90,
        "tokens_dropped": 80,
        "summary_used": False,
        "note": "",
    }
    assert gpu["context"]["note"] == "the whole history" and gpu["rejected_by"] == "window"
    plain = decision_dict(_decision(session=False))
    assert (plain["session_id"], plain["context_strategy"], plain["session_turns"]) == ("", "", 0)
    assert all("context" not in c for c in plain["candidates"])


def test_openai_extension_names_the_session_only_with_one() -> None:
    usage = rpb.Usage(backend="edge-1", tier=tpb.TIER_EDGE)
    ext = router_extension("r", usage, _decision(session=True), 0, "edge-1")
    assert ext["session_id"] == "chat-1" and ext["session_turns"] == 4
    assert ext["context_strategy"] == "sliding"
    ext = router_extension("r", usage, _decision(session=False), 0, "edge-1")
    assert not {"session_id", "session_turns", "context_strategy"} & set(ext)
