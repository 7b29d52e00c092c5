"""Rate limits: requests and tokens per minute, per tenant and per key (docs/controls.md).

:class:`RateLimiter` is the pipeline's ``Limiter`` (router/controls/pipeline.py, step 3):

- ``charge`` (before the decision): one request and the request's token estimate (the
  prompt by the router's estimate, ``policy.token_estimate``, and/or ``max_output_tokens``,
  as ``controls.rate_limits.tokens`` says) against every limit that applies: the
  tenant's requests and tokens, and the key's. All are charged at once or none is
  (:func:`router.controls.gcra.admit_all`). A refusal is :class:`RateLimited`
  (RESOURCE_EXHAUSTED with the wait: RetryInfo and ``retry-after``), or
  :class:`OverRateLimit` (OUT_OF_RANGE) when one request needs more than a limit's burst,
  which no wait cures. Charging the estimate first means a burst of long prompts cannot
  slip through between their answers.
- ``correct`` (after the answer, always): the token charge becomes what Usage reports
  (no Usage: nothing was used, the tokens are given back; the request stays counted).

Where the counts live (``controls.rate_limits.store``):

- ``memory``: :class:`MemoryLimitStore`, this replica alone; the event loop makes each
  charge atomic (no await between the check and the write).
- ``redis``: ``router.controls.limits_redis.RedisLimitStore`` (imported only when
  configured), one Lua script per charge: every replica shares the limits, and Redis'
  clock is the only clock; corrections ride with the replica's next charge.

Keys (memory or Redis, after ``redis.key_prefix``; ``-`` is the tenant of callers without
a key): ``{<tenant>}/t/req``, ``{<tenant>}/t/tok`` (the tenant's), ``{<tenant>}/k/<key
id>/req``, ``{<tenant>}/k/<key id>/tok`` (one key's). Each holds one number, the limit's
TAT (router/controls/gcra.py; seconds of the monotonic clock in memory, ms of Redis'
clock in Redis), and is dropped once the bucket is full again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from router.config.ratelimits import RateLimit, RateLimitsConfig
from router.controls.gcra import Rate, Verdict, adjust, admit_all
from router.errors import OverRateLimit, RateLimited, StoreUnavailable
from router.preflight import OK, WARN, Finding, Options
from router.telemetry.observer import observer_var
from router.tokenizers import Tokenizers
from router.types import InferenceRequest, UsageEvent

if TYPE_CHECKING:
    from router.config import RouterConfig
    from router.security.authn import Principal

log = logging.getLogger(__name__)

SECTION = "controls.rate_limits"
#: The metric label of this control (``hybrid_router_control_events{control=...}``).
CONTROL = "rate_limit"


# --- which limits apply ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cell:
    """One limit on one counted thing: a tenant's or a key's requests or tokens."""

    #: The store key (after the store's prefix).
    key: str
    rate: Rate
    per_min: float
    #: "requests" or "tokens".
    unit: str
    #: Who it limits, for messages: ``tenant 'acme'``, ``API key 0123456789ab``.
    scope: str
    #: The config key that set ``per_min`` (``controls.rate_limits.tenants[acme]...``).
    limit: str
    #: The config key that set the burst ("" when it is one minute's worth).
    burst_limit: str


def _tag(tenant: str) -> str:
    return "{" + (tenant or "-") + "}"


def _cells(
    entry: RateLimit | None,
    fallback: RateLimit,
    *,
    entry_key: str,
    fallback_key: str,
    base: str,
    scope: str,
) -> tuple[Cell | None, Cell | None]:
    """(requests cell, tokens cell) of one scope; None where it has no limit."""
    merged = fallback if entry is None else entry.over(fallback)

    def source(field: str) -> str:
        if entry is not None and getattr(entry, field) is not None:
            return f"{entry_key}.{field}"
        return f"{fallback_key}.{field}"

    out: list[Cell | None] = []
    for unit, per_field, burst_field, suffix in (
        ("requests", "requests_per_min", "burst_requests", "req"),
        ("tokens", "tokens_per_min", "burst_tokens", "tok"),
    ):
        per_min = getattr(merged, per_field) or 0.0
        if per_min <= 0:
            out.append(None)
            continue
        burst = getattr(merged, burst_field)
        out.append(
            Cell(
                key=f"{base}/{suffix}",
                rate=Rate.per_minute(per_min, burst),
                per_min=per_min,
                unit=unit,
                scope=scope,
                limit=source(per_field),
                burst_limit="" if burst is None else source(burst_field),
            )
        )
    return out[0], out[1]


@dataclass(frozen=True, slots=True)
class Applicable:
    """The limits one caller is held to."""

    requests: tuple[Cell, ...]
    tokens: tuple[Cell, ...]


def applicable(cfg: RateLimitsConfig, tenant: str, key_id: str) -> Applicable:
    """The limits of ``tenant`` and of its key ``key_id`` ("" = no key: no key limits)."""
    found = []
    tag = _tag(tenant)
    found.append(
        _cells(
            cfg.tenants.get(tenant) if tenant else None,
            cfg.default,
            entry_key=f"{SECTION}.tenants[{tenant}]",
            fallback_key=f"{SECTION}.default",
            base=f"{tag}/t",
            scope=f"tenant {tenant!r}" if tenant else "callers without an API key",
        )
    )
    if key_id:
        found.append(
            _cells(
                cfg.keys.get(key_id),
                cfg.key_default,
                entry_key=f"{SECTION}.keys[{key_id}]",
                fallback_key=f"{SECTION}.key_default",
                base=f"{tag}/k/{key_id}",
                scope=f"API key {key_id}",
            )
        )
    return Applicable(
        tuple(r for r, _ in found if r is not None), tuple(t for _, t in found if t is not None)
    )


# --- stores ---------------------------------------------------------------------------------


class LimitStore(Protocol):
    #: Named in errors: ``rate limit store redis redis://host:6379/0``.
    name: str

    async def admit(self, charges: Sequence[tuple[Cell, float]]) -> Verdict:
        """Charge each ``(cell, cost)``: all or none (:func:`router.controls.gcra.admit_all`).
        Raises StoreUnavailable."""
        ...

    async def adjust(self, changes: Sequence[tuple[Cell, float]]) -> None:
        """Move each cell by ``delta`` units (negative: give back). Raises StoreUnavailable."""
        ...

    async def close(self) -> None: ...


class MemoryLimitStore:
    """The counts in this process: one replica's limits. ``clock``: seconds (monotonic)."""

    name = "rate limit store memory"
    #: Full buckets are forgotten every this many charges.
    SWEEP_EVERY = 4096

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._since_sweep = 0

    def __len__(self) -> int:
        return len(self._tats)

    async def admit(self, charges: Sequence[tuple[Cell, float]]) -> Verdict:
        now = self._clock()
        tats = self._tats
        verdict = admit_all([(tats.get(c.key, 0.0), cost, c.rate) for c, cost in charges], now)
        if verdict.admitted:
            for (cell, _), tat in zip(charges, verdict.tats, strict=True):
                tats[cell.key] = tat
            self._since_sweep += 1
            if self._since_sweep >= self.SWEEP_EVERY:
                self._sweep(now)
        return verdict

    async def adjust(self, changes: Sequence[tuple[Cell, float]]) -> None:
        now = self._clock()
        tats = self._tats
        for cell, delta in changes:
            tat = adjust(tats.get(cell.key, 0.0), now, delta, cell.rate)
            if tat > now:
                tats[cell.key] = tat
            else:
                tats.pop(cell.key, None)

    def _sweep(self, now: float) -> None:
        self._since_sweep = 0
        for key in [k for k, tat in self._tats.items() if tat <= now]:
            del self._tats[key]

    async def close(self) -> None:
        self._tats.clear()


# --- the limiter ----------------------------------------------------------------------------


@dataclass(slots=True)
class Ticket:
    """What :meth:`RateLimiter.charge` charged, for :meth:`RateLimiter.correct`."""

    cells: tuple[Cell, ...]
    #: Tokens charged to each of ``cells`` (the estimate).
    tokens: int


class RateLimiter:
    """The pipeline's Limiter (module doc)."""

    def __init__(
        self,
        cfg: RateLimitsConfig,
        store: LimitStore,
        *,
        tokens: Tokenizers,
        default_max_output_tokens: int,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self._tokens = tokens
        self._default_max_out = default_max_output_tokens
        self._input = cfg.tokens in ("input", "total")
        self._output = cfg.tokens in ("output", "total")
        self._applicable: dict[tuple[str, str], Applicable] = {}
        self._warned_at = -math.inf

    def limits_for(self, tenant: str, key_id: str) -> Applicable:
        """The limits of a caller (cached: the config does not change while serving)."""
        found = self._applicable.get((tenant, key_id))
        if found is None:
            found = applicable(self.cfg, tenant, key_id)
            if len(self._applicable) < 100_000:
                self._applicable[(tenant, key_id)] = found
        return found

    def estimate(self, request: InferenceRequest) -> tuple[int, int]:
        """(prompt tokens charged, output tokens charged) for ``request``."""
        prompt = self._tokens.estimate(request.messages).tokens if self._input else 0
        out = (request.max_output_tokens or self._default_max_out) if self._output else 0
        return prompt, out

    async def charge(self, principal: Principal, request: InferenceRequest) -> Ticket | None:
        limits = self.limits_for(principal.tenant, principal.key_id)
        if not limits.requests and not limits.tokens:
            return None
        prompt, out = self.estimate(request) if limits.tokens else (0, 0)
        tokens = prompt + out
        charges = [(c, 1.0) for c in limits.requests]
        if tokens > 0:
            charges += [(c, float(tokens)) for c in limits.tokens]
        obs = observer_var.get()
        try:
            verdict = await self.store.admit(charges)
        except StoreUnavailable as exc:
            obs.control(CONTROL, "store_error")
            if not self.cfg.fail_open:
                raise
            self._warn_open(exc)
            return None
        if not verdict.admitted:
            cell, cost = charges[verdict.refused_by]
            if verdict.never:
                obs.control(CONTROL, "over_burst")
                raise OverRateLimit(cell.limit, _over_burst(cell, cost, prompt, out))
            obs.control(CONTROL, "refused")
            raise RateLimited(
                cell.limit, _refused(cell, cost, prompt, out, verdict.wait), verdict.wait
            )
        obs.control(CONTROL, "allowed")
        if tokens <= 0 or not limits.tokens:
            return None
        return Ticket(limits.tokens, tokens)

    async def correct(self, ticket: Any, usage: UsageEvent | None) -> None:
        if not isinstance(ticket, Ticket):
            return
        used = 0
        if usage is not None:
            used = (usage.input_tokens if self._input else 0) + (
                usage.output_tokens if self._output else 0
            )
        delta = used - ticket.tokens
        if delta == 0:
            return
        try:
            await self.store.adjust([(c, float(delta)) for c in ticket.cells])
        except StoreUnavailable as exc:
            # The estimate stays charged: never fail an answer already given.
            observer_var.get().control(CONTROL, "store_error")
            log.warning("rate limits: a token correction of %+d was lost: %s", delta, exc)

    def _warn_open(self, exc: StoreUnavailable) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 10.0:
            self._warned_at = now
            log.warning(
                "rate limits: %s; requests pass uncounted (%s.fail_open)", exc.message, SECTION
            )

    async def close(self) -> None:
        await self.store.close()


def _needs(cell: Cell, cost: float, prompt: int, out: int) -> str:
    if cell.unit == "requests":
        return "this request counts 1"
    parts = []
    if prompt:
        parts.append(f"prompt estimate {prompt}")
    if out:
        parts.append(f"max_output_tokens {out}")
    return f"this request is charged {cost:g} tokens ({' + '.join(parts)})"


def _refused(cell: Cell, cost: float, prompt: int, out: int, wait: float) -> str:
    return (
        f"rate limit: {cell.scope} may use {cell.per_min:g} {cell.unit} a minute "
        f"({cell.limit}, burst {cell.rate.burst:g}); {_needs(cell, cost, prompt, out)}; "
        f"retry in {wait:.2f} s"
    )


def _over_burst(cell: Cell, cost: float, prompt: int, out: int) -> str:
    where = cell.burst_limit or f"one minute of {cell.limit}"
    return (
        f"rate limit: {cell.scope} may use at most {cell.rate.burst:g} {cell.unit} at once "
        f"({where}); {_needs(cell, cost, prompt, out)}, which no wait lets through; lower "
        "max_output_tokens, send a shorter prompt, or raise the limit"
    )


# --- building and checking ------------------------------------------------------------------


def _redis_url(cfg: RateLimitsConfig, environ: Mapping[str, str]) -> str:
    from router.config import resolve_ref

    return resolve_ref(
        cfg.redis.url,
        env=environ,
        key=f"{SECTION}.redis.url",
        fix="set it to the Redis URL (redis://host:6379/0)",
    )


def open_store(cfg: RateLimitsConfig, environ: Mapping[str, str]) -> LimitStore:
    """The store ``cfg.store`` names (redis-py imported only for ``redis``); nothing is
    reached until the first charge."""
    if cfg.store == "redis":
        from router.controls.limits_redis import RedisLimitStore

        return RedisLimitStore(
            _redis_url(cfg, environ), key_prefix=cfg.redis.key_prefix, timeout_s=cfg.redis.timeout_s
        )
    return MemoryLimitStore()


def build_limiter(
    cfg: RateLimitsConfig, config: RouterConfig, environ: Mapping[str, str]
) -> tuple[RateLimiter, Callable[[], Any]]:
    """The limiter and its closer (``router.controls.build``)."""
    limiter = RateLimiter(
        cfg,
        open_store(cfg, environ),
        tokens=Tokenizers(config.policy.token_estimate),
        default_max_output_tokens=config.policy.default_max_output_tokens,
    )
    return limiter, limiter.close


def _fmt(limit: RateLimit) -> str:
    parts = []
    if limit.requests_per_min:
        burst = f" (burst {limit.burst_requests:g})" if limit.burst_requests else ""
        parts.append(f"{limit.requests_per_min:g} req/min{burst}")
    if limit.tokens_per_min:
        burst = f" (burst {limit.burst_tokens:g})" if limit.burst_tokens else ""
        parts.append(f"{limit.tokens_per_min:g} tokens/min{burst}")
    return ", ".join(parts) or "none"


def describe(cfg: RateLimitsConfig) -> str:
    """One line: the store and the limits (``hybrid-router check``)."""
    where = (
        "memory (this replica only)"
        if cfg.store == "memory"
        else f"redis (shared), prefix {cfg.redis.key_prefix!r}"
    )
    parts = [f"store {where}", f"tokens counted: {cfg.tokens}"]
    parts.append(f"each tenant: {_fmt(cfg.default)}")
    for name, entry in sorted(cfg.tenants.items()):
        parts.append(f"tenant {name}: {_fmt(entry.over(cfg.default))}")
    parts.append(f"each key: {_fmt(cfg.key_default)}")
    for key_id, entry in sorted(cfg.keys.items()):
        parts.append(f"key {key_id}: {_fmt(entry.over(cfg.key_default))}")
    return "; ".join(parts)


async def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``controls.rate_limits``: the limits (one ``ok`` row listing them), tenants named
    here that ``auth.tenants`` lacks, limits that auth being off makes moot, the Redis
    URL's variable; with ``--probe``, a PING to Redis."""
    cfg = config.controls.rate_limits
    if not cfg.enabled:
        return []
    findings = [Finding(OK, SECTION, SECTION, describe(cfg))]
    defined = {t.name for t in config.auth.tenants}
    unknown = sorted(set(cfg.tenants) - defined)
    if unknown and config.auth.configured:
        findings.append(
            Finding(
                WARN,
                SECTION,
                f"{SECTION}.tenants",
                f"limits for tenants auth.tenants does not define: {', '.join(unknown)}",
                "fix the names, or add the tenants under auth.tenants",
            )
        )
    if not config.auth.configured and (cfg.tenants or cfg.keys or cfg.key_default.limits_anything):
        findings.append(
            Finding(
                WARN,
                SECTION,
                SECTION,
                "auth is off: every caller is one tenant without a key, so only "
                f"{SECTION}.default applies",
                "configure auth keys to limit tenants and keys apart",
            )
        )
    if cfg.store == "redis":
        from router.controls.limits_redis import RedisLimitStore
        from router.controls.redis_check import redis_findings

        findings += await redis_findings(
            SECTION,
            cfg.redis.url,
            lambda: _redis_url(cfg, env),
            lambda url, timeout_s: RedisLimitStore(
                url, key_prefix=cfg.redis.key_prefix, timeout_s=timeout_s
            ),
            opts,
        )
    return findings
