"""``hybrid-router backends``: every backend's static facts and live state, fitted to the
console.

:class:`BackendsView` picks one of three layouts by what fits the width it is given:

- wide: one table with every column (kind, model, window, errors, requests included);
- compact: name, tier, state, TTFT, decode rate and load in a narrow table, the other
  facts in one ``name: ...`` line per backend under it;
- stacked: five short lines per backend, for widths too small even for the compact table
  (or for very long names).

No value is ever cut to an ellipsis. While a backend has fewer than ``policy.min_samples``
completed requests its TTFT and decode rate are the configured priors, marked ``ᵖ``.
rich is imported only by the functions that build renderables, as in :mod:`render`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from hybrid_router.v1 import router_pb2

from hybrid_router_cli.render import circuit_name, fmt_ago, fmt_ms, tier_text

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType
    from rich.table import Table
    from rich.text import Text

#: Appended to a figure that is a config prior, not an observation.
PRIOR_MARK = " ᵖ"

#: The width a table is measured at to learn the width it wants.
_UNBOUNDED = 100_000

PRIORS_CAPTION = "ᵖ = config prior (fewer than policy.min_samples requests observed yet)"


# --- cells ----------------------------------------------------------------------------


def health_text(b: router_pb2.BackendStatus) -> Text:
    """``ok``, ``DOWN``, ``circuit open`` or ``half-open``, in its colour."""
    from rich.text import Text

    circuit = circuit_name(b.circuit)
    if not b.healthy:
        return Text("DOWN", "bold red")
    if circuit == "open":
        return Text("circuit open", "bold red")
    if circuit == "half-open":
        return Text("half-open", "yellow")
    return Text("ok", "green")


def ttft_cell(b: router_pb2.BackendStatus) -> str:
    """Observed ``p50 / p90``, or the configured TTFT priors marked ``ᵖ`` (the median
    alone from a router older than the prior p90; "-" from one older than ``priors``)."""
    if b.from_priors:
        prior = b.priors.ttft_ms
        if prior <= 0:
            return "-" + PRIOR_MARK
        p90 = b.priors.ttft_p90_ms
        return (f"{fmt_ms(prior)} / {fmt_ms(p90)}" if p90 > 0 else fmt_ms(prior)) + PRIOR_MARK
    return f"{fmt_ms(b.ttft_p50_ms)} / {fmt_ms(b.ttft_p90_ms)}"


def decode_cell(b: router_pb2.BackendStatus, *, unit: str = "") -> str:
    """Observed decode tokens/s, or the configured prior marked ``ᵖ`` (``unit`` after the
    number, before the mark)."""
    if b.decode_from_priors or b.decode_tokens_per_s <= 0:
        prior = b.priors.decode_tokens_per_s
        return (f"{prior:.0f}{unit}" if prior > 0 else "-") + PRIOR_MARK
    return f"{b.decode_tokens_per_s:.0f}{unit}"


def load_cell(b: router_pb2.BackendStatus) -> str:
    """``in flight / queue``."""
    return f"{b.in_flight} / {b.queue_depth}"


def errors_cell(b: router_pb2.BackendStatus) -> str:
    return f"{b.error_rate:.0%}" + (f" ({b.failures})" if b.failures else "")


def uses_priors(b: router_pb2.BackendStatus) -> bool:
    return b.from_priors or b.decode_from_priors or b.decode_tokens_per_s <= 0


def prefill_note(b: router_pb2.BackendStatus) -> str:
    """``prompts read at 5,000 tok/s (reported)``: the rate the TTFT estimate adds each
    prompt's prefill at, and where it comes from (the backend, or its priors)."""
    rate = b.prefill_tokens_per_s
    source = "priors" if rate == b.priors.prefill_tokens_per_s else "reported"
    return f"prompts read at {rate:,.0f} tok/s ({source})"


def _requests(b: router_pb2.BackendStatus) -> str:
    return f"{b.requests} request" + ("" if b.requests == 1 else "s")


# --- layouts ----------------------------------------------------------------------------


def backends_table(
    resp: router_pb2.ListBackendsResponse,
    *,
    title: str | None = None,
    now_ms: int | None = None,
) -> Table:
    """Static facts and live state, one row per backend: the wide layout (details:
    :func:`backend_notes`). "last error" is how long ago the backend last failed."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left")
    right = (
        "ctx",
        "in flight\n/ queue",
        "TTFT\np50 / p90",
        "tok/s",
        "errors\n(failed)",
        "last\nerror",
        "requests",
    )
    for name in ("name", "tier", "kind", "model", "ctx", "health", *right[1:]):
        table.add_column(name, justify="right" if name in right else "left", no_wrap=True)
    for b in resp.backends:
        table.add_row(
            Text(b.name, style="bold"),
            tier_text(b.tier),
            b.kind,
            b.model,
            str(b.context_window),
            health_text(b),
            load_cell(b),
            ttft_cell(b),
            decode_cell(b),
            errors_cell(b),
            Text(fmt_ago(b.last_error_unix_ms, now_ms), "red" if b.last_error else ""),
            str(b.requests),
        )
    _caption(table, resp)
    return table


def compact_table(resp: router_pb2.ListBackendsResponse) -> Table:
    """Name, tier, state, TTFT, decode rate and load: the compact layout's table."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for name in ("backend", "tier", "state"):
        table.add_column(name, no_wrap=True)
    for name in ("TTFT", "tok/s", "load"):
        table.add_column(name, justify="right", no_wrap=True)
    for b in resp.backends:
        table.add_row(
            Text(b.name, style="bold"),
            tier_text(b.tier),
            health_text(b),
            ttft_cell(b),
            decode_cell(b),
            load_cell(b),
        )
    return table


def compact_facts(resp: router_pb2.ListBackendsResponse) -> Text:
    """``name: kind model · ctx N · N requests · errors N%``, one line per backend."""
    from rich.text import Text

    text = Text()
    for i, b in enumerate(resp.backends):
        if i:
            text.append("\n")
        text.append(f"{b.name}: ", style="bold")
        text.append(
            f"{b.kind} · {b.model or '-'} · ctx {b.context_window} · {_requests(b)}"
            f" · errors {errors_cell(b)}",
            style="dim",
        )
    return text


def stacked(resp: router_pb2.ListBackendsResponse) -> Text:
    """Short lines per backend: name, tier and state; TTFT and decode rate; load and
    errors; kind and model; window and requests."""
    from rich.text import Text

    text = Text()
    for i, b in enumerate(resp.backends):
        if i:
            text.append("\n")
        text.append(b.name, style="bold")
        text.append("  ")
        text.append_text(tier_text(b.tier))
        text.append("  ")
        text.append_text(health_text(b))
        text.append(f"\n  TTFT {ttft_cell(b)} · {decode_cell(b, unit=' tok/s')}")
        text.append(f"\n  load {load_cell(b)} · errors {errors_cell(b)}")
        text.append(f"\n  {b.kind} · {b.model or '-'}", style="dim")
        text.append(f"\n  ctx {b.context_window} · {_requests(b)}", style="dim")
    return text


def _caption(table: Table, resp: router_pb2.ListBackendsResponse) -> None:
    if any(uses_priors(b) for b in resp.backends):
        table.caption = PRIORS_CAPTION
        table.caption_justify = "left"


def backend_notes(
    resp: router_pb2.ListBackendsResponse, *, now_ms: int | None = None, details: bool = True
) -> Text | None:
    """``name: detail`` lines for backends that carry a description or a state detail
    (unless ``details`` is false), ``name: prompts read at 5,000 tok/s`` for backends
    whose TTFT estimate adds each prompt's prefill (unless ``details`` is false), and
    ``name: last error 3.2 s ago: message`` for backends that have failed."""
    lines: list[tuple[str, str, str]] = []
    for b in resp.backends:
        if b.detail and details:
            lines.append((b.name, b.detail, "dim"))
        if b.prefill_tokens_per_s > 0 and details:
            lines.append((b.name, prefill_note(b), "dim"))
        if b.last_error:
            when = fmt_ago(b.last_error_unix_ms, now_ms)
            lines.append((b.name, f"last error {when}: {b.last_error}", "red"))
    if not lines:
        return None
    from rich.text import Text

    text = Text()
    for i, (name, note, style) in enumerate(lines):
        if i:
            text.append("\n")
        text.append(f"{name}: ", style="bold")
        text.append(note, style=style)
    return text


def _fits(console: Console, options: ConsoleOptions, table: Table) -> bool:
    """Whether ``table`` fits whole: its natural width (measured without the console's
    limit, which rich would otherwise meet by cutting cells) is within the width."""
    from rich.measure import Measurement

    unbounded = options.update(max_width=_UNBOUNDED)
    return Measurement.get(console, unbounded, table).maximum <= options.max_width


def _lines_fit(text: Text, width: int) -> bool:
    from rich.cells import cell_len

    return all(cell_len(line) <= width for line in text.plain.splitlines())


class BackendsView:
    """A title line, the backends in the widest layout that fits, then the notes.

    A rich renderable: the layout is chosen when it is rendered, for the width it is
    rendered at (so a ``--watch`` display follows a resized terminal).
    """

    def __init__(
        self,
        resp: router_pb2.ListBackendsResponse,
        *,
        title: str | None = None,
        details: bool = True,
        now_ms: int | None = None,
    ) -> None:
        self.resp = resp
        self.title = title
        self.details = details
        self.now_ms = now_ms

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        from rich.text import Text

        if self.title:
            yield Text(self.title, style="bold")
        if not self.resp.backends:
            yield Text("no backends", style="yellow")
            return
        wide = backends_table(self.resp, now_ms=self.now_ms)
        if _fits(console, options, wide):
            yield wide  # its caption explains ᵖ
        else:
            compact = compact_table(self.resp)
            facts = compact_facts(self.resp)
            if _fits(console, options, compact) and _lines_fit(facts, options.max_width):
                yield compact
                yield facts
            else:
                yield stacked(self.resp)
            if any(uses_priors(b) for b in self.resp.backends):
                yield Text(PRIORS_CAPTION, style="dim")
        notes = backend_notes(self.resp, now_ms=self.now_ms, details=self.details)
        if notes is not None:
            yield notes


def backends_view(
    resp: router_pb2.ListBackendsResponse,
    *,
    title: str | None = None,
    details: bool = True,
    now_ms: int | None = None,
) -> BackendsView:
    """The backends as ``hybrid-router backends`` prints them (see :class:`BackendsView`)."""
    return BackendsView(resp, title=title, details=details, now_ms=now_ms)


def redraws_in_place(console: Console) -> bool:
    """Whether ``--watch`` may redraw in place: stdout is an interactive terminal. When it
    is a file or a pipe the command prints one whole frame per interval instead."""
    isatty = getattr(console.file, "isatty", None)
    return console.is_interactive and bool(isatty and isatty())
