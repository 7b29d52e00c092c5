"""``hybrid-router backends`` as a user runs it, against a real router backed by real
ModelService servers over the scripted engine (as in test_cli.py): config priors until
``policy.min_samples``, layouts that fit narrow terminals, and ``--watch`` into a pipe."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rtutil import ms_backend

from hybrid_router_cli.main import main
from hybrid_router_cli.render import fmt_ms
from serving.engines.scripted import ScriptedEngine

CLI = shutil.which("hybrid-router", path=str(Path(sys.executable).parent)) or ""

#: name, tier, configured priors (TTFT ms, decode tokens/s): distinct, to find them.
BACKENDS = (
    ("edge-1", "edge", 420, 17),
    ("gpu-1", "gpu", 230, 61),
    ("hosted-provider-1", "hosted", 870, 44),
)


@pytest.fixture
async def address(model_server, start_router) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    backends = []
    for name, tier, ttft_ms, rate in BACKENDS:
        addr = await model_server(ScriptedEngine(context_window=4096))
        priors = {"ttft_ms": ttft_ms, "decode_tokens_per_s": rate}
        backends.append(ms_backend(name, tier, addr, context_window=4096, priors=priors))
    policy = {"default_max_output_tokens": 8, "min_samples": 2}
    router = await start_router(backends, policy=policy)
    yield f"127.0.0.1:{router.port}"


async def run_cli(*argv: str) -> int:
    """``main(argv)`` in a worker thread: it runs its own event loop, like a program."""
    return await asyncio.to_thread(main, list(argv))


def _row(out: str, name: str) -> str:
    """The first line whose first word (table borders aside) is the backend's name."""
    return next(line for line in out.splitlines() if line.replace("│", " ").split()[:1] == [name])


# --- priors until policy.min_samples ------------------------------------------------------


async def test_too_few_samples_show_the_config_priors_not_zeros(address, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    # One request on gpu-1: fewer than min_samples (2), so every backend is still on priors.
    assert await run_cli("chat", "--address", address, "--backend", "gpu-1", "a b") == 0
    capsys.readouterr()
    assert await run_cli("backends", "--address", address) == 0
    out = capsys.readouterr().out
    for name, _, ttft_ms, rate in BACKENDS:
        row = _row(out, name)
        assert f"{fmt_ms(ttft_ms)} / {fmt_ms(2 * ttft_ms)} ᵖ" in row, row  # median / p90
        assert f"{rate} ᵖ" in row, row
        assert not re.search(r"(?<![\d.])0 ms", row), row  # not "0 ms / 0 ms ᵖ"
    assert "ᵖ = config prior" in out

    assert await run_cli("backends", "--address", address, "--json") == 0
    by_name = {b["name"]: b for b in json.loads(capsys.readouterr().out)["backends"]}
    for name, _, ttft_ms, rate in BACKENDS:
        b = by_name[name]
        assert b["priors"] == {
            "ttft_ms": ttft_ms,
            "decode_tokens_per_s": rate,
            "ttft_p90_ms": 2 * ttft_ms,  # unset in the config: twice the median
            "prefill_tokens_per_s": 0.0,  # unset: the prompt's length is not modelled
        }
        assert b["from_priors"] is True and b["decode_from_priors"] is True
        assert b["ttft_p50_ms"] == 0  # not observed yet: the priors say what the policy uses
    assert by_name["gpu-1"]["requests"] == 1


async def test_enough_samples_replace_the_ttft_prior(address, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    for _ in range(2):  # policy.min_samples
        assert await run_cli("chat", "--address", address, "--backend", "gpu-1", "a b") == 0
    capsys.readouterr()
    assert await run_cli("backends", "--address", address, "--json") == 0
    gpu = next(b for b in json.loads(capsys.readouterr().out)["backends"] if b["name"] == "gpu-1")
    assert gpu["from_priors"] is False and gpu["ttft_p50_ms"] > 0
    assert await run_cli("backends", "--address", address) == 0
    row = _row(capsys.readouterr().out, "gpu-1")
    assert "230 ms ᵖ" not in row and " / " in row  # observed p50 / p90


# --- narrow terminals ---------------------------------------------------------------------


@pytest.mark.parametrize("width", [40, 60, 80, 100, 120, 200])
async def test_every_width_shows_each_backend_whole(address, capsys, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    assert await run_cli("backends", "--address", address) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "…" not in out
    assert max(len(line) for line in lines) <= width
    for name, tier, ttft_ms, rate in BACKENDS:
        # name and tier whole, on the backend's first line; its state, latency, rate, load.
        first = _row(out, name)
        assert tier in first.split(), first
        block = "\n".join(lines[lines.index(first) : lines.index(first) + 3])
        assert "ok" in block and f"{fmt_ms(ttft_ms)} / {fmt_ms(2 * ttft_ms)} ᵖ" in block, block
        assert re.search(rf"\b{rate}( tok/s)? ᵖ", block), block
        assert "0 / 0" in block, block  # load: in flight / queue
    if width >= 200:  # the full table: every column
        assert "model_service" in _row(out, "edge-1") and "requests" in out


# --- --watch into a file or a pipe --------------------------------------------------------


@pytest.mark.skipif(not CLI, reason="console script not installed")
@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
async def test_watch_into_a_pipe_writes_each_frame_as_it_comes(address, as_json):
    argv = [CLI, "backends", "--address", address, "--watch", "0.3"]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        *(["--json"] if as_json else []),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.stdout is not None
    frames: list[str] = []
    needed = 2 if as_json else 3  # a table frame is whole when the next title arrives
    try:
        async with asyncio.timeout(30):  # two frames, well before the process ends
            while len(frames) < needed:
                line = (await proc.stdout.readline()).decode()
                assert line, "stdout closed before two frames arrived"
                if as_json:
                    frames.append(line)
                elif line.startswith("backends at "):
                    frames.append(line)
                elif frames:
                    frames[-1] += line
        assert proc.returncode is None  # still running: the frames came while it watched
    finally:
        proc.terminate()
        await proc.wait()
    for frame in frames[:2]:
        if as_json:
            names = {b["name"] for b in json.loads(frame)["backends"]}
            assert names == {name for name, *_ in BACKENDS}
        else:
            title = frame.splitlines()[0]  # the timestamp line
            assert re.fullmatch(
                rf"backends at {re.escape(address)} · \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d"
                r" · every 0\.3s",
                title,
            ), title
            for name, tier, *_ in BACKENDS:
                assert tier in _row(frame, name).split()


# --- help ---------------------------------------------------------------------------------


def test_help_explains_the_layouts_and_ends_with_examples(capsys):
    assert main(["backends", "--help"]) == 0
    out = capsys.readouterr().out
    last_block = out.rstrip().split("\n\n")[-1]
    assert last_block.startswith("examples:\n")
    assert "hybrid-router backends --watch 5 > backends.log" in last_block
    assert "config" in out and "ᵖ" in out and "policy.min_samples" in out
