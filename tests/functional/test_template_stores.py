"""One contract for every template store (router/templates/store.py), against real
servers: the templates file, and ``templates.store: sessions`` on a SQLite file, a real
``redis-server`` and moto's DynamoDB (storeservers.py); then a router serving what a
publish through the Redis store put there, and the CLI on a ``router.yaml`` naming it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from awsenv import aws_env  # noqa: F401 - fixture
from rtutil import collect, ms_backend, stub_for, text_of, user_request
from storeservers import free_port, moto_dynamodb, redis_process  # noqa: F401 - fixtures

from router.config import SessionsConfig
from router.errors import AlreadyExists, NotFound, StoreUnavailable
from router.sessions.dynamodb import create_table
from router.sessions.model import SessionInfo, Turn
from router.sessions.stores import open_store
from router.templates.backends import open_template_store
from router.templates.model import Template, parse
from router.templates.store import FileTemplateStore, TemplateRegistry, TemplateStore
from serving.engines.scripted import ScriptedEngine

REGION = "us-east-1"
KINDS = ("file", "sqlite", "redis", "dynamodb")
T0 = 1_750_000_000_000

MakeStore = Callable[..., Awaitable[TemplateStore]]


def doc(name: str, version: str, greeting: str = "hello") -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "description": f"{name} {version}",
        "variables": {"who": {"type": "string"}, "times": {"type": "integer", "default": "1"}},
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": greeting + " {{who}} x{{times}}"},
        ],
    }


def tpl(name: str, version: str, greeting: str = "hello") -> Template:
    return parse(doc(name, version, greeting))


def sessions_config(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """A ``sessions:`` section on fresh keys / table / file of ``kind``."""
    run = uuid.uuid4().hex[:8]
    if kind == "sqlite":
        return {"store": "sqlite", "sqlite": {"path": str(tmp_path / "state" / f"{run}.db")}}
    if kind == "redis":
        url = request.getfixturevalue("redis_process").url
        return {"store": "redis", "redis": {"url": url, "key_prefix": f"t-{run}:"}}
    request.getfixturevalue("aws_env")
    endpoint = request.getfixturevalue("moto_dynamodb")
    table = f"templates-{run}"
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint)
    create_table(client, table)
    client.close()
    return {
        "store": "dynamodb",
        "dynamodb": {"table": table, "region": REGION, "endpoint_url": endpoint},
    }


@pytest.fixture(params=KINDS)
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Builds stores of the parametrized kind, all on the same file / keys / table (each
    one another router replica, or the CLI)."""
    kind = request.param
    made: list[TemplateStore] = []
    section = None if kind == "file" else sessions_config(kind, request, tmp_path)

    async def build() -> TemplateStore:
        if section is None:
            store: TemplateStore = FileTemplateStore(str(tmp_path / "templates.yaml"))
        else:
            store = open_template_store(SessionsConfig.model_validate(section), {})
        made.append(store)
        return store

    build.kind = kind  # type: ignore[attr-defined]
    yield build
    for store in made:
        await store.close()


# --- the contract -------------------------------------------------------------------------


async def test_publish_versions_get_pin(make: MakeStore) -> None:
    store = await make()
    assert await store.names() == []
    assert await store.versions("greet") == []
    assert await store.get("greet", "1") is None
    assert await store.pinned("greet") == ""

    # Versions in publish order, not sorted: 10 before 9, b before a.
    for version in ("10", "9", "b", "a"):
        assert await store.publish(tpl("greet", version, f"hi {version}")) is True
    assert await store.publish(tpl("alpha", "1")) is True
    assert await store.publish(tpl("Zed", "1")) is True
    assert await store.versions("greet") == ["10", "9", "b", "a"]
    assert await store.names() == ["Zed", "alpha", "greet"]

    got = await store.get("greet", "9")
    assert got == tpl("greet", "9", "hi 9")
    assert got is not None and got.to_dict() == doc("greet", "9", "hi 9")
    text = 'naïve ☃ "quoted" {json} \\ back\nslash'
    odd = {**doc("odd", "1"), "messages": [{"role": "user", "content": text}], "variables": {}}
    assert await store.publish(parse(odd))
    got = await store.get("odd", "1")
    assert got is not None and got.messages == (("user", text),)

    # Republishing the same content: a no-op; other content: AlreadyExists, nothing moved.
    assert await store.publish(tpl("greet", "9", "hi 9")) is False
    with pytest.raises(AlreadyExists, match=r"greet@9 is published with other content"):
        await store.publish(tpl("greet", "9", "changed"))
    assert await store.versions("greet") == ["10", "9", "b", "a"]
    assert await store.get("greet", "9") == tpl("greet", "9", "hi 9")

    await store.pin("greet", "b")
    assert await store.pinned("greet") == "b"
    assert await store.pinned("alpha") == ""
    await store.pin("greet", "10")
    assert await store.pinned("greet") == "10"
    with pytest.raises(NotFound, match=r"greet@nope is not published"):
        await store.pin("greet", "nope")
    with pytest.raises(NotFound, match=r"nobody@1 is not published"):
        await store.pin("nobody", "1")
    assert await store.pinned("greet") == "10"

    # Another replica sees all of it.
    other = await make()
    assert await other.names() == ["Zed", "alpha", "greet", "odd"]
    assert await other.versions("greet") == ["10", "9", "b", "a"]
    assert await other.pinned("greet") == "10"
    assert await other.publish(tpl("greet", "a", "hi a")) is False


async def test_names_that_cannot_form_a_key(make: MakeStore) -> None:
    store = await make()
    await store.publish(tpl("greet", "1"))
    for name in ("greet:versions", "{t}", "a/b", "", "#template#greet"):
        assert await store.versions(name) == []
        assert await store.get(name, "1") is None
        assert await store.pinned(name) == ""
        with pytest.raises(NotFound):
            await store.pin(name, "1")
    assert await store.get("greet", "1:x") is None
    with pytest.raises(NotFound):
        await store.pin("greet", "")
    assert await store.names() == ["greet"]


async def test_concurrent_publishes_of_one_version_one_wins(make: MakeStore) -> None:
    """Ten replicas publish version 1 of one name at once, each with other content: one
    wins, nine get AlreadyExists, and every replica reads the winner."""
    stores = [await make() for _ in range(10)]
    await stores[0].publish(tpl("race", "0"))  # a name that exists, and one that does not
    for name in ("race", "fresh"):
        results = await asyncio.gather(
            *(s.publish(tpl(name, "1", f"from {i}")) for i, s in enumerate(stores)),
            return_exceptions=True,
        )
        won = [i for i, r in enumerate(results) if r is True]
        lost = [r for r in results if isinstance(r, AlreadyExists)]
        assert len(won) == 1 and len(lost) == 9, results
        winner = tpl(name, "1", f"from {won[0]}")
        for s in stores:
            assert await s.get(name, "1") == winner
    assert await stores[5].versions("race") == ["0", "1"]
    assert await stores[5].versions("fresh") == ["1"]


async def test_concurrent_publishes_of_many_versions_all_land(make: MakeStore) -> None:
    stores = [await make() for _ in range(5)]
    results = await asyncio.gather(*(stores[i % 5].publish(tpl("many", str(i))) for i in range(20)))
    assert results == [True] * 20
    versions = await stores[0].versions("many")
    assert sorted(versions, key=int) == [str(i) for i in range(20)]
    assert await stores[3].versions("many") == versions  # one order, the same everywhere


async def test_a_registry_sees_a_new_pin_after_pin_ttl(make: MakeStore) -> None:
    publisher = await make()
    await publisher.publish(tpl("greet", "1"))
    await publisher.publish(tpl("greet", "2", "howdy"))
    now = [100.0]
    registry = TemplateRegistry(await make(), pin_ttl_s=5, clock=lambda: now[0])
    assert (await registry.resolve("greet")).version == "2"  # no pin: the newest
    await publisher.pin("greet", "1")
    now[0] += 4.9
    assert (await registry.resolve("greet")).version == "2"  # cached until pin_ttl_s
    now[0] += 0.1
    assert (await registry.resolve("greet")).version == "1"
    await publisher.publish(tpl("greet", "3", "hey"))
    assert (await registry.resolve("greet", "3")).messages[1][1].startswith("hey")
    with pytest.raises(NotFound, match=r"greet@9 is not published \(versions: 1, 2, 3\)"):
        await registry.resolve("greet", "9")


@pytest.mark.parametrize("kind", ["sqlite", "redis", "dynamodb"])
async def test_templates_and_sessions_share_a_backend_apart(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A tenant named ``template`` with a session named like a template, and a tenant named
    ``templates``: neither store sees the other's records."""
    cfg = SessionsConfig.model_validate(sessions_config(kind, request, tmp_path))
    sessions, templates = open_store(cfg, {}), open_template_store(cfg, {})
    try:
        for tenant in ("template", "templates", "t"):
            info = SessionInfo(
                tenant=tenant,
                session_id="greet",
                created_ms=T0,
                updated_ms=T0,
                expires_ms=T0 + 60_000,
                ttl_s=60,
            )
            await sessions.create(info)
            await sessions.append(tenant, "greet", [Turn("user", "hi")], now_ms=T0)
        await templates.publish(tpl("greet", "1"))
        await templates.pin("greet", "1")
        assert await templates.names() == ["greet"]
        assert await templates.versions("greet") == ["1"]
        for tenant in ("template", "templates", "t"):
            session = await sessions.get(tenant, "greet", now_ms=T0)
            assert session is not None and [t.content for t in session.turns] == ["hi"]
            assert [i.session_id for i in await sessions.list(tenant, now_ms=T0)] == ["greet"]
            assert await sessions.delete(tenant, "greet")
        assert await templates.get("greet", "1") == tpl("greet", "1")
        assert await templates.pinned("greet") == "1"
    finally:
        await sessions.close()
        await templates.close()


# --- names and outages --------------------------------------------------------------------


async def test_store_names_and_an_unreachable_redis() -> None:
    port = free_port()  # nothing listens
    cfg = SessionsConfig.model_validate(
        {
            "store": "redis",
            "redis": {"url": f"redis://:hunter2@127.0.0.1:{port}/0", "timeout_s": 0.5},
        }
    )
    store = open_template_store(cfg, {})
    try:
        assert store.name == f"templates store redis redis://127.0.0.1:{port}/0"
        with pytest.raises(StoreUnavailable) as caught:
            await store.publish(tpl("greet", "1"))
        assert caught.value.store == store.name
        assert str(caught.value).startswith(f"{store.name} is unavailable: ")
        assert "hunter2" not in str(caught.value)
    finally:
        await store.close()


@pytest.mark.usefixtures("aws_env")
async def test_an_unreachable_dynamodb_and_a_missing_table(moto_dynamodb: str) -> None:  # noqa: F811
    port = free_port()
    for endpoint, table, words in (
        (f"http://127.0.0.1:{port}", "t1", "EndpointConnectionError"),
        (moto_dynamodb, "no-such-table", "ResourceNotFoundException"),
    ):
        cfg = SessionsConfig.model_validate(
            {
                "store": "dynamodb",
                "dynamodb": {"table": table, "region": REGION, "endpoint_url": endpoint},
            }
        )
        store = open_template_store(cfg, {})
        try:
            assert store.name == f"templates store dynamodb table {table}"
            with pytest.raises(StoreUnavailable, match=words) as caught:
                await store.names()
            assert caught.value.store == store.name
        finally:
            await store.close()


async def test_an_unusable_sqlite_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = blocker / "templates.db"  # a directory that cannot be made
    cfg = SessionsConfig.model_validate({"store": "sqlite", "sqlite": {"path": str(path)}})
    store = open_template_store(cfg, {})
    try:
        assert store.name == f"templates store sqlite {path}"
        with pytest.raises(StoreUnavailable, match="templates store sqlite") as caught:
            await store.pin("greet", "1")
        assert caught.value.store == store.name
    finally:
        await store.close()


# --- through a router, and the CLI ---------------------------------------------------------


async def test_a_router_serves_what_a_publish_to_redis_put_there(
    redis_process: Any,  # noqa: F811
    model_server: Any,
    start_router: Any,
    channel_to: Any,
) -> None:
    sessions = {"store": "redis", "redis": {"url": redis_process.url, "key_prefix": "rt:"}}
    store = open_template_store(SessionsConfig.model_validate(sessions), {})
    try:
        await store.publish(tpl("greet", "1"))
        address = await model_server(ScriptedEngine(reply_tokens=4))
        router = await start_router(
            [ms_backend("gpu-1", "gpu", address)],
            sessions=sessions,
            templates={"store": "sessions", "pin_ttl_s": 0.05},
        )
        stub = stub_for(channel_to(router))

        async def generate(**fields: Any) -> tuple[str, str]:
            request = user_request("", template="greet", **fields)
            del request.messages[:]
            events = await collect(stub.Generate(request))
            usage = events[-1].usage
            assert usage.template == "greet"
            return usage.template_version, text_of(events)

        version, text = await generate(template_variables={"who": "Ada"})
        assert version == "1" and text.startswith("hello Ada x1")  # the last message, echoed
        # A new version is the default (no pin) once the pin cache lapses; then a pin wins.
        await store.publish(tpl("greet", "2", "howdy"))
        await asyncio.sleep(0.1)
        version, text = await generate(template_variables={"who": "Bo", "times": "2"})
        assert version == "2" and text.startswith("howdy Bo x2")
        await store.pin("greet", "1")
        await asyncio.sleep(0.1)
        assert (await generate(template_variables={"who": "Cy"}))[0] == "1"
        version, text = await generate(template_version="2", template_variables={"who": "Di"})
        assert version == "2" and text.startswith("howdy Di x1")
    finally:
        await store.close()


def test_the_cli_on_a_config_naming_the_sessions_store(
    redis_process: Any,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hybrid_router_cli.main import main

    monkeypatch.setenv("TEST_TEMPLATES_REDIS_URL", redis_process.url)
    config = tmp_path / "router.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sessions": {
                    "store": "redis",
                    "redis": {"url": "env:TEST_TEMPLATES_REDIS_URL", "key_prefix": "cli:"},
                },
                "templates": {"store": "sessions"},
            }
        )
    )
    for version, greeting in (("1", "hello"), ("2", "howdy")):
        path = tmp_path / f"v{version}.yaml"
        path.write_text(yaml.safe_dump(doc("greet", version, greeting)))
        assert main(["templates", "publish", str(path), "--config", str(config)]) == 0
    assert "in templates store redis redis://127.0.0.1:" in capsys.readouterr().err
    assert main(["templates", "pin", "greet", "1", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["templates", "list", "--config", str(config), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == {"templates": [{"name": "greet", "versions": ["1", "2"], "pinned": "1"}]}
    assert main(["templates", "show", "greet", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == doc("greet", "1")
    assert main(["templates", "list", "--config", str(config)]) == 0  # the table
    out = capsys.readouterr().out
    assert "greet" in out and "1, 2" in out
    # A changed version is refused; an unknown pin is NOT_FOUND; both exit 1.
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(doc("greet", "1", "changed")))
    assert main(["templates", "publish", str(changed), "--config", str(config)]) == 1
    assert "publish a new version" in capsys.readouterr().err
    assert main(["templates", "pin", "greet", "9", "--config", str(config)]) == 1
    assert "greet@9 is not published" in capsys.readouterr().err
    # The router's store sees what the CLI did.
    store = open_template_store(
        SessionsConfig.model_validate(
            {"store": "redis", "redis": {"url": redis_process.url, "key_prefix": "cli:"}}
        ),
        {},
    )

    async def read() -> tuple[list[str], str]:
        try:
            return await store.versions("greet"), await store.pinned("greet")
        finally:
            await store.close()

    assert asyncio.run(read()) == (["1", "2"], "1")


def test_the_cli_on_a_config_naming_the_sessions_sqlite_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hybrid_router_cli.main import main

    config = tmp_path / "router.yaml"
    db = tmp_path / "state" / "sessions.sqlite3"
    config.write_text(
        yaml.safe_dump(
            {
                "sessions": {"sqlite": {"path": str(db)}},
                "templates": {"store": "sessions"},
            }
        )
    )
    assert main(["templates", "list", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"templates": []}
    path = tmp_path / "v1.yaml"
    path.write_text(yaml.safe_dump(doc("greet", "1")))
    assert main(["templates", "publish", str(path), "--pin", "--config", str(config)]) == 0
    assert f"pinned in templates store sqlite {db}" in capsys.readouterr().err
    assert main(["templates", "list", "--config", str(config), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == {"templates": [{"name": "greet", "versions": ["1"], "pinned": "1"}]}
