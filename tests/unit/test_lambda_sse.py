"""The streaming server's pure parts: the adapter's Lambda context header, the port, the
SSE encoding and the OpenAI chunk sequence (lambda_edge.stream_server, lambda_edge.sse)."""

from __future__ import annotations

import json

import pytest
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from testkit import FakeClock

from lambda_edge.openai_compat import ChatCompletionRequest, UnsupportedParameter
from lambda_edge.settings import SettingsError
from lambda_edge.sse import DONE, OpenAIStream, RouterEventStream, Tracker, event
from lambda_edge.stream_server import FUNCTION_URL_LIMIT_S, InvocationContext, listen_port


def test_lambda_context_header_gives_deadline_request_id_and_trace() -> None:
    clock = FakeClock(1_000.0)
    header = json.dumps(
        {
            "request_id": "abc-1",
            "deadline": 1_012_500,
            "invoked_function_arn": "arn:aws:lambda:us-east-1:123456789012:function:f",
            "xray_trace_id": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
        }
    )
    ctx = InvocationContext.from_header(header, clock=clock)
    assert ctx.aws_request_id == "abc-1"
    assert ctx.get_remaining_time_in_millis() == 12_500
    assert ctx.xray_trace_id.startswith("Root=1-5759e988")
    clock.advance(20.0)  # 1_020 s: 7.5 s past the deadline
    assert ctx.get_remaining_time_in_millis() == 0


@pytest.mark.parametrize("header", [None, "", "not json", "[1]", '{"deadline": "soon"}'])
def test_without_a_usable_header_the_function_url_limit_applies(header: str | None) -> None:
    ctx = InvocationContext.from_header(header, clock=FakeClock(50.0))
    assert ctx.get_remaining_time_in_millis() == int(FUNCTION_URL_LIMIT_S * 1000)
    assert ctx.aws_request_id == ""


def test_listen_port_precedence_and_errors() -> None:
    assert listen_port({}) == 8080
    assert listen_port({"PORT": "9000"}) == 9000
    assert listen_port({"AWS_LWA_PORT": "7000", "PORT": "9000"}) == 7000
    with pytest.raises(SettingsError, match="AWS_LWA_PORT='http'"):
        listen_port({"AWS_LWA_PORT": "http"})
    with pytest.raises(SettingsError, match="PORT='70000'"):
        listen_port({"PORT": "70000"})


def test_sse_event_is_one_data_line() -> None:
    assert event({"a": "x\ny"}) == b'data: {"a":"x\\ny"}\n\n'
    assert event({"b": 1}, "usage") == b'event: usage\ndata: {"b":1}\n\n'


def _events() -> list[rpb.GenerateEvent]:
    return [
        rpb.GenerateEvent(decision=rpb.Decision(backend="edge-a", explanation="cheapest")),
        rpb.GenerateEvent(failover=rpb.Failover(from_backend="edge-a", to_backend="gpu-b")),
        rpb.GenerateEvent(delta=tpb.TextDelta(text="Hel", tokens=1)),
        rpb.GenerateEvent(delta=tpb.TextDelta(text="lo", tokens=1)),
        rpb.GenerateEvent(
            usage=rpb.Usage(
                backend="gpu-b",
                tier=tpb.TIER_GPU,
                input_tokens=9,
                output_tokens=2,
                finish_reason=tpb.FINISH_REASON_STOP,
                complete=True,
            )
        ),
    ]


def _decode(frames: list[bytes]) -> list[object]:
    out: list[object] = []
    for f in frames:
        assert f.startswith(b"data: ") and f.endswith(b"\n\n")
        body = f[len(b"data: ") : -2].decode()
        out.append(body if body == "[DONE]" else json.loads(body))
    return out


def test_openai_chunk_sequence_with_usage() -> None:
    t = Tracker()
    s = OpenAIStream("r1", created=7, include_usage=True, tracker=t)
    frames: list[bytes] = []
    for ev in _events():
        frames += s.add(ev, t.see(ev))
    frames += s.end()
    assert frames[-1] == DONE
    chunks = _decode(frames)
    assert chunks[-1] == "[DONE]"
    objs = [c for c in chunks if isinstance(c, dict)]
    assert [c["choices"][0]["delta"] for c in objs[:-1]] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "Hel"},
        {"content": "lo"},
        {},
    ]
    # The backend after the failover names every chunk.
    assert {c["model"] for c in objs} == {"gpu-b"}
    assert {c["id"] for c in objs} == {"chatcmpl-r1"}
    assert all(c["usage"] is None for c in objs[:-1])
    assert objs[-2]["choices"][0]["finish_reason"] == "stop"
    assert objs[-2]["hybrid_router"]["failovers"] == 1
    assert objs[-2]["hybrid_router"]["explanation"] == "cheapest"
    assert objs[-1]["choices"] == []
    assert objs[-1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}


def test_openai_error_chunk_is_openais_error_shape() -> None:
    s = OpenAIStream("r2", created=7, include_usage=False, tracker=Tracker())
    (only,) = _decode(s.error("UNAVAILABLE", 503, "backend gpu-b failed mid-answer"))
    assert only == {
        "error": {
            "message": "backend gpu-b failed mid-answer",
            "type": "server_error",
            "param": None,
            "code": "unavailable",
        }
    }


def test_router_event_stream_names_each_event() -> None:
    t = Tracker()
    s = RouterEventStream("r3", tracker=t)
    frames: list[bytes] = []
    for ev in _events():
        frames += s.add(ev, t.see(ev))
    frames += s.end()
    names = [f.split(b"\n", 1)[0] for f in frames]
    assert names == [
        b"event: decision",
        b"event: failover",
        b"event: delta",
        b"event: delta",
        b"event: usage",
    ]
    err = s.error("DEADLINE_EXCEEDED", 504, "deadline")[0]
    assert err.startswith(b"event: error\n")
    assert json.loads(err.split(b"data: ", 1)[1]) == {
        "type": "error",
        "request_id": "r3",
        "status": "DEADLINE_EXCEEDED",
        "http_status": 504,
        "message": "deadline",
    }


def test_stream_true_is_accepted_only_where_the_front_end_streams() -> None:
    body = ChatCompletionRequest.model_validate(
        {
            "model": "auto",
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert body.include_usage
    assert body.to_proto(request_id="r", streaming=True).request_id == "r"
    with pytest.raises(UnsupportedParameter) as err:
        body.to_proto(request_id="r")
    assert err.value.param == "stream" and "StreamFunctionUrl" in str(err.value)
