"""WebSocket frames: coalescing by time (fake clock), splitting under the frame limit."""

from __future__ import annotations

import json

import pytest
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from testkit import FakeClock

from lambda_edge.ws_frames import FrameBuilder, encode, split_text


def delta(text: str, tokens: int = 1) -> rpb.GenerateEvent:
    return rpb.GenerateEvent(delta=tpb.TextDelta(text=text, tokens=tokens))


def decision(n_candidates: int = 1, reason: str = "ok") -> rpb.GenerateEvent:
    return rpb.GenerateEvent(
        decision=rpb.Decision(
            request_id="r",
            backend="b0",
            tier=tpb.TIER_GPU,
            candidates=[
                rpb.CandidateReport(
                    backend=f"b{i}", tier=tpb.TIER_GPU, accepted=i < 2, reason=reason
                )
                for i in range(n_candidates)
            ],
        )
    )


def usage() -> rpb.GenerateEvent:
    return rpb.GenerateEvent(usage=rpb.Usage(backend="b0", output_tokens=5, complete=True))


def frames(data: list[bytes]) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(d) for d in data]


def test_first_delta_goes_out_at_once_then_deltas_wait_for_the_interval() -> None:
    clock = FakeClock()
    fb = FrameBuilder("r", max_frame_bytes=32_000, flush_s=0.1, clock=clock)
    assert [f["type"] for f in frames(fb.add(decision()))] == ["decision"]
    clock.advance(0.01)
    assert frames(fb.add(delta("Hel"))) == [
        {"type": "delta", "request_id": "r", "text": "Hel", "tokens": 1}
    ]
    clock.advance(0.03)
    assert fb.add(delta("lo")) == []
    clock.advance(0.03)
    assert fb.add(delta(" wor")) == []
    clock.advance(0.05)  # 0.11 s since the last post
    out = frames(fb.add(delta("ld")))
    assert out == [{"type": "delta", "request_id": "r", "text": "lo world", "tokens": 3}]
    clock.advance(0.01)
    assert fb.add(delta("!")) == []
    # A non-delta event flushes what is held first, in order.
    assert [(f["type"], f.get("text")) for f in frames(fb.add(usage()))] == [
        ("delta", "!"),
        ("usage", None),
    ]
    assert fb.flush() == []


def test_zero_interval_posts_every_delta() -> None:
    clock = FakeClock()
    fb = FrameBuilder("r", max_frame_bytes=32_000, flush_s=0.0, clock=clock)
    assert [len(fb.add(delta(w))) for w in ("a", "b", "c")] == [1, 1, 1]


def test_a_full_frame_goes_out_before_its_time_and_keeps_the_tail() -> None:
    clock = FakeClock()
    fb = FrameBuilder("r", max_frame_bytes=1024, flush_s=60.0, clock=clock)
    fb.add(delta("x"))  # the first delta, at once
    out: list[bytes] = []
    for _ in range(300):
        out += fb.add(delta("abcdefgh", tokens=2))
    held_tail = fb.flush()
    every = out + held_tail
    assert all(len(d) <= 1024 for d in every)
    assert all(len(d) > 900 for d in out)  # only full frames went out early
    parsed = frames(every)
    assert "".join(f["text"] for f in parsed) == "abcdefgh" * 300
    assert sum(f["tokens"] for f in parsed) == 600


@pytest.mark.parametrize(
    "text",
    ['"quoted" \\ back', "\u00e9\u4e2d\U0001f600" * 50, "\x01\x02\n\t" * 80, "plain " * 200],
)
def test_split_text_respects_the_escaped_budget(text: str) -> None:
    budget = 64
    pieces = split_text(text, budget)
    assert "".join(pieces) == text
    for p in pieces:
        assert len(json.dumps(p, ensure_ascii=False).encode()) - 2 <= budget


def test_huge_decision_drops_rejected_candidates_then_all() -> None:
    clock = FakeClock()
    fb = FrameBuilder("r", max_frame_bytes=4096, flush_s=0.1, clock=clock)
    d = frames(fb.add(decision(n_candidates=60)))[0]["decision"]
    assert [c["backend"] for c in d["candidates"]] == ["b0", "b1"]
    assert d["candidates_omitted"] == 58
    d = frames(fb.add(decision(n_candidates=60, reason="r" * 3000)))[0]["decision"]
    assert "candidates" not in d and d["candidates_omitted"] == 60
    assert d["backend"] == "b0"


def test_error_frame_is_last_and_fits() -> None:
    clock = FakeClock()
    fb = FrameBuilder("r", max_frame_bytes=2048, flush_s=10.0, clock=clock)
    fb.add(delta("a"))
    fb.add(delta("b"))
    out = frames(fb.error("UNAVAILABLE", 503, "m" * 10_000))
    assert [f["type"] for f in out] == ["delta", "error"]
    assert out[0]["text"] == "b"
    assert out[1]["http_status"] == 503 and out[1]["message"].endswith("...")
    assert len(encode(out[1])) <= 2048
