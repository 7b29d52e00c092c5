"""The response cache: exact-match answers of deterministic requests
(docs/controls.md#response-cache).

A request is **cacheable** when its answer is meant to be repeatable: temperature 0 or a
fixed seed, no session (a session's prompt depends on its history), a data class that
``controls.cache.data_classes`` lists, a tenant the cache is on for, and ``cache`` not in
its ``exclude_tiers`` (how a caller skips the cache). Anything else is answered by the
models, and the Decision's ``cache`` field says why (``not cacheable: temperature 0.7 and
no seed``).

The **key** is the tenant, the data class, and a SHA-256 of everything else that shapes the
answer: the messages, the sampling parameters, max_output_tokens, and every field that
picks the model class (pins, exclusions, model family, capabilities, objective, budgets,
edge affinity, template). Every field of ``InferenceRequest`` counts except those listed
in :data:`NOT_IN_KEY`, so a field added later makes answers differ rather than collide.
Tenants and data classes never share an entry: they are separate namespaces in every
store, and each tenant has its own bounds.

A **hit** replays the stored answer without calling a model: a Decision whose tier is
``cache`` (its explanation names the backend that gave the answer and what it cost), the
text as a few coalesced deltas, and a Usage with backend ``cache``, tier ``cache``, cost 0
and the original token counts. A **miss** keeps the answer once it is complete (finish
``stop`` or ``length``), within ``max_entry_bytes``, for ``ttl_s``. The tenant's access
still applies to a hit: a request it may not make is refused as dispatch would refuse it,
and an answer kept from a backend it may no longer use is not replayed.

The store is a cache: when it cannot be reached, the request goes to the models
(``bypassed: <the store's error>``), the failure is logged and counted, and nothing fails.
Metrics: ``control("cache", hit | miss | bypass | store | evict | too_large | error)``.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from router.controls.cache_store import Bounds, CacheStore, open_cache_store
from router.controls.pipeline import CacheLookup
from router.errors import ConfigError, StoreUnavailable
from router.telemetry.observer import observer_var
from router.types import (
    CandidateReport,
    DecisionEvent,
    DeltaEvent,
    Estimate,
    Event,
    FinishReason,
    InferenceRequest,
    Objective,
    Plan,
    Tier,
    UsageEvent,
)

if TYPE_CHECKING:
    from router.config import RouterConfig
    from router.config.cache import CacheConfig
    from router.preflight import Finding, Options
    from router.security.authn import Principal
    from router.security.tenants import TenantAccess

log = logging.getLogger("router.controls.cache")

SECTION = "controls.cache"

#: Request fields that do not shape the answer, or that key the namespace instead.
NOT_IN_KEY = frozenset({"request_id", "tenant", "data_class", "session_id", "context_strategy"})
#: Bumped when the key material or the record changes: old entries are never replayed.
FORMAT = 1
#: The name a hit shows as its backend.
CACHE_BACKEND = "cache"
#: The stored text is replayed in deltas of about this many characters.
REPLAY_CHUNK = 16_384
#: Only complete answers that ended on their own, or at max_output_tokens, are kept.
_KEPT_FINISH = frozenset({FinishReason.STOP, FinishReason.LENGTH})
_FINISH = {f.value: f for f in FinishReason}
_TIERS = {t.value: t for t in Tier}


# --- what is cacheable, and its key ---------------------------------------------------------


def nondeterministic(request: InferenceRequest) -> str:
    """Why the answer is not meant to repeat ("" when it is: temperature 0 or a seed)."""
    s = request.sampling
    if s.seed is not None or s.temperature == 0.0:
        return ""
    if s.temperature is None:
        return "default temperature and no seed"
    return f"temperature {s.temperature:g} and no seed"


def _plain(value: Any) -> Any:
    """``value`` as JSON: sets sorted, enums by value, records by field."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, frozenset | set):
        return sorted((_plain(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)


def cache_key(request: InferenceRequest) -> str:
    """``<data class>/<sha256 hex>`` of everything but :data:`NOT_IN_KEY` (the tenant is
    the store's namespace). ``cache`` in exclude_tiers is not part of it."""
    material: dict[str, Any] = {"format": FORMAT}
    for f in dataclasses.fields(request):
        if f.name in NOT_IN_KEY:
            continue
        value = getattr(request, f.name)
        if f.name == "exclude_tiers":
            value = value - {Tier.CACHE}
        material[f.name] = _plain(value)
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{request.data_class.value}/{digest}"


# --- the stored record ----------------------------------------------------------------------


def encode(events: tuple[Event, ...], *, stored_ms: int) -> bytes | None:
    """The record of a complete answer (None when ``events`` hold none to keep)."""
    usage = None
    chunks: list[list[Any]] = []
    size = REPLAY_CHUNK
    for ev in events:
        kind = type(ev)
        if kind is DeltaEvent:
            assert isinstance(ev, DeltaEvent)
            if chunks and size + len(ev.text) <= REPLAY_CHUNK:
                chunks[-1][0] += ev.text
                chunks[-1][1] += ev.tokens
                size += len(ev.text)
            else:
                chunks.append([ev.text, ev.tokens])
                size = len(ev.text)
        elif kind is UsageEvent:
            usage = ev
    if not isinstance(usage, UsageEvent) or not usage.complete:
        return None
    if usage.finish_reason not in _KEPT_FINISH or usage.tier is Tier.CACHE:
        return None
    record = {
        "v": FORMAT,
        "backend": usage.backend,
        "tier": usage.tier.value,
        "chunks": chunks,
        "in": usage.input_tokens,
        "out": usage.output_tokens,
        "cost": usage.cost_usd,
        "finish": usage.finish_reason.value,
        "est": usage.tokens_estimated,
        "ttft": usage.ttft_ms,
        "total": usage.total_ms,
        "at": stored_ms,
    }
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


def _age(ms: float) -> str:
    s = max(0.0, ms / 1000.0)
    if s < 90:
        return f"{s:.0f}s"
    if s < 90 * 60:
        return f"{s / 60:.0f}m"
    if s < 48 * 3600:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def replay(
    record: Mapping[str, Any],
    request: InferenceRequest,
    *,
    objective: Objective,
    now_ms: int,
    elapsed_ms: float,
) -> tuple[Event, ...]:
    """The events of a hit: Decision (tier cache), the deltas, Usage (cost 0)."""
    backend = str(record["backend"])
    tier = str(record["tier"])
    cost = float(record["cost"])
    age = _age(now_ms - int(record["at"]))
    source = f"{backend} ({tier})"
    estimate = Estimate(
        ttft_ms=elapsed_ms,
        total_ms=elapsed_ms,
        cost_usd=0.0,
        queue_wait_ms=0.0,
        from_priors=False,
        prompt_tokens=int(record["in"]),
        tokens_exact=not record["est"],
    )
    report = CandidateReport(
        backend=CACHE_BACKEND,
        tier=Tier.CACHE,
        accepted=True,
        rejected_by="",
        reason=f"the answer {source} gave {age} ago",
        estimate=estimate,
        rank=1,
        meets_budget=True,
    )
    plan = Plan(
        request_id=request.request_id,
        objective=request.objective or objective,
        order=(CACHE_BACKEND,),
        candidates=(report,),
        budget_unmet=False,
        explanation=(
            f"cache hit: the answer {source} gave {age} ago, replayed without a model "
            f"(it cost ${cost:.6f} then, $0 now)"
        ),
        decision_us=elapsed_ms * 1000.0,
        cache=f"hit: {source}, kept {age} ago",
    )
    events: list[Event] = [DecisionEvent(plan)]
    events.extend(DeltaEvent(str(text), int(tokens)) for text, tokens in record["chunks"])
    events.append(
        UsageEvent(
            request_id=request.request_id,
            backend=CACHE_BACKEND,
            tier=Tier.CACHE,
            input_tokens=int(record["in"]),
            output_tokens=int(record["out"]),
            cost_usd=0.0,
            ttft_ms=elapsed_ms,
            total_ms=elapsed_ms,
            finish_reason=_FINISH[str(record["finish"])],
            complete=True,
            tokens_estimated=bool(record["est"]),
            attempts=0,
            template=request.template,
            template_version=request.template_version,
        )
    )
    return tuple(events)


def decode(value: bytes) -> Mapping[str, Any] | None:
    """The record, or None when it is not one this code wrote (another format, damage)."""
    try:
        record = json.loads(value)
        if not isinstance(record, dict) or record.get("v") != FORMAT:
            return None
        if str(record["tier"]) not in _TIERS or str(record["finish"]) not in _FINISH:
            return None
        for text, tokens in record["chunks"]:
            if not isinstance(text, str) or not isinstance(tokens, int):
                return None
        int(record["in"]), int(record["out"]), int(record["at"]), float(record["cost"])
    except (ValueError, TypeError, KeyError):
        return None
    return record


def _allowed(access: TenantAccess, record: Mapping[str, Any]) -> bool:
    """Whether the tenant may still use the backend that gave the kept answer."""
    tier = _TIERS.get(str(record["tier"]))
    backend = str(record["backend"])
    return tier in access.tiers and (not access.backends or backend in access.backends)


# --- the control ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class TenantSettings:
    enabled: bool
    ttl_ms: int
    bounds: Bounds


class ExactMatchCache:
    """:class:`router.controls.pipeline.ResponseCache` over one :class:`CacheStore`."""

    def __init__(
        self,
        cfg: CacheConfig,
        store: CacheStore,
        *,
        objective: Objective = Objective.CHEAPEST,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock``: wall-clock seconds (entries' ages and expiry; stores shared by
        replicas compare them)."""
        #: Where the answers are kept.
        self.backing = store
        #: Wall-clock seconds; injectable (tests move it to expire answers).
        self.clock = clock
        self._objective = objective
        self._data_classes = frozenset(cfg.data_classes)
        self._max_entry_bytes = cfg.max_entry_bytes
        self._default = TenantSettings(
            True, cfg.ttl_s * 1000, Bounds(cfg.max_entries, cfg.max_bytes)
        )
        self._tenants = {
            name: TenantSettings(
                t.enabled,
                (cfg.ttl_s if t.ttl_s is None else t.ttl_s) * 1000,
                Bounds(
                    cfg.max_entries if t.max_entries is None else t.max_entries,
                    cfg.max_bytes if t.max_bytes is None else t.max_bytes,
                ),
            )
            for name, t in cfg.tenants.items()
        }

    def settings(self, tenant: str) -> TenantSettings:
        return self._tenants.get(tenant, self._default)

    def not_cacheable(self, tenant: str, request: InferenceRequest) -> str:
        """Why ``request`` is not answered from, or kept in, the cache ("" when it is)."""
        if request.session_id:
            return "session"
        if Tier.CACHE in request.exclude_tiers:
            return "the request excludes tier cache"
        if not self.settings(tenant).enabled:
            return f"off for tenant {tenant}"
        if request.data_class not in self._data_classes:
            return f"data class {request.data_class.value} (controls.cache.data_classes)"
        return nondeterministic(request)

    async def lookup(self, principal: Principal, request: InferenceRequest) -> CacheLookup:
        t0 = time.perf_counter()
        obs = observer_var.get()
        tenant = principal.tenant
        access = principal.access
        if access is not None:
            # What the tenant may not ask is refused as without the cache (dispatch would).
            access.check_request(request)
        why = self.not_cacheable(tenant, request)
        if why:
            obs.control("cache", "bypass")
            return CacheLookup(None, f"not cacheable: {why}")
        key = cache_key(request)
        now_ms = int(self.clock() * 1000)
        try:
            found = await self.backing.get(tenant, key, now_ms=now_ms)
        except StoreUnavailable as exc:
            log.warning("response cache lookup failed, answering from the models: %s", exc)
            obs.control("cache", "error")
            return CacheLookup(None, f"bypassed: {exc.message}")
        record = decode(found.value) if found.value is not None else None
        full_key = f"{tenant}/{key}"
        reason = ""
        if record is None:
            reason = "miss: expired" if found.expired else "miss: first time"
            if found.value is not None:
                reason = "miss: the stored entry is unreadable (kept again)"
        elif access is not None and not _allowed(access, record):
            # Kept before the tenant's access changed (a restart, a replica's new config).
            reason = f"miss: kept from {record['backend']}, which the tenant may no longer use"
        if reason:
            obs.control("cache", "miss")
            return CacheLookup(None, reason, key=full_key)
        assert record is not None
        events = replay(
            record,
            request,
            objective=self._objective,
            now_ms=now_ms,
            elapsed_ms=(time.perf_counter() - t0) * 1000.0,
        )
        obs.control("cache", "hit")
        return CacheLookup(events)

    async def store(
        self, lookup: CacheLookup, request: InferenceRequest, events: tuple[Event, ...]
    ) -> None:
        if not lookup.key:
            return
        tenant, _, key = lookup.key.partition("/")
        obs = observer_var.get()
        now_ms = int(self.clock() * 1000)
        value = encode(events, stored_ms=now_ms)
        if value is None:
            return
        if len(value) > self._max_entry_bytes:
            obs.control("cache", "too_large")
            return
        settings = self.settings(tenant)
        try:
            evicted = await self.backing.put(
                tenant,
                key,
                value,
                now_ms=now_ms,
                expires_ms=now_ms + settings.ttl_ms,
                bounds=settings.bounds,
            )
        except StoreUnavailable as exc:
            log.warning("response cache could not keep an answer: %s", exc)
            obs.control("cache", "error")
            return
        obs.control("cache", "store")
        for _ in range(min(evicted, 1000)):
            obs.control("cache", "evict")


def check_tenants(cfg: CacheConfig, config: RouterConfig) -> None:
    """ConfigError when ``tenants`` names one that ``auth.tenants`` (when set) lacks."""
    known = {t.name for t in config.auth.tenants}
    unknown = sorted(set(cfg.tenants) - known) if known else []
    if unknown:
        raise ConfigError(
            f"{', '.join(map(repr, unknown))} not in auth.tenants; name a configured tenant",
            key=f"{SECTION}.tenants",
        )


def build_cache(
    cfg: CacheConfig, config: RouterConfig, environ: Mapping[str, str]
) -> tuple[ExactMatchCache, Callable[[], Any]]:
    """The response cache ``controls.cache`` configures, and what closes its store."""
    check_tenants(cfg, config)
    store = open_cache_store(cfg, environ)
    cache = ExactMatchCache(cfg, store, objective=config.policy.objective)
    return cache, store.close


def describe(cfg: CacheConfig) -> str:
    """One line: the store, the TTL, the bounds, the data classes, tenants set apart."""
    where = {"memory": "in this replica", "sqlite": "SQLite", "redis": "Redis"}[cfg.store]
    line = (
        f"{cfg.store} ({where}), ttl {cfg.ttl_s}s, per tenant {cfg.max_entries} answers / "
        f"{cfg.max_bytes} bytes, data classes {', '.join(d.value for d in cfg.data_classes)}"
    )
    off = sorted(n for n, t in cfg.tenants.items() if not t.enabled)
    if off:
        line += f"; off for {', '.join(off)}"
    return line


async def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``controls.cache``: the settings (one ``ok`` row), tenants ``auth.tenants`` lacks,
    the store (the Redis URL's variable; with ``--probe``, a PING or opening the SQLite
    file)."""
    from router.preflight import FAIL, OK, WARN, Finding

    cfg = config.controls.cache
    if not cfg.enabled:
        return []
    findings = [Finding(OK, SECTION, SECTION, describe(cfg))]
    try:
        check_tenants(cfg, config)
    except ConfigError as exc:
        findings.append(Finding.failed(SECTION, exc))
    if cfg.tenants and not config.auth.configured:
        findings.append(
            Finding(
                WARN,
                SECTION,
                f"{SECTION}.tenants",
                "auth is off: every caller is one tenant without a key, so no tenant's "
                "settings apply",
                "configure auth keys to set tenants apart",
            )
        )
    try:
        store = open_cache_store(cfg, env)
    except ConfigError as exc:
        return [*findings, Finding.failed(f"{SECTION}.{cfg.store}", exc)]
    key = f"{SECTION}.{cfg.store}"
    try:
        if opts.probe and cfg.store != "memory":
            try:
                await store.ping()
                findings.append(Finding(OK, key, key, f"{store.name} answers"))
            except StoreUnavailable as exc:
                level = WARN if cfg.store == "redis" else FAIL
                findings.append(
                    Finding(level, key, key, exc.message, "start Redis, or fix the URL or path")
                )
    finally:
        await store.close()
    return findings
