"""One contract for every session store (router/sessions/store.py), against real servers:
a SQLite file, a real ``redis-server`` and moto's DynamoDB (storeservers.py).

The clock is injected: every call passes ``now_ms`` (T0 onwards), so expiry is tested
without waiting. Then each store's outage: Redis paused (a hang) and restarted, DynamoDB on
a closed port, SQLite in a directory that cannot be made.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from awsenv import aws_env  # noqa: F401 - fixture
from storeservers import (  # noqa: F401 - fixtures
    RedisProcess,
    free_port,
    moto_dynamodb,
    own_redis,
    redis_process,
)

from router.config import SessionsConfig
from router.errors import (
    AlreadyExists,
    ConfigError,
    InvalidRequest,
    SessionNotFound,
    StoreUnavailable,
)
from router.sessions.dynamodb import DynamoDbSessionStore, create_table, query_all
from router.sessions.model import SessionInfo, Summary, ToolCall, Turn
from router.sessions.redis import RedisSessionStore
from router.sessions.sqlite import SqliteSessionStore
from router.sessions.store import SessionStore
from router.sessions.stores import open_store

T0 = 1_750_000_000_000
TTL_S = 60
REGION = "us-east-1"
STORES = ("sqlite", "redis", "dynamodb")

MakeStore = Callable[..., Awaitable[SessionStore]]

#: The SQLite schema before turns kept tool calls (user_version 1).
OLD_SQLITE_SCHEMA = """
CREATE TABLE sessions (
    tenant TEXT NOT NULL, session_id TEXT NOT NULL, created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL, ttl_s INTEGER NOT NULL,
    system TEXT NOT NULL DEFAULT '', strategy TEXT NOT NULL DEFAULT '',
    turn_count INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (tenant, session_id)
);
CREATE INDEX sessions_expires ON sessions (expires_ms);
CREATE TABLE turns (
    tenant TEXT NOT NULL, session_id TEXT NOT NULL, seq INTEGER NOT NULL,
    role TEXT NOT NULL, content TEXT NOT NULL, at_ms INTEGER NOT NULL,
    backend TEXT NOT NULL DEFAULT '', PRIMARY KEY (tenant, session_id, seq)
) WITHOUT ROWID;
CREATE TABLE summaries (
    tenant TEXT NOT NULL, session_id TEXT NOT NULL, upto INTEGER NOT NULL,
    text TEXT NOT NULL, backend TEXT NOT NULL DEFAULT '', made_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, session_id)
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""


def info(
    sid: str, tenant: str = "acme", now: int = T0, ttl_s: int = TTL_S, **kw: Any
) -> SessionInfo:
    return SessionInfo(
        tenant=tenant,
        session_id=sid,
        created_ms=now,
        updated_ms=now,
        expires_ms=now + ttl_s * 1000,
        ttl_s=ttl_s,
        **kw,
    )


def pair(i: int, now: int = T0) -> list[Turn]:
    return [
        Turn(role="user", content=f"u{i}", at_ms=now),
        Turn(role="assistant", content=f"a{i}", at_ms=now, backend="b1"),
    ]


@pytest.fixture(params=STORES)
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Builds stores of the parametrized kind: each on fresh keys / table / file, or with
    ``replica=True`` on the same ones as the first (another router replica)."""
    kind = request.param
    made: list[SessionStore] = []
    run = uuid.uuid4().hex[:8]
    endpoint = redis_url = ""
    if kind == "redis":
        redis_url = request.getfixturevalue("redis_process").url
    if kind == "dynamodb":
        request.getfixturevalue("aws_env")
        endpoint = request.getfixturevalue("moto_dynamodb")

    async def build(
        *, ttl_s: int = TTL_S, max_turns: int = 10_000, replica: bool = False
    ) -> SessionStore:
        n = 0 if replica else len(made)
        store: SessionStore
        if kind == "sqlite":
            path = tmp_path / "state" / f"s{n}.sqlite3"
            store = SqliteSessionStore(str(path), ttl_s=ttl_s, max_turns=max_turns)
        elif kind == "redis":
            prefix = f"test-{run}-{n}:"
            store = RedisSessionStore(
                redis_url, key_prefix=prefix, timeout_s=5, ttl_s=ttl_s, max_turns=max_turns
            )
        else:
            table = f"sessions-{run}-{n}"
            if not replica:
                client = boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint)
                await asyncio.to_thread(create_table, client, table)
            store = DynamoDbSessionStore(
                table, region=REGION, endpoint_url=endpoint, ttl_s=ttl_s, max_turns=max_turns
            )
        made.append(store)
        return store

    yield build
    for store in made:
        await store.close()


# --- the contract -------------------------------------------------------------------------


async def test_create_get_info_list_delete(make: MakeStore) -> None:
    store = await make()
    made = await store.create(info("s-b", system="be brief", strategy="strict"))
    assert made.turn_count == 0 and made.system == "be brief" and made.strategy == "strict"
    for sid in ("s-a", "s-c", "s-d", "s-e"):
        await store.create(info(sid))

    got = await store.info("acme", "s-b", now_ms=T0 + 1)
    assert got == made
    session = await store.get("acme", "s-b", now_ms=T0 + 1)
    assert session is not None and session.info == made and session.turns == ()
    assert await store.info("acme", "nope", now_ms=T0) is None
    assert await store.get("acme", "nope", now_ms=T0) is None

    page1 = await store.list("acme", now_ms=T0, limit=2)
    assert [i.session_id for i in page1] == ["s-a", "s-b"]
    assert page1[1] == made
    page2 = await store.list("acme", now_ms=T0, limit=2, after="s-b")
    assert [i.session_id for i in page2] == ["s-c", "s-d"]
    page3 = await store.list("acme", now_ms=T0, limit=2, after="s-d")
    assert [i.session_id for i in page3] == ["s-e"]
    assert await store.list("acme", now_ms=T0, limit=2, after="s-e") == []

    assert await store.delete("acme", "s-c") is True
    assert await store.delete("acme", "s-c") is False
    assert await store.get("acme", "s-c", now_ms=T0) is None
    everything = await store.list("acme", now_ms=T0)
    assert [i.session_id for i in everything] == ["s-a", "s-b", "s-d", "s-e"]
    with pytest.raises(SessionNotFound):
        await store.append("acme", "s-c", pair(0), now_ms=T0)


async def test_append_and_get_in_order(make: MakeStore) -> None:
    store = await make()
    await store.create(info("s1"))
    assert await store.append("acme", "s1", pair(0), now_ms=T0 + 10) == 2
    assert await store.append("acme", "s1", pair(1, T0 + 20), now_ms=T0 + 20) == 4
    assert await store.append("acme", "s1", [Turn("user", "no time")], now_ms=T0 + 30) == 5
    session = await store.get("acme", "s1", now_ms=T0 + 40)
    assert session is not None
    assert [(t.seq, t.role, t.content) for t in session.turns] == [
        (0, "user", "u0"),
        (1, "assistant", "a0"),
        (2, "user", "u1"),
        (3, "assistant", "a1"),
        (4, "user", "no time"),
    ]
    assert session.turns[1].backend == "b1" and session.turns[2].at_ms == T0 + 20
    assert session.turns[4].at_ms == T0 + 30  # at_ms 0: the append's time
    assert session.info.turn_count == 5 and session.info.updated_ms == T0 + 30
    assert session.info.expires_ms == T0 + 30 + TTL_S * 1000
    text = 'naïve ☃ "quoted" {json} \\ back\nslash'
    await store.append("acme", "s1", [Turn("user", text)], now_ms=T0 + 50)
    session = await store.get("acme", "s1", now_ms=T0 + 60)
    assert session is not None and session.turns[-1].content == text


# --- tool calls and tool results as turns -------------------------------------------------

CALLS = (
    ToolCall("call_1", "get_weather", '{"city": "Oslo", "unit": "°C"}'),
    ToolCall("call_2", "get_time", "{}"),
)


def tool_turns(now: int = T0) -> list[Turn]:
    """A tool exchange: the question, the model's two calls (no text), both results, the
    answer."""
    return [
        Turn("user", "Weather and time in Oslo?", at_ms=now),
        Turn("assistant", "", at_ms=now, backend="b1", tool_calls=CALLS),
        Turn(
            "tool",
            '{"celsius": 12, "note": "naïve ☃ \\ \n"}',
            at_ms=now,
            tool_call_id="call_1",
            name="get_weather",
        ),  # fmt: skip
        Turn("tool", "14:05", at_ms=now, tool_call_id="call_2"),
        Turn("assistant", "12 °C at 14:05.", at_ms=now, backend="b1"),
    ]


def stored(turns: list[Turn], first_seq: int = 0) -> tuple[Turn, ...]:
    return tuple(replace(t, seq=first_seq + i) for i, t in enumerate(turns))


async def test_tool_calls_and_results_round_trip(make: MakeStore) -> None:
    store = await make()
    await store.create(info("tools"))
    assert await store.append("acme", "tools", tool_turns(), now_ms=T0) == 5
    # An assistant turn with text and a call, and a call whose arguments are "{}".
    more = [
        Turn("user", "And tomorrow?", at_ms=T0 + 1),
        Turn("assistant", "Checking.", at_ms=T0 + 1, backend="b2", tool_calls=CALLS[:1]),
    ]
    assert await store.append("acme", "tools", more, now_ms=T0 + 1) == 7
    session = await store.get("acme", "tools", now_ms=T0 + 2)
    assert session is not None
    assert session.turns == stored(tool_turns() + more)
    # Another replica (another connection, the same keys / table / file) reads the same.
    replica = await make(replica=True)
    again = await replica.get("acme", "tools", now_ms=T0 + 2)
    assert again is not None and again.turns == session.turns


async def write_old_turns(store: SessionStore, session_id: str, rows: list[Turn]) -> None:
    """A session with ``rows`` stored as a router did before turns kept tool calls: SQLite
    rows in a ``turns`` table without the tool columns, Redis JSON and DynamoDB items
    without the tool fields."""
    if isinstance(store, SqliteSessionStore):

        def write() -> None:
            store.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(store.path)
            conn.executescript(OLD_SQLITE_SCHEMA)
            conn.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, '', '', ?)",
                ("acme", session_id, T0, T0, T0 + TTL_S * 1000, TTL_S, len(rows)),
            )
            conn.executemany(
                "INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    ("acme", session_id, i, t.role, t.content, t.at_ms, t.backend)
                    for i, t in enumerate(rows)
                ],  # fmt: skip
            )
            conn.commit()
            conn.close()

        await asyncio.to_thread(write)
        return
    await store.create(info(session_id))
    if isinstance(store, RedisSessionStore):
        meta, turns_key, _, _ = store._keys("acme", session_id)
        for i, t in enumerate(rows):
            old = {"seq": i, "role": t.role, "content": t.content, "at_ms": t.at_ms,
                   "backend": t.backend}  # fmt: skip
            await store.client.rpush(turns_key, json.dumps(old, separators=(",", ":")))
        await store.client.hset(meta, "turn_count", str(len(rows)))
        return
    assert isinstance(store, DynamoDbSessionStore)
    client, table, pk = store.client, store.table, f"acme#{session_id}"

    def write_items() -> None:
        meta = client.get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": "meta"}})
        gen = meta["Item"]["gen"]["S"]
        for i, t in enumerate(rows):
            client.put_item(
                TableName=table,
                Item={
                    "pk": {"S": pk},
                    "sk": {"S": f"turn#{i:012d}"},
                    "gen": {"S": gen},
                    "seq": {"N": str(i)},
                    "role": {"S": t.role},
                    "content": {"S": t.content},
                    "at_ms": {"N": str(t.at_ms)},
                    "backend": {"S": t.backend},
                    "expires": {"N": str((T0 // 1000) + 2 * TTL_S)},
                },
            )
        client.update_item(
            TableName=table,
            Key={"pk": {"S": pk}, "sk": {"S": "meta"}},
            UpdateExpression="SET #c = :n",
            ExpressionAttributeNames={"#c": "count"},
            ExpressionAttributeValues={":n": {"N": str(len(rows))}},
        )

    await asyncio.to_thread(write_items)


async def raw_turn_fields(store: SessionStore, session_id: str) -> list[set[str]]:
    """The fields each turn is stored with (Redis: its JSON keys; DynamoDB: its item's
    attributes; SQLite: the columns that are not empty)."""
    if isinstance(store, RedisSessionStore):
        _, turns_key, _, _ = store._keys("acme", session_id)
        return [set(json.loads(item)) for item in await store.client.lrange(turns_key, 0, -1)]
    if isinstance(store, DynamoDbSessionStore):
        items = await asyncio.to_thread(query_all, store.client, store.table, f"acme#{session_id}")
        return [set(i) for i in items if i["sk"]["S"].startswith("turn#")]
    assert isinstance(store, SqliteSessionStore)

    def read() -> list[set[str]]:
        conn = sqlite3.connect(store.path)
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT * FROM turns WHERE session_id = ? ORDER BY seq", (session_id,)
        ).fetchall()
        conn.close()
        return [{k for k in r.keys() if r[k] not in ("", None)} for r in rows]

    return await asyncio.to_thread(read)


async def test_turns_stored_before_tool_calls_still_load(make: MakeStore) -> None:
    store = await make()
    old = [
        Turn("user", "before tools", at_ms=T0 - 5),
        Turn("assistant", "an old answer", at_ms=T0 - 4, backend="b1"),
    ]
    await write_old_turns(store, "old-1", old)
    session = await store.get("acme", "old-1", now_ms=T0)
    assert session is not None and session.turns == stored(old)
    assert all(t.tool_calls == () and t.tool_call_id == t.name == "" for t in session.turns)
    # Tool turns append after them, and all read back.
    assert await store.append("acme", "old-1", tool_turns(T0 + 1), now_ms=T0 + 1) == 7
    session = await store.get("acme", "old-1", now_ms=T0 + 2)
    assert session is not None and session.turns == stored(old + tool_turns(T0 + 1))
    # A turn without tool fields is still stored without them (what an older router reads).
    fields = await raw_turn_fields(store, "old-1")
    tool_fields = {"tool_calls", "tool_call_id", "name"}
    assert [f & tool_fields for f in fields] == [
        set(), set(), set(), {"tool_calls"}, {"tool_call_id", "name"}, {"tool_call_id"}, set(),
    ]  # fmt: skip


async def test_an_old_sqlite_file_gets_the_tool_columns_once(tmp_path: Path) -> None:
    """Two stores (two processes' worth of connections) opening the same old file at once
    both work: the columns are added once."""
    path = tmp_path / "old.sqlite3"
    first = SqliteSessionStore(str(path), ttl_s=TTL_S, max_turns=100)
    await write_old_turns(first, "old-2", [Turn("user", "kept", at_ms=T0)])
    stores = [first, *(SqliteSessionStore(str(path), ttl_s=TTL_S, max_turns=100) for _ in range(3))]
    try:
        got = await asyncio.gather(*(s.get("acme", "old-2", now_ms=T0) for s in stores))
        assert all(g is not None and g.turns == (Turn("user", "kept", T0, "", 0),) for g in got)
        await stores[1].append("acme", "old-2", tool_turns(T0 + 1)[1:3], now_ms=T0 + 1)
        after = await stores[2].get("acme", "old-2", now_ms=T0 + 2)
        assert after is not None and after.turns[1].tool_calls == CALLS
        assert after.turns[2].tool_call_id == "call_1"
    finally:
        for s in stores:
            await s.close()


async def test_create_twice_is_already_exists(make: MakeStore) -> None:
    store = await make()
    await store.create(info("dup"))
    await store.append("acme", "dup", pair(0), now_ms=T0)
    with pytest.raises(AlreadyExists, match="dup"):
        await store.create(info("dup", now=T0 + 5))
    session = await store.get("acme", "dup", now_ms=T0 + 5)
    assert session is not None and len(session.turns) == 2  # untouched


async def test_names_that_cannot_form_a_key(make: MakeStore) -> None:
    store = await make()
    with pytest.raises(InvalidRequest, match="session_id"):
        await store.create(info("a/b"))
    with pytest.raises(InvalidRequest, match="tenant"):
        await store.create(info("ok", tenant="ac}me"))
    await store.create(info("ok"))
    assert await store.get("acme#ok", "x", now_ms=T0) is None
    assert await store.get("acme", "ok/meta", now_ms=T0) is None
    with pytest.raises(SessionNotFound):
        await store.append("{acme}", "ok", pair(0), now_ms=T0)
    # No tenant (auth off) is a tenant of its own.
    await store.create(info("ok", tenant=""))
    assert [i.tenant for i in await store.list("", now_ms=T0)] == [""]


async def test_tenants_are_isolated(make: MakeStore) -> None:
    store = await make()
    await store.create(info("shared", tenant="a", system="A's"))
    await store.append("a", "shared", pair(0), now_ms=T0)
    await store.create(info("only-a", tenant="a"))
    # B sees nothing of A's...
    assert await store.get("b", "shared", now_ms=T0) is None
    assert await store.info("b", "only-a", now_ms=T0) is None
    assert await store.list("b", now_ms=T0) == []
    assert await store.delete("b", "only-a") is False
    with pytest.raises(SessionNotFound):
        await store.append("b", "shared", pair(1), now_ms=T0)
    assert await store.put_summary("b", "shared", Summary(upto=2, text="x")) is False
    assert await store.get_summary("b", "shared") is None
    # ...and the same id under B is another session.
    await store.create(info("shared", tenant="b", system="B's"))
    await store.append("b", "shared", [Turn("user", "b only")], now_ms=T0)
    a = await store.get("a", "shared", now_ms=T0)
    b = await store.get("b", "shared", now_ms=T0)
    assert a is not None and b is not None
    assert a.info.system == "A's" and [t.content for t in a.turns] == ["u0", "a0"]
    assert b.info.system == "B's" and [t.content for t in b.turns] == ["b only"]
    # Colons are legal in both names; they must not let one pair name another's keys.
    await store.create(info("x:y", tenant="t"))
    await store.append("t", "x:y", [Turn("user", "t / x:y")], now_ms=T0)
    await store.create(info("y", tenant="t:x"))
    got = await store.get("t:x", "y", now_ms=T0)
    assert got is not None and got.turns == ()
    assert [i.session_id for i in await store.list("a", now_ms=T0)] == ["only-a", "shared"]


async def test_expiry_by_the_callers_clock(make: MakeStore) -> None:
    store = await make()
    await store.create(info("old"))
    await store.append("acme", "old", pair(0), now_ms=T0)
    end = T0 + TTL_S * 1000
    assert await store.info("acme", "old", now_ms=end - 1) is not None
    # Expired: exactly like an unknown session, everywhere.
    assert await store.info("acme", "old", now_ms=end) is None
    assert await store.get("acme", "old", now_ms=end) is None
    assert await store.list("acme", now_ms=end) == []
    with pytest.raises(SessionNotFound):
        await store.append("acme", "old", pair(1), now_ms=end)
    # Creating the id again replaces it: a new, empty session.
    again = await store.create(info("old", now=end + 5, system="second life"))
    session = await store.get("acme", "old", now_ms=end + 6)
    assert session is not None and session.turns == () and session.info == again
    assert await store.get_summary("acme", "old") is None
    await store.append("acme", "old", pair(7), now_ms=end + 10)
    session = await store.get("acme", "old", now_ms=end + 11)
    assert session is not None
    assert [(t.seq, t.content) for t in session.turns] == [(0, "u7"), (1, "a7")]


async def test_append_moves_the_expiry(make: MakeStore) -> None:
    store = await make()
    await store.create(info("live"))
    half = T0 + TTL_S * 500
    await store.append("acme", "live", pair(0), now_ms=half)
    first_end = T0 + TTL_S * 1000
    got = await store.info("acme", "live", now_ms=first_end + 1)
    assert got is not None and got.expires_ms == half + TTL_S * 1000
    assert [i.session_id for i in await store.list("acme", now_ms=first_end + 1)] == ["live"]
    assert await store.info("acme", "live", now_ms=half + TTL_S * 1000) is None


async def test_fifty_concurrent_appends_all_land_in_pairs(make: MakeStore) -> None:
    store = await make()
    await store.create(info("busy"))
    counts = await asyncio.gather(
        *(store.append("acme", "busy", pair(i), now_ms=T0 + i) for i in range(50))
    )
    assert sorted(counts) == list(range(2, 101, 2))  # each saw its own, distinct count
    session = await store.get("acme", "busy", now_ms=T0 + 100)
    assert session is not None and session.info.turn_count == 100
    turns = session.turns
    assert [t.seq for t in turns] == list(range(100))
    seen = []
    for user, assistant in zip(turns[::2], turns[1::2], strict=True):
        assert (user.role, assistant.role) == ("user", "assistant")
        i = int(user.content[1:])
        assert assistant.content == f"a{i}", (user, assistant)
        seen.append(i)
    assert sorted(seen) == list(range(50))


async def test_replicas_appending_at_once_lose_nothing(make: MakeStore) -> None:
    """Three stores on one backing (three router replicas), ten appends each at once: the
    store itself (a transaction, a script, a conditional write) keeps every pair whole."""
    stores = [await make(), await make(replica=True), await make(replica=True)]
    await stores[0].create(info("shared"))
    await asyncio.gather(
        *(stores[i % 3].append("acme", "shared", pair(i), now_ms=T0 + i) for i in range(30))
    )
    for store in stores:
        session = await store.get("acme", "shared", now_ms=T0 + 100)
        assert session is not None and [t.seq for t in session.turns] == list(range(60))
        firsts = [int(t.content[1:]) for t in session.turns[::2]]
        assert [t.content for t in session.turns[1::2]] == [f"a{i}" for i in firsts]
        assert sorted(firsts) == list(range(30))


async def test_max_turns_drops_the_oldest(make: MakeStore) -> None:
    store = await make(max_turns=5)
    await store.create(info("long"))
    for i in range(4):
        await store.append("acme", "long", pair(i), now_ms=T0 + i)
    session = await store.get("acme", "long", now_ms=T0 + 10)
    assert session is not None and session.info.turn_count == 8
    assert [(t.seq, t.content) for t in session.turns] == [
        (3, "a1"),
        (4, "u2"),
        (5, "a2"),
        (6, "u3"),
        (7, "a3"),
    ]
    assert await store.append("acme", "long", [Turn("user", "last")], now_ms=T0 + 11) == 9
    session = await store.get("acme", "long", now_ms=T0 + 12)
    assert session is not None and [t.seq for t in session.turns] == [4, 5, 6, 7, 8]


async def test_summary_kept_only_when_it_covers_more(make: MakeStore) -> None:
    store = await make()
    await store.create(info("sum"))
    await store.append("acme", "sum", pair(0) + pair(1) + pair(2), now_ms=T0)
    assert await store.get_summary("acme", "sum") is None
    first = Summary(upto=4, text="four turns", backend="b1", made_ms=T0 + 1)
    assert await store.put_summary("acme", "sum", first) is True
    assert await store.get_summary("acme", "sum") == first
    assert await store.put_summary("acme", "sum", Summary(upto=4, text="same")) is False
    assert await store.put_summary("acme", "sum", Summary(upto=2, text="fewer")) is False
    assert await store.get_summary("acme", "sum") == first
    more = Summary(upto=6, text="six", backend="b2", made_ms=T0 + 2)
    assert await store.put_summary("acme", "sum", more) is True
    assert await store.get_summary("acme", "sum") == more
    assert await store.put_summary("acme", "nope", more) is False
    assert await store.get_summary("acme", "nope") is None
    assert await store.delete("acme", "sum") is True
    assert await store.get_summary("acme", "sum") is None


async def test_ping(make: MakeStore) -> None:
    store = await make()
    await store.ping()


# --- outages ------------------------------------------------------------------------------


async def test_redis_hang_is_unavailable_and_accepted_turns_survive(
    own_redis: RedisProcess,  # noqa: F811
) -> None:
    store = RedisSessionStore(
        own_redis.url, key_prefix="hang:", timeout_s=0.3, ttl_s=TTL_S, max_turns=100
    )
    try:
        await store.create(info("s"))
        for i in range(3):
            await store.append("acme", "s", pair(i), now_ms=T0 + i)
        own_redis.pause()  # SIGSTOP: connections open, nothing answers
        try:
            with pytest.raises(StoreUnavailable) as caught:
                await store.append("acme", "s", pair(3), now_ms=T0 + 3)
            assert caught.value.store == f"sessions store redis {own_redis.url}"
            assert str(caught.value).startswith(f"sessions store redis {own_redis.url}")
            assert "Timeout" in str(caught.value)
            with pytest.raises(StoreUnavailable):
                await store.get("acme", "s", now_ms=T0 + 3)
            with pytest.raises(StoreUnavailable):
                await store.ping()
        finally:
            own_redis.resume()
        session = await store.get("acme", "s", now_ms=T0 + 4)
        assert session is not None
        # The timed-out append may have been applied after all (its bytes were sent);
        # what was accepted before is all there, whole and in order.
        assert session.info.turn_count in (6, 8)
        assert [t.content for t in session.turns[:6]] == ["u0", "a0", "u1", "a1", "u2", "a2"]
        assert [t.seq for t in session.turns] == list(range(session.info.turn_count))
        assert (
            await store.append("acme", "s", pair(9), now_ms=T0 + 5) == session.info.turn_count + 2
        )
    finally:
        await store.close()


async def test_redis_restart_keeps_what_it_accepted(
    own_redis: RedisProcess,  # noqa: F811
) -> None:
    password_url = own_redis.url.replace("redis://", "redis://:hunter2@")
    store = RedisSessionStore(
        own_redis.url, key_prefix="restart:", timeout_s=0.5, ttl_s=TTL_S, max_turns=100
    )
    try:
        await store.create(info("s"))
        await store.append("acme", "s", pair(0), now_ms=T0)
        await store.append("acme", "s", pair(1), now_ms=T0 + 1)
        own_redis.stop()
        with pytest.raises(StoreUnavailable, match=f"sessions store redis {own_redis.url}"):
            await store.append("acme", "s", pair(2), now_ms=T0 + 2)
        with pytest.raises(StoreUnavailable, match="Connect"):
            await store.list("acme", now_ms=T0 + 2)
        own_redis.start()  # same port, same append-only file
        session = await store.get("acme", "s", now_ms=T0 + 3)
        assert session is not None
        assert [t.content for t in session.turns] == ["u0", "a0", "u1", "a1"]
        assert await store.append("acme", "s", pair(2), now_ms=T0 + 4) == 6
    finally:
        await store.close()
    # The password never appears in the store's name or its errors.
    own_redis.stop()
    secret = RedisSessionStore(
        password_url, key_prefix="p:", timeout_s=0.5, ttl_s=TTL_S, max_turns=10
    )
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await secret.ping()
        assert "hunter2" not in str(caught.value) and "hunter2" not in secret.name
        assert secret.name == f"sessions store redis {own_redis.url}"
    finally:
        await secret.close()


async def test_dynamodb_endpoint_down_is_unavailable(aws_env: None) -> None:  # noqa: F811
    store = DynamoDbSessionStore(
        "sessions",
        region=REGION,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        ttl_s=TTL_S,
        max_turns=100,
        timeout_s=1,
        max_attempts=1,
    )
    try:
        for call in (
            store.create(info("s")),
            store.get("acme", "s", now_ms=T0),
            store.append("acme", "s", pair(0), now_ms=T0),
            store.list("acme", now_ms=T0),
            store.ping(),
        ):
            with pytest.raises(StoreUnavailable) as caught:
                await call
            assert caught.value.store == "sessions store dynamodb table sessions"
            assert "Could not connect" in str(caught.value)
    finally:
        await store.close()


async def test_dynamodb_missing_table_and_region(
    aws_env: None,  # noqa: F811
    moto_dynamodb: str,  # noqa: F811
) -> None:
    store = DynamoDbSessionStore(
        "no-such-table", region=REGION, endpoint_url=moto_dynamodb, ttl_s=TTL_S, max_turns=10
    )
    try:
        with pytest.raises(StoreUnavailable, match="ResourceNotFoundException.*docs/sessions.md"):
            await store.ping()
    finally:
        await store.close()
    with pytest.raises(ConfigError, match="sessions.dynamodb.region"):
        DynamoDbSessionStore("t", region="", endpoint_url="", ttl_s=TTL_S, max_turns=10)


async def test_dynamodb_ttl_never_outruns_a_live_session(
    aws_env: None,  # noqa: F811
    moto_dynamodb: str,  # noqa: F811
) -> None:
    """DynamoDB's TTL (``expires``, epoch seconds) deletes items on its own: the turns, the
    summary and the index entry of a session still in use must expire after it does."""
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_dynamodb)
    table = f"ttl-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(create_table, client, table)
    store = DynamoDbSessionStore(
        table, region=REGION, endpoint_url=moto_dynamodb, ttl_s=TTL_S, max_turns=100
    )
    try:
        await store.create(info("long-lived"))
        await store.put_summary("acme", "long-lived", Summary(upto=1, text="s"))
        now = T0
        for i in range(8):  # eight appends, 40 s apart: alive for 5+ TTLs
            now = T0 + i * 40_000
            await store.append("acme", "long-lived", pair(i, now), now_ms=now)
        items = (await asyncio.to_thread(client.scan, TableName=table))["Items"]
        meta = next(i for i in items if i["sk"]["S"] == "meta")
        session_end = int(meta["expires"]["N"])
        assert session_end == (now + TTL_S * 1000) // 1000
        others = [i for i in items if i["sk"]["S"] != "meta"]
        assert len(others) == 16 + 1 + 1  # turns, the summary, the index entry
        for item in others:
            assert int(item["expires"]["N"]) >= session_end + TTL_S // 2, item["sk"]
    finally:
        await store.close()


async def test_sqlite_file_that_cannot_be_made_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    path = blocker / "state" / "sessions.sqlite3"
    store = SqliteSessionStore(str(path), ttl_s=TTL_S, max_turns=10)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.create(info("s"))
        assert caught.value.store == f"sessions store sqlite {path}"
        assert "Not a directory" in str(caught.value)
        with pytest.raises(StoreUnavailable, match="Not a directory"):
            await store.get("acme", "s", now_ms=T0)
    finally:
        await store.close()
    # A file that is not a database.
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not sqlite at all " * 512)
    store = SqliteSessionStore(str(junk), ttl_s=TTL_S, max_turns=10)
    try:
        with pytest.raises(StoreUnavailable, match="not a database"):
            await store.ping()
    finally:
        await store.close()


async def test_sqlite_file_survives_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    first = SqliteSessionStore(str(path), ttl_s=TTL_S, max_turns=10)
    await first.create(info("s"))
    await first.append("acme", "s", pair(0), now_ms=T0)
    await first.close()
    assert (path.stat().st_mode & 0o777) == 0o600
    second = SqliteSessionStore(str(path), ttl_s=TTL_S, max_turns=10)
    try:
        session = await second.get("acme", "s", now_ms=T0)
        assert session is not None and [t.content for t in session.turns] == ["u0", "a0"]
    finally:
        await second.close()


# --- open_store ---------------------------------------------------------------------------


async def test_open_store_picks_the_configured_one(
    tmp_path: Path,
    redis_process: RedisProcess,  # noqa: F811
    aws_env: None,  # noqa: F811
) -> None:
    state = tmp_path / "xdg-state"
    store = open_store(SessionsConfig(), {"XDG_STATE_HOME": str(state)})
    try:
        assert isinstance(store, SqliteSessionStore)
        default = state / "hybrid-router" / "sessions.sqlite3"
        assert store.name == f"sessions store sqlite {default}"
        assert not default.parent.exists()  # nothing is made before the first call
        await store.create(info("s"))
        assert default.is_file()
    finally:
        await store.close()
    home = open_store(SessionsConfig(), {"HOME": str(tmp_path / "home")})
    assert home.name.endswith(str(tmp_path / "home/.local/state/hybrid-router/sessions.sqlite3"))
    await home.close()

    cfg = SessionsConfig.model_validate(
        {"store": "redis", "redis": {"url": "env:SESSIONS_REDIS", "key_prefix": "o:"}}
    )
    with pytest.raises(ConfigError, match=r"sessions\.redis\.url.*SESSIONS_REDIS"):
        open_store(cfg, {})
    store = open_store(cfg, {"SESSIONS_REDIS": redis_process.url})
    try:
        assert isinstance(store, RedisSessionStore)
        await store.ping()
    finally:
        await store.close()

    cfg = SessionsConfig.model_validate(
        {"store": "dynamodb", "dynamodb": {"table": "t", "region": REGION}}
    )
    store = open_store(cfg, {})
    assert isinstance(store, DynamoDbSessionStore)
    assert store.name == "sessions store dynamodb table t"
    await store.close()


def test_only_the_chosen_store_is_imported(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from router.config import SessionsConfig\n"
        "from router.sessions.stores import open_store\n"
        f"open_store(SessionsConfig(), {{'XDG_STATE_HOME': {str(tmp_path)!r}}})\n"
        "loaded = [m for m in ('redis', 'boto3', 'router.sessions.redis',\n"
        "          'router.sessions.dynamodb') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
