"""Fitting a session history into one window (router/sessions/fitting.py), and the policy
seeing each candidate's fitted size (Features.fitted)."""

from __future__ import annotations

import pytest

from router.sessions.fitting import fit

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
