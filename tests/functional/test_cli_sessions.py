"""`hybrid-router sessions`, and `route` / `chat` with `--session`, against a real router.

The router runs in this process (127.0.0.1 port 0, sessions in a SQLite file under the
test's tmp_path) in front of real ModelService servers over the scripted engine, whose
windows are 400 (edge, the cheapest), 1,000 (gpu) and 8,192 (hosted) tokens. The CLI
runs through ``main(argv)`` in a worker thread (its own event loop, like a program).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest
from hybrid_router.client import AsyncRouterClient, make_request
from rtutil import ms_backend

from hybrid_router_cli.main import main
from serving.engines.scripted import ScriptedEngine

WORDS = " ".join(f"w{i}" for i in range(40))  # ~40 tokens a turn


@dataclass
class Router:
    address: str
    engines: dict[str, ScriptedEngine]


@pytest.fixture
async def router(model_server, start_router) -> Router:  # type: ignore[no-untyped-def]
    engines = {
        "edge": ScriptedEngine(context_window=400, reply_tokens=20),
        "gpu": ScriptedEngine(context_window=1000, reply_tokens=20),
        "hosted": ScriptedEngine(context_window=8192, reply_tokens=20),
    }
    addr = {tier: await model_server(engine) for tier, engine in engines.items()}
    server = await start_router(
        [
            ms_backend("edge-1", "edge", addr["edge"], context_window=400,
                       cost={"edge_per_mtok_usd": 0.01, "source": "test"}),
            ms_backend("gpu-1", "gpu", addr["gpu"], context_window=1000,
                       cost={"gpu_hourly_usd": 1.0, "gpu_throughput_tokens_per_s": 100,
                             "source": "test"}),
            ms_backend("hosted-1", "hosted", addr["hosted"], context_window=8192,
                       cost={"input_per_mtok_usd": 10, "output_per_mtok_usd": 30,
                             "source": "test"}),
        ]
    )  # fmt: skip
    return Router(f"127.0.0.1:{server.port}", engines)


async def cli(*argv: str) -> int:
    """``main(argv)`` in a worker thread: it runs its own event loop, like a program."""
    return await asyncio.to_thread(main, list(argv))


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


# --- chat and show -----------------------------------------------------------------------


async def test_two_chat_turns_then_show_lists_four_turns(router, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    a = router.address
    assert await cli("chat", "--address", a, "--session", "c-1", "--max-tokens", "8", "alpha") == 0
    first = capsys.readouterr().out
    assert "session c-1 · sliding · new: no turns yet" in first
    assert await cli("chat", "--address", a, "--session", "c-1", "--max-tokens", "8", "beta") == 0
    second = capsys.readouterr().out
    # The decision line says how the chosen backend got the history: both turns, whole.
    assert "session c-1 · sliding · all 2 turns · prompt " in second

    assert await cli("sessions", "show", "c-1", "--address", a) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    lines = [line.split() for line in out.splitlines()]
    rows = [cells for cells in lines if cells and cells[0] in ("0", "1", "2", "3")]
    assert [(seq, role) for seq, role, *_ in rows] == [
        ("0", "user"), ("1", "assistant"), ("2", "user"), ("3", "assistant")
    ]  # fmt: skip
    assert rows[0][4] == "alpha" and rows[2][4] == "beta"
    assert rows[1][3] == "edge-1" and rows[0][3] == "-"
    assert "session c-1 · strategy default" in out
    assert "4 turns, ~" in out and "summary: none" in out

    assert await cli("sessions", "show", "c-1", "--address", a, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["session_id"] == "c-1" and data["turn_count"] == 4
    assert [t["role"] for t in data["turns"]] == ["ROLE_USER", "ROLE_ASSISTANT"] * 2
    assert data["history_tokens"] == sum(t["tokens"] for t in data["turns"])


async def test_show_cuts_long_turns_to_the_terminal_unless_full(router, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    long_turn = " ".join(["lorem"] * 150)
    async with AsyncRouterClient(router.address, timeout_s=20) as client:
        await client.complete(make_request(long_turn, session_id="long", max_output_tokens=4))
    assert await cli("sessions", "show", "long", "--address", router.address) == 0
    out = capsys.readouterr().out
    assert "chars)" in out and "--full shows them whole" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert await cli("sessions", "show", "long", "--full", "--address", router.address) == 0
    full = capsys.readouterr().out
    assert full.count("lorem") == 150 + 4  # the turn, and the scripted echo of 4 tokens
    assert "chars)" not in full


# --- create, list, delete ----------------------------------------------------------------


async def test_create_list_delete(router, capsys):
    a = router.address
    rc = await cli(
        "sessions", "create", "--address", a, "--id", "team-1", "--system", "Be brief.",
        "--ttl", "120", "--strategy", "summarize",
    )  # fmt: skip
    assert rc == 0
    created = capsys.readouterr()
    assert created.out == "team-1\n"
    assert "created session team-1 (strategy summarize, expires after 2 min" in created.err
    assert await cli("sessions", "create", "--address", a, "--json") == 0
    made = json.loads(capsys.readouterr().out)
    assert (
        made["session_id"].startswith("s_") and made["strategy"] == "CONTEXT_STRATEGY_UNSPECIFIED"
    )

    assert await cli("sessions", "list", "--address", a) == 0
    table = capsys.readouterr().out
    assert "team-1" in table and made["session_id"] in table
    assert "summarize" in table and "Be brief." in table and "2 min" in table

    assert await cli("sessions", "delete", "team-1", "--address", a) == 0
    assert "deleted session team-1" in capsys.readouterr().err
    # Gone: deleting it again and showing it are NOT_FOUND, one line with the fix.
    for argv in (("delete", "team-1"), ("show", "team-1")):
        assert await cli("sessions", *argv, "--address", a) == 1
        line = one_error_line(capsys.readouterr().err)
        assert line.startswith("error: NOT_FOUND: no session 'team-1'")
        assert "hybrid-router sessions list" in line
        assert "hybrid-router sessions create --id team-1" in line
    assert await cli("sessions", "create", "--address", a, "--id", made["session_id"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: ALREADY_EXISTS: session {made['session_id']!r} exists")


async def test_list_pages_through_every_session(router, capsys):
    ids = [f"p-{i:03d}" for i in range(105)]  # the router's page is 100
    async with AsyncRouterClient(router.address, timeout_s=20) as client:
        await asyncio.gather(*(client.create_session(i) for i in ids))
    assert await cli("sessions", "list", "--address", router.address, "--json") == 0
    listed = json.loads(capsys.readouterr().out)["sessions"]
    assert sorted(s["session_id"] for s in listed) == ids
    assert await cli("sessions", "delete", "p-000", "--address", router.address, "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"session_id": "p-000", "deleted": True}


async def test_an_empty_list_says_so(router, capsys):
    assert await cli("sessions", "list", "--address", router.address) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no sessions at" in captured.err


# --- route --session: the fitting ---------------------------------------------------------


async def test_route_session_shows_how_each_backend_gets_the_history(router, capsys, monkeypatch):
    async with AsyncRouterClient(router.address, timeout_s=20) as client:
        for _ in range(6):
            done = await client.complete(
                make_request(WORDS, session_id="fit-1", max_output_tokens=20)
            )
            assert done.usage is not None and done.usage.complete
    monkeypatch.setenv("COLUMNS", "80")
    argv = ("route", "--address", router.address, "--session", "fit-1", "--max-tokens", "20")
    assert await cli(*argv, WORDS) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "session fit-1 · 12 turns stored · strategy sliding" in out
    # Under the table: one line per backend (a long one wraps, indented).
    below = out.split("12 turns stored · strategy sliding\n")[1].split("→ ")[0]
    fits = {line.split()[0]: line for line in below.splitlines() if line[:3].strip()}
    assert list(fits) == ["edge-1", "gpu-1", "hosted-1"]
    assert " of 12 turns, " in fits["edge-1"] and " dropped · prompt " in fits["edge-1"]
    assert "all 12 turns · prompt " in fits["hosted-1"]
    assert "→ edge-1 (edge)" in out
    assert "session fit-1 · sliding · " in out.split("→ edge-1 (edge)")[1]

    assert await cli(*argv, "--json", "--context-strategy", "strict", WORDS) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["session_id"] == "fit-1" and decision["session_turns"] == 12
    assert decision["context_strategy"] == "CONTEXT_STRATEGY_STRICT"
    by_name = {c["backend"]: c for c in decision["candidates"]}
    assert by_name["hosted-1"]["context"]["turns_kept"] == 12
    assert by_name["edge-1"]["context"]["note"].startswith("strict: the history needs")
    # route is a dry run: no turn was stored.
    async with AsyncRouterClient(router.address, timeout_s=20) as client:
        assert (await client.get_session("fit-1")).turn_count == 12


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["chat", "--session", "bad id", "hi"], "error: --session: 1-128 of letters"),
        (["route", "--context-strategy", "strict", "hi"],
         "error: --context-strategy: applies to a session: give a session id too"),
        (["sessions", "show", "bad id"], "error: session id: 1-128 of letters"),
        (["sessions", "delete", ""], "error: session id: 1-128 of letters"),
        (["sessions", "create", "--id", "a/b"], "error: --id: 1-128 of letters"),
        (["sessions", "create", "--ttl", str(2**32)], "error: --ttl: must be at most 4294967295"),
    ],
)  # fmt: skip
async def test_bad_ids_and_options_are_usage_errors(argv, message, router, capsys):
    assert await cli(*argv, "--address", router.address) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["chat", "--session", "x", "--context-strategy", "window", "hi"],
         "argument --context-strategy: invalid choice: 'window'"),
        (["sessions", "create", "--strategy", "window"],
         "argument --strategy: invalid choice: 'window'"),
    ],
)  # fmt: skip
async def test_a_bad_strategy_is_refused_by_the_parser(argv, message, capsys):
    assert await cli(*argv) == 2
    assert message in capsys.readouterr().err


async def test_the_routers_own_limits_are_its_errors(router, capsys):
    assert await cli("sessions", "create", "--ttl", "5", "--address", router.address) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: INVALID_ARGUMENT: ttl_s: must be 60-")
