"""The tables of ``hybrid-router sessions``: one session's history (``show``) and the
tenant's sessions (``list``). Pure functions from ``SessionService`` messages to rich
renderables (rich imported inside them); a decision's session lines are in
:mod:`hybrid_router_cli.render` beside the decision table.

A turn's content is shown on one line of at most ``content_chars`` characters (its
whitespace folded, the cut marked ``…`` with the number of characters left out), so a
long history stays a table; ``content_chars=None`` shows each turn whole, line breaks
kept (``show --full``).

Tool use shows in the content column: an assistant turn's tool calls each on a line of
their own after its text (``→ get_weather({"city": "Oslo"}) call_1``), a tool turn's
result after the call it answers (``result of get_weather call_1:``); arguments are cut
as content is.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from hybrid_router.client import ROLES
from hybrid_router.v1 import sessions_pb2

from hybrid_router_cli.render import fmt_ago, strategy_name

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, Group, RenderableType
    from rich.table import Table
    from rich.text import Text

ROLE_STYLE = {"user": "cyan", "assistant": "green", "system": "magenta", "tool": "yellow"}
#: How tool calls and the call a tool result answers are marked in the content column.
TOOL_STYLE = "yellow"

#: Columns the ``show`` table needs besides the content (seq, role, tokens, backend,
#: borders and padding): the content gets the rest of the terminal.
SHOW_FIXED_COLUMNS = 44
#: Lines of the content column a turn may fill before it is cut (``show`` without --full).
SHOW_CONTENT_LINES = 3


def content_chars_for(width: int) -> int:
    """How many characters of each turn ``show`` prints on a ``width``-column terminal."""
    return max(40, (width - SHOW_FIXED_COLUMNS) * SHOW_CONTENT_LINES)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def fmt_duration(seconds: int) -> str:
    """``90 s``, ``30 min``, ``2 h``, ``7 d`` (``1.5 h`` when it is not whole)."""
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            value = seconds / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{seconds} s"


def fmt_until(unix_ms: int, now_ms: int | None = None) -> str:
    """``in 59 min`` (``expired`` once past, ``-`` for 0)."""
    if not unix_ms:
        return "-"
    now = _now_ms() if now_ms is None else now_ms
    if unix_ms <= now:
        return "expired"
    s = (unix_ms - now) / 1000.0
    if s < 120:
        return f"in {s:.0f} s"
    if s < 7200:
        return f"in {s / 60:.0f} min"
    if s < 172800:
        return f"in {s / 3600:.0f} h"
    return f"in {s / 86400:.0f} d"


def clip(text: str, limit: int | None) -> tuple[str, int]:
    """``text`` on one line (whitespace folded) and at most ``limit`` characters, and how
    many were left out; ``limit`` None: the text as it is."""
    if limit is None:
        return text, 0
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat, 0
    kept = flat[: max(limit - 1, 1)].rstrip()
    return kept + "…", len(flat) - len(kept)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def session_header(session: sessions_pb2.Session, *, now_ms: int | None = None) -> Text:
    """The session's facts: strategy, TTL, dates, system prompt."""
    from rich.text import Text

    now = _now_ms() if now_ms is None else now_ms
    text = Text(f"session {session.session_id}", style="bold")
    text.append(
        f" · strategy {strategy_name(session.strategy)} · ttl {fmt_duration(session.ttl_s)}"
        f"\ncreated {fmt_ago(session.created_unix_ms, now)} · updated "
        f"{fmt_ago(session.updated_unix_ms, now)} · expires "
        f"{fmt_until(session.expires_unix_ms, now)}",
        style="dim",
    )
    if session.system:
        system, _ = clip(session.system, 200)
        text.append("\nsystem: ", style="bold")
        text.append(system)
    return text


def session_totals(session: sessions_pb2.Session) -> Text:
    """``4 turns, ~160 tokens (estimated) · summary: turns 0-11``."""
    from rich.text import Text

    shown = len(session.turns)
    text = Text(_plural(session.turn_count, "turn"))
    if shown != session.turn_count:
        text.append(f" ({shown} kept; older ones trimmed)")
    text.append(f", ~{session.history_tokens} tokens (estimated)")
    if session.summary_turns:
        text.append(
            f" · summary: turns 0-{session.summary_turns - 1} "
            f"({_plural(session.summary_turns, 'turn')}) summarised"
        )
    else:
        text.append(" · summary: none")
    return text


def turn_cell(turn: sessions_pb2.Turn, content_chars: int | None) -> tuple[Text, bool]:
    """A turn's content column: the tool result's call, the text, the tool calls; and
    whether any of it was cut."""
    from rich.text import Text

    cell = Text()
    if turn.tool_call_id:
        tool = f"{turn.name} " if turn.name else ""
        cell.append(f"result of {tool}{turn.tool_call_id}: ", style=TOOL_STYLE)
    content, cut = clip(turn.content, content_chars)
    cell.append(content)
    if cut:
        cell.append(f" (+{cut} chars)", style="dim")
    any_cut = bool(cut)
    for call in turn.tool_calls:
        args, cut = clip(call.arguments, content_chars)
        if cell:
            cell.append("\n")
        cell.append(f"→ {call.name}({args})", style=TOOL_STYLE)
        if cut:
            cell.append(f" (+{cut} chars)", style="dim")
        cell.append(f" {call.id}", style="dim")
        any_cut = any_cut or bool(cut)
    return cell, any_cut


def session_view(
    session: sessions_pb2.Session,
    *,
    content_chars: int | None = 200,
    now_ms: int | None = None,
) -> Group:
    """``hybrid-router sessions show``: the header, one row per turn (seq, role, tokens,
    backend, content) and the totals with the summary's coverage."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("role", no_wrap=True)
    table.add_column("tokens", justify="right", no_wrap=True)
    table.add_column("backend", max_width=16, overflow="fold")
    table.add_column("content", ratio=1, overflow="fold")
    summarised = session.summary_turns
    any_cut = False
    for t in session.turns:
        role = ROLES.name(t.role, "?")
        cell, cut = turn_cell(t, content_chars)
        any_cut = any_cut or cut
        table.add_row(
            Text(str(t.seq), style="dim" if t.seq < summarised else ""),
            Text(role, style=ROLE_STYLE.get(role, "")),
            str(t.tokens),
            t.backend or "-",
            cell,
        )
    parts: list[Text | Table] = [session_header(session, now_ms=now_ms)]
    if session.turns:
        parts.append(table)
    else:
        parts.append(Text("no turns yet", style="dim"))
    parts.append(session_totals(session))
    if any_cut:
        parts.append(Text("long turns are cut: --full shows them whole, --json as data", "dim"))
    return Group(*parts)


#: From this width ``list`` also shows when each session was last used and its system
#: prompt.
WIDE_LIST_COLUMNS = 110


class SessionsTable:
    """``hybrid-router sessions list``: id, turns, strategy, TTL, expiry, and on a wide
    terminal the last turn's time and the system prompt. Ids are what a user copies:
    never cut, folded onto a second line when the terminal is too narrow."""

    def __init__(
        self, sessions: Sequence[sessions_pb2.Session], *, address: str, now_ms: int | None
    ) -> None:
        self.sessions = sessions
        self.address = address
        self.now_ms = _now_ms() if now_ms is None else now_ms

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        yield self.table(options.max_width)

    def table(self, width: int) -> Table:
        from rich.table import Table

        wide = width >= WIDE_LIST_COLUMNS
        now = self.now_ms
        heads = ["turns", "strategy", "ttl", *(["updated"] if wide else []), "expires"]
        rows = []
        for s in self.sessions:
            cells = {
                "turns": str(s.turn_count),
                "strategy": strategy_name(s.strategy),
                "ttl": fmt_duration(s.ttl_s),
                "updated": fmt_ago(s.updated_unix_ms, now),
                "expires": fmt_until(s.expires_unix_ms, now),
            }
            rows.append((s.session_id, [cells[h] for h in heads], clip(s.system, 60)[0] or "-"))
        # The id gets what the other columns leave (each: its widest cell, 2 of padding
        # and a border; the system prompt, on a wide terminal, gives way first).
        others = 4 + sum(
            3 + max([len(h), *(len(r[1][i]) for r in rows)]) for i, h in enumerate(heads)
        )
        others += 13 if wide else 0
        widest = max((len(s.session_id) for s in self.sessions), default=7)
        table = Table(title=f"sessions at {self.address}", title_justify="left")
        table.add_column("session", min_width=max(7, min(widest, width - others)), overflow="fold")
        for h in heads:
            table.add_column(h, justify="right" if h in ("turns", "ttl") else "left", no_wrap=True)
        if wide:
            table.add_column("system", ratio=1, min_width=6, overflow="ellipsis", no_wrap=True)
        for sid, values, system in rows:
            table.add_row(sid, *values, *([system] if wide else []))
        return table


def sessions_table(
    sessions: Sequence[sessions_pb2.Session], *, address: str, now_ms: int | None = None
) -> SessionsTable:
    """The list of sessions as a table that fits the console (:class:`SessionsTable`)."""
    return SessionsTable(sessions, address=address, now_ms=now_ms)
