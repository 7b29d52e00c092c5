"""Sessions in one DynamoDB table (boto3): deployments that keep their state in AWS.

One table, partition key ``pk`` and sort key ``sk`` (strings), TTL attribute ``expires``
(:func:`create_table`; docs/sessions.md has the AWS CLI commands). ``<t>`` is the tenant
(``-`` for none); tenants and ids never contain ``#`` (router/sessions/stores.py checks), so
no tenant or id can name another's items.

=====================  =========================  ===========================================
pk                     sk                         item
=====================  =========================  ===========================================
``<t>#<id>``           ``meta``                   the session: gen, created_ms, updated_ms,
                                                  expires_ms, ttl_s, system, strategy,
                                                  count (the next ``seq``), aux_expires;
                                                  ``expires`` = expires_ms in epoch seconds
``<t>#<id>``           ``turn#<seq, 12 digits>``  one turn: gen, seq, role, content, at_ms,
                                                  backend, expires; only when set:
                                                  tool_calls (a JSON array of
                                                  ``{"id", "name", "arguments"}``),
                                                  tool_call_id, name
``<t>#<id>``           ``summary``                gen, upto, text, backend, made_ms, expires
``<t>#``               ``session#<id>``           the tenant's index for ``list``: gen, expires
=====================  =========================  ===========================================

``gen`` is a random token per incarnation of a session id: creating an id again after it
expired starts a new ``gen``, and every read ignores items of another ``gen`` (left over
until DynamoDB's TTL removes them, or overwritten by the new incarnation's turns).

``append`` reads ``count`` from the meta item, then writes in one TransactWriteItems: the
meta item updated on condition ``count = :old``, same ``gen``, not expired, and the turns
``turn#<old>..`` put on condition that no turn of this ``gen`` holds their ``sk``. When
another append committed first, the transaction is cancelled, and it is tried again from
the new count (at most 40 times, with short jittered sleeps): two appends never overwrite
each other, and none is lost. Turns past ``max_turns`` are deleted after the write (best
effort: reads skip them anyway).

Expiry: whether a session is live is judged from ``expires_ms`` against the caller's clock;
DynamoDB's TTL only cleans up, late. The turns, the summary and the index entry carry an
``expires`` at least half a ``ttl_s`` past the session's own (``aux_expires`` on the meta
item is the bound); an append that moves the session past it first moves theirs (about once
per ``ttl_s`` of activity), so TTL never removes a live session's turns.

Every call runs in this store's worker threads (one boto3 client, built at construction so
a missing region fails at start). A connection error or an error answer is
StoreUnavailable naming ``sessions store dynamodb table <name>``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from hybrid_router.refs import quiet_botocore_bodies

from router.errors import (
    AlreadyExists,
    ConfigError,
    InvalidRequest,
    RouterError,
    SessionNotFound,
    StoreUnavailable,
)
from router.sessions.model import Session, SessionInfo, Summary, Turn, calls_from_json, calls_json
from router.sessions.store import SessionStore
from router.sessions.stores import expired, new_info, require_names, valid_names

log = logging.getLogger(__name__)

T = TypeVar("T")
Item = dict[str, dict[str, Any]]

#: Tries of one append when other appends win the race (each try re-reads the count).
_APPEND_TRIES = 40
#: Worker threads (and pooled HTTP connections) of one store.
_WORKERS = 16
#: Items per TransactWriteItems (DynamoDB's limit is 100).
_TRANSACT_MAX = 100
_META = "meta"
_SUMMARY = "summary"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(int(value))}


def _int(item: Item, name: str, default: int = 0) -> int:
    v = item.get(name)
    return int(v["N"]) if v is not None else default


def _str(item: Item, name: str) -> str:
    v = item.get(name)
    return str(v["S"]) if v is not None else ""


def _secs(ms: int) -> int:
    """Epoch seconds at or after ``ms`` (DynamoDB TTL is in seconds)."""
    return -(-ms // 1000)


def _turn_sk(seq: int) -> str:
    return f"turn#{seq:012d}"


def create_table(client: Any, table: str) -> None:
    """Create the sessions table with a boto3 DynamoDB ``client``: ``pk`` (HASH) and ``sk``
    (RANGE), both strings, on-demand billing, TTL on ``expires``. Waits until it is active.
    (Tests use it; for a real account see docs/sessions.md.)"""
    client.create_table(
        TableName=table,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(
        TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    client.update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"},
    )


class _Queue:
    """The appends of this store to one session, one at a time, and the meta item the last
    one wrote (the next one's first guess: no read while appends queue up)."""

    __slots__ = ("lock", "users", "meta")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0
        self.meta: Item | None = None


class _Queues:
    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[_Queue]:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
        queue.users += 1
        try:
            async with queue.lock:
                yield queue
        finally:
            queue.users -= 1
            if queue.users == 0:
                del self._queues[key]


class _Retry(RouterError):
    """Control flow, never raised out of the store: an append lost a race; carries the meta
    item the winner left, when DynamoDB sent it."""

    def __init__(self, meta: Item | None) -> None:
        super().__init__("another append to this session committed first")
        self.meta = meta


def dynamodb_client(
    section: str,
    what: str,
    *,
    region: str,
    endpoint_url: str,
    timeout_s: float,
    max_attempts: int,
    pool: int,
) -> Any:
    """A boto3 DynamoDB client for a state store (the sessions table, the ledger table);
    a missing region or a malformed endpoint is a ConfigError naming ``section``'s key."""
    import boto3
    import botocore.config
    import botocore.exceptions

    config = botocore.config.Config(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"mode": "standard", "total_max_attempts": max(1, max_attempts)},
        max_pool_connections=pool,
        user_agent_appid="hybrid-router",
    )
    try:
        return boto3.session.Session().client(
            "dynamodb",
            region_name=region or None,
            endpoint_url=endpoint_url or None,
            config=config,
        )
    except botocore.exceptions.NoRegionError:
        raise ConfigError(
            f"no AWS region for {what}: set {section}.region (e.g. us-east-1) or AWS_REGION",
            key=f"{section}.region",
        ) from None
    except ValueError as exc:  # a malformed endpoint_url
        raise ConfigError(str(exc), key=f"{section}.endpoint_url") from None


def query_all(client: Any, table: str, pk: str, **extra: Any) -> list[Item]:
    """Every item under partition key ``pk`` (all pages, consistent reads); ``extra``:
    more Query arguments (a projection, a sort-key condition merged by the caller)."""
    items: list[Item] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": _s(pk)},
        "ConsistentRead": True,
        **extra,
    }
    while True:
        page = client.query(**kwargs)
        items += page.get("Items", [])
        last = page.get("LastEvaluatedKey")
        if not last:
            return items
        kwargs["ExclusiveStartKey"] = last


class DynamoDbSessionStore(SessionStore):
    def __init__(
        self,
        table: str,
        *,
        region: str,
        endpoint_url: str,
        ttl_s: int,
        max_turns: int,
        timeout_s: float = 5.0,
        max_attempts: int = 3,
    ) -> None:

        import botocore.exceptions

        self.name = f"sessions store dynamodb table {table}"
        self._table = table
        self._ttl_s = ttl_s
        self._max_turns = max(1, max_turns)
        quiet_botocore_bodies()
        self._client: Any = dynamodb_client(
            "sessions.dynamodb",
            "the sessions table",
            region=region,
            endpoint_url=endpoint_url,
            timeout_s=timeout_s,
            max_attempts=max_attempts,
            pool=_WORKERS,
        )
        self._client_error = botocore.exceptions.ClientError
        self._boto_error = botocore.exceptions.BotoCoreError
        self._executor = ThreadPoolExecutor(
            max_workers=_WORKERS, thread_name_prefix="sessions-dynamodb"
        )
        self._queues = _Queues()

    # --- plumbing -----------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 DynamoDB client: for other records kept in the same table
        (router/templates/backends.py); use it inside :meth:`call`."""
        return self._client

    @property
    def table(self) -> str:
        return self._table

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on this store's worker threads; a ClientError or a connection error
        it lets out is StoreUnavailable naming ``name``."""
        return await self._call(fn, *args)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            done = loop.run_in_executor(self._executor, functools.partial(self._guard, fn, *args))
        except RuntimeError as exc:  # submitted after close()
            raise StoreUnavailable(self.name, f"closed ({exc})") from None
        return await done

    def _guard(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except self._client_error as exc:
            raise self._unavailable(exc) from None
        except (self._boto_error, OSError) as exc:
            raise StoreUnavailable(self.name, f"{type(exc).__name__}: {exc}") from None

    def _unavailable(self, exc: Any) -> StoreUnavailable:
        err = exc.response.get("Error", {})
        code = err.get("Code", "")
        problem = f"{code}: {err.get('Message', '')}".strip(": ")
        if code == "ResourceNotFoundException":
            problem += " (does the table exist in this region? docs/sessions.md creates it)"
        return StoreUnavailable(self.name, problem or str(exc))

    @staticmethod
    def _code(exc: Any) -> str:
        return str(exc.response.get("Error", {}).get("Code", ""))

    @staticmethod
    def _reasons(exc: Any) -> list[dict[str, Any]]:
        return list(exc.response.get("CancellationReasons") or [])

    def _pk(self, tenant: str, session_id: str) -> str:
        return f"{tenant or '-'}#{session_id}"

    def _index_key(self, tenant: str, session_id: str) -> Item:
        return {"pk": _s(f"{tenant or '-'}#"), "sk": _s(f"session#{session_id}")}

    def _get_meta(self, pk: str) -> Item | None:
        got = self._client.get_item(
            TableName=self._table,
            Key={"pk": _s(pk), "sk": _s(_META)},
            ConsistentRead=True,
        )
        item: Item | None = got.get("Item")
        return item

    def _query(self, pk: str, **extra: Any) -> list[Item]:
        return query_all(self._client, self._table, pk, **extra)

    def _delete_items(self, keys: Sequence[Item], gen: str) -> None:
        """Delete ``keys`` where they still hold ``gen`` (another incarnation's are kept):
        transactions of up to 100, item by item when one is cancelled."""
        for i in range(0, len(keys), _TRANSACT_MAX):
            chunk = keys[i : i + _TRANSACT_MAX]
            ops = [
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": key,
                        "ConditionExpression": "#g = :g",
                        "ExpressionAttributeNames": {"#g": "gen"},
                        "ExpressionAttributeValues": {":g": _s(gen)},
                    }
                }
                for key in chunk
            ]
            try:
                self._client.transact_write_items(TransactItems=ops)
                continue
            except self._client_error as exc:
                if self._code(exc) != "TransactionCanceledException":
                    raise
            for op in ops:
                try:
                    self._client.delete_item(**op["Delete"])
                except self._client_error as exc:
                    if self._code(exc) != "ConditionalCheckFailedException":
                        raise

    # --- the interface ------------------------------------------------------------------

    async def create(self, info: SessionInfo) -> SessionInfo:
        require_names(info.tenant, info.session_id)
        info = new_info(info, self._ttl_s)
        await self._call(self._create, info)
        return info

    def _create(self, info: SessionInfo) -> None:
        gen = secrets.token_hex(8)
        aux = _secs(info.expires_ms) + info.ttl_s
        meta: Item = {
            "pk": _s(self._pk(info.tenant, info.session_id)),
            "sk": _s(_META),
            "gen": _s(gen),
            "created_ms": _n(info.created_ms),
            "updated_ms": _n(info.updated_ms),
            "expires_ms": _n(info.expires_ms),
            "expires": _n(_secs(info.expires_ms)),
            "ttl_s": _n(info.ttl_s),
            "system": _s(info.system),
            "strategy": _s(info.strategy),
            "count": _n(0),
            "aux_expires": _n(aux),
        }
        index = {
            **self._index_key(info.tenant, info.session_id),
            "gen": _s(gen),
            "expires": _n(aux),
        }
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": meta,
                            "ConditionExpression": "attribute_not_exists(pk) OR #e <= :now",
                            "ExpressionAttributeNames": {"#e": "expires_ms"},
                            "ExpressionAttributeValues": {":now": _n(info.created_ms)},
                        }
                    },
                    {"Put": {"TableName": self._table, "Item": index}},
                ]
            )
        except self._client_error as exc:
            reasons = self._reasons(exc)
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                raise AlreadyExists(f"session {info.session_id!r} already exists") from None
            raise

    async def info(self, tenant: str, session_id: str, *, now_ms: int) -> SessionInfo | None:
        if not valid_names(tenant, session_id):
            return None
        meta = await self._call(self._get_meta, self._pk(tenant, session_id))
        return _live(tenant, session_id, meta, now_ms)

    async def get(self, tenant: str, session_id: str, *, now_ms: int) -> Session | None:
        if not valid_names(tenant, session_id):
            return None
        tries = 5
        for attempt in range(tries):
            found = await self._call(self._get, tenant, session_id, now_ms, attempt == tries - 1)
            if found is not False:
                return found
            await asyncio.sleep(_backoff(attempt))  # an append was committing: read again
        return None  # not reached: the last try returns what it read

    def _get(
        self, tenant: str, session_id: str, now_ms: int, last: bool
    ) -> Session | None | Literal[False]:
        """The session; None when unknown; False when a turn below the count was not
        visible (the query raced a transaction: read again), unless this is the ``last``
        try: then the newest run of turns without a gap."""
        items = self._query(self._pk(tenant, session_id))
        meta = next((i for i in items if _str(i, "sk") == _META), None)
        info = _live(tenant, session_id, meta, now_ms)
        if info is None or meta is None:
            return None
        gen = _str(meta, "gen")
        first = max(0, info.turn_count - self._max_turns)
        turns: dict[int, Turn] = {}
        for item in items:
            if not _str(item, "sk").startswith("turn#") or _str(item, "gen") != gen:
                continue
            seq = _int(item, "seq")
            if first <= seq < info.turn_count:
                turns[seq] = Turn(
                    role=_str(item, "role"),
                    content=_str(item, "content"),
                    at_ms=_int(item, "at_ms"),
                    backend=_str(item, "backend"),
                    seq=seq,
                    tool_calls=calls_from_json(_str(item, "tool_calls")),
                    tool_call_id=_str(item, "tool_call_id"),
                    name=_str(item, "name"),
                )
        # The newest turns must all be there; older ones may be being trimmed right now.
        run: list[Turn] = []
        for seq in range(info.turn_count - 1, first - 1, -1):
            if seq not in turns:
                break
            run.append(turns[seq])
        if len(run) < len(turns) or (info.turn_count and not run):
            if not last:
                return False
            log.warning(
                "%s: session %s: turns missing below seq %d; returning the newest %d",
                self.name,
                session_id,
                info.turn_count,
                len(run),
            )
        return Session(info=info, turns=tuple(reversed(run)))

    async def list(
        self, tenant: str, *, now_ms: int, limit: int = 100, after: str = ""
    ) -> list[SessionInfo]:
        if limit <= 0 or not valid_names(tenant, "x"):
            return []
        return await self._call(self._list, tenant, now_ms, limit, after)

    def _list(self, tenant: str, now_ms: int, limit: int, after: str) -> builtins.list[SessionInfo]:
        out: list[SessionInfo] = []
        page = min(100, max(limit, 16))
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk > :lo",
            "ExpressionAttributeValues": {
                ":pk": _s(f"{tenant or '-'}#"),
                ":lo": _s(f"session#{after}"),
            },
            "ConsistentRead": True,
            "Limit": page,
        }
        while len(out) < limit:
            got = self._client.query(**kwargs)
            ids = [_str(i, "sk").removeprefix("session#") for i in got.get("Items", [])]
            metas = self._batch_metas([self._pk(tenant, sid) for sid in ids])
            stale: list[str] = []
            for sid in ids:
                info = _live(tenant, sid, metas.get(self._pk(tenant, sid)), now_ms)
                if info is None:
                    stale.append(sid)
                elif len(out) < limit:
                    out.append(info)
            for sid in stale:
                self._drop_index(tenant, sid, now_ms)
            last = got.get("LastEvaluatedKey")
            if not last:
                break
            kwargs["ExclusiveStartKey"] = last
        return out

    def _batch_metas(self, pks: Sequence[str]) -> dict[str, Item]:
        out: dict[str, Item] = {}
        for i in range(0, len(pks), 100):
            request: dict[str, Any] = {
                self._table: {
                    "Keys": [{"pk": _s(pk), "sk": _s(_META)} for pk in pks[i : i + 100]],
                    "ConsistentRead": True,
                }
            }
            for attempt in range(10):
                got = self._client.batch_get_item(RequestItems=request)
                for item in got.get("Responses", {}).get(self._table, []):
                    out[_str(item, "pk")] = item
                request = got.get("UnprocessedKeys") or {}
                if not request:
                    break
                _pause(attempt)
            else:
                raise StoreUnavailable(self.name, "batch reads kept being throttled")
        return out

    def _drop_index(self, tenant: str, session_id: str, now_ms: int) -> None:
        """Remove a gone session's index entry, unless it came back meanwhile (best effort)."""
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "ConditionCheck": {
                            "TableName": self._table,
                            "Key": {"pk": _s(self._pk(tenant, session_id)), "sk": _s(_META)},
                            "ConditionExpression": "attribute_not_exists(pk) OR #e <= :now",
                            "ExpressionAttributeNames": {"#e": "expires_ms"},
                            "ExpressionAttributeValues": {":now": _n(now_ms)},
                        }
                    },
                    {
                        "Delete": {
                            "TableName": self._table,
                            "Key": self._index_key(tenant, session_id),
                        }
                    },
                ]
            )
        except self._client_error as exc:
            log.debug("%s: index entry of %s kept: %s", self.name, session_id, exc)

    async def delete(self, tenant: str, session_id: str) -> bool:
        if not valid_names(tenant, session_id):
            return False
        return await self._call(self._delete, tenant, session_id)

    def _delete(self, tenant: str, session_id: str) -> bool:
        pk = self._pk(tenant, session_id)
        old = self._client.delete_item(
            TableName=self._table,
            Key={"pk": _s(pk), "sk": _s(_META)},
            ReturnValues="ALL_OLD",
        ).get("Attributes")
        if not old:
            return False
        gen = _str(old, "gen")
        rest = [
            {"pk": i["pk"], "sk": i["sk"]}
            for i in self._query(pk, ProjectionExpression="pk, sk, gen")
            if _str(i, "gen") == gen
        ]
        self._delete_items([self._index_key(tenant, session_id), *rest], gen)
        return True

    async def append(
        self, tenant: str, session_id: str, turns: Sequence[Turn], *, now_ms: int
    ) -> int:
        if not valid_names(tenant, session_id):
            raise SessionNotFound(session_id)
        turns = tuple(turns)
        if len(turns) >= _TRANSACT_MAX:
            raise InvalidRequest(
                "turns",
                f"at most {_TRANSACT_MAX - 1} turns in one append (one DynamoDB transaction)",
            )
        # This store's appends to one session queue here (they would only lose races to each
        # other); other replicas' are resolved by the conditional write.
        async with self._queues.hold(self._pk(tenant, session_id)) as queue:
            meta, queue.meta = queue.meta, None
            for attempt in range(_APPEND_TRIES):
                try:
                    count, meta = await self._call(
                        self._append, tenant, session_id, turns, now_ms, meta
                    )
                except _Retry as retry:
                    meta = retry.meta
                    await asyncio.sleep(_backoff(attempt))
                    continue
                try:
                    meta = await self._call(
                        self._after_append, tenant, session_id, count, len(turns), meta
                    )
                except StoreUnavailable as exc:  # the turns are stored; trimming can wait
                    log.warning("%s: after an append to %s: %s", self.name, session_id, exc)
                queue.meta = meta
                return count
        raise StoreUnavailable(
            self.name,
            f"session {session_id!r}: {_APPEND_TRIES} appends in a row lost to concurrent ones",
        )

    def _append(
        self,
        tenant: str,
        session_id: str,
        turns: tuple[Turn, ...],
        now_ms: int,
        meta: Item | None,
    ) -> tuple[int, Item]:
        """One try: ``(new count, the meta item as written)``; _Retry when it lost."""
        pk = self._pk(tenant, session_id)
        if meta is None:
            meta = self._get_meta(pk)
        if meta is None or expired(_int(meta, "expires_ms"), now_ms):
            raise SessionNotFound(session_id)
        gen = _str(meta, "gen")
        old = _int(meta, "count")
        ttl_s = _int(meta, "ttl_s") or self._ttl_s
        expires_ms = now_ms + ttl_s * 1000
        aux = _int(meta, "aux_expires")
        ops: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": {"pk": _s(pk), "sk": _s(_META)},
                    "UpdateExpression": "SET #c = :new, #u = :now, #em = :em, #e = :e",
                    "ConditionExpression": "#g = :g AND #c = :old AND #em > :now",
                    "ExpressionAttributeNames": {
                        "#c": "count",
                        "#u": "updated_ms",
                        "#em": "expires_ms",
                        "#e": "expires",
                        "#g": "gen",
                    },
                    "ExpressionAttributeValues": {
                        ":new": _n(old + len(turns)),
                        ":old": _n(old),
                        ":now": _n(now_ms),
                        ":em": _n(expires_ms),
                        ":e": _n(_secs(expires_ms)),
                        ":g": _s(gen),
                    },
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            }
        ]
        turn_expires = max(aux, _secs(expires_ms) + ttl_s)
        for i, t in enumerate(turns):
            item: Item = {
                "pk": _s(pk),
                "sk": _s(_turn_sk(old + i)),
                "gen": _s(gen),
                "seq": _n(old + i),
                "role": _s(t.role),
                "content": _s(t.content),
                "at_ms": _n(t.at_ms or now_ms),
                "backend": _s(t.backend),
                "expires": _n(turn_expires),
            }
            # The tool fields only when set: a turn without them is stored as before.
            if t.tool_calls:
                item["tool_calls"] = _s(calls_json(t.tool_calls))
            if t.tool_call_id:
                item["tool_call_id"] = _s(t.tool_call_id)
            if t.name:
                item["name"] = _s(t.name)
            ops.append(
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": item,
                        "ConditionExpression": "attribute_not_exists(sk) OR #g <> :g",
                        "ExpressionAttributeNames": {"#g": "gen"},
                        "ExpressionAttributeValues": {":g": _s(gen)},
                    }
                }
            )
        try:
            self._client.transact_write_items(TransactItems=ops)
        except self._client_error as exc:
            code = self._code(exc)
            reasons = self._reasons(exc)
            if code == "TransactionCanceledException" and reasons:
                first = reasons[0].get("Code", "None")
                if first == "ConditionalCheckFailed":
                    raise _Retry(reasons[0].get("Item")) from None
                codes = {r.get("Code", "None") for r in reasons}
                if codes & {"TransactionConflict", "ThrottlingError"}:
                    raise _Retry(None) from None
                if "ConditionalCheckFailed" in codes:
                    raise StoreUnavailable(
                        self.name,
                        f"session {session_id!r}: a turn at seq {old} or later is already "
                        f"stored although the session's count is {old}",
                    ) from None
            if code == "TransactionConflictException":
                raise _Retry(None) from None
            raise
        written = {
            **meta,
            "count": _n(old + len(turns)),
            "updated_ms": _n(now_ms),
            "expires_ms": _n(expires_ms),
            "expires": _n(_secs(expires_ms)),
        }
        return old + len(turns), written

    def _after_append(
        self, tenant: str, session_id: str, count: int, added: int, meta: Item
    ) -> Item:
        """Trim past ``max_turns``; move the other items' expiry when the session's nears
        it. The meta item as it now is."""
        pk = self._pk(tenant, session_id)
        gen = _str(meta, "gen")
        old = count - added
        drop_to = count - self._max_turns
        if drop_to > 0:
            start = max(0, old - self._max_turns)
            keys = [{"pk": _s(pk), "sk": _s(_turn_sk(s))} for s in range(start, drop_to)]
            self._delete_items(keys, gen)
        ttl_s = _int(meta, "ttl_s") or self._ttl_s
        session_expires = _secs(_int(meta, "expires_ms"))
        if _int(meta, "aux_expires") >= session_expires + ttl_s // 2:
            return meta
        target = session_expires + ttl_s
        items = self._query(pk, ProjectionExpression="pk, sk, gen")
        keys = [
            {"pk": i["pk"], "sk": i["sk"]}
            for i in items
            if _str(i, "sk") != _META and _str(i, "gen") == gen
        ]
        for key in [self._index_key(tenant, session_id), *keys]:
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key=key,
                    UpdateExpression="SET #e = :t",
                    ConditionExpression="#g = :g AND #e < :t",
                    ExpressionAttributeNames={"#e": "expires", "#g": "gen"},
                    ExpressionAttributeValues={":t": _n(target), ":g": _s(gen)},
                )
            except self._client_error as exc:
                if self._code(exc) != "ConditionalCheckFailedException":
                    raise
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"pk": _s(pk), "sk": _s(_META)},
                UpdateExpression="SET #a = :t",
                ConditionExpression="#g = :g AND #a < :t",
                ExpressionAttributeNames={"#a": "aux_expires", "#g": "gen"},
                ExpressionAttributeValues={":t": _n(target), ":g": _s(gen)},
            )
        except self._client_error as exc:
            if self._code(exc) != "ConditionalCheckFailedException":
                raise
        return {**meta, "aux_expires": _n(target)}

    async def get_summary(self, tenant: str, session_id: str) -> Summary | None:
        if not valid_names(tenant, session_id):
            return None
        return await self._call(self._get_summary, tenant, session_id)

    def _get_summary(self, tenant: str, session_id: str) -> Summary | None:
        pk = self._pk(tenant, session_id)
        items = self._query(
            pk,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :a AND :b",
            ExpressionAttributeValues={":pk": _s(pk), ":a": _s(_META), ":b": _s(_SUMMARY)},
        )
        by_sk = {_str(i, "sk"): i for i in items}
        meta, summary = by_sk.get(_META), by_sk.get(_SUMMARY)
        if meta is None or summary is None or _str(summary, "gen") != _str(meta, "gen"):
            return None
        return Summary(
            upto=_int(summary, "upto"),
            text=_str(summary, "text"),
            backend=_str(summary, "backend"),
            made_ms=_int(summary, "made_ms"),
        )

    async def put_summary(self, tenant: str, session_id: str, summary: Summary) -> bool:
        if not valid_names(tenant, session_id):
            return False
        return await self._call(self._put_summary, tenant, session_id, summary)

    def _put_summary(self, tenant: str, session_id: str, summary: Summary) -> bool:
        pk = self._pk(tenant, session_id)
        meta = self._get_meta(pk)
        if meta is None:
            return False
        gen = _str(meta, "gen")
        item: Item = {
            "pk": _s(pk),
            "sk": _s(_SUMMARY),
            "gen": _s(gen),
            "upto": _n(summary.upto),
            "text": _s(summary.text),
            "backend": _s(summary.backend),
            "made_ms": _n(summary.made_ms),
            "expires": _n(_int(meta, "aux_expires")),
        }
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "ConditionCheck": {
                            "TableName": self._table,
                            "Key": {"pk": _s(pk), "sk": _s(_META)},
                            "ConditionExpression": "#g = :g",
                            "ExpressionAttributeNames": {"#g": "gen"},
                            "ExpressionAttributeValues": {":g": _s(gen)},
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": item,
                            "ConditionExpression": (
                                "attribute_not_exists(sk) OR #g <> :g OR #u < :u"
                            ),
                            "ExpressionAttributeNames": {"#g": "gen", "#u": "upto"},
                            "ExpressionAttributeValues": {
                                ":g": _s(gen),
                                ":u": _n(summary.upto),
                            },
                        }
                    },
                ]
            )
        except self._client_error as exc:
            if self._code(exc) == "TransactionCanceledException" and any(
                r.get("Code") == "ConditionalCheckFailed" for r in self._reasons(exc)
            ):
                return False
            raise
        return True

    async def ping(self) -> None:
        """One GetItem of a key no session uses: the table, the credentials, the network."""
        await self._call(
            functools.partial(
                self._client.get_item,
                TableName=self._table,
                Key={"pk": _s("#ping"), "sk": _s("ping")},
            )
        )

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def _live(tenant: str, session_id: str, meta: Item | None, now_ms: int) -> SessionInfo | None:
    if not meta:
        return None
    info = SessionInfo(
        tenant=tenant,
        session_id=session_id,
        created_ms=_int(meta, "created_ms"),
        updated_ms=_int(meta, "updated_ms"),
        expires_ms=_int(meta, "expires_ms"),
        ttl_s=_int(meta, "ttl_s"),
        system=_str(meta, "system"),
        strategy=_str(meta, "strategy"),
        turn_count=_int(meta, "count"),
    )
    return None if expired(info.expires_ms, now_ms) else info


def _backoff(attempt: int) -> float:
    """Seconds before the next try of an append that lost a race: full jitter, 2 ms
    doubling to at most 256 ms (many writers on one session spread out)."""
    return random.uniform(0, 0.002 * 2 ** min(attempt, 7))


def _pause(attempt: int) -> None:
    time.sleep(_backoff(attempt))
