"""``--scenarios`` of the routing benches (bench_routing.py, bench_load_marks.py,
bench_stale_signals.py, bench_replicas.py): a comma-separated list of built-in
scenarios, checked by argparse."""

from __future__ import annotations

import argparse

from router.simulation.scenarios import SCENARIOS


def scenario_list(text: str) -> list[str]:
    """argparse ``type=``: the names, each a built-in scenario."""
    names = [s for s in text.split(",") if s]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {unknown[0]!r} (known: {', '.join(SCENARIOS)})"
            if unknown
            else f"give at least one scenario (known: {', '.join(SCENARIOS)})"
        )
    return names


def add_scenarios(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--scenarios``; ``default``: comma-separated names (None: every scenario)."""
    p.add_argument(
        "--scenarios",
        type=scenario_list,
        default=scenario_list(default) if default else list(SCENARIOS),
        help=f"comma-separated (default: {default or 'all'})",
    )
