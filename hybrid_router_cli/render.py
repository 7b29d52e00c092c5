"""Every table and every JSON document the CLI prints: for people (rich) and for scripts.

Pure functions from protobuf messages and the commands' records to rich renderables or
JSON text; nothing here performs I/O except :func:`make_console` and :func:`live`. rich
is imported only by the functions that build tables (the ``cli`` extra installs it), so
the names, numbers and JSON work in the router image too. The backends table and its
narrow layouts are in :mod:`hybrid_router_cli.render_backends`, the ``sessions`` tables in
:mod:`hybrid_router_cli.render_sessions` (a decision's session lines are here).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format
from google.protobuf.message import Message
from hybrid_router.client import (
    CIRCUIT_STATES,
    CONTEXT_STRATEGIES,
    DATA_CLASSES,
    FINISH_REASONS,
    OBJECTIVES,
    TIERS,
)
from hybrid_router.v1 import edge_link_pb2, router_pb2, sessions_pb2

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, Group, RenderableType
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

    from hybrid_router_cli.commands.check import Row as CheckRow
    from hybrid_router_cli.commands.prices import PriceRow
    from router.security.keys import KeyRecord

TIER_STYLE = {"hosted": "magenta", "gpu": "cyan", "edge": "green", "cache": "yellow"}


def make_console(*, stderr: bool = False) -> Console:
    """A console that stays readable when piped: 140 columns unless a terminal (or
    $COLUMNS) says otherwise, no colour codes outside a terminal."""
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 140
    return console


# --- names and numbers ------------------------------------------------------------


def tier_name(tier: int) -> str:
    return TIERS.name(tier, "?")


def data_class_name(dc: int) -> str:
    return DATA_CLASSES.name(dc, "internal")


def objective_name(obj: int) -> str:
    return OBJECTIVES.name(obj, "default")


def finish_name(reason: int) -> str:
    return FINISH_REASONS.name(reason, "-")


def strategy_name(strategy: int) -> str:
    """A context strategy (``sliding``...); ``default`` for UNSPECIFIED (the router's)."""
    return CONTEXT_STRATEGIES.name(strategy, "default")


def circuit_name(state: int) -> str:
    """For people: ``half-open`` (the contract's ``half_open``)."""
    return CIRCUIT_STATES.name(state, "-").replace("_", "-")


def fmt_ms(ms: float) -> str:
    if ms < 0:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.1f} s"


def fmt_ago(unix_ms: int, now_ms: int | None = None) -> str:
    """How long ago ``unix_ms`` was: "0.4 s ago", "12 s ago", "3 min ago", "2 h ago"
    ("-" for 0, i.e. never)."""
    if not unix_ms:
        return "-"
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    s = max(0.0, (now_ms - unix_ms) / 1000.0)
    if s < 10:
        return f"{s:.1f} s ago"
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    if s < 172800:
        return f"{s / 3600:.0f} h ago"
    return f"{s / 86400:.0f} d ago"


def fmt_usd(usd: float) -> str:
    if usd == 0:
        return "$0"
    if usd >= 0.01:
        return f"${usd:.4f}"
    if usd >= 0.000001:
        return f"${usd:.6f}"
    return "<$0.000001"


def live(console: Console, renderable: RenderableType) -> Live:
    """A display that :meth:`~rich.live.Live.update` redraws in place (``backends --watch``)."""
    from rich.live import Live

    return Live(renderable, console=console, auto_refresh=False)


def tier_text(tier: int | str) -> Text:
    """The tier's name in its colour (edge green, gpu cyan, hosted magenta, cache yellow)."""
    from rich.text import Text

    name = tier if isinstance(tier, str) else tier_name(tier)
    return Text(name, style=TIER_STYLE.get(name, ""))


# --- Decision ---------------------------------------------------------------------


def _verdict(c: router_pb2.CandidateReport) -> Text:
    from rich.text import Text

    if not c.accepted:
        return Text(f"✘ {c.rejected_by or 'rejected'}", style="red")
    if c.rank == 1:
        return Text("✔ primary", style="bold green")
    if c.rank > 1:
        return Text(f"✔ fallback {c.rank - 1}", style="green")
    return Text("✔ accepted (not in plan)", style="dim green")


def _prompt_tokens(e: router_pb2.Estimate) -> str:
    if e.token_count_method == router_pb2.TOKEN_COUNT_METHOD_ESTIMATE:
        return f"~{e.prompt_tokens}"
    return str(e.prompt_tokens)


#: Below this width the decision table moves reasons, queue waits and prompt token
#: counts out of the table into lines under it.
WIDE_TABLE_COLUMNS = 120


class DecisionTable:
    """Every backend: verdict (primary / fallback / rejecting filter), estimates, reason.

    A rich renderable that fits the console: one wide table from
    ``WIDE_TABLE_COLUMNS`` columns up, else a compact table with notes under it.
    """

    def __init__(self, decision: router_pb2.Decision, *, title: str | None = None) -> None:
        self.decision = decision
        self.title = title

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        if options.max_width >= WIDE_TABLE_COLUMNS:
            yield self.table(compact=False)
        else:
            yield self.table(compact=True)
            notes = self.notes()
            if notes.plain:
                yield notes
        if self.decision.session_id:
            yield session_fits(self.decision)

    def table(self, *, compact: bool) -> Table:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        d = self.decision
        reasons = not compact and any(c.reason for c in d.candidates)
        table = Table(
            title=self.title,
            title_justify="left",
            caption=None if compact else _decision_caption(d),
            caption_justify="left",
            box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
        )
        table.add_column("backend", no_wrap=True)
        table.add_column("tier", no_wrap=True)
        table.add_column("verdict", no_wrap=True)
        if not compact:
            table.add_column("prompt tok", justify="right", no_wrap=True)
        for name in ("est. TTFT", "est. total", "est. cost"):
            table.add_column(name.removeprefix("est. ") if compact else name, justify="right")
        table.add_column("budget", no_wrap=True)
        if reasons:
            table.add_column("reason", ratio=1, min_width=16)
        for c in sorted(d.candidates, key=_candidate_order):
            e = c.estimate if _has_estimate(c) else None
            cells: list[str] = []
            if not compact:
                cells.append(_prompt_tokens(e) if e else "-")
            if e is not None:
                ttft = fmt_ms(e.ttft_ms)
                if e.queue_wait_ms >= 1 and not compact:
                    ttft += f" (queue {fmt_ms(e.queue_wait_ms)})"
                if e.from_priors:
                    ttft += " ᵖ"
                cells += [ttft, fmt_ms(e.total_ms), fmt_usd(e.cost_usd)]
            else:
                cells += ["-", "-", "-"]
            if c.accepted:
                budget = Text("meets", "green") if c.meets_budget else Text("misses", "yellow")
            else:
                budget = Text("-", style="dim")
            verdict = Text("✘ rejected", "red") if compact and not c.accepted else _verdict(c)
            row: list[Text | str] = [
                Text(c.backend, style="bold" if c.rank == 1 else ""),
                tier_text(c.tier),
                verdict,
                *cells,
                budget,
            ]
            if reasons:
                row.append(Text(c.reason))
            table.add_row(*row, style=None if c.accepted else "dim")
        return table

    def notes(self) -> Text:
        """What the compact table leaves out: prompt tokens, queue waits, reasons."""
        from rich.text import Text

        d = self.decision
        text = Text()
        counts = sorted(
            {_prompt_tokens(c.estimate) for c in d.candidates if _has_estimate(c)}, key=len
        )
        if counts:
            text.append(f"prompt tokens: {', '.join(counts)} (~ = estimated)\n", style="dim")
        for c in sorted(d.candidates, key=_candidate_order):
            if _has_estimate(c) and c.estimate.queue_wait_ms >= 1:
                text.append(f"{c.backend}: ", style="bold")
                text.append(f"queue wait {fmt_ms(c.estimate.queue_wait_ms)}\n")
            if not c.accepted:
                text.append(f"{c.backend}: ", style="bold")
                text.append(f"✘ {c.rejected_by}: ", style="red")
                text.append(f"{c.reason}\n")
        text.append(_decision_caption(d), style="dim")
        return text


def decision_table(decision: router_pb2.Decision, *, title: str | None = None) -> DecisionTable:
    """The decision as a table that fits the console (see :class:`DecisionTable`)."""
    return DecisionTable(decision, title=title)


def _has_estimate(c: router_pb2.CandidateReport) -> bool:
    return c.HasField("estimate") and (c.accepted or c.estimate.total_ms > 0)


def _candidate_order(c: router_pb2.CandidateReport) -> tuple[int, int, str]:
    # Plan order first, then accepted-but-unranked, then rejected; by name within a group.
    if c.rank:
        return (0, c.rank, c.backend)
    return (1 if c.accepted else 2, 0, c.backend)


def _decision_caption(decision: router_pb2.Decision) -> str:
    parts = [f"objective: {objective_name(decision.objective)}"]
    if decision.budget_unmet:
        parts.append("no candidate meets the latency budget: fastest chosen")
    parts.append(f"decided in {decision.decision_us:.0f} µs")
    if any(c.HasField("estimate") and c.estimate.from_priors for c in decision.candidates):
        parts.append("ᵖ = estimate from config priors (too few live samples)")
    return " · ".join(parts)


# --- sessions in a decision ----------------------------------------------------------

#: The router's notes that only repeat the numbers beside them.
_PLAIN_NOTES = ("the whole history fits", "sliding: the newest ")


def fit_summary(fit: sessions_pb2.ContextFit) -> str:
    """How one backend's copy of the history was fitted: ``6 of 22 turns, 16 dropped ·
    prompt 310 tok``, with the router's note when it says more (why it slid, a strict
    refusal, the summary used)."""
    history = fit.turns_kept + fit.turns_dropped + fit.turns_summarized
    if not history:
        text = "no stored turns"
    elif fit.turns_kept == history:
        text = f"all {history} turns"
    else:
        text = f"{fit.turns_kept} of {history} turns"
        if fit.turns_summarized:
            text += f" + a summary of {fit.turns_summarized}"
        if fit.turns_dropped:
            text += f", {fit.turns_dropped} dropped"
    text += f" · prompt {fit.tokens_kept} tok"
    if fit.note and not fit.note.startswith(_PLAIN_NOTES):
        text += f" · {fit.note}"
    return text


def session_caption(decision: router_pb2.Decision) -> str:
    """``session chat-1 · 22 turns stored · strategy sliding`` ("" without a session)."""
    if not decision.session_id:
        return ""
    turns = decision.session_turns
    stored = f"{turns} turn{'s' if turns != 1 else ''} stored" if turns else "new: no turns yet"
    strategy = strategy_name(decision.context_strategy)
    return f"session {decision.session_id} · {stored} · strategy {strategy}"


def session_fits(decision: router_pb2.Decision) -> RenderableType:
    """Under the decision table: the session, then how each backend's copy of its history
    was fitted to the backend's window (a row each, in plan order; dim when rejected)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    caption = Text(session_caption(decision), style="bold")
    fits = [c for c in sorted(decision.candidates, key=_candidate_order) if c.HasField("context")]
    if not decision.session_turns or not fits:
        return caption
    grid = Table.grid(padding=(0, 2), pad_edge=True)
    grid.add_column(no_wrap=True)
    grid.add_column(ratio=1)
    for c in fits:
        grid.add_row(
            Text(c.backend, style="bold" if c.rank == 1 else ""),
            Text(fit_summary(c.context), style="" if c.accepted else "dim"),
        )
    return Group(caption, grid)


def decision_headline(decision: router_pb2.Decision) -> Text:
    """``→ edge-1 (edge)  <explanation>`` followed by the estimate and fallbacks, and with
    a session its id and how the chosen backend's copy of the history was fitted."""
    from rich.text import Text

    text = Text("→ ")
    text.append(decision.backend or "?", style="bold")
    text.append(" (")
    text.append_text(tier_text(decision.tier))
    text.append(")")
    if decision.budget_unmet:
        text.append("  budget unmet", style="bold yellow")
    if decision.explanation:
        text.append(f"  {decision.explanation}")
    if decision.HasField("estimate"):
        e = decision.estimate
        text.append(
            f"\n  est. TTFT {fmt_ms(e.ttft_ms)}, total {fmt_ms(e.total_ms)}, "
            f"cost {fmt_usd(e.cost_usd)}",
            style="dim",
        )
    if decision.fallbacks:
        text.append(f"; fallbacks: {', '.join(decision.fallbacks)}", style="dim")
    if decision.cache and decision.tier != TIERS["cache"]:
        text.append(f"\n  cache {decision.cache}", style="dim")
    if decision.session_id:
        line = f"\n  session {decision.session_id} · {strategy_name(decision.context_strategy)}"
        chosen = [c for c in decision.candidates if c.backend == decision.backend]
        if not decision.session_turns:
            line += " · new: no turns yet"
        elif chosen and chosen[0].HasField("context"):
            line += f" · {fit_summary(chosen[0].context)}"
        text.append(line, style="dim")
    return text


# --- stream events ------------------------------------------------------------------


def failover_line(f: router_pb2.Failover) -> Text:
    from rich.text import Text

    return Text(
        f"↪ failover {f.from_backend} → {f.to_backend} ({tier_name(f.to_tier)}), "
        f"attempt {f.attempt}: {f.reason}",
        style="yellow",
    )


def continuation_line(c: router_pb2.Continuation) -> Text:
    """``↪ continued on gpu-b (gpu) after 12 tokens from edge-a: <reason> [prefill]``."""
    from rich.text import Text

    text = Text("↪ continued on ", style="yellow")
    text.append(f"{c.to_backend} ({tier_name(c.to_tier)})", style="bold yellow")
    text.append(
        f" after {c.tokens_so_far} tokens from {c.from_backend}: {c.reason} [{c.method}]",
        style="yellow",
    )
    return text


def tool_call_line(index: int, call_id: str, name: str, arguments: str) -> Text:
    """One tool call of an answer: ``→ tool call 0 get_weather {"city": "Oslo"} (id c1)``."""
    from rich.text import Text

    text = Text(f"→ tool call {index} ")
    text.append(name or "?", style="bold")
    text.append(f" {arguments or '{}'}")
    if call_id:
        text.append(f"  (id {call_id})", style="dim")
    return text


def usage_line(u: router_pb2.Usage) -> Text:
    from rich.text import Text

    text = Text("· ")
    text.append(f"{u.backend} ({tier_name(u.tier)})", style="bold")
    est = "~" if u.tokens_estimated else ""
    text.append(
        f" · tokens in {est}{u.input_tokens}, out {est}{u.output_tokens}"
        f" · cost {fmt_usd(u.cost_usd)} · TTFT {fmt_ms(u.ttft_ms)} · total {fmt_ms(u.total_ms)}"
        f" · finish {finish_name(u.finish_reason)}"
    )
    if u.attempts > 1:
        text.append(f" · {u.attempts} attempts")
    if u.continued:
        text.append(" · continued")
    if u.tool_calls:
        text.append(f" · {u.tool_calls} tool call{'s' if u.tool_calls > 1 else ''}")
    if u.format_error:
        text.append(f" · FORMAT: {u.format_error}", style="bold yellow")
    if u.complete:
        text.append(" · complete", style="green")
    else:
        text.append(f" · INCOMPLETE: {u.error or 'cut short'}", style="bold red")
    return text


# --- prices ---------------------------------------------------------------------------


def fmt_per_mtok(usd: float) -> str:
    """A price per million tokens: ``$1.25``, ``-`` for none."""
    return "-" if usd == 0 else f"${usd:,.4g}"


def prices_view(rows: Sequence[PriceRow], *, where: str) -> Group:
    """Every backend's effective price per million tokens, its basis and its source, and a
    note naming the unpriced backends (``hybrid-router prices``)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"prices ({where})", title_justify="left")
    for col in ("backend", "tier", "kind", "model"):
        table.add_column(col)
    table.add_column("$/1M in", justify="right")
    table.add_column("$/1M out", justify="right")
    table.add_column("basis")
    table.add_column("source")
    for r in rows:
        cost_in, cost_out = r.effective
        table.add_row(
            r.name,
            r.tier,
            r.kind,
            r.model,
            fmt_per_mtok(cost_in),
            fmt_per_mtok(cost_out),
            r.basis(),
            r.source or Text("none given", style="yellow"),
        )
    parts: list[RenderableType] = [table]
    if not rows:
        parts.append("no backends")
    unpriced = [r.name for r in rows if not r.priced]
    if unpriced:
        parts.append(
            Text(
                f"no price for {', '.join(unpriced)}: cost counts as 0, so the cheapest "
                "objective favours it.\nSet cost.* and cost.source in router.yaml "
                "(hybrid-router ships no default prices).",
                style="yellow",
            )
        )
    return Group(*parts)


# --- edge devices and model versions ----------------------------------------------------


def device_versions(device: edge_link_pb2.DeviceStatus) -> str:
    """``gemma3-270m v1 (want v2)``: each model's version, and the desired one if it differs."""
    parts = []
    for m in device.models:
        want = device.desired_versions.get(m.name, "")
        text = f"{m.name} {m.version}"
        if want and want != m.version:
            text += f" (want {want})"
        parts.append(text)
    return ", ".join(parts) or "no model"


def devices_view(resp: edge_link_pb2.ListDevicesResponse, *, address: str) -> Group:
    """One row per device (``hybrid-router devices``)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"edge devices at {address} (replica {resp.router_id})")
    for col in (
        "device",
        "online",
        "site",
        "model",
        "load",
        "decode\ntok/s",
        "prompt\ntok/s",
        "last seen",
        "router",
    ):
        table.add_column(col)
    table.add_column("status", overflow="fold")
    for d in resp.devices:
        online = Text("yes", "green") if d.online else Text("no", "red")
        if d.online and d.draining:
            online = Text("draining", "yellow")
        table.add_row(
            d.device_id,
            online,
            d.site or "-",
            device_versions(d),
            f"{d.queue_depth}+{d.in_flight}",
            f"{d.decode_tokens_per_s:.1f}" if d.decode_tokens_per_s else "-",
            f"{d.prefill_tokens_per_s:,.0f}" if d.prefill_tokens_per_s else "-",
            fmt_ago(d.last_seen_unix_ms),
            d.router_id or "-",
            Text(d.detail or d.sync_status),
        )
    if resp.devices:
        return Group(table)
    return Group(table, "no device has dialed in yet (see docs/edge.md to run an agent)")


def model_versions_table(
    models: Sequence[Mapping[str, Any]], *, address: str, store_read: bool
) -> Table:
    """``hybrid-router models status``: which devices run which version; ``published`` and
    ``desired`` are "?" when the bucket was not read."""
    from rich.table import Table

    table = Table(title=f"model versions on the fleet ({address})")
    for col in ("model", "version", "devices", "online", "published", "desired"):
        table.add_column(col)
    for m in models:
        table.add_row(
            m["name"],
            m["version"],
            ", ".join(sorted(m["devices"])) or "-",
            str(m["online"]),
            ("yes" if m["published"] else "no") if store_read else "?",
            ("yes" if m["desired"] else "") if store_read else "?",
        )
    return table


# --- API keys ---------------------------------------------------------------------------


def keys_table(records: Sequence[KeyRecord], *, where: str) -> Table:
    """Ids, tenants, names, dates (``hybrid-router keys list``; never a secret)."""
    from rich.table import Table

    table = Table(title=f"API keys in {where}", title_justify="left")
    for col in ("id", "tenant", "name", "created", "revoked"):
        table.add_column(col)
    for r in records:
        table.add_row(r.id, r.tenant, r.name, r.created, "revoked" if r.revoked else "")
    return table


# --- check ---------------------------------------------------------------------------

#: The style of each ``check`` result.
RESULT_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def findings_view(findings: Sequence[CheckRow], counts: Mapping[str, int], *, source: str) -> Group:
    """``hybrid-router check``: one row per finding, then ``N ok, N warn, N fail``."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"check {source}", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", ratio=1)
    for f in findings:
        # Text, not markup: details hold config keys such as backends[gpu-a].
        table.add_row(Text(f.check), Text(f.result, style=RESULT_STYLE[f.result]), Text(f.detail))
    summary = f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail"
    return Group(table, Text(summary, style="bold red" if counts["fail"] else "green"))


# --- JSON ----------------------------------------------------------------------------


def message_to_dict(message: Message) -> dict[str, Any]:
    """proto3 JSON mapping with field names as in the .proto and every field present;
    64-bit counters print as numbers (not strings) while they fit a double exactly."""
    return json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
        unquote_int64_if_possible=True,
    )


def to_json(value: Message | Any, *, indent: int | None = 2) -> str:
    """A message (as :func:`message_to_dict`) or plain data as JSON text."""
    data = message_to_dict(value) if isinstance(value, Message) else value
    return json.dumps(data, indent=indent, ensure_ascii=False)
