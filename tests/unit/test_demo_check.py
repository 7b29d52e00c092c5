"""``hybrid_router_cli.demo.check``: what CI asserts about the demo's --json report."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

from hybrid_router_cli.demo import check as demo_check


def _answer(key: str, tier: str, expected: tuple[str, ...] = ()) -> dict:
    return {
        "key": key,
        "title": key,
        "rule": f"rule of {key}",
        "expected_tiers": list(expected or (tier,)),
        "tier": tier,
        "as_expected": tier in (expected or (tier,)),
        "text": " a few real words",
        "deltas": 3,
        "usage": {"output_tokens": 5, "complete": True},
        "error": None,
    }


def _turn(i: int, **context: object) -> dict:
    turn = _answer(f"conversation-{i}", "edge")
    turn["decision"] = {
        "backend": "edge-1",
        "candidates": [{"backend": "edge-1", "context": {"turns_dropped": 0, **context}}],
    }
    return turn


GOOD = {
    "error": None,
    "died": None,
    "elapsed_s": 41.2,
    "requests": [
        _answer("small-public", "edge"),
        _answer("restricted", "gpu"),
        _answer("huge-prompt", "hosted"),
        {
            "key": "huge-restricted",
            "expected_tiers": ["refused"],
            "tier": "refused",
            "as_expected": True,
            "text": "",
            "deltas": 0,
            "usage": None,
            "error": "OUT_OF_RANGE: no backend may take restricted data of this size",
        },
        _turn(1),
        _turn(2, turns_dropped=2),
        _turn(3, turns_summarized=4, summary_used=True),
        _answer("tool-call", "gpu")
        | {"tool_calls": [{"id": "c1", "name": "turbine_output", "arguments": "{}"}]},
        _answer("tool-answer", "gpu"),
    ],
}


def test_a_report_as_documented_passes():
    assert demo_check.problems(GOOD) == []


def test_a_scenario_decided_otherwise_is_named_with_its_rule():
    report = copy.deepcopy(GOOD)
    report["requests"][1].update(tier="hosted", as_expected=False)
    assert demo_check.problems(report) == [
        "restricted: went to hosted, documented: gpu (rule of restricted)",
    ]
    for r in report["requests"]:
        if r["key"].startswith("tool-"):
            r["deltas"] = 0  # and the tool round trip streamed nothing either
    assert demo_check.problems(report)[-1] == (
        "no complete answer with real tokens streamed from the gpu tier"
    )


def test_failed_requests_missing_tiers_and_dead_processes_are_all_reported():
    report = copy.deepcopy(GOOD)
    report["requests"][0].update(error="UNAVAILABLE: connection refused", as_expected=False)
    report["requests"][2]["usage"]["output_tokens"] = 0
    for turn in report["requests"][4:]:  # the conversation's edge answers too
        turn["usage"]["complete"] = False
    report["died"] = "edge-site-a (pid 12) died with SIGSEGV; log: /tmp/x.log"
    found = demo_check.problems(report)
    assert "a process died: edge-site-a (pid 12) died with SIGSEGV; log: /tmp/x.log" in found
    assert "small-public: failed: UNAVAILABLE: connection refused" in found
    assert "no complete answer with real tokens streamed from the edge tier" in found
    assert "no complete answer with real tokens streamed from the hosted tier" in found


def test_the_command_line_exit_codes(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(GOOD))
    bad.write_text("{not json")
    run = [sys.executable, "-m", "hybrid_router_cli.demo.check"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("demo report: ok (9 requests")
    broken = subprocess.run([*run, str(bad)], capture_output=True, text=True)
    assert broken.returncode == 2 and "is not a JSON demo report" in broken.stderr
    missing = subprocess.run([*run, str(tmp_path / "nope.json")], capture_output=True, text=True)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    assert "Traceback" not in broken.stderr + missing.stderr


def test_a_conversation_that_never_used_a_summary_is_named():
    report = copy.deepcopy(GOOD)
    report["requests"] = [r for r in report["requests"] if r["key"] != "conversation-3"]
    assert demo_check.problems(report) == [
        "no conversation turn was served with a summary of the older turns"
    ]
    report["requests"] = [r for r in report["requests"] if not r["key"].startswith("conv")]
    assert demo_check.problems(report) == ["the report has no conversation turns"]


def test_a_tool_round_trip_that_fell_short_is_named():
    report = copy.deepcopy(GOOD)
    by_key = {r["key"]: r for r in report["requests"]}
    by_key["tool-call"]["tool_calls"] = []
    by_key["tool-answer"]["usage"]["format_error"] = "the answer is not JSON"
    assert demo_check.problems(report) == [
        "tool-call: the model did not call turbine_output",
        "tool-answer: the JSON answer failed its check: the answer is not JSON",
    ]
