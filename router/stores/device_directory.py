"""The shared device directory in Redis: how every replica learns of every device.

Each replica writes the devices whose links it holds; every replica reads them all and
reaches the devices held elsewhere through the holder's relay port. Keys (prefix
``edge.directory.key_prefix``):

==========================  ==================================================================
``<p>devices``              sorted set: device id -> last seen (Unix ms); trimmed past
                            ``edge.forget_after_s``
``<p>device:<id>``          JSON of the device's state (router/edge/devices.py ``to_json``),
                            expires after ``edge.forget_after_s``
``<p>online:<id>``          the holder replica's id; expires after ``edge.heartbeat_timeout_s``
                            and is refreshed on every write while the device heartbeats, so
                            a replica that dies takes its devices offline by itself
==========================  ==================================================================

A device is online for other replicas exactly while ``online:<id>`` exists; no replica
compares clocks. ``redis`` (redis-py, asyncio) is imported only when a directory is
configured.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hybrid_router.refs import env_ref

from router.config import resolve_ref
from router.edge.devices import DeviceState, from_json, to_json
from router.errors import ConfigError
from router.preflight import OK, Finding, Options

if TYPE_CHECKING:
    from router.config import RouterConfig

log = logging.getLogger(__name__)

# Delete online:<id> only while it still names this replica (the device may have moved).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def resolve_url(value: str, environ: Mapping[str, str]) -> str:
    """``edge.directory.redis_url``: a URL, or ``env:VAR`` naming the variable that holds one
    (unset or empty: ConfigError naming it, hybrid_router.refs' one rule)."""
    return resolve_ref(
        value, env=environ, key="edge.directory.redis_url", fix="set it to the Redis URL"
    )


def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``edge.directory.redis_url``: an ``env:VAR`` URL's variable is set
    (:func:`resolve_url`); Redis itself is reached only at start."""
    url = config.edge.directory.redis_url
    var = env_ref(url)
    if not config.edge.enabled or var is None:
        return []
    try:
        resolve_url(url, env)
    except ConfigError as exc:
        return [Finding.failed("edge.directory.redis_url", exc)]
    return [Finding(OK, "edge.directory.redis_url", "edge.directory.redis_url", f"${var} is set")]


class RedisDirectory:
    def __init__(
        self,
        url: str,
        *,
        key_prefix: str,
        router_id: str,
        online_ttl_s: float,
        forget_after_s: float,
    ) -> None:
        import redis.asyncio as aioredis

        self._redis: Any = aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._p = key_prefix
        self._router_id = router_id
        self._online_ms = max(1, int(online_ttl_s * 1000))
        self._forget_s = max(1, int(forget_after_s))
        self._release = self._redis.register_script(_RELEASE)

    async def publish(
        self, held: Sequence[DeviceState], released: Sequence[str], now_ms: int
    ) -> None:
        """Write the devices this replica holds (online ones refresh their liveness key) and
        drop the liveness of ``released`` ids (links that closed here)."""
        pipe = self._redis.pipeline(transaction=False)
        for state in held:
            did = state.device_id
            pipe.set(f"{self._p}device:{did}", json.dumps(to_json(state)), ex=self._forget_s)
            pipe.zadd(f"{self._p}devices", {did: state.last_seen_ms})
            if state.online:
                pipe.set(f"{self._p}online:{did}", self._router_id, px=self._online_ms)
        pipe.zremrangebyscore(f"{self._p}devices", "-inf", now_ms - self._forget_s * 1000)
        await pipe.execute()
        for did in released:
            await self._release(keys=[f"{self._p}online:{did}"], args=[self._router_id])

    async def read(self) -> list[tuple[DeviceState, str]]:
        """Every device in the directory with its holder ("" = nobody: offline)."""
        ids = [i.decode() for i in await self._redis.zrange(f"{self._p}devices", 0, -1)]
        if not ids:
            return []
        states = await self._redis.mget([f"{self._p}device:{i}" for i in ids])
        holders = await self._redis.mget([f"{self._p}online:{i}" for i in ids])
        out = []
        for did, raw, holder in zip(ids, states, holders, strict=True):
            if raw is None:
                continue  # expired: forgotten
            try:
                state = from_json(json.loads(raw))
            except ValueError as exc:
                log.warning("edge directory: skipping %s: %s", did, exc)
                continue
            out.append((state, holder.decode() if holder else ""))
        return out

    async def close(self) -> None:
        await self._redis.aclose()
