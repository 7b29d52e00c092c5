"""What the demo shows: per-request outcomes, the tables, the JSON report's pieces.

Pure functions of outcomes and the demo's configuration; ``hybrid_router_cli.demo.run``
prints them (the shared pieces: ``hybrid_router_cli.render``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hybrid_router.client import RequestOptions
from hybrid_router.v1 import router_pb2
from rich.table import Table
from rich.text import Text

from hybrid_router_cli import render
from hybrid_router_cli.demo import config as dc


@dataclass(slots=True)
class Outcome:
    """What one request did, as a user of the router saw it."""

    key: str
    title: str
    rule: str
    expected: tuple[str, ...]
    request: router_pb2.GenerateRequest
    decision: router_pb2.Decision | None = None
    text: str = ""
    deltas: int = 0
    failovers: list[router_pb2.Failover] = field(default_factory=list)
    usage: router_pb2.Usage | None = None
    error: str = ""
    #: A refusal the scenario expects (not a failure of the demo).
    expected_error: bool = False
    #: The answer's tool calls: [id, name, arguments], reassembled from their fragments.
    tool_calls: list[list[str]] = field(default_factory=list)

    @property
    def tier(self) -> str:
        if self.usage is not None:
            return render.tier_name(self.usage.tier)
        if self.decision is not None and not self.error:
            return render.tier_name(self.decision.tier)
        return "refused" if self.error else "?"

    @property
    def as_expected(self) -> bool:
        return self.tier in self.expected

    @property
    def failed(self) -> bool:
        return bool(self.error) and not self.expected_error

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "rule": self.rule,
            "expected_tiers": list(self.expected),
            "tier": self.tier,
            "as_expected": self.as_expected,
            "request": request_summary(self.request),
            "decision": render.message_to_dict(self.decision) if self.decision else None,
            "text": self.text,
            "deltas": self.deltas,
            "failovers": [render.message_to_dict(f) for f in self.failovers],
            "usage": render.message_to_dict(self.usage) if self.usage else None,
            "error": self.error or None,
            "tool_calls": [{"id": c[0], "name": c[1], "arguments": c[2]} for c in self.tool_calls],
        }


def request_summary(req: router_pb2.GenerateRequest) -> dict[str, Any]:
    d = render.message_to_dict(req)
    for m in d.get("messages", []):
        content = m.get("content", "")
        if len(content) > 200:
            m["content"] = content[:200] + f"... ({len(content)} chars)"
    return d


def summary_table(outcomes: Sequence[Outcome]) -> Table:
    """Request, tier and backend, why (the router's words), TTFT, tokens, cost."""
    table = Table(title="summary", title_justify="left")
    table.add_column("request", ratio=2)
    table.add_column("tier", no_wrap=True)
    table.add_column("why", ratio=3)
    table.add_column("TTFT", justify="right", no_wrap=True)
    table.add_column("tokens", justify="right", no_wrap=True)
    table.add_column("cost", justify="right", no_wrap=True)
    for o in outcomes:
        if o.key.startswith("demo-burst-"):
            continue
        u = o.usage
        tier = Text(o.tier, style="bold" if o.as_expected else "yellow")
        if o.decision is not None and not o.error:
            tier.append(f"\n{o.decision.backend}", style="dim")
        table.add_row(
            o.title,
            tier,
            why(o),
            render.fmt_ms(u.ttft_ms) if u else "(dry run)" if not o.error else "-",
            str(u.output_tokens) if u else "-",
            render.fmt_usd(u.cost_usd) if u else "-",
        )
    return table


def burst_table(burst: Sequence[Outcome]) -> Table:
    table = Table(title="the burst on the edge, served one at a time", title_justify="left")
    for col in ("request", "backend", "TTFT", "total", "tokens", "result"):
        table.add_column(col)
    for o in burst:
        u = o.usage
        table.add_row(
            o.key,
            u.backend if u else "-",
            render.fmt_ms(u.ttft_ms) if u else "-",
            render.fmt_ms(u.total_ms) if u else "-",
            str(u.output_tokens) if u else "-",
            o.error or ("complete" if u and u.complete else "incomplete"),
        )
    return table


def tiers_streamed(outcomes: Sequence[Outcome]) -> list[str]:
    """Tiers that streamed at least one token of an answer that reached its Usage."""
    return sorted({o.tier for o in outcomes if o.usage and o.deltas})


def stand_ins_table(stand_ins: tuple[dc.StandIn, ...] = dc.STAND_INS) -> Table:
    table = Table(
        title="the three tiers on this machine (all: real Gemma 3 270M, llama.cpp, CPU)",
        title_justify="left",
        caption="prices are illustrative demo figures, not a provider's price list",
        caption_justify="left",
    )
    table.add_column("backend", no_wrap=True)
    table.add_column("tier", no_wrap=True)
    table.add_column("what it really is", ratio=3)
    table.add_column("window", justify="right", no_wrap=True)
    table.add_column("data classes", ratio=1)
    table.add_column("price", ratio=2)
    ray = any(s.server == "ray_serve" for s in stand_ins)
    by_name = {
        b["name"]: b for b in dc.router_config({s.name: 0 for s in stand_ins}, ray=ray)["backends"]
    }
    prices = {
        "edge": "$0.05 / M output tokens (marginal)",
        "gpu": "$1.21/h node, 400 tok/s at 60% ≈ $1.40 / M output tokens",
        "hosted": "$1.00 in, $4.00 out / M tokens",
    }
    for s in stand_ins:
        b = by_name[s.name]
        table.add_row(
            Text(s.name, style="bold"),
            render.tier_text(s.tier),
            s.label.removeprefix("stand-in: "),
            str(s.context_window),
            ", ".join(b["data_classes"]),
            prices[s.tier],
        )
    return table


def describe(o: RequestOptions) -> str:
    text = o.prompt or ""
    prompt = text.replace("\n", " ⏎ ")
    if len(prompt) > 70:
        prompt = f"{prompt[:60]}… ({len(text):,} chars)"
    parts = [
        f"request: {o.data_class or 'internal'}",
        f"max {o.max_output_tokens or 'default'} tokens",
    ]
    if o.ttft_budget_ms:
        parts.append(f"TTFT ≤ {render.fmt_ms(o.ttft_budget_ms)}")
    if o.total_budget_ms:
        parts.append(f"total ≤ {render.fmt_ms(o.total_budget_ms)}")
    if o.pin_tiers:
        parts.append(f"pinned to {', '.join(o.pin_tiers)}")
    parts.append(f'"{prompt}"')
    return " · ".join(parts)


def why(o: Outcome) -> str:
    if o.error:
        return o.error
    d = o.decision
    if d is None:
        return "-"
    head = d.explanation
    prefix = f"{d.backend}: "
    if head.startswith(prefix):
        head = head[len(prefix) :]
    rejected = [f"{c.backend} ({c.rejected_by})" for c in d.candidates if not c.accepted]
    if rejected:
        head += f"; rejected: {', '.join(rejected)}"
    return head
