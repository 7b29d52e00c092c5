"""The session lines of a decision (route's table, chat's headline) and the tables of
``hybrid-router sessions``, rendered at 80 columns from hand-made messages."""

from __future__ import annotations

from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import sessions_pb2 as spb
from testkit import rendered

from hybrid_router_cli import render, render_sessions

NOW_MS = 1_700_000_000_000


def _text(renderable: object, width: int = 80) -> str:
    return rendered(renderable, width)


def _decision() -> rpb.Decision:
    def cand(name: str, tier: int, rank: int, fit: spb.ContextFit, **kw: object) -> rpb.CandidateReport:  # fmt: skip  # noqa: E501
        return rpb.CandidateReport(
            backend=name, tier=tier, rank=rank, accepted=rank > 0, context=fit, **kw
        )

    return rpb.Decision(
        backend="edge-1",
        tier=3,
        session_id="chat-1",
        session_turns=22,
        context_strategy=spb.CONTEXT_STRATEGY_SUMMARIZE,
        candidates=[
            cand("edge-1", 3, 1, spb.ContextFit(
                turns_kept=4, turns_dropped=6, turns_summarized=12, summary_used=True,
                tokens_kept=380,
                note="summary of turns 0-11, then the newest 4 turns (6 between them "
                     "dropped: the summary is being refreshed)",
            )),
            cand("gpu-1", 2, 2, spb.ContextFit(
                turns_kept=18, turns_dropped=4, tokens_kept=900,
                note="sliding: the newest 18 of 22 turns fit",
            )),
            cand("hosted-1", 1, 0, spb.ContextFit(
                turns_kept=22, tokens_kept=1200,
                note="strict: the history needs 1200 tokens, the window leaves 400",
            ), rejected_by="context_window", reason="too big"),
        ],
    )  # fmt: skip


def test_fit_summary_says_what_was_kept_dropped_and_summarised() -> None:
    d = {c.backend: c.context for c in _decision().candidates}
    assert render.fit_summary(d["gpu-1"]) == "18 of 22 turns, 4 dropped · prompt 900 tok"
    assert render.fit_summary(d["edge-1"]).startswith(
        "4 of 22 turns + a summary of 12, 6 dropped · prompt 380 tok · summary of turns 0-11"
    )
    whole = spb.ContextFit(turns_kept=3, tokens_kept=90, note="the whole history fits")
    assert render.fit_summary(whole) == "all 3 turns · prompt 90 tok"
    assert render.fit_summary(spb.ContextFit(tokens_kept=5)) == "no stored turns · prompt 5 tok"


def test_the_decision_table_ends_with_each_backends_fit_within_80_columns() -> None:
    out = _text(render.decision_table(_decision()))
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80
    below = out.split("session chat-1 · 22 turns stored · strategy summarize\n")[1]
    starts = [line.split()[0] for line in below.splitlines() if line[:3].strip()]
    assert starts == ["edge-1", "gpu-1", "hosted-1"]  # plan order; wrapped lines indented
    assert "strict: the history needs 1200 tokens" in " ".join(below.split())
    wide = _text(render.decision_table(_decision()), width=140)
    assert "hosted-1  all 22 turns · prompt 1200 tok · strict:" in wide


def test_the_headline_names_the_session_and_the_chosen_fit() -> None:
    line = _text(render.decision_headline(_decision()), width=200).splitlines()[-1]
    assert line.startswith("  session chat-1 · summarize · 4 of 22 turns + a summary of 12")
    new = rpb.Decision(backend="edge-1", tier=3, session_id="s-9")
    assert "session s-9 · default · new: no turns yet" in _text(render.decision_headline(new))
    assert "session" not in _text(render.decision_headline(rpb.Decision(backend="edge-1")))


def test_a_decision_as_json_has_the_session_fields() -> None:
    data = render.message_to_dict(_decision())
    assert data["session_id"] == "chat-1" and data["session_turns"] == 22
    assert data["context_strategy"] == "CONTEXT_STRATEGY_SUMMARIZE"
    assert data["candidates"][0]["context"]["turns_summarized"] == 12
    plain = render.message_to_dict(rpb.Decision(backend="x"))
    assert plain["session_id"] == "" and "context" not in plain.get("candidates", [{}])[0:1]


def _session() -> spb.Session:
    return spb.Session(
        session_id="chat-1",
        created_unix_ms=NOW_MS - 600_000,
        updated_unix_ms=NOW_MS - 5_000,
        expires_unix_ms=NOW_MS + 3_595_000,
        ttl_s=3600,
        system="Answer briefly.",
        strategy=spb.CONTEXT_STRATEGY_SLIDING,
        turn_count=3,
        history_tokens=330,
        summary_turns=2,
        turns=[
            spb.Turn(role=2, content="word " * 300, seq=0, tokens=300),
            spb.Turn(role=3, content="short\nanswer", seq=1, tokens=20, backend="edge-1"),
            spb.Turn(role=2, content="next", seq=2, tokens=10),
        ],
    )


def test_show_cuts_long_turns_to_the_terminal_and_gives_totals() -> None:
    chars = render_sessions.content_chars_for(80)
    out = _text(render_sessions.session_view(_session(), content_chars=chars, now_ms=NOW_MS))
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80
    assert "session chat-1 · strategy sliding · ttl 1 h" in out
    assert "created 10 min ago · updated 5.0 s ago · expires in 60 min" in out
    assert "system: Answer briefly." in out
    assert "…" in out and "chars)" in out and "short answer" in out
    assert "3 turns, ~330 tokens (estimated) · summary: turns 0-1 (2 turns) summarised" in out
    full = _text(render_sessions.session_view(_session(), content_chars=None, now_ms=NOW_MS))
    assert full.count("word") == 300 and "…" not in full


def test_list_shows_every_id_whole() -> None:
    long_id = "team-a:" + "x" * 30
    sessions = [_session(), spb.Session(session_id=long_id, ttl_s=120, turn_count=0)]
    table = render_sessions.sessions_table(sessions, address="r:1", now_ms=NOW_MS)
    narrow = _text(table)
    assert max(len(line.rstrip()) for line in narrow.splitlines()) <= 80
    assert long_id in narrow and "chat-1" in narrow and "2 min" in narrow
    assert "in 60 min" in narrow and "Answer briefly." not in narrow
    wide = _text(table, width=140)
    assert "Answer briefly." in wide and "5.0 s ago" in wide and long_id in wide
    tiny = _text(table, width=60)  # an id longer than the room left folds, whole
    assert max(len(line.rstrip()) for line in tiny.splitlines()) <= 60
    folded = [line.split("│")[1].strip() for line in tiny.splitlines() if "│" in line]
    assert folded[0] == "chat-1" and "".join(folded[1:]) == long_id


def test_durations() -> None:
    assert [render_sessions.fmt_duration(s) for s in (45, 120, 5400, 86_400, 129_600)] == [
        "45 s", "2 min", "1.5 h", "1 d", "1.5 d",
    ]  # fmt: skip
    assert render_sessions.fmt_until(NOW_MS - 1, NOW_MS) == "expired"
    assert render_sessions.fmt_until(0, NOW_MS) == "-"
    assert render_sessions.clip("a  b\nc", 10) == ("a b c", 0)
    assert render_sessions.clip("abcdefghij", 5) == ("abcd…", 6)
