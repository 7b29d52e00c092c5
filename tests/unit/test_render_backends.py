"""``hybrid-router backends``: each backend's last error, how long ago, in the table."""

from __future__ import annotations

import io
import re

from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from rich.console import Console
from testkit import rendered

from hybrid_router_cli import render, render_backends

NOW_MS = 1_800_000_000_000


def test_fmt_ago_reads_like_a_person_would_say_it() -> None:
    assert render.fmt_ago(0, NOW_MS) == "-"
    assert render.fmt_ago(NOW_MS - 400, NOW_MS) == "0.4 s ago"
    assert render.fmt_ago(NOW_MS - 42_000, NOW_MS) == "42 s ago"
    assert render.fmt_ago(NOW_MS - 180_000, NOW_MS) == "3 min ago"
    assert render.fmt_ago(NOW_MS - 3 * 3_600_000, NOW_MS) == "3 h ago"
    assert render.fmt_ago(NOW_MS - 3 * 86_400_000, NOW_MS) == "3 d ago"
    assert render.fmt_ago(NOW_MS + 5_000, NOW_MS) == "0.0 s ago"  # clocks a little apart


def test_the_table_and_notes_show_the_last_error_and_its_age() -> None:
    resp = rpb.ListBackendsResponse(
        backends=[
            rpb.BackendStatus(
                name="edge-a",
                kind="model_service",
                healthy=False,
                detail="load probe failed: UNAVAILABLE",
                last_error="UNAVAILABLE: failed to connect to 127.0.0.1:4242: Connection refused",
                last_error_unix_ms=NOW_MS - 12_000,
            ),
            rpb.BackendStatus(name="gpu-b", kind="model_service", healthy=True),
        ]
    )
    table = rendered(render_backends.backends_table(resp, now_ms=NOW_MS))
    assert "last" in table and "error" in table
    edge = next(line for line in table.splitlines() if "edge-a" in line)
    gpu = next(line for line in table.splitlines() if "gpu-b" in line)
    assert "12 s ago" in edge and "ago" not in gpu
    notes = rendered(render_backends.backend_notes(resp, now_ms=NOW_MS)).splitlines()
    assert notes == [
        "edge-a: load probe failed: UNAVAILABLE",
        "edge-a: last error 12 s ago: UNAVAILABLE: failed to connect to 127.0.0.1:4242: "
        "Connection refused",
    ]
    only_errors = rendered(render_backends.backend_notes(resp, now_ms=NOW_MS, details=False))
    assert only_errors.splitlines() == notes[1:]


def test_the_notes_show_the_prompt_reading_rate_and_where_it_comes_from() -> None:
    resp = rpb.ListBackendsResponse(
        backends=[
            rpb.BackendStatus(name="gpu-a", kind="ray_serve", prefill_tokens_per_s=5200.0),
            rpb.BackendStatus(
                name="hosted-mini",
                kind="openai",
                prefill_tokens_per_s=20000.0,
                priors=rpb.Priors(prefill_tokens_per_s=20000.0),
            ),
            rpb.BackendStatus(name="edge-a", kind="edge"),  # not modelled: no line
        ]
    )
    notes = rendered(render_backends.backend_notes(resp, now_ms=NOW_MS)).splitlines()
    assert notes == [
        "gpu-a: prompts read at 5,200 tok/s (reported)",
        "hosted-mini: prompts read at 20,000 tok/s (priors)",
    ]
    assert render_backends.backend_notes(resp, details=False) is None


def _priors_resp(*, with_priors: bool = True) -> rpb.ListBackendsResponse:
    priors = (
        rpb.Priors(ttft_ms=420, decode_tokens_per_s=17, ttft_p90_ms=840) if with_priors else None
    )
    return rpb.ListBackendsResponse(
        backends=[
            rpb.BackendStatus(
                name="edge-a",
                tier=tpb.TIER_EDGE,
                kind="model_service",
                healthy=True,
                from_priors=True,
                decode_from_priors=True,
                priors=priors,
            )
        ]
    )


def test_figures_from_priors_are_the_configured_priors_marked() -> None:
    row = next(
        line
        for line in rendered(render_backends.backends_table(_priors_resp())).splitlines()
        if "edge-a" in line
    )
    assert "420 ms / 840 ms ᵖ" in row and "17 ᵖ" in row
    assert not re.search(r"(?<![\d.])0 ms", row)  # not "0 ms / 0 ms"
    # A router older than the prior p90: the median alone.
    older = _priors_resp()
    older.backends[0].priors.ttft_p90_ms = 0
    row = next(
        line
        for line in rendered(render_backends.backends_table(older)).splitlines()
        if "edge-a" in line
    )
    assert "420 ms ᵖ" in row and "840" not in row
    # A router older than the priors field: "-", never a made-up 0.
    old = rendered(render_backends.backends_table(_priors_resp(with_priors=False)))
    row = next(line for line in old.splitlines() if "edge-a" in line)
    assert "- ᵖ" in row and "0 ms" not in row


def test_a_watch_into_a_file_does_not_redraw_in_place() -> None:
    console = Console(file=io.StringIO(), force_terminal=True)
    assert not render_backends.redraws_in_place(console)
