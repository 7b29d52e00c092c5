"""The rate limits' counts in Redis (redis-py, asyncio): one set of limits for a fleet.

Imported only with ``controls.rate_limits.store: redis``. Keys and values as in
``router.controls.limits`` (the TAT of each limit, in ms of Redis' clock); every key of a
tenant carries the tenant as its Redis Cluster hash tag (``{acme}``), so one script
touches keys of one slot.

Each charge is one Lua script (EVALSHA; redis-py loads it again when Redis lost it), the
arithmetic of ``router.controls.gcra.admit_all`` in milliseconds: it reads every TAT,
admits the request only when every limit has room, and then writes every new TAT with an
expiry at the time the bucket is full again. Redis runs one script at a time, so two
replicas' charges never interleave, and ``TIME`` inside the script is the one clock (the
replicas' clocks never meet).

Round trips are what a charge costs, so a replica makes as few as it can:

- Scripts that arrive while others are on the wire go together: each replica keeps at
  most one batch in flight and sends everything that queued meanwhile as one pipeline
  (one round trip, each script still atomic on its own).
- Corrections do not wait for Redis and make no round trip of their own while charges
  flow: they are summed per limit and ride, one script per tenant, at the head of the
  replica's next batch (so a refund is in before the charges sent with it); when no
  batch goes out within :data:`CORRECTION_WINDOW_S` they go alone. One request at a
  time thus costs one round trip (its charge, carrying the previous correction), not two.

A connection error or a command slower than ``redis.timeout_s`` is StoreUnavailable
naming ``rate limit store redis <url without password>``; commands are never retried (a
timed-out charge may have been applied), except a script Redis had lost (NOSCRIPT: it did
not run), which is loaded and sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from router.controls.gcra import EPSILON, Verdict
from router.controls.limits import Cell
from router.errors import ConfigError, StoreUnavailable
from router.sessions.redis import safe_url

# KEYS: one per limit. ARGV[1]: now in ms ("" = Redis TIME); then per limit i: cost,
# interval_ms, tau_ms at ARGV[3i-1], ARGV[3i], ARGV[3i+1]. Returns {1} when admitted
# (every TAT written), {0, wait_ms, i} when limit i refused (nothing written), {-1, i}
# when limit i's burst cannot hold the cost.
_ADMIT = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
else
  now = tonumber(ARGV[1])
end
local eps = tonumber(ARGV[#ARGV])
local new = {}
local wait, worst = 0, 0
for i = 1, #KEYS do
  local cost = tonumber(ARGV[3 * i - 1])
  local interval = tonumber(ARGV[3 * i])
  local tau = tonumber(ARGV[3 * i + 1])
  if cost * interval > tau * (1 + eps) then return {-1, i} end
  local tat = tonumber(redis.call('get', KEYS[i]) or '0') or 0
  if tat < now then tat = now end
  local after = tat + cost * interval
  new[i] = after
  local late = after - tau - now
  if late > eps * math.max(1, tau) and late > wait then
    wait = late
    worst = i
  end
end
if worst > 0 then return {0, string.format('%.3f', wait), worst} end
for i = 1, #KEYS do
  redis.call('set', KEYS[i], string.format('%.3f', new[i]), 'px',
    string.format('%d', math.ceil(new[i] - now) + 1000))
end
return {1}
"""

# KEYS: one per limit. ARGV[1]: now in ms ("" = Redis TIME); then per limit i: delta,
# interval_ms at ARGV[2i], ARGV[2i+1]. Moves each TAT (router.controls.gcra.adjust).
_ADJUST = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
else
  now = tonumber(ARGV[1])
end
for i = 1, #KEYS do
  local delta = tonumber(ARGV[2 * i])
  local interval = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('get', KEYS[i]) or '0') or 0
  local after
  if delta >= 0 then
    after = math.max(tat, now) + delta * interval
  else
    after = math.max(tat + delta * interval, now)
  end
  if after > now then
    redis.call('set', KEYS[i], string.format('%.3f', after), 'px',
      string.format('%d', math.ceil(after - now) + 1000))
  else
    redis.call('del', KEYS[i])
  end
end
return 0
"""

#: What a failed call raises: redis-py's errors, socket errors, timeouts.
_ERRORS = (RedisError, OSError, TimeoutError)

#: Longest a correction waits for a batch to ride with before it is sent alone (seconds).
CORRECTION_WINDOW_S = 0.005

log = logging.getLogger(__name__)


class RedisLimitStore:
    """``router.controls.limits.LimitStore`` in Redis. ``now_ms``: a fixed clock for tests
    (None: Redis' ``TIME``)."""

    def __init__(self, url: str, *, key_prefix: str, timeout_s: float) -> None:
        self.name = f"rate limit store redis {safe_url(url)}"
        try:
            self._redis: Any = aioredis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
            )
        except ValueError as exc:
            raise ConfigError(
                f"{safe_url(url)} is not a Redis URL ({exc}); use redis://host:6379/0",
                key="controls.rate_limits.redis.url",
            ) from None
        self._p = key_prefix
        self._admit = self._redis.register_script(_ADMIT)
        self._adjust = self._redis.register_script(_ADJUST)
        #: Milliseconds to use instead of Redis' clock (tests); None: ``TIME``.
        self.now_ms: float | None = None
        #: Scripts waiting for the batch in flight to come back: (script, keys, args, answer).
        self._queue: list[tuple[Any, list[str], list[str], asyncio.Future[Any] | None]] = []
        self._sender: asyncio.Task[None] | None = None
        #: Corrections not sent yet: hash tag -> key -> (delta units, interval ms).
        self._corrections: dict[str, dict[str, tuple[float, float]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._lost_logged_at = -1e9
        #: Round trips made and scripts sent (the batching's figures).
        self.round_trips = 0
        self.scripts_sent = 0

    def _now(self) -> str:
        return "" if self.now_ms is None else repr(float(self.now_ms))

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(self.name, f"{type(exc).__name__}: {exc}")

    def _start(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send())

    async def _run(self, script: Any, keys: list[str], args: list[str]) -> Any:
        """``script`` on ``keys`` and ``args``, in the next batch."""
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((script, keys, args, answer))
        self._start()
        return await answer

    def _flush_due(self) -> None:
        """The correction window passed: send what no batch carried."""
        self._timer = None
        if self._corrections:
            self._start()

    def _take_corrections(self) -> list[tuple[Any, list[str], list[str], None]]:
        """The pending corrections as scripts, one per tenant (one slot each)."""
        taken, self._corrections = self._corrections, {}
        out: list[tuple[Any, list[str], list[str], None]] = []
        for deltas in taken.values():
            args = [self._now()]
            for delta, interval in deltas.values():
                args += [repr(delta), repr(interval)]
            out.append((self._adjust, list(deltas), args, None))
        return out

    async def _send(self) -> None:
        """Send what is queued, one batch at a time, until nothing is: each batch led by
        the corrections pending (those alone once their window passed)."""
        while self._queue or (self._corrections and self._timer is None):
            queued, self._queue = self._queue, []
            batch = self._take_corrections() + queued
            try:
                replies = await self._batch(batch)
            except asyncio.CancelledError:
                for *_, answer in batch:
                    if answer is not None:
                        answer.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - every waiter must get an answer
                replies = [self._unavailable(exc)] * len(batch)
            for (*_, answer), reply in zip(batch, replies, strict=True):
                if answer is None:  # a correction: nobody waits for it
                    if isinstance(reply, Exception):
                        self._correction_lost(reply)
                    continue
                if answer.done():  # its caller went away (cancelled)
                    continue
                if isinstance(reply, StoreUnavailable):
                    answer.set_exception(reply)
                elif isinstance(reply, Exception):
                    answer.set_exception(self._unavailable(reply))
                else:
                    answer.set_result(reply)

    async def _batch(self, batch: Sequence[tuple[Any, list[str], list[str], Any]]) -> list[Any]:
        self.round_trips += 1
        self.scripts_sent += len(batch)
        if len(batch) == 1:
            script, keys, args, _ = batch[0]
            try:
                return [await script(keys=keys, args=args)]  # loads it again on NOSCRIPT
            except _ERRORS as exc:
                return [self._unavailable(exc)]
        replies = await self._pipeline(batch)
        lost = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if lost:  # Redis restarted or flushed its scripts: nothing of these ran
            for script in {id(batch[i][0]): batch[i][0] for i in lost}.values():
                await self._redis.script_load(script.script)
            again = await self._pipeline([batch[i] for i in lost])
            for i, reply in zip(lost, again, strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(self, batch: Sequence[tuple[Any, list[str], list[str], Any]]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))

    async def admit(self, charges: Sequence[tuple[Cell, float]]) -> Verdict:
        args: list[str] = [self._now()]
        for cell, cost in charges:
            rate = cell.rate
            args += [repr(float(cost)), repr(rate.interval * 1000.0), repr(rate.tau * 1000.0)]
        args.append(repr(EPSILON))
        reply = await self._run(self._admit, [self._p + c.key for c, _ in charges], args)
        status = int(reply[0])
        if status == 1:
            return Verdict(True, ())
        if status == -1:
            return Verdict(False, (), float("inf"), int(reply[1]) - 1)
        return Verdict(False, (), float(reply[1]) / 1000.0, int(reply[2]) - 1)

    async def adjust(self, changes: Sequence[tuple[Cell, float]]) -> None:
        """Queue the corrections (summed per limit) for the next batch; never waits for
        Redis (a correction that cannot be written is logged: the estimate stays)."""
        for cell, delta in changes:
            tag = cell.key.split("/", 1)[0]
            pending = self._corrections.setdefault(tag, {})
            key = self._p + cell.key
            before = pending.get(key, (0.0, 0.0))[0]
            pending[key] = (before + float(delta), cell.rate.interval * 1000.0)
        if changes and self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(CORRECTION_WINDOW_S, self._flush_due)

    def _correction_lost(self, reply: BaseException) -> None:
        now = time.monotonic()
        if now - self._lost_logged_at >= 10.0:
            self._lost_logged_at = now
            log.warning(
                "rate limits: corrections were lost (the estimates stay charged): %s",
                self._unavailable(reply).message,
            )

    async def tat_ms(self, cell: Cell) -> float | None:
        """A limit's stored TAT in ms (None: full bucket); for tests and tools."""
        try:
            raw = await self._redis.get(self._p + cell.key)
        except _ERRORS as exc:
            raise self._unavailable(exc) from None
        return None if raw is None else float(raw)

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except _ERRORS as exc:
            raise self._unavailable(exc) from None

    async def close(self) -> None:
        """Send the corrections still pending, then close the connections."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._corrections:
            self._start()
        sender, self._sender = self._sender, None
        if sender is not None and not sender.done():
            with contextlib.suppress(asyncio.CancelledError, *_ERRORS):
                await asyncio.wait_for(sender, 5.0)
        with contextlib.suppress(*_ERRORS):
            await self._redis.aclose()
