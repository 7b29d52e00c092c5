"""What ``hybrid-router simulate`` prints and writes (docs/simulate.md): the comparison
table, the targets and their one-line verdict, the misses table, the JSON document, the CSV
rows, the list of scenarios and the two charts.

Pure functions of the simulator's :class:`router.simulation.Summary` records (read by
attribute: nothing of ``router`` is imported here) to rich renderables, plain data and
matplotlib figures; nothing here performs I/O. rich and matplotlib are imported only by
the functions that build tables and figures, so ``--json`` and ``--csv`` need neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from hybrid_router_cli.render import fmt_ms, fmt_usd

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.table import Table
    from rich.text import Text

    from router.simulation import Summary

#: The limits every run includes (router.simulation.oracle's names).
BOUND = "bound"
ORACLE = "oracle"
#: The strategies the targets compare.
ROUTER = "router"
HOSTED = "always-hosted"
LITELLM_PREFIX = "litellm-"

#: The router's targets: at least this share of the oracle's attainment...
ORACLE_ATTAINMENT = 0.99
#: ... at most this multiple of the oracle's cost ...
ORACLE_COST = 1.05
#: ... and at least this much cheaper than always-hosted, at equal or better attainment.
HOSTED_SAVING = 0.30

#: The charts ``--plot DIR`` writes, in this order.
PLOT_FILES = ("cost-vs-attainment.png", "latency-over-time.png")

#: The CSV columns, one row per strategy.
CSV_FIELDS = (
    "strategy",
    "requests",
    "met",
    "attainment",
    "attainment_vs_oracle",
    "ttft_attainment",
    "total_attainment",
    "cost_usd",
    "cost_vs_oracle",
    "cost_per_met_usd",
    "edge_share",
    "gpu_share",
    "hosted_share",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "total_p50_ms",
    "total_p99_ms",
    "completed",
    "refused",
    "failed",
    "cut",
    "seconds",
)

_TIERS = ("edge", "gpu", "hosted")


# --- numbers ----------------------------------------------------------------------------


def _pct(share: float | None, digits: int = 1) -> str:
    return "-" if share is None else f"{share * 100:.{digits}f}%"


def _points(diff: float) -> str:
    """A difference of two shares in percentage points: ``10.6 points`` (``0.03 points``
    when one decimal would round it to 0.0)."""
    points = abs(diff) * 100
    return f"{points:.1f} points" if points >= 0.05 or points == 0 else f"{points:.2f} points"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _ms(value: float | None) -> str:
    return "-" if value is None else fmt_ms(value)


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 100 else fmt_usd(value)


# --- targets ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """One of the router's targets, judged on a run."""

    #: ``oracle``, ``always-hosted`` or ``litellm``.
    name: str
    #: What the router must do.
    goal: str
    #: None: not judged (a strategy it needs was not run).
    met: bool | None
    #: How far from the goal, in words.
    detail: str

    @property
    def label(self) -> str:
        return "litellm-*" if self.name == "litellm" else self.name

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_GOALS = {
    ORACLE: (
        f"router >= {ORACLE_ATTAINMENT:.0%} of the oracle's SLO attainment at "
        f"<= {ORACLE_COST:g}x its cost"
    ),
    HOSTED: (
        f"router >= {HOSTED_SAVING:.0%} cheaper than always-hosted at equal or better "
        "SLO attainment"
    ),
    "litellm": "router better than every litellm-* strategy on both SLO attainment and cost",
}


def _vs_oracle(router: Summary) -> Target:
    goal = _GOALS[ORACLE]
    share, cost = router.attainment_vs_oracle, router.cost_vs_oracle
    if share is None:
        return Target(ORACLE, goal, None, "the oracle met no request's SLO: no ratio to take")
    share_ok = share >= ORACLE_ATTAINMENT
    cost_ok = cost <= ORACLE_COST if cost is not None else router.cost_usd == 0
    # A miss that one decimal would round up to the target is shown with two.
    hair = not share_ok and round(share * 100, 1) >= ORACLE_ATTAINMENT * 100
    att = f"attainment {_pct(share, 2 if hair else 1)} of the oracle's"
    if not share_ok:
        att += f", {_points(ORACLE_ATTAINMENT - share)} under {ORACLE_ATTAINMENT:.0%}"
    if cost is None:
        spent = "cost $0, as the oracle's" if cost_ok else f"cost {_usd(router.cost_usd)} vs $0"
    elif cost_ok:
        spent = f"cost {_ratio(cost)}"
    else:
        # An overrun that two decimals would show as 0.00x gets the decimals it needs.
        digits = next((d for d in (2, 3, 4) if round(cost - ORACLE_COST, d) > 0), 4)
        spent = f"cost {cost:.{digits}f}x, {cost - ORACLE_COST:.{digits}f}x over {ORACLE_COST:g}x"
    return Target(ORACLE, goal, share_ok and cost_ok, f"{att}; {spent}")


def _vs_hosted(router: Summary, hosted: Summary) -> Target:
    goal = _GOALS[HOSTED]
    share_ok = router.attainment >= hosted.attainment
    diff = router.attainment - hosted.attainment
    att = (
        f"attainment {_pct(router.attainment)} vs {_pct(hosted.attainment)} "
        f"({'+' if diff >= 0 else '-'}{_points(diff)})"
    )
    if hosted.cost_usd <= 0:
        return Target(HOSTED, goal, False, f"always-hosted cost $0, nothing to save; {att}")
    saving = 1.0 - router.cost_usd / hosted.cost_usd
    saving_ok = saving >= HOSTED_SAVING
    cheaper = f"{_pct(saving)} cheaper" if saving >= 0 else f"{_pct(-saving)} dearer"
    if not saving_ok:
        cheaper += f", {_points(HOSTED_SAVING - saving)} short of {HOSTED_SAVING:.0%}"
    return Target(HOSTED, goal, saving_ok and share_ok, f"{cheaper}; {att}")


def _vs_litellm(router: Summary, others: Sequence[Summary]) -> Target:
    goal = _GOALS["litellm"]
    if not others:
        return Target("litellm", goal, None, "no litellm-* strategy in this run")
    misses = []
    for s in others:
        if router.attainment <= s.attainment:
            diff = s.attainment - router.attainment
            misses.append(
                f"{s.strategy} on attainment: {_pct(router.attainment)} vs "
                f"{_pct(s.attainment)} (-{_points(diff)})"
            )
        if router.cost_usd >= s.cost_usd:
            more = router.cost_usd / s.cost_usd - 1.0 if s.cost_usd > 0 else None
            misses.append(
                f"{s.strategy} on cost: {_usd(router.cost_usd)} vs {_usd(s.cost_usd)}"
                + (f" (+{_pct(more)})" if more is not None and more > 0 else "")
            )
    if misses:
        return Target("litellm", goal, False, "worse than " + "; ".join(misses))
    closest_att = min(others, key=lambda s: router.attainment - s.attainment)
    closest_cost = max(others, key=lambda s: router.cost_usd / s.cost_usd)
    detail = (
        f"better on both than all {len(others)}; closest: attainment +"
        f"{_points(router.attainment - closest_att.attainment)} over {closest_att.strategy}, "
        f"cost {_ratio(router.cost_usd / closest_cost.cost_usd)} of {closest_cost.strategy}'s"
    )
    return Target("litellm", goal, True, detail)


#: Why the first target is not judged on a fleet whose prompt reading slows the other
#: requests (the oracle is then no limit: router/simulation/oracle.py).
NO_ORACLE_LIMIT = (
    "the fleet's prompt reading slows other requests (prefill_interference), so a request's "
    "latency depends on later arrivals the oracle cannot see: it is no limit here (the "
    "bound is)"
)


def targets(summaries: Mapping[str, Summary], *, oracle_is_limit: bool = True) -> list[Target]:
    """The router's three targets on a run's summaries (by strategy name).
    ``oracle_is_limit=False`` (a fleet with ``prefill_interference``): the first, a share
    of the oracle's attainment, is not judged (:data:`NO_ORACLE_LIMIT`)."""
    router = summaries.get(ROUTER)
    if router is None:
        why = "the router strategy was not run (add router to --strategies)"
        return [Target(name, goal, None, why) for name, goal in _GOALS.items()]
    hosted = summaries.get(HOSTED)
    litellm = [s for name, s in summaries.items() if name.startswith(LITELLM_PREFIX)]
    return [
        _vs_oracle(router)
        if oracle_is_limit
        else Target(ORACLE, _GOALS[ORACLE], None, NO_ORACLE_LIMIT),
        _vs_hosted(router, hosted)
        if hosted is not None
        else Target(HOSTED, _GOALS[HOSTED], None, "always-hosted was not run"),
        _vs_litellm(router, litellm),
    ]


def _state(t: Target) -> str:
    return {True: "met", False: "missed", None: "not judged"}[t.met]


def verdict_line(found: Sequence[Target]) -> str:
    """``targets: 1 of 3 met | vs oracle: missed - ... | ...`` (one line)."""
    judged = [t for t in found if t.met is not None]
    head = f"targets: {sum(bool(t.met) for t in judged)} of {len(judged)} met"
    return " | ".join([head, *(f"vs {t.label}: {_state(t)} - {t.detail}" for t in found)])


def verdict_text(found: Sequence[Target]) -> Text:
    """:func:`verdict_line` in colour (met green, missed red)."""
    from rich.text import Text

    judged = [t for t in found if t.met is not None]
    met = sum(bool(t.met) for t in judged)
    text = Text(
        f"targets: {met} of {len(judged)} met",
        style="bold green" if judged and met == len(judged) else "bold red" if judged else "bold",
    )
    marks = {True: ("✔ met", "green"), False: ("✘ missed", "red"), None: ("not judged", "dim")}
    for t in found:
        word, style = marks[t.met]
        text.append(" | ")
        text.append(f"vs {t.label}: ", style="bold")
        text.append(word, style=style)
        text.append(f" - {t.detail}")
    return text


# --- the comparison -----------------------------------------------------------------------


def _shares(s: Summary) -> str:
    return "/".join(f"{s.tier_share.get(t, 0.0) * 100:.0f}" for t in _TIERS)


def comparison_table(summaries: Mapping[str, Summary], *, title: str) -> Table:
    """One row per strategy: the bound, the oracle, then the strategies in run order."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=title,
        title_justify="left",
        caption=(
            "SLO met: completed within every latency budget it gave (TTFT / total: among "
            "requests with that budget); vs oracle: share of the oracle's attainment, ratio "
            "to its cost; tiers: share of completed requests; p50/p99: total latency from "
            "arrival; bound: each request alone on the fleet, a limit (docs/simulate.md)"
        ),
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("strategy", no_wrap=True)
    for name in (
        "SLO\nmet",
        "vs\noracle",
        "TTFT\nmet",
        "total\nmet",
        "cost",
        "cost vs\noracle",
        "edge/gpu/\nhosted %",
        "p50\ntotal",
        "p99\ntotal",
        "refused/\nfailed/cut",
        "time\n(s)",
    ):
        table.add_column(name, justify="right", no_wrap=True)
    for name, s in summaries.items():
        limit = name in (BOUND, ORACLE)
        table.add_row(
            Text(name, style="bold" if name == ROUTER else ""),
            _pct(s.attainment),
            _pct(s.attainment_vs_oracle),
            _pct(s.ttft_attainment),
            _pct(s.total_attainment),
            _usd(s.cost_usd),
            _ratio(s.cost_vs_oracle),
            _shares(s),
            _ms(s.total_p50_ms),
            _ms(s.total_p99_ms),
            f"{s.refused:,}/{s.failed:,}/{s.cut:,}",
            f"{s.seconds:.2f}",
            style="dim" if limit else None,
            end_section=name == ORACLE,
        )
    return table


def csv_rows(summaries: Mapping[str, Summary]) -> list[dict[str, Any]]:
    """One row per strategy, :data:`CSV_FIELDS` as keys (shares as fractions)."""
    rows = []
    for s in summaries.values():
        row = {f: getattr(s, f) for f in CSV_FIELDS if hasattr(s, f)}
        row["strategy"] = s.strategy
        for t in _TIERS:
            row[f"{t}_share"] = s.tier_share.get(t, 0.0)
        rows.append({f: ("" if row.get(f) is None else row[f]) for f in CSV_FIELDS})
    return rows


def document(
    summaries: Mapping[str, Summary],
    found: Sequence[Target],
    inputs: Mapping[str, Any],
    files: Sequence[str] = (),
    misses: Any = None,
) -> dict[str, Any]:
    """The ``--json`` document: inputs, every summary (by strategy), targets, verdict, and
    with ``--misses`` the strategy's miss groups (all of them)."""
    doc = {
        "inputs": dict(inputs),
        "summaries": {name: s.to_json() for name, s in summaries.items()},
        "targets": [t.to_json() for t in found],
        "verdict": verdict_line(found),
        "files": list(files),
    }
    if misses is not None:
        doc["misses"] = misses.to_json()
    return doc


# --- misses -------------------------------------------------------------------------------


def misses_table(report: Any, *, total: int, limit: int) -> Table:
    """``--misses``: the largest groups of requests the oracle met and the strategy
    missed (a :class:`router.simulation.misses.MissReport`, read by attribute)."""
    from rich import box
    from rich.table import Table

    shown = report.groups[:limit]
    more = len(report.groups) - len(shown)
    rest = sum(g.requests for g in report.groups[limit:])
    caption = (
        f"{report.missed:,} requests ({_pct(report.missed / total if total else None)} of "
        f"the trace) met by the oracle, missed by {report.strategy}; "
        f"{report.met_only_by_strategy:,} the other way round. missed: the budget it went "
        "over (ttft, total) or how it ended (cut, failed, refused)"
    )
    if more > 0:
        caption += f"; {more:,} smaller groups ({rest:,} requests) not shown (--misses-limit)"
    table = Table(
        title=f"where {report.strategy} misses what the oracle meets",
        title_justify="left",
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("requests", justify="right", no_wrap=True)
    table.add_column("share", justify="right", no_wrap=True)
    table.add_column("budgets", no_wrap=True)
    table.add_column(f"{report.strategy} sent to", no_wrap=True)
    table.add_column("missed", no_wrap=True)
    table.add_column("oracle sent to", no_wrap=True)
    for g in shown:
        table.add_row(
            f"{g.requests:,}",
            _pct(g.requests / report.missed if report.missed else None),
            g.budgets,
            g.backend,
            g.missed,
            g.oracle_backend,
        )
    return table


# --- scenarios ----------------------------------------------------------------------------


def scenarios_table(scenarios: Sequence[tuple[str, str]]) -> Table:
    """``--list-scenarios``: each built-in scenario and what it stresses."""
    from rich.table import Table

    table = Table(
        title="scenarios (hybrid-router simulate --scenario NAME)",
        title_justify="left",
        caption="each runs on the reference fleet; traces are deterministic for a --seed",
        caption_justify="left",
    )
    table.add_column("scenario", no_wrap=True)
    table.add_column("what it stresses")
    for name, about in scenarios:
        table.add_row(name, about)
    return table


# --- charts -------------------------------------------------------------------------------


def cost_attainment_figure(summaries: Mapping[str, Summary], *, title: str) -> Figure:
    """Cost (x) against SLO attainment (y), one labelled point per strategy."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), layout="constrained")
    ax = fig.subplots()
    for name, s in summaries.items():
        marker = {BOUND: "s", ORACLE: "D", ROUTER: "*"}.get(name, "o")
        size = 160 if name == ROUTER else 50
        ax.scatter([s.cost_usd], [s.attainment * 100], marker=marker, s=size, zorder=3)
        ax.annotate(
            name,
            (s.cost_usd, s.attainment * 100),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
            fontweight="bold" if name == ROUTER else "normal",
        )
    ax.set_xlabel("cost (USD)")
    ax.set_ylabel("SLO attainment (%)")
    ax.set_title(f"cost vs SLO attainment: {title}", fontsize=10)
    ax.grid(True, alpha=0.3)
    return fig


def latency_figure(summaries: Mapping[str, Summary], *, title: str) -> Figure:
    """Median total latency of the requests arriving in each time bucket, per strategy."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6), layout="constrained")
    ax = fig.subplots()
    nan = float("nan")
    positive = False
    for name, s in summaries.items():
        xs = [start for start, _, _ in s.series]
        ys = [p50 / 1000.0 if p50 is not None else nan for _, p50, _ in s.series]
        positive = positive or any(y > 0 for y in ys)
        style = {BOUND: ":", ORACLE: "--"}.get(name, "-")
        width = 2.5 if name == ROUTER else 1.0
        ax.plot(xs, ys, linestyle=style, linewidth=width, label=name)
    ax.set_xlabel("arrival (s from the trace's start)")
    ax.set_ylabel("p50 total latency (s)")
    if positive:  # a log scale of nothing warns
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.set_title(f"latency over time: {title}", fontsize=10)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
