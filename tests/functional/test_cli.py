"""The `hybrid-router` command line, as a user runs it.

`route`, `chat` and `backends` run against a real router (in this process, 127.0.0.1
port 0) backed by real ModelService servers over the scripted engine. The CLI itself
runs either through ``main(argv)`` in a worker thread (it owns its own event loop there,
like a separate program) or as the installed console script in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hybrid_router.client import RequestOptions, build_request
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from rtutil import ms_backend
from testkit import pid_alive

from hybrid_router_cli.main import build_parser, main
from serving.engines.scripted import ScriptedEngine

REPO = Path(__file__).resolve().parents[2]
CLI = shutil.which("hybrid-router", path=str(Path(sys.executable).parent)) or ""
COMMANDS = ("serve", "route", "chat", "backends", "demo")


@dataclass
class Tiers:
    address: str
    engines: dict[str, ScriptedEngine]


def _backends(addrs: dict[str, str]) -> list[dict[str, object]]:
    """Three tiers with the usual trade-offs: edge cheapest, hosted dearest and the only
    one with a big window, GPU the only one cleared for restricted data."""
    return [
        ms_backend(
            "edge-1",
            "edge",
            addrs["edge"],
            context_window=64,
            max_concurrency=1,
            data_classes=["public", "internal"],
            cost={"edge_per_mtok_usd": 0.01},
            description="scripted edge for tests",
        ),
        ms_backend(
            "gpu-1",
            "gpu",
            addrs["gpu"],
            context_window=256,
            cost={"gpu_hourly_usd": 1.0, "gpu_throughput_tokens_per_s": 100},
        ),
        ms_backend(
            "hosted-1",
            "hosted",
            addrs["hosted"],
            context_window=4096,
            data_classes=["public", "internal"],
            cost={"input_per_mtok_usd": 3.0, "output_per_mtok_usd": 15.0},
        ),
    ]


@pytest.fixture
async def tiers(model_server, start_router) -> AsyncIterator[Tiers]:  # type: ignore[no-untyped-def]
    engines = {tier: ScriptedEngine(context_window=4096) for tier in ("edge", "gpu", "hosted")}
    addrs = {tier: await model_server(engine) for tier, engine in engines.items()}
    # Small default answers, so that short prompts fit the small test windows.
    router = await start_router(_backends(addrs), policy={"default_max_output_tokens": 16})
    yield Tiers(f"127.0.0.1:{router.port}", engines)


async def run_cli(*argv: str) -> int:
    """``main(argv)`` in a worker thread: it runs its own event loop, like a program."""
    return await asyncio.to_thread(main, list(argv))


async def run_script(
    *argv: str, timeout: float = 60.0, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """The installed console script in a subprocess: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        CLI,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "160", **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- arguments and help ------------------------------------------------------------------


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help_with_examples(command, capsys):
    argv = [command, "--help"] if command else ["--help"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hybrid-router")
    if command:
        assert "examples:" in out
        assert f"hybrid-router {command}" in out
        assert "--json" in out
    else:
        for name in COMMANDS:
            assert name in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: hybrid-router" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["route"], "the following arguments are required: prompt"),
        (["chat", "--max-tokens", "-3", "hi"], "--max-tokens: must be >= 0"),
        (["chat", "--tier", "moon", "hi"], "invalid choice: 'moon'"),
        (["route", "--data-class", "secret", "hi"], "invalid choice: 'secret'"),
        (["backends", "--watch", "0"], "--watch: must be > 0"),
    ],
)
def test_usage_errors_exit_2_with_the_reason(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["route", "--address", "localhost", "hi"], "--address must be HOST:PORT"),
        (["chat", "--metadata", "novalue", "hi"], "--metadata must be KEY=VALUE"),
        (["demo", "--address", "nowhere"], "--address must be HOST:PORT"),
    ],
)
def test_bad_option_values_print_one_error_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_request_options_map_onto_the_contract():
    args = build_parser().parse_args(
        [
            "chat",
            "--max-tokens", "64",
            "--ttft-budget-ms", "300",
            "--total-budget-ms", "2000",
            "--max-cost-usd", "0.01",
            "--data-class", "restricted",
            "--tier", "gpu", "--tier", "edge",
            "--backend", "gpu-1",
            "--exclude-tier", "hosted",
            "--exclude-backend", "edge-2",
            "--family", "gemma3",
            "--capability", "chat", "--capability", "long-context",
            "--site", "plant-7",
            "--device", "dev-3",
            "--objective", "fastest",
            "--system", "Be brief.",
            "--temperature", "0.2",
            "--seed", "42",
            "--stop", "\n\n",
            "--request-id", "req-9",
            "Hello there",
        ]
    )  # fmt: skip
    from hybrid_router_cli.options import request_options

    req = build_request(request_options(args))
    assert [(m.role, m.content) for m in req.messages] == [
        (tpb.ROLE_SYSTEM, "Be brief."),
        (tpb.ROLE_USER, "Hello there"),
    ]
    assert req.max_output_tokens == 64
    assert (req.latency_budget.ttft_ms, req.latency_budget.total_ms) == (300, 2000)
    assert req.HasField("max_cost_usd") and req.max_cost_usd == pytest.approx(0.01)
    assert req.data_class == tpb.DATA_CLASS_RESTRICTED
    assert list(req.pin_tiers) == [tpb.TIER_GPU, tpb.TIER_EDGE]
    assert list(req.pin_backends) == ["gpu-1"]
    assert list(req.exclude_tiers) == [tpb.TIER_HOSTED]
    assert list(req.exclude_backends) == ["edge-2"]
    assert req.model_family == "gemma3"
    assert list(req.capabilities) == ["chat", "long-context"]
    assert (req.edge_affinity.site, req.edge_affinity.device_id) == ("plant-7", "dev-3")
    assert req.objective == rpb.OBJECTIVE_FASTEST
    assert req.sampling.temperature == pytest.approx(0.2)
    assert req.sampling.seed == 42
    assert list(req.sampling.stop) == ["\n\n"]
    assert req.request_id == "req-9"


def test_unset_options_leave_the_router_defaults():
    req = build_request(RequestOptions(prompt="hi"))
    assert not req.HasField("max_cost_usd")
    assert not req.sampling.HasField("temperature") and not req.sampling.HasField("seed")
    assert req.max_output_tokens == 0 and req.data_class == tpb.DATA_CLASS_UNSPECIFIED
    assert req.objective == rpb.OBJECTIVE_UNSPECIFIED


# --- route -------------------------------------------------------------------------------


async def test_route_prints_every_backend_with_verdict_and_reason(tiers, capsys):
    rc = await run_cli("route", "--address", tiers.address, "--data-class", "restricted", "hi")
    assert rc == 0
    out = capsys.readouterr().out
    for name in ("edge-1", "gpu-1", "hosted-1"):
        assert name in out
    assert "✔ primary" in out
    assert out.count("✘ data_class") == 2
    assert "data class 'restricted' not allowed" in out
    assert "→ gpu-1 (gpu)" in out
    assert "objective: balanced" in out
    assert tiers.engines["gpu"].started == []  # a dry run calls no model


async def test_route_on_a_narrow_terminal_moves_reasons_under_the_table(tiers, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    rc = await run_cli("route", "--address", tiers.address, "--data-class", "restricted", "hi")
    assert rc == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert out.count("✘ rejected") == 2
    assert "edge-1: ✘ data_class: data class 'restricted' not allowed" in out
    assert "→ gpu-1 (gpu)" in out


async def test_route_json_is_the_decision(tiers, capsys):
    rc = await run_cli("route", "--address", tiers.address, "--json", "--request-id", "r-7", "hi")
    assert rc == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["request_id"] == "r-7"
    assert decision["backend"] == "edge-1" and decision["tier"] == "TIER_EDGE"
    assert decision["fallbacks"] == ["gpu-1", "hosted-1"]
    by_name = {c["backend"]: c for c in decision["candidates"]}
    assert by_name["edge-1"]["rank"] == 1 and by_name["edge-1"]["accepted"] is True
    assert by_name["hosted-1"]["estimate"]["cost_usd"] > by_name["gpu-1"]["estimate"]["cost_usd"]


async def test_route_picks_the_only_window_that_fits(tiers, capsys):
    prompt = " ".join(["word"] * 300)  # over the edge (64) and GPU (256) windows
    rc = await run_cli("route", "--address", tiers.address, "--max-tokens", "16", prompt)
    assert rc == 0
    out = capsys.readouterr().out
    assert "→ hosted-1 (hosted)" in out
    assert out.count("✘ context_window") == 2


async def test_route_bad_request_prints_the_status_and_exits_1(tiers, capsys):
    rc = await run_cli("route", "--address", tiers.address, "--backend", "nope", "hi")
    assert rc == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert err.startswith("error: INVALID_ARGUMENT: pin_backends: unknown backend 'nope'")
    assert len(err.splitlines()) == 1


async def test_route_to_no_router_names_the_fix(capsys):
    address = f"127.0.0.1:{closed_port()}"
    rc = await run_cli("route", "--address", address, "--timeout", "10", "hi")
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith("error: UNAVAILABLE: ")
    assert f"is a router listening on {address}?" in err
    assert "hybrid-router serve --config" in err


async def test_address_comes_from_the_environment(tiers, capsys, monkeypatch):
    monkeypatch.setenv("HYBRID_ROUTER_ADDRESS", tiers.address)
    assert await run_cli("route", "--json", "hi") == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "edge-1"


# --- chat --------------------------------------------------------------------------------


async def test_chat_prints_decision_then_tokens_then_usage(tiers, capsys):
    rc = await run_cli(
        "chat", "--address", tiers.address, "--max-tokens", "5", "--tier", "gpu", "alpha beta"
    )
    assert rc == 0
    out = capsys.readouterr().out
    decision_at = out.index("→ gpu-1 (gpu)")
    text_at = out.index("alpha beta alpha beta alpha")
    usage_at = out.index("· gpu-1 (gpu) · tokens in")
    assert decision_at < text_at < usage_at
    assert "out 5" in out and "complete" in out and "finish length" in out
    assert tiers.engines["gpu"].started  # the model really ran


async def test_chat_json_streams_one_event_per_line(tiers, capsys):
    rc = await run_cli("chat", "--address", tiers.address, "--json", "--max-tokens", "4", "one two")
    assert rc == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "decision" and kinds[-1] == "usage"
    assert set(kinds[1:-1]) == {"delta"}
    assert "".join(e["delta"]["text"] for e in events[1:-1]) == "one two one two"
    usage = events[-1]["usage"]
    assert usage["backend"] == events[0]["decision"]["backend"] == "edge-1"
    assert usage["complete"] is True and usage["output_tokens"] == 4


async def test_chat_explain_adds_the_decision_table(tiers, capsys):
    rc = await run_cli(
        "chat", "--address", tiers.address, "--explain", "--max-tokens", "2", "hi there"
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "verdict" in out and "est. TTFT" in out
    assert out.index("✔ primary") < out.index("→ edge-1 (edge)")


async def test_chat_request_no_tier_may_take_exits_1(tiers, capsys):
    rc = await run_cli(
        "chat", "--address", tiers.address, "--data-class", "restricted", "--tier", "hosted", "hi"
    )
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: FAILED_PRECONDITION: ")
    assert "restricted" in err


async def test_chat_shows_a_failover_before_the_first_token(tiers, capsys):
    tiers.engines["edge"].fail_before_first_token = "unavailable"
    rc = await run_cli("chat", "--address", tiers.address, "--max-tokens", "3", "red green")
    assert rc == 0
    out = capsys.readouterr().out
    failover_at = out.index("↪ failover edge-1 → gpu-1 (gpu), attempt 2")
    assert out.index("→ edge-1 (edge)") < failover_at < out.index("red green red")
    assert "· gpu-1 (gpu)" in out and "2 attempts" in out


async def test_chat_failure_after_the_first_token_is_incomplete_and_exits_1(tiers, capsys):
    tiers.engines["edge"].fail_after_tokens = 2
    rc = await run_cli("chat", "--address", tiers.address, "--max-tokens", "6", "up down")
    assert rc == 1
    captured = capsys.readouterr()
    assert "up down" in captured.out
    assert "INCOMPLETE" in captured.out
    assert captured.err.startswith("error: UNAVAILABLE: edge-1 failed after the first token")


def _interruptible(*args: str) -> list[str]:
    """The CLI with SIGINT as a terminal sends it. A suite started in the background by a
    non-interactive shell (``cmd &``, nohup) runs with SIGINT ignored, children inherit
    that, and Python then installs no KeyboardInterrupt handler. A small launcher resets
    it and execs the CLI: a ``preexec_fn`` would run Python in a fork of this
    multi-threaded, gRPC-using process, which can crash before the exec."""
    launcher = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", launcher, CLI, *args]


@pytest.mark.skipif(not CLI, reason="console script not installed")
async def test_ctrl_c_cancels_the_stream_at_the_backend(model_server, start_router):
    slow = ScriptedEngine(tokens_per_s=10)
    router = await start_router([ms_backend("gpu-slow", "gpu", await model_server(slow))])
    proc = await asyncio.create_subprocess_exec(
        *_interruptible(
            "chat",
            "--address",
            f"127.0.0.1:{router.port}",
            "--max-tokens",
            "500",
            "--request-id",
            "ctrl-c",
            "tick tock",
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen = b""
    async with asyncio.timeout(60):
        while b"tick tock" not in seen:  # tokens are streaming
            chunk = await proc.stdout.read(256)
            assert chunk, "chat exited before streaming"
            seen += chunk
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130
    assert b"Traceback" not in err
    async with asyncio.timeout(30):  # the cancel reached the model server's engine
        while "ctrl-c" not in slow.cancelled:
            await asyncio.sleep(0.05)


# --- backends ----------------------------------------------------------------------------


async def test_backends_table_shows_static_facts_and_live_state(tiers, capsys):
    assert await run_cli("chat", "--address", tiers.address, "--max-tokens", "2", "x y") == 0
    capsys.readouterr()
    assert await run_cli("backends", "--address", tiers.address) == 0
    out = capsys.readouterr().out
    for header in ("name", "tier", "kind", "ctx", "health", "in flight", "queue", "p50 / p90"):
        assert header in out
    for name, tier, window in (("edge-1", "edge", 64), ("gpu-1", "gpu", 256)):
        row = next(line for line in out.splitlines() if name in line)
        assert tier in row and "model_service" in row and str(window) in row and "ok" in row
    assert "edge-1: scripted edge for tests" in out  # the description from router.yaml


async def test_backends_json_lists_every_backend(tiers, capsys):
    assert await run_cli("chat", "--address", tiers.address, "--max-tokens", "3", "a b") == 0
    capsys.readouterr()
    assert await run_cli("backends", "--address", tiers.address, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    by_name = {b["name"]: b for b in data["backends"]}
    assert set(by_name) == {"edge-1", "gpu-1", "hosted-1"}
    assert by_name["edge-1"]["tier"] == "TIER_EDGE"
    assert by_name["edge-1"]["context_window"] == 64
    assert by_name["edge-1"]["requests"] == 1 and by_name["gpu-1"]["requests"] == 0
    assert by_name["edge-1"]["healthy"] is True


@pytest.mark.skipif(not CLI, reason="console script not installed")
async def test_backends_watch_json_polls_until_ctrl_c(tiers):
    proc = await asyncio.create_subprocess_exec(
        *_interruptible("backends", "--address", tiers.address, "--watch", "0.1", "--json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines = [await asyncio.wait_for(proc.stdout.readline(), 30) for _ in range(3)]
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    for line in lines:
        names = [b["name"] for b in json.loads(line)["backends"]]
        assert set(names) == {"edge-1", "gpu-1", "hosted-1"}


# --- serve -------------------------------------------------------------------------------


@pytest.mark.skipif(not CLI, reason="console script not installed")
async def test_serve_missing_config_is_one_clear_line_and_exit_2(tmp_path):
    missing = tmp_path / "router.yaml"
    rc, out, err = await run_script("serve", "--config", str(missing))
    assert rc == 2
    assert err.strip() == f"error: {missing}: file not found; check the path"
    assert "Traceback" not in err


async def test_serve_invalid_config_names_the_key(tmp_path, capsys):
    path = tmp_path / "router.yaml"
    path.write_text("policy:\n  objective: cheapset\n")
    assert await run_cli("serve", "--config", str(path)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: invalid configuration")
    assert "policy.objective" in err


async def test_serve_without_config_says_how_to_give_one(capsys):
    assert await run_cli("serve") == 2
    assert "pass --config PATH or set HYBRID_ROUTER_CONFIG" in capsys.readouterr().err


@pytest.mark.skipif(not CLI, reason="console script not installed")
async def test_serve_runs_the_router_and_drains_on_sigterm(model_server, tmp_path):
    addr = await model_server(ScriptedEngine())
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"backends": [ms_backend("gpu-a", "gpu", addr)]}))
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "serve",
        "--config",
        str(path),
        "--address",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.startswith(b"READY "), line
        port = int(line.split()[1])
        rc, out, err = await run_script(
            "chat", "--address", f"127.0.0.1:{port}", "--json", "--max-tokens", "3", "hey you"
        )
        assert rc == 0, err
        assert json.loads(out.splitlines()[-1])["usage"]["backend"] == "gpu-a"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err_b = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert b"Traceback" not in err_b


# --- demo --------------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(not CLI, reason="console script not installed")
@pytest.mark.parametrize("mode", ["--ray", "--no-ray"])
async def test_demo_routes_real_tokens_to_all_three_tiers_and_leaves_nothing_behind(mode):
    rc, out, err = await run_script("demo", "--json", mode, timeout=540)
    assert rc == 0, err
    report = json.loads(out)
    assert set(report["tiers_streamed"]) == {"edge", "gpu", "hosted"}
    streamed = [r for r in report["requests"] if r["usage"] and r["deltas"]]
    for tier in ("edge", "gpu", "hosted"):
        served = [r for r in streamed if r["tier"] == tier]
        assert served, f"no request streamed from {tier}"
        assert all(r["text"].strip() and r["usage"]["complete"] for r in served)
        assert all(r["usage"]["output_tokens"] > 0 for r in served)
    by_key = {r["key"]: r for r in report["requests"]}
    # The rules that do not depend on timing decide the same way on every machine.
    assert by_key["restricted"]["tier"] == "gpu"
    long_edge = [
        c for c in by_key["long-prompt"]["decision"]["candidates"] if c["tier"] == "TIER_EDGE"
    ]
    assert [c["rejected_by"] for c in long_edge] == ["context_window"]
    assert by_key["long-prompt"]["tier"] == "gpu"
    assert by_key["huge-prompt"]["tier"] == "hosted"
    assert by_key["huge-restricted"]["error"].startswith("OUT_OF_RANGE")
    # The live queue moved the probe off the edge while the burst ran.
    assert by_key["burst-before"]["tier"] == "edge"
    assert by_key["burst-during"]["tier"] in ("gpu", "hosted")
    # Every stand-in is labelled honestly, and every child process is gone.
    assert all(s["label"].startswith("stand-in: ") for s in report["stand_ins"])
    pids = [s["pid"] for s in report["stand_ins"]]
    assert len(pids) == 3 and all(pids)
    assert not [pid for pid in pids if pid_alive(pid)]
