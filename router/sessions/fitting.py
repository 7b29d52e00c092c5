"""Fitting a session's history into one backend's window: pure, no I/O, no clock.

The prompt a backend gets for a session turn is::

    [system] [summary of turns 0..upto] [kept turns, oldest first] [the new turn]

``fixed`` tokens (system prompt + new turn) always go; the history gives way. Given each
turn's token count under the backend's tokenizer, :func:`fit` picks the turns:

- ``strict``: every turn, or the candidate cannot take the request (its window filter
  rejects it; with no window large enough the request is OUT_OF_RANGE);
- ``sliding``: the newest turns that fit ``budget`` (``context_window`` minus the answer's
  ``max_output_tokens``), starting at a user turn so no answer is sent without its question;
- ``summarize``: the cached summary of turns ``[0, upto)`` in place of those turns, then
  the newest of the rest that fit; with no summary yet (or one that does not help), as
  ``sliding``, and the note says so.

Tool use: an assistant turn that calls tools and the ``tool`` turns with their results
are kept or left out together (providers refuse a tool result whose call is not before
it, and a call without its results). The history is only ever cut at its front and a cut
never starts at a tool turn, so a kept result always has its call; when the new turn is
itself tool results (an agent loop's next step), the turns from the call they answer on
(``required``) must be kept, or the candidate cannot take the request; when starting at a
user turn would leave that call out (a long loop since the question), the cut starts at
the oldest whole tool exchange that fits instead (and the note says the question was left
out). :func:`paired` then
drops what the stored history itself left unpaired (a call never answered, a result
whose call is not right before it).

One pass from the newest turn back: O(turns), about a microsecond per 1,000 turns of
arithmetic (BENCHMARKS.md "Session fitting").
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from router.sessions.model import SLIDING, STRICT, SUMMARIZE, Turn


@dataclass(frozen=True, slots=True)
class FitResult:
    """Which turns go to the backend, and the report the Decision shows."""

    #: Index of the first history turn sent (len(history) = none).
    start: int
    #: Whether the summary goes in front of the kept turns.
    summary_used: bool
    #: Prompt tokens: fixed + summary (if used) + kept turns.
    tokens: int
    turns_kept: int
    turns_dropped: int
    turns_summarized: int
    tokens_dropped: int
    #: False when even the system prompt and the new turn exceed the budget, or (strict)
    #: when the whole history does not fit: the candidate cannot take the request.
    fits: bool
    note: str


def _user_start(start: int, roles: Sequence[str]) -> int:
    """``start``, moved on to the next user turn (never send an answer without its question)."""
    n = len(roles)
    while start < n and roles[start] != "user":
        start += 1
    return start


def _start(start: int, roles: Sequence[str], required: int) -> tuple[int, bool]:
    """Where the kept turns begin, from the first that fits (``start``): the next user
    turn; else, when that would leave out the ``required`` turns, the next turn that is
    not a tool result (the oldest whole tool exchange that fits), and True."""
    at = _user_start(start, roles)
    if at <= required:
        return at, False
    at = start
    while at < required and roles[at] == "tool":
        at += 1
    return at, True


def _newest_that_fit(turns: Sequence[int], lo: int, room: int) -> tuple[int, int]:
    """(start, tokens) of the longest suffix of ``turns[lo:]`` whose sum is <= ``room``."""
    used = 0
    start = len(turns)
    while start > lo and used + turns[start - 1] <= room:
        start -= 1
        used += turns[start]
    return start, used


def fit(
    turns: Sequence[int],
    roles: Sequence[str],
    *,
    fixed: int,
    budget: int,
    strategy: str,
    summary_upto: int = 0,
    summary_tokens: int = 0,
    required: int | None = None,
) -> FitResult:
    """Fit ``turns`` (token counts of the history, oldest first; ``roles`` alongside:
    ``user``, ``assistant`` or ``tool``) into ``budget`` tokens next to ``fixed`` ones.
    ``summary_upto`` > 0: a summary of turns ``[0, summary_upto)`` of ``summary_tokens``
    tokens is ready. ``required``: the turns from this index on must be sent (the tool
    call the new turn's results answer, and what follows it); None: none."""
    n = len(turns)
    total = sum(turns)
    need = n if required is None else max(0, min(required, n))
    if fixed + total <= budget:
        return FitResult(0, False, fixed + total, n, 0, 0, 0, True, "the whole history fits")
    if strategy == STRICT:
        return FitResult(
            0, False, fixed + total, n, 0, 0, 0, False,
            f"strict: the history needs {fixed + total} tokens, the window leaves {budget}",
        )  # fmt: skip
    if fixed > budget:
        return FitResult(
            n, False, fixed, 0, n, 0, total, False,
            f"the system prompt and the new turn alone need {fixed} tokens of {budget}",
        )  # fmt: skip
    needed = fixed + sum(turns[need:])
    if needed > budget:
        return FitResult(
            need, False, needed, n - need, need, 0, sum(turns[:need]), False,
            f"the new turn's tool results and the tool call they answer need {needed} "
            f"tokens of {budget}",
        )  # fmt: skip

    slide_start, slide_used = _newest_that_fit(turns, 0, budget - fixed)
    slide_start, cut_question = _start(slide_start, roles, need)
    slide_used = sum(turns[slide_start:])
    note = f"sliding: the newest {n - slide_start} of {n} turns fit"
    if cut_question:
        note += " (from a tool call: the question before it was left out)"
    sliding = FitResult(
        slide_start, False, fixed + slide_used, n - slide_start, slide_start, 0,
        total - slide_used, True, note,
    )  # fmt: skip
    if strategy != SUMMARIZE:
        return sliding
    upto = min(summary_upto, n)
    if upto <= 0:
        return _note(sliding, "no summary ready: sliding (one is being made)")
    room = budget - fixed - summary_tokens
    if room < 0:
        return _note(sliding, "the summary does not fit: sliding")
    if upto > need:
        return _note(sliding, "the summary covers the tool call the new turn answers: sliding")
    start, used = _newest_that_fit(turns, upto, room)
    if start > need:
        return _note(sliding, "the summary leaves no room for the tool call answered: sliding")
    start, _ = _start(start, roles, need)
    used = sum(turns[start:])
    summarized = upto
    dropped = start - upto
    if n - start + summarized <= sliding.turns_kept:
        # The summary would cover no more than sliding keeps: not worth its tokens.
        return _note(sliding, "sliding (the summary covers no dropped turn)")
    note = f"summary of turns 0-{upto - 1}, then the newest {n - start} turns"
    if dropped:
        note += f" ({dropped} between them dropped: the summary is being refreshed)"
    return FitResult(
        start, True, fixed + summary_tokens + used, n - start, dropped, summarized,
        sum(turns[upto:start]), True, note,
    )  # fmt: skip


def paired(turns: Sequence[Turn], answered_next: Collection[str] = ()) -> list[Turn]:
    """``turns`` (a kept history, oldest first) with every tool call and result in a pair,
    as providers require: an assistant turn keeps only the calls that the tool turns right
    after it answer (after the last turns: also those ``answered_next``, the ids the new
    turn's tool results answer), and is left out when that leaves it neither text nor
    calls; a tool turn that answers no call of the assistant turn right before it is left
    out. A history stored whole, call by result, comes back unchanged."""
    out: list[Turn] = []
    n = len(turns)
    i = 0
    while i < n:
        t = turns[i]
        i += 1
        if t.role == "tool":
            continue  # not after an assistant turn's calls: an orphan
        if not t.tool_calls:
            out.append(t)
            continue
        j = i
        while j < n and turns[j].role == "tool":
            j += 1
        results = turns[i:j]
        answered = {r.tool_call_id for r in results}
        if j == n:
            answered.update(answered_next)
        calls = tuple(c for c in t.tool_calls if c.id in answered)
        if calls != t.tool_calls:
            t = replace(t, tool_calls=calls)
        if t.tool_calls or t.content:
            out.append(t)
        ids = {c.id for c in calls}
        out.extend(r for r in results if r.tool_call_id in ids)
        i = j
    return out


def _note(result: FitResult, note: str) -> FitResult:
    return FitResult(
        result.start, result.summary_used, result.tokens, result.turns_kept,
        result.turns_dropped, result.turns_summarized, result.tokens_dropped, result.fits, note,
    )  # fmt: skip


__all__ = ["SLIDING", "STRICT", "SUMMARIZE", "FitResult", "fit", "paired"]
