"""Templates in the sessions store's backend (``templates.store: sessions``): one place for a
fleet, on the SQLite file, the Redis server or the DynamoDB table ``sessions.store`` names.

:func:`open_template_store` opens a session store of that kind (router/sessions/stores.py:
the same URL and ``env:`` resolution, region, endpoint, timeouts and error mapping), renamed
``templates store <kind> ...``, and keeps templates beside the sessions through it:

==========  ================================================================================
sqlite      tables ``templates`` (name, version | seq, doc) and ``template_pins`` (name |
            version) in the sessions file; ``publish`` is one ``BEGIN IMMEDIATE``
            transaction (look the version up, insert it at the next ``seq``)
redis       ``<p>templates:{t}:names`` (sorted set), ``<p>templates:{t}:<name>:versions``
            (hash version -> document), ``<p>templates:{t}:<name>:order`` (list, publish
            order), ``<p>templates:{t}:pins`` (hash name -> version); ``<p>`` is
            ``sessions.redis.key_prefix``. ``publish`` and ``pin`` are Lua scripts: Redis
            runs one at a time
dynamodb    pk ``#template#<name>``: sk ``version#<version>`` (doc, seq), ``meta`` (count:
            the next seq), ``pin`` (version); pk ``#templates``: sk ``<name>`` (the names).
            ``publish`` is one TransactWriteItems: the version on condition
            ``attribute_not_exists(pk)``, the count on condition it is still the one read
==========  ================================================================================

Documents are ``Template.to_dict()`` as compact JSON with sorted keys, read back through
:func:`~router.templates.model.parse`. Whichever of two concurrent publishes of one version
commits first wins; the other finds the version there and is a no-op (the same content) or
AlreadyExists. Names and versions that :mod:`router.templates.model` would refuse never
form a key: reads find nothing, ``pin`` is NotFound.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import sqlite3
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from router.errors import AlreadyExists, NotFound, RouterError, StoreUnavailable
from router.templates.model import Template, TemplateError, parse, valid_name, valid_version
from router.templates.store import TemplateStore, same

if TYPE_CHECKING:
    from router.config import SessionsConfig
    from router.sessions.dynamodb import DynamoDbSessionStore
    from router.sessions.redis import RedisSessionStore
    from router.sessions.sqlite import SqliteSessionStore


def open_template_store(cfg: SessionsConfig, environ: Mapping[str, str]) -> TemplateStore:
    """The template store on the backend ``cfg.store`` names (``env:VAR`` references read
    from ``environ`` now; a bad one is a ConfigError naming the ``sessions.`` key). Nothing
    is reached yet: the first call connects."""
    from router.sessions.stores import open_store

    inner = open_store(cfg, environ)
    inner.name = "templates store " + inner.name.removeprefix("sessions store ")
    if cfg.store == "redis":
        from router.sessions.redis import RedisSessionStore

        assert isinstance(inner, RedisSessionStore)
        return RedisTemplateStore(inner, key_prefix=cfg.redis.key_prefix)
    if cfg.store == "dynamodb":
        from router.sessions.dynamodb import DynamoDbSessionStore

        assert isinstance(inner, DynamoDbSessionStore)
        return DynamoDbTemplateStore(inner)
    from router.sessions.sqlite import SqliteSessionStore

    assert isinstance(inner, SqliteSessionStore)
    return SqliteTemplateStore(inner)


def dump(template: Template) -> str:
    """The stored document: compact JSON, sorted keys (equal content, equal text)."""
    return json.dumps(template.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _load(store: str, name: str, version: str, doc: str) -> Template:
    try:
        template = parse(json.loads(doc), f"{name}@{version}")
    except (ValueError, TemplateError) as exc:  # JSONDecodeError is a ValueError
        raise StoreUnavailable(store, f"stored template {name}@{version}: {exc}") from None
    if (template.name, template.version) != (name, version):
        raise StoreUnavailable(
            store,
            f"stored template {name}@{version} holds {template.name}@{template.version}",
        )
    return template


def _settle(store: str, template: Template, old_doc: str) -> bool:
    """A publish that found the version there: False (the same content) or AlreadyExists."""
    if old_doc == dump(template) or same(
        _load(store, template.name, template.version, old_doc), template
    ):
        return False
    raise AlreadyExists(
        f"template {template.name}@{template.version} is published with other content; "
        "versions never change: publish a new version"
    )


def _not_published(name: str, version: str) -> NotFound:
    return NotFound(f"template {name}@{version} is not published")


# --- SQLite ----------------------------------------------------------------------------

_SQL_SCHEMA = """
CREATE TABLE IF NOT EXISTS templates (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    seq INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS templates_order ON templates (name, seq);
CREATE TABLE IF NOT EXISTS template_pins (
    name TEXT NOT NULL PRIMARY KEY,
    version TEXT NOT NULL
) WITHOUT ROWID;
"""


class SqliteTemplateStore(TemplateStore):
    """Every call runs on the inner store's worker thread, over its connection."""

    def __init__(self, inner: SqliteSessionStore) -> None:
        self._inner = inner
        self.name = inner.name
        self._ready: sqlite3.Connection | None = None  # the connection the tables exist on

    def _tables(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        if conn is not self._ready:
            from router.sessions.sqlite import when_unlocked

            when_unlocked(lambda: conn.executescript(_SQL_SCHEMA))
            self._ready = conn
        return conn

    async def names(self) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            rows = self._tables(conn).execute("SELECT DISTINCT name FROM templates").fetchall()
            return sorted(r[0] for r in rows)

        return await self._inner.call(run)

    async def versions(self, name: str) -> list[str]:
        if not valid_name(name):
            return []

        def run(conn: sqlite3.Connection) -> list[str]:
            rows = self._tables(conn).execute(
                "SELECT version FROM templates WHERE name = ? ORDER BY seq", (name,)
            )
            return [r[0] for r in rows.fetchall()]

        return await self._inner.call(run)

    async def get(self, name: str, version: str) -> Template | None:
        if not (valid_name(name) and valid_version(version)):
            return None

        def run(conn: sqlite3.Connection) -> str | None:
            row = (
                self._tables(conn)
                .execute(
                    "SELECT doc FROM templates WHERE name = ? AND version = ?", (name, version)
                )
                .fetchone()
            )
            return None if row is None else str(row[0])

        doc = await self._inner.call(run)
        return None if doc is None else _load(self.name, name, version, doc)

    async def publish(self, template: Template) -> bool:
        from router.sessions.sqlite import transaction

        doc = dump(template)

        def run(conn: sqlite3.Connection) -> str | None:
            """None when stored; else the document the version already holds."""
            key = (template.name, template.version)
            with transaction(self._tables(conn)):
                row = conn.execute(
                    "SELECT doc FROM templates WHERE name = ? AND version = ?", key
                ).fetchone()
                if row is not None:
                    return str(row[0])
                conn.execute(
                    "INSERT INTO templates (name, version, seq, doc) VALUES (?, ?, "
                    "(SELECT COALESCE(MAX(seq) + 1, 0) FROM templates WHERE name = ?), ?)",
                    (*key, template.name, doc),
                )
            return None

        old = await self._inner.call(run)
        return True if old is None else _settle(self.name, template, old)

    async def pin(self, name: str, version: str) -> None:
        from router.sessions.sqlite import transaction

        if not (valid_name(name) and valid_version(version)):
            raise _not_published(name, version)

        def run(conn: sqlite3.Connection) -> bool:
            with transaction(self._tables(conn)):
                if not conn.execute(
                    "SELECT 1 FROM templates WHERE name = ? AND version = ?", (name, version)
                ).fetchone():
                    return False
                conn.execute(
                    "INSERT OR REPLACE INTO template_pins (name, version) VALUES (?, ?)",
                    (name, version),
                )
            return True

        if not await self._inner.call(run):
            raise _not_published(name, version)

    async def pinned(self, name: str) -> str:
        if not valid_name(name):
            return ""

        def run(conn: sqlite3.Connection) -> str:
            row = (
                self._tables(conn)
                .execute("SELECT version FROM template_pins WHERE name = ?", (name,))
                .fetchone()
            )
            return "" if row is None else str(row[0])

        return await self._inner.call(run)

    async def close(self) -> None:
        await self._inner.close()


# --- Redis -----------------------------------------------------------------------------

# KEYS: versions, order, names. ARGV: name, version, document.
# 1 when stored; else the document the version already holds.
_PUBLISH = """
local old = redis.call('hget', KEYS[1], ARGV[2])
if old then return old end
redis.call('hset', KEYS[1], ARGV[2], ARGV[3])
redis.call('rpush', KEYS[2], ARGV[2])
redis.call('zadd', KEYS[3], 0, ARGV[1])
return 1
"""

# KEYS: versions, pins. ARGV: name, version. 1 when pinned, 0 when not published.
_PIN = """
if redis.call('hexists', KEYS[1], ARGV[2]) == 0 then return 0 end
redis.call('hset', KEYS[2], ARGV[1], ARGV[2])
return 1
"""


class RedisTemplateStore(TemplateStore):
    """``{t}`` is a Redis Cluster hash tag: every template key is in one slot, so each
    script touches keys of one slot. Session keys are ``<p>{<tenant>}/...``: none starts
    ``<p>templates:``."""

    def __init__(self, inner: RedisSessionStore, *, key_prefix: str) -> None:
        self._inner = inner
        self.name = inner.name
        self._base = f"{key_prefix}templates:{{t}}:"
        self._publish = inner.client.register_script(_PUBLISH)
        self._pin = inner.client.register_script(_PIN)

    def _versions_key(self, name: str) -> str:
        return f"{self._base}{name}:versions"

    def _order_key(self, name: str) -> str:
        return f"{self._base}{name}:order"

    async def names(self) -> list[str]:
        names = await self._inner.call(self._inner.client.zrange(f"{self._base}names", 0, -1))
        return sorted(names)

    async def versions(self, name: str) -> list[str]:
        if not valid_name(name):
            return []
        return list(await self._inner.call(self._inner.client.lrange(self._order_key(name), 0, -1)))

    async def get(self, name: str, version: str) -> Template | None:
        if not (valid_name(name) and valid_version(version)):
            return None
        doc = await self._inner.call(self._inner.client.hget(self._versions_key(name), version))
        return None if doc is None else _load(self.name, name, version, doc)

    async def publish(self, template: Template) -> bool:
        keys = [
            self._versions_key(template.name),
            self._order_key(template.name),
            f"{self._base}names",
        ]
        got = await self._inner.call(
            self._publish(keys=keys, args=[template.name, template.version, dump(template)])
        )
        return True if got == 1 else _settle(self.name, template, str(got))

    async def pin(self, name: str, version: str) -> None:
        if not (valid_name(name) and valid_version(version)):
            raise _not_published(name, version)
        keys = [self._versions_key(name), f"{self._base}pins"]
        if not await self._inner.call(self._pin(keys=keys, args=[name, version])):
            raise _not_published(name, version)

    async def pinned(self, name: str) -> str:
        if not valid_name(name):
            return ""
        version = await self._inner.call(self._inner.client.hget(f"{self._base}pins", name))
        return version or ""

    async def close(self) -> None:
        await self._inner.close()


# --- DynamoDB --------------------------------------------------------------------------

Item = dict[str, dict[str, Any]]

#: Tries of one publish when publishes of other versions of the name commit first.
_PUBLISH_TRIES = 20
_NAMES_PK = "#templates"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _str(item: Item, name: str) -> str:
    v = item.get(name)
    return str(v["S"]) if v is not None else ""


def _int(item: Item, name: str) -> int:
    v = item.get(name)
    return int(v["N"]) if v is not None else 0


class _Lost(RouterError):
    """Control flow: another version's publish took the ``seq`` this one read."""

    def __init__(self) -> None:
        super().__init__("another publish took this seq first")


class DynamoDbTemplateStore(TemplateStore):
    """A session item's pk is ``<tenant>#<id>`` or ``<tenant>#``, its tenant never empty
    (``-`` for none) and never holding ``#``: no pk starting with ``#`` is a session's
    (as the sessions store's own ``#ping``). Items carry no ``expires``: TTL keeps them."""

    def __init__(self, inner: DynamoDbSessionStore) -> None:
        import botocore.exceptions

        self._inner = inner
        self.name = inner.name
        self._client: Any = inner.client
        self._table = inner.table
        self._client_error = botocore.exceptions.ClientError

    @staticmethod
    def _pk(name: str) -> str:
        return f"#template#{name}"

    def _key(self, name: str, sk: str) -> Item:
        return {"pk": _s(self._pk(name)), "sk": _s(sk)}

    def _code(self, exc: Any) -> str:
        return str(exc.response.get("Error", {}).get("Code", ""))

    def _reasons(self, exc: Any) -> list[str]:
        return [str(r.get("Code", "None")) for r in exc.response.get("CancellationReasons") or []]

    def _query(self, pk: str, **extra: Any) -> list[Item]:
        from router.sessions.dynamodb import query_all

        return query_all(self._client, self._table, pk, **extra)

    def _get(self, name: str, sk: str, *attributes: str) -> Item | None:
        got = self._client.get_item(
            TableName=self._table,
            Key=self._key(name, sk),
            ConsistentRead=True,
            ProjectionExpression=", ".join(f"#a{i}" for i in range(len(attributes))),
            ExpressionAttributeNames={f"#a{i}": a for i, a in enumerate(attributes)},
        )
        item: Item | None = got.get("Item")
        return item

    async def names(self) -> list[str]:
        items = await self._inner.call(self._query, _NAMES_PK)
        return sorted(_str(i, "sk") for i in items)

    async def versions(self, name: str) -> list[str]:
        if not valid_name(name):
            return []
        pk = self._pk(name)
        items = await self._inner.call(
            functools.partial(
                self._query,
                pk,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :v)",
                ExpressionAttributeValues={":pk": _s(pk), ":v": _s("version#")},
                ProjectionExpression="sk, seq",
            )
        )
        ordered = sorted(items, key=lambda i: _int(i, "seq"))
        return [_str(i, "sk").removeprefix("version#") for i in ordered]

    async def get(self, name: str, version: str) -> Template | None:
        if not (valid_name(name) and valid_version(version)):
            return None
        item = await self._inner.call(self._get, name, f"version#{version}", "doc")
        return None if item is None else _load(self.name, name, version, _str(item, "doc"))

    async def publish(self, template: Template) -> bool:
        doc = dump(template)
        for attempt in range(_PUBLISH_TRIES):
            try:
                old = await self._inner.call(self._publish_once, template, doc)
            except _Lost:
                await asyncio.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 7)))
                continue
            return True if old is None else _settle(self.name, template, old)
        raise StoreUnavailable(
            self.name,
            f"template {template.name}: {_PUBLISH_TRIES} publishes in a row lost to "
            "concurrent ones",
        )

    def _publish_once(self, template: Template, doc: str) -> str | None:
        """None when stored; else the document the version already holds. _Lost when a
        publish of another version took the next seq first."""
        name, version = template.name, template.version
        meta = self._get(name, "meta", "count")
        count = 0 if meta is None else _int(meta, "count")
        # The count moves from the value read (or is made, when there was none): one seq
        # per version, whichever publish commits first.
        counted: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        if meta is not None:
            counted = {
                "ConditionExpression": "#c = :old",
                "ExpressionAttributeNames": {"#c": "count"},
                "ExpressionAttributeValues": {":old": {"N": str(count)}},
            }
        ops: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        **self._key(name, f"version#{version}"),
                        "seq": {"N": str(count)},
                        "doc": _s(doc),
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {**self._key(name, "meta"), "count": {"N": str(count + 1)}},
                    **counted,
                }
            },
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {"pk": _s(_NAMES_PK), "sk": _s(name)},
                }
            },
        ]
        try:
            self._client.transact_write_items(TransactItems=ops)
            return None
        except self._client_error as exc:
            code, reasons = self._code(exc), self._reasons(exc)
            if code == "TransactionCanceledException" and reasons:
                if reasons[0] == "ConditionalCheckFailed":
                    item = self._get(name, f"version#{version}", "doc")
                    if item is not None:
                        return _str(item, "doc")
                    raise _Lost() from None  # there at the write, gone now: cannot happen
                if set(reasons) & {
                    "ConditionalCheckFailed",
                    "TransactionConflict",
                    "ThrottlingError",
                }:
                    raise _Lost() from None
            if code == "TransactionConflictException":
                raise _Lost() from None
            raise

    async def pin(self, name: str, version: str) -> None:
        if not (valid_name(name) and valid_version(version)):
            raise _not_published(name, version)
        if not await self._inner.call(self._pin_once, name, version):
            raise _not_published(name, version)

    def _pin_once(self, name: str, version: str) -> bool:
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "ConditionCheck": {
                            "TableName": self._table,
                            "Key": self._key(name, f"version#{version}"),
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": {**self._key(name, "pin"), "version": _s(version)},
                        }
                    },
                ]
            )
        except self._client_error as exc:
            if self._reasons(exc)[:1] == ["ConditionalCheckFailed"]:
                return False
            raise
        return True

    async def pinned(self, name: str) -> str:
        if not valid_name(name):
            return ""
        item = await self._inner.call(self._get, name, "pin", "version")
        return "" if item is None else _str(item, "version")

    async def close(self) -> None:
        await self._inner.close()
