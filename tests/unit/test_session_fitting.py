"""Fitting a session history into one window (router/sessions/fitting.py), and the policy
seeing each candidate's fitted size (Features.fitted)."""

from __future__ import annotations

import pytest

from router.sessions.fitting import fit, paired
from router.sessions.model import Turn
from router.types import ToolCall

TEN = [10] * 10
ROLES = ["user", "assistant"] * 5


def test_the_whole_history_fits():
    r = fit(TEN, ROLES, fixed=5, budget=200, strategy="sliding")
    assert (r.start, r.turns_kept, r.turns_dropped, r.tokens, r.fits) == (0, 10, 0, 105, True)
    assert r.note == "the whole history fits"


def test_sliding_keeps_the_newest_turns_that_fit():
    r = fit(TEN, ROLES, fixed=5, budget=50, strategy="sliding")
    assert (r.start, r.turns_kept, r.turns_dropped, r.tokens, r.tokens_dropped) == (
        6, 4, 6, 45, 60
    )  # fmt: skip
    assert r.fits and not r.summary_used


def test_sliding_never_starts_with_an_answer():
    # Room for 3 turns: the oldest of them would be an assistant turn; it is left out.
    r = fit(TEN, ROLES, fixed=5, budget=35, strategy="sliding")
    assert ROLES[r.start] == "user"
    assert (r.start, r.turns_kept) == (8, 2)


def test_strict_refuses_what_does_not_fit_whole():
    r = fit(TEN, ROLES, fixed=5, budget=50, strategy="strict")
    assert not r.fits and r.tokens == 105 and r.turns_kept == 10
    assert "strict" in r.note
    assert fit(TEN, ROLES, fixed=5, budget=200, strategy="strict").fits


def test_the_new_turn_alone_too_long_does_not_fit():
    r = fit(TEN, ROLES, fixed=60, budget=50, strategy="sliding")
    assert not r.fits and r.turns_kept == 0 and "alone" in r.note


def test_summarize_without_a_summary_slides_and_says_so():
    r = fit(TEN, ROLES, fixed=5, budget=50, strategy="summarize")
    assert (r.start, r.summary_used) == (6, False)
    assert r.note.startswith("no summary ready: sliding")


def test_summarize_puts_the_summary_in_front_of_the_newest_turns():
    r = fit(TEN, ROLES, fixed=5, budget=50, strategy="summarize", summary_upto=6, summary_tokens=8)
    assert r.summary_used
    assert (r.turns_summarized, r.turns_kept, r.turns_dropped) == (6, 2, 2)
    assert r.tokens == 5 + 8 + 20
    assert "being refreshed" in r.note


def test_a_summary_that_covers_everything_dropped_is_used_whole():
    r = fit(TEN, ROLES, fixed=5, budget=60, strategy="summarize", summary_upto=6, summary_tokens=8)
    assert (r.turns_summarized, r.turns_kept, r.turns_dropped, r.summary_used) == (6, 4, 0, True)
    assert r.tokens == 5 + 8 + 40


def test_a_summary_too_long_for_the_window_falls_back_to_sliding():
    r = fit(TEN, ROLES, fixed=5, budget=50, strategy="summarize", summary_upto=6, summary_tokens=60)
    assert not r.summary_used and r.note == "the summary does not fit: sliding"


@pytest.mark.parametrize("n", [0, 1, 2, 1000])
def test_kept_plus_dropped_is_every_turn(n):
    turns = [7] * n
    roles = (["user", "assistant"] * n)[:n]
    for budget in (0, 30, 300, 10_000):
        for strategy in ("sliding", "summarize", "strict"):
            r = fit(turns, roles, fixed=3, budget=budget, strategy=strategy)
            assert r.turns_kept + r.turns_dropped + r.turns_summarized == n
            if r.fits:
                assert r.tokens <= max(budget, 3 + 7 * n if strategy == "strict" else budget)


# --- tool calls and their results: kept or left out together --------------------------

# user, assistant calls a tool, the result, the answer; again with two parallel calls.
TOOL_ROLES = ["user", "assistant", "tool", "assistant", "user", "assistant", "tool", "tool",
              "assistant"]  # fmt: skip
LOOP_ROLES = ["user", "assistant", "tool", "assistant", "tool", "assistant"]  # the last calls


def _exchanges(pattern: list[int]) -> list[str]:
    """Roles of exchanges: each number is how many tool rounds the exchange has."""
    roles: list[str] = []
    for rounds in pattern:
        roles.append("user")
        for r in range(rounds):
            roles += ["assistant"] + ["tool"] * (1 + r % 2)
        roles.append("assistant")
    return roles


@pytest.mark.parametrize("budget", range(0, 120, 5))
@pytest.mark.parametrize("strategy", ["sliding", "summarize"])
def test_a_cut_never_keeps_a_tool_result_without_its_call(budget, strategy):
    for roles in (TOOL_ROLES, _exchanges([2, 0, 3, 1])):
        turns = [10] * len(roles)
        r = fit(turns, roles, fixed=5, budget=budget, strategy=strategy,
                summary_upto=3, summary_tokens=4)  # fmt: skip
        kept = roles[r.start :]
        assert not kept or kept[0] != "tool"
        # Every kept tool result has its call kept: the turn before its run of results.
        for i in range(r.start, len(roles)):
            if roles[i] == "tool":
                j = i
                while roles[j] == "tool":
                    j -= 1
                assert j >= r.start and roles[j] == "assistant"


def test_sliding_starts_at_the_question_not_inside_a_tool_exchange():
    # Room for 5 turns: the oldest of them is a tool result; the cut moves on to the user.
    r = fit([10] * 9, TOOL_ROLES, fixed=5, budget=55, strategy="sliding")
    assert (r.start, r.turns_kept) == (4, 5) and r.fits
    assert r.note == "sliding: the newest 5 of 9 turns fit"


def test_the_call_the_new_tool_results_answer_is_always_kept():
    # An agent loop: the new turn is the result of the last turn's call (index 5). With no
    # user turn after the cut, the cut starts at the oldest whole exchange that fits.
    r = fit([10] * 6, LOOP_ROLES, fixed=5, budget=35, strategy="sliding", required=5)
    assert (r.start, r.turns_kept, r.fits) == (3, 3, True)
    assert LOOP_ROLES[r.start] == "assistant"
    assert "the question before it was left out" in r.note
    # Room for the call alone.
    r = fit([10] * 6, LOOP_ROLES, fixed=5, budget=15, strategy="sliding", required=5)
    assert (r.start, r.turns_kept, r.fits) == (5, 1, True)
    # No room for the call: the candidate cannot take the request (a result alone is refused).
    r = fit([10] * 6, LOOP_ROLES, fixed=5, budget=14, strategy="sliding", required=5)
    assert not r.fits and r.start == 5 and r.tokens == 15
    assert (
        r.note == "the new turn's tool results and the tool call they answer need 15 tokens of 14"
    )
    # Whole history room: no cut at all; strict is unchanged.
    assert fit([10] * 6, LOOP_ROLES, fixed=5, budget=65, strategy="sliding", required=5).start == 0
    assert not fit([10] * 6, LOOP_ROLES, fixed=5, budget=35, strategy="strict", required=5).fits


def test_a_user_turn_that_fits_still_wins_over_a_tool_call_start():
    roles = ["user", "assistant", "tool", "assistant", "user", "assistant"]
    r = fit([10] * 6, roles, fixed=5, budget=45, strategy="sliding", required=5)
    assert (r.start, r.note) == (4, "sliding: the newest 2 of 6 turns fit")


def test_a_summary_never_covers_the_call_the_new_turn_answers():
    r = fit([10] * 6, LOOP_ROLES, fixed=5, budget=35, strategy="summarize",
            summary_upto=6, summary_tokens=2, required=5)  # fmt: skip
    assert not r.summary_used and r.start <= 5
    assert r.note == "the summary covers the tool call the new turn answers: sliding"
    r = fit([10] * 6, LOOP_ROLES, fixed=5, budget=35, strategy="summarize",
            summary_upto=3, summary_tokens=12, required=3)  # fmt: skip
    assert not r.summary_used and r.start == 3 and r.fits
    assert r.note == "the summary leaves no room for the tool call answered: sliding"
    r = fit([10] * 6, LOOP_ROLES, fixed=5, budget=40, strategy="summarize",
            summary_upto=3, summary_tokens=4, required=5)  # fmt: skip
    assert r.summary_used and r.start == 3 and r.turns_summarized == 3


@pytest.mark.parametrize("n_exchanges", [1, 3, 6])
def test_required_turns_are_kept_whenever_the_candidate_fits(n_exchanges):
    # Exchanges with tool rounds, then a question whose answer calls a tool: the new turn
    # is that call's result.
    roles = [*_exchanges([1 + i % 3 for i in range(n_exchanges)]), "user", "assistant"]
    required = len(roles) - 1
    assert roles[required] == "assistant"
    turns = [3 + (i * 7) % 11 for i in range(len(roles))]
    for budget in range(0, sum(turns) + 20, 3):
        for strategy in ("sliding", "summarize", "strict"):
            for upto in (0, 2, required, len(roles)):
                r = fit(turns, roles, fixed=4, budget=budget, strategy=strategy,
                        summary_upto=upto, summary_tokens=5, required=required)  # fmt: skip
                assert r.turns_kept + r.turns_dropped + r.turns_summarized == len(roles)
                if r.fits:
                    assert r.start <= required and roles[r.start] != "tool"
                    assert r.tokens <= budget


# --- paired: what the stored history itself left unpaired -------------------------------


def _calls(*ids: str) -> tuple[ToolCall, ...]:
    return tuple(ToolCall(i, "get_weather", '{"city": "Oslo"}') for i in ids)


def test_paired_keeps_a_whole_history_as_it_is():
    turns = [
        Turn("user", "weather?"),
        Turn("assistant", "", tool_calls=_calls("c1", "c2")),
        Turn("tool", "12 C", tool_call_id="c1", name="get_weather"),
        Turn("tool", "9 C", tool_call_id="c2"),
        Turn("assistant", "12 and 9"),
    ]
    assert paired(turns) == turns
    # The last turn's calls, answered by the new turn's results.
    loop = [*turns, Turn("assistant", "", tool_calls=_calls("c3"))]
    assert paired(loop, {"c3"}) == loop


def test_paired_drops_calls_never_answered_and_results_without_a_call():
    turns = [
        Turn("user", "weather?"),
        Turn("assistant", "let me see", tool_calls=_calls("c1", "c2")),
        Turn("tool", "12 C", tool_call_id="c1"),
        Turn("user", "never mind"),  # c2 was never answered
        Turn("tool", "stray", tool_call_id="c9"),  # answers nothing before it
        Turn("assistant", "", tool_calls=_calls("c3")),  # unanswered and without text
        Turn("user", "and now?"),
        Turn("assistant", "ok", tool_calls=_calls("c4")),  # the last: answered next or not
    ]
    out = paired(turns)
    assert [t.role for t in out] == ["user", "assistant", "tool", "user", "user", "assistant"]
    assert out[1].tool_calls == _calls("c1") and out[1].content == "let me see"
    assert out[-1].tool_calls == () and out[-1].content == "ok"
    assert paired(turns, {"c4"})[-1].tool_calls == _calls("c4")
