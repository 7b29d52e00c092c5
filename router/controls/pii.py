"""PiiGuard: PII kept away from hosted tiers, per tenant (docs/controls.md#pii-guard).

:class:`Guard` is the pipeline's ``PiiGuard`` (router/controls/pipeline.py, step 1). For a
request that a ``hosted`` backend could take (the request's pins and exclusions and the
tenant's tiers allow one), it scans the prompt's messages for the kinds the tenant's rule
names (router/controls/pii_detect.py) and, when it finds some, acts as the rule says:

- ``route``: ``hosted`` joins the request's ``exclude_tiers``, so the policy plans over
  private tiers only; :meth:`Guard.watch` turns the Decision's hosted rejections into
  ``rejected_by: pii`` with the kinds found, and a policy error (no private backend can
  take it) into :class:`PiiNoPrivateBackend` saying why hosted was out.
- ``redact``: the request carries a ``hosted_copy`` (router/types.py) that dispatch calls
  when it makes a hosted backend's copy: each finding becomes its label (``[EMAIL]``,
  ``[CARD]``...). Private tiers get the original.
- ``refuse``: :class:`PiiRefused` (FAILED_PRECONDITION, reason ``PII_FOUND``), before any
  model is called.

A session request (``session_id``) gets a ``hosted_copy`` whatever its new turn holds: the
history is only added by dispatch (router/sessions/context.py), fitted to each backend's
window, so the guard scans exactly what a hosted backend would get, at the point where
that copy is made, and redacts it, withholds it from that backend (``route``: dispatch
moves on to the next candidate, :class:`PiiWithheld`) or refuses it.

Never logged, never in an error or a span: the text found. Errors and the Decision name
the kinds; metrics count outcomes (``hybrid_router_control_events{control="pii"}``:
``clean``, ``routed``, ``redacted``, ``refused``, ``skipped``) and kinds
(``control="pii_kind"``). A request the guard acted on is also kept out of content logging
(``telemetry.logs.content``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from router.config.pii import PiiConfig
from router.controls import pii_detect
from router.controls.pii_detect import Match
from router.errors import (
    AllCandidatesFailed,
    AlreadyExists,
    Cancelled,
    ConfigError,
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    PiiNoPrivateBackend,
    PiiRefused,
    PiiWithheld,
    RouterError,
    StoreUnavailable,
    Unauthenticated,
)
from router.telemetry.observer import observer_var
from router.types import DecisionEvent, Event, InferenceRequest, Message, Plan, Tier

if TYPE_CHECKING:
    from router.config import RouterConfig
    from router.preflight import Finding, Options
    from router.security.authn import Principal

log = logging.getLogger(__name__)

SECTION = "controls.pii"
#: The metric label of this control, and of its per-kind counts.
CONTROL = "pii"
KIND_CONTROL = "pii_kind"
#: ``CandidateReport.rejected_by`` of a hosted backend the guard kept the prompt from.
REJECTED_BY = "pii"

ALLOW, ROUTE, REDACT, REFUSE = "allow", "route", "redact", "refuse"

#: Errors the decision raises that have nothing to do with which tiers were allowed.
_NOT_ROUTING = (
    InvalidRequest,
    PermissionDenied,
    Unauthenticated,
    NotFound,
    AlreadyExists,
    StoreUnavailable,
    DeadlineExceeded,
    Cancelled,
)


@dataclass(frozen=True, slots=True)
class Rule:
    """What the guard does for one tenant."""

    action: str
    kinds: frozenset[str]


def _names(kinds: Iterable[str]) -> str:
    return ", ".join(sorted(set(kinds)))


def _who(tenant: str) -> str:
    return f"tenant {tenant!r}" if tenant else "callers without an API key"


class ScanMemo:
    """Findings by (kinds, text) for texts of ``min_chars`` or more, the least recently
    used dropped past ``max_chars`` in all: a system prompt or a session's history is
    scanned once, not on every request (hashing a text costs ~1/30 of scanning it).
    Thread-safe (a long prompt is scanned in a worker thread)."""

    def __init__(self, max_chars: int = 4_000_000, min_chars: int = 256) -> None:
        self._found: OrderedDict[tuple[frozenset[str], str], tuple[Match, ...]] = OrderedDict()
        self._chars = 0
        self.max_chars = max_chars
        self.min_chars = min_chars
        self._lock = threading.Lock()

    def find(self, text: str, kinds: frozenset[str]) -> tuple[Match, ...]:
        if len(text) < self.min_chars or len(text) > self.max_chars:
            return tuple(pii_detect.find(text, kinds))
        key = (kinds, text)
        with self._lock:
            hit = self._found.get(key)
            if hit is not None:
                self._found.move_to_end(key)
                return hit
        found = tuple(pii_detect.find(text, kinds))
        with self._lock:
            if key not in self._found:
                self._found[key] = found
                self._chars += len(text)
                while self._chars > self.max_chars:
                    (_, old), _ = self._found.popitem(last=False)
                    self._chars -= len(old)
        return found

    def __len__(self) -> int:
        return len(self._found)


class _Scan:
    """The findings of one list of messages."""

    __slots__ = ("messages", "found", "kinds")

    def __init__(self, messages: Sequence[Message], found: list[tuple[Match, ...]]) -> None:
        self.messages = messages
        self.found = found
        self.kinds = frozenset(m.kind for ms in found for m in ms)

    def redacted(self) -> tuple[Message, ...]:
        return tuple(
            Message(msg.role, pii_detect.redact(msg.content, list(ms))) if ms else msg
            for msg, ms in zip(self.messages, self.found, strict=True)
        )


class HostedCopy:
    """One request's ``hosted_copy`` (router/types.py): called by dispatch with the copy a
    hosted backend would get (a session's: its fitted history, then the new turn)."""

    __slots__ = (
        "guard",
        "rule",
        "tenant",
        "prompt",
        "prompt_kinds",
        "acted",
        "withheld",
        "history_kinds",
    )

    def __init__(self, guard: Guard, rule: Rule, tenant: str, prompt: _Scan):
        self.guard = guard
        self.rule = rule
        self.tenant = tenant
        #: The scan of the request's own messages (step 1), and the kinds it found.
        self.prompt = prompt
        self.prompt_kinds = prompt.kinds
        #: The outcome was counted (once per request).
        self.acted = bool(prompt.kinds)
        #: Hosted backends withheld at the copy (``route``), and the kinds that made it.
        self.withheld = 0
        self.history_kinds: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        # Stable (what a request's other fields are keyed by, e.g. the response cache's
        # key): the rule, never an address.
        return f"HostedCopy({self.rule.action}: {_names(self.rule.kinds)})"

    def __call__(self, sent: InferenceRequest) -> InferenceRequest:
        prompt = self.prompt
        if sent.messages is prompt.messages:
            scan = prompt  # the request as it came: scanned already
        else:  # a session's copy: the history, then the request's own messages
            known = {id(m): ms for m, ms in zip(prompt.messages, prompt.found, strict=True)}
            scan = self.guard.scan(sent.messages, self.rule.kinds, known)
        if not scan.kinds:
            return sent
        action = self.rule.action
        if action == REDACT:
            self._acted(scan.kinds, "redacted")
            return replace(sent, messages=scan.redacted())
        kinds = _names(scan.kinds)
        who = _who(self.tenant)
        if action == ROUTE:
            self._acted(scan.kinds, "routed")
            self.withheld += 1
            self.history_kinds |= scan.kinds
            raise PiiWithheld(
                f"withheld: the prompt with this session's history holds PII ({kinds}); "
                f"{who} keeps PII off hosted tiers ({SECTION}: route)",
                sorted(scan.kinds),
            )
        self._acted(scan.kinds, "refused")
        raise PiiRefused(
            f"this session's history holds PII ({kinds}), and {who} may not send PII to "
            f"hosted tiers ({SECTION}: refuse); start a new session, or pin a private tier "
            "(pin_tiers: gpu, edge)",
            sorted(scan.kinds),
        )

    def _acted(self, kinds: frozenset[str], outcome: str) -> None:
        if not self.acted:
            self.acted = True
            _count(outcome, kinds)

    def explain(self, plan: Plan, request: InferenceRequest) -> Plan:
        """``plan`` with the hosted backends the guard excluded rejected by ``pii``, naming
        the kinds found (the caller's own pins and exclusions keep their reasons)."""
        kinds = _names(self.prompt_kinds)
        reason = (
            f"the prompt holds PII ({kinds}); {_who(self.tenant)} keeps PII off hosted "
            f"tiers ({SECTION}: route)"
        )
        candidates = tuple(
            replace(c, rejected_by=REJECTED_BY, reason=reason)
            if c.tier is Tier.HOSTED
            and not c.accepted
            and c.rejected_by == "pin"
            and (not request.pin_tiers or Tier.HOSTED in request.pin_tiers)
            and (not request.pin_backends or c.backend in request.pin_backends)
            and c.backend not in request.exclude_backends
            else c
            for c in plan.candidates
        )
        explanation = f"{plan.explanation}; hosted tiers excluded: the prompt holds PII ({kinds})"
        return replace(plan, candidates=candidates, explanation=explanation)


def _count(outcome: str, kinds: Iterable[str] = ()) -> None:
    obs = observer_var.get()
    obs.control(CONTROL, outcome)
    for kind in sorted(kinds):
        obs.control(KIND_CONTROL, kind)
    if kinds and getattr(obs, "text", None) is not None:
        obs.text = None  # content logging: not for a request with PII


def may_reach_hosted(request: InferenceRequest, principal: Principal) -> bool:
    """Whether a hosted backend could take ``request`` at all: the caller's pins and
    exclusions, and the tenant's tiers."""
    if Tier.HOSTED in request.exclude_tiers:
        return False
    if request.pin_tiers and Tier.HOSTED not in request.pin_tiers:
        return False
    access = principal.access
    return access is None or Tier.HOSTED in access.tiers


class Guard:
    """The PII guard ``controls.pii`` configures."""

    #: A prompt longer than this (characters) is scanned in a worker thread: the scan
    #: holds the GIL, but the event loop gets its turns in between (~2 ms of scanning).
    OFFLOAD_CHARS = 262_144

    def __init__(self, cfg: PiiConfig, memo: ScanMemo | None = None) -> None:
        self.cfg = cfg
        self.default = self._rule("")
        self.tenants = {name: self._rule(name) for name in cfg.tenants}
        self.memo = memo if memo is not None else ScanMemo()

    def _rule(self, tenant: str) -> Rule:
        action, kinds = self.cfg.rule(tenant)
        return Rule(action, frozenset(kinds))

    def rule(self, tenant: str) -> Rule:
        return self.tenants.get(tenant, self.default) if tenant else self.default

    def scan(
        self,
        messages: Sequence[Message],
        kinds: frozenset[str],
        known: Mapping[int, tuple[Match, ...]] | None = None,
    ) -> _Scan:
        """The findings in ``messages``; ``known``: those of some of them already, by
        ``id`` of the Message."""
        find = self.memo.find
        if not known:
            return _Scan(messages, [find(m.content, kinds) for m in messages])
        return _Scan(
            messages,
            [
                ms if (ms := known.get(id(m))) is not None else find(m.content, kinds)
                for m in messages
            ],
        )

    async def apply(self, principal: Principal, request: InferenceRequest) -> InferenceRequest:
        rule = self.rule(principal.tenant)
        if rule.action == ALLOW:
            return request
        if not may_reach_hosted(request, principal):
            _count("skipped")
            return request
        messages = request.messages
        if sum(len(m.content) for m in messages) > self.OFFLOAD_CHARS:
            scan = await asyncio.to_thread(self.scan, messages, rule.kinds)
        else:
            scan = self.scan(messages, rule.kinds)
        copy = HostedCopy(self, rule, principal.tenant, scan)
        if not scan.kinds:
            _count("clean")
            # A session's history is added by dispatch: scanned at the hosted copy.
            return replace(request, hosted_copy=copy) if request.session_id else request
        log.debug(
            "pii request_id=%s tenant=%s action=%s kinds=%s",
            request.request_id,
            principal.tenant or "-",
            rule.action,
            ",".join(sorted(scan.kinds)),
        )
        kinds = _names(scan.kinds)
        who = _who(principal.tenant)
        if rule.action == REFUSE:
            _count("refused", scan.kinds)
            raise PiiRefused(
                f"the prompt holds PII ({kinds}), and {who} may not send PII to hosted "
                f"tiers ({SECTION}: refuse); remove it, or pin a private tier "
                "(pin_tiers: gpu, edge)",
                sorted(scan.kinds),
            )
        if rule.action == ROUTE:
            _count("routed", scan.kinds)
            return replace(
                request,
                exclude_tiers=request.exclude_tiers | {Tier.HOSTED},
                hosted_copy=copy,
            )
        _count("redacted", scan.kinds)
        return replace(request, hosted_copy=copy)

    def watch(
        self, request: InferenceRequest, events: AsyncGenerator[Event, None]
    ) -> AsyncGenerator[Event, None]:
        copy = request.hosted_copy
        if not isinstance(copy, HostedCopy) or copy.rule.action != ROUTE:
            return events
        return self._watch(copy, request, events)

    async def _watch(
        self, copy: HostedCopy, request: InferenceRequest, events: AsyncGenerator[Event, None]
    ) -> AsyncGenerator[Event, None]:
        async with contextlib.aclosing(events):
            try:
                first = await anext(events)
            except StopAsyncIteration:
                return
            except _NOT_ROUTING:
                raise
            except RouterError as exc:
                if not copy.prompt_kinds:
                    raise
                raise PiiNoPrivateBackend(
                    f"the prompt holds PII ({_names(copy.prompt_kinds)}), which "
                    f"{_who(copy.tenant)} keeps off hosted tiers ({SECTION}: route), and no "
                    f"private backend can take it: {exc.message}",
                    sorted(copy.prompt_kinds),
                    exc,
                ) from None
            if type(first) is DecisionEvent and copy.prompt_kinds:
                first = DecisionEvent(copy.explain(first.plan, request))
            yield first
            try:
                async for ev in events:
                    yield ev
            except AllCandidatesFailed as exc:
                if not copy.withheld or len(exc.attempts) != copy.withheld:
                    raise
                # Every candidate was a hosted backend the session's history was withheld from.
                raise PiiNoPrivateBackend(
                    f"this session's history holds PII ({_names(copy.history_kinds)}), which "
                    f"{_who(copy.tenant)} keeps off hosted tiers ({SECTION}: route), and the "
                    f"plan had no private backend: {exc.message}",
                    sorted(copy.history_kinds),
                    exc,
                ) from None


def check_tenants(cfg: PiiConfig, config: RouterConfig) -> None:
    """ConfigError when ``tenants`` names one that ``auth.tenants`` (when set) lacks: a
    misspelt name would leave that tenant on the default rule."""
    known = {t.name for t in config.auth.tenants}
    unknown = sorted(set(cfg.tenants) - known) if known else []
    if unknown:
        raise ConfigError(
            f"{', '.join(map(repr, unknown))} not in auth.tenants; name a configured tenant",
            key=f"{SECTION}.tenants",
        )


def build_pii(cfg: PiiConfig, config: RouterConfig, environ: Mapping[str, str]) -> Guard:
    """The guard ``controls.pii`` configures (``router.controls.build``)."""
    check_tenants(cfg, config)
    guard = Guard(cfg)
    log.info("pii guard: %s", describe(cfg))
    return guard


def describe(cfg: PiiConfig) -> str:
    """One line: the default rule and each tenant's override."""

    def one(action: str, kinds: Sequence[str]) -> str:
        return action if action == ALLOW else f"{action} ({', '.join(kinds)})"

    line = f"default {one(*cfg.rule(''))}"
    for name in sorted(cfg.tenants):
        line += f"; {name}: {one(*cfg.rule(name))}"
    return line


def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``controls.pii``: the rules (one ``ok`` row), and tenants ``auth.tenants`` lacks."""
    from router.preflight import OK, WARN, Finding

    cfg = config.controls.pii
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
                "auth is off: every caller is one tenant without a key, so only "
                f"{SECTION}.default applies",
                "configure auth keys to set tenants apart",
            )
        )
    return findings
