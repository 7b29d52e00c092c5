"""Check a ``hybrid-router demo --json`` report: what CI asserts about the main job.

    python -m hybrid_router_cli.demo.check .bench-out/demo-report.json     # make demo-check

The demo passes when it ended without an error, every scenario went where the README and
docs/demo.md say it goes (each outcome's own ``expected_tiers``), no request failed,
real tokens streamed from all three tiers (text, output tokens, a complete answer), and
the conversation outgrew its window and was served with a summary of its older turns.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

TIERS = ("edge", "gpu", "hosted")


def problems(report: dict[str, Any]) -> list[str]:
    """Every way the report falls short; empty when the demo did what it documents."""
    found: list[str] = []
    if report.get("error"):
        found.append(f"the demo ended with an error: {report['error']}")
    if report.get("died"):
        found.append(f"a process died: {report['died']}")
    requests = report.get("requests") or []
    if not requests:
        found.append("the report has no requests")
    for r in requests:
        expected = r.get("expected_tiers") or []
        refused_ok = "refused" in expected
        if r.get("error") and not refused_ok:
            found.append(f"{r['key']}: failed: {r['error']}")
        elif expected and not r.get("as_expected"):
            found.append(
                f"{r['key']}: went to {r.get('tier')}, documented: {' or '.join(expected)} "
                f"({r.get('rule') or r.get('title')})"
            )
    found += _conversation_problems(requests)
    found += _tool_problems(requests)
    for tier in TIERS:
        served = [
            r
            for r in requests
            if r.get("tier") == tier and r.get("usage") and r.get("deltas", 0) > 0
        ]
        real = [
            r
            for r in served
            if not r.get("error")
            and (r.get("text") or "").strip()
            and r["usage"].get("output_tokens", 0) > 0
            and r["usage"].get("complete")
        ]
        if not real:
            found.append(f"no complete answer with real tokens streamed from the {tier} tier")
    return found


def _tool_problems(requests: list[dict[str, Any]]) -> list[str]:
    """The model called the tool, and its JSON answer passed the router's check."""
    by_key = {r.get("key"): r for r in requests}
    call, answer = by_key.get("tool-call"), by_key.get("tool-answer")
    if call is None:
        return ["the report has no tool round trip"]
    found = []
    calls = call.get("tool_calls") or []
    if not calls or calls[0].get("name") != "turbine_output":
        found.append("tool-call: the model did not call turbine_output")
    if answer is None:
        return [*found, "the report has no answer after the tool's result"]
    usage = answer.get("usage") or {}
    if answer.get("error") or not usage.get("complete"):
        found.append(f"tool-answer: no complete answer ({answer.get('error') or 'incomplete'})")
    elif usage.get("format_error"):
        found.append(f"tool-answer: the JSON answer failed its check: {usage['format_error']}")
    return found


def _conversation_problems(requests: list[dict[str, Any]]) -> list[str]:
    """The conversation stays on the edge, its history fitted, and a summary is used."""
    turns = [r for r in requests if str(r.get("key", "")).startswith("conversation-")]
    if not turns:
        return ["the report has no conversation turns"]
    fits = []
    for r in turns:
        decision = r.get("decision") or {}
        for c in decision.get("candidates") or []:
            if c.get("backend") == decision.get("backend"):
                fits.append(c.get("context") or {})
    found = []
    if not any(f.get("turns_dropped", 0) or f.get("turns_summarized", 0) for f in fits):
        found.append("the conversation never outgrew the window it was served from")
    if not any(f.get("summary_used") for f in fits):
        found.append("no conversation turn was served with a summary of the older turns")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hybrid_router_cli.demo.check",
        description="Check a `hybrid-router demo --json` report (exit 0 when it passes).",
        epilog="example: hybrid-router demo --json > report.json && "
        "python -m hybrid_router_cli.demo.check report.json",
    )
    parser.add_argument("report", help="the JSON report file, or - for standard input")
    args = parser.parse_args(argv)
    try:
        text = sys.stdin.read() if args.report == "-" else open(args.report).read()
        report = json.loads(text)
    except OSError as exc:
        print(f"error: cannot read {args.report}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {args.report} is not a JSON demo report: {exc}", file=sys.stderr)
        return 2
    if not isinstance(report, dict):
        print(f"error: {args.report} is not a JSON demo report (an object)", file=sys.stderr)
        return 2
    found = problems(report)
    if found:
        print(f"demo report: {len(found)} problem(s)", file=sys.stderr)
        for line in found:
            print(f"  - {line}", file=sys.stderr)
        return 1
    tiers = sorted({r["tier"] for r in report["requests"]})
    print(
        f"demo report: ok ({len(report['requests'])} requests, as documented; "
        f"tiers: {' '.join(tiers)}; {report.get('elapsed_s', '?')} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
