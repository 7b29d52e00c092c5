"""Tenant controls around one Generate: the order they act in, in one place.

:meth:`Controls.generate` wraps ``Dispatcher.generate`` (router/dispatch.py); each control
is optional (None: off) and lives in its own module, behind the small interface below:

==========  =======================  ==================================================
step        control                  what it does
==========  =======================  ==================================================
0           ``ledger`` (Ledger)      admit: refuse (UNAVAILABLE naming its store) while
                                     its buffer of unwritten records is full
1           ``pii``  (PiiGuard)      scan the prompt; route away from hosted, mark the
                                     hosted copy for redaction, or refuse
2           ``cache`` (ResponseCache) a hit streams the stored answer (tier ``cache``,
                                     no model call); a miss says why
3           ``limiter`` (Limiter)    charge one request and the request's token
                                     estimate; refuse (RESOURCE_EXHAUSTED + retry delay,
                                     or OUT_OF_RANGE: more than a burst holds)
4           decision                 the dispatcher decides (its DecisionEvent)
5           ``budgets`` (Budgets)    reserve the plan's estimated cost before any model
                                     is called; refuse naming the budget, what is left,
                                     when it resets; on a failover, grow it to the
                                     fallback's estimate before the fallback is called
6           the answer streams
7           settle                   correct the limiter from Usage, settle the budget
                                     with the actual cost, write the ledger record, keep
                                     a cacheable answer
==========  =======================  ==================================================

Any refusal happens before a model is called. A reservation or a charge is always
settled, on success, failure or cancellation (``finally``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from router.types import (
    ContinuationEvent,
    DecisionEvent,
    DeltaEvent,
    Event,
    FailoverEvent,
    FinishReason,
    InferenceRequest,
    Plan,
    StreamStop,
    UsageEvent,
)

if TYPE_CHECKING:
    from router.dispatch import Dispatcher
    from router.security.authn import Principal
    from router.security.tenants import TenantAccess


class PiiGuard(Protocol):
    async def apply(self, principal: Principal, request: InferenceRequest) -> InferenceRequest:
        """The request as it may go on: unchanged, with hosted tiers excluded, or marked
        for a redacted hosted copy; raises a RouterError to refuse it."""
        ...

    def watch(
        self, request: InferenceRequest, events: AsyncGenerator[Event, None]
    ) -> AsyncGenerator[Event, None]:
        """The dispatcher's events for ``request`` (as :meth:`apply` returned it): the
        Decision's hosted rejections name the PII kinds found, and a policy error caused
        by keeping the prompt off hosted tiers says so (``events`` itself when neither
        can happen)."""
        ...


@dataclass(frozen=True, slots=True)
class CacheLookup:
    #: The stored events to replay on a hit (Decision, deltas, Usage), else None.
    events: tuple[Event, ...] | None
    #: Why it was a miss or not cacheable ("" on a hit).
    reason: str = ""
    #: The key to store the answer under after a miss ("" when not cacheable).
    key: str = ""


class ResponseCache(Protocol):
    async def lookup(self, principal: Principal, request: InferenceRequest) -> CacheLookup: ...

    async def store(
        self, lookup: CacheLookup, request: InferenceRequest, events: tuple[Event, ...]
    ) -> None: ...


class Limiter(Protocol):
    async def charge(self, principal: Principal, request: InferenceRequest) -> Any:
        """A ticket for :meth:`correct`; raises a RouterError (RESOURCE_EXHAUSTED with a
        retry delay) when over a limit."""
        ...

    async def correct(self, ticket: Any, usage: UsageEvent | None) -> None:
        """Replace the estimate charged with what Usage reports (None: nothing was used)."""
        ...


class Budgets(Protocol):
    async def reserve(self, principal: Principal, request: InferenceRequest, plan: Plan) -> Any:
        """A reservation of the plan's estimated cost; raises a RouterError naming the
        budget, what is left and when it resets when it does not fit."""
        ...

    async def failover(self, reservation: Any, event: FailoverEvent | ContinuationEvent) -> None:
        """Before the fallback is called: grow the reservation to its estimate; raises
        like :meth:`reserve` when that does not fit."""
        ...

    async def settle(
        self, reservation: Any, usage: UsageEvent | None, *, cancelled: bool = False
    ) -> None:
        """Release the reservation and charge ``usage``'s cost; no Usage: nothing spent,
        unless the request was ``cancelled`` (then the reservation's estimate is spent)."""
        ...


class Ledger(Protocol):
    def admit(self) -> None:
        """Raises StoreUnavailable (LedgerBacklog) while too many records wait to be
        written: a new request is refused rather than its record dropped later."""
        ...

    async def record(
        self, principal: Principal, request: InferenceRequest, usage: UsageEvent, cached: bool
    ) -> None:
        """Keep the request's usage and cost (buffered, written in the background; never
        dropped: :meth:`admit` refuses new requests while the buffer is full)."""
        ...


@dataclass(slots=True)
class Controls:
    pii: PiiGuard | None = None
    cache: ResponseCache | None = None
    limiter: Limiter | None = None
    budgets: Budgets | None = None
    ledger: Ledger | None = None
    #: Closed with the router (stores, background writers).
    closers: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return any((self.pii, self.cache, self.limiter, self.budgets, self.ledger))

    async def generate(
        self,
        dispatcher: Dispatcher,
        request: InferenceRequest,
        principal: Principal,
        *,
        deadline: float | None = None,
        access: TenantAccess | None = None,
        stop: StreamStop | None = None,
    ) -> AsyncGenerator[Event, None]:
        """``dispatcher.generate`` with every configured control around it."""
        if self.ledger is not None:
            self.ledger.admit()
        if self.pii is not None:
            request = await self.pii.apply(principal, request)
        lookup: CacheLookup | None = None
        if self.cache is not None:
            lookup = await self.cache.lookup(principal, request)
            if lookup.events is not None:
                hit: UsageEvent | None = None
                for cached in lookup.events:
                    if isinstance(cached, UsageEvent):
                        hit = cached
                    yield cached
                if self.ledger is not None and hit is not None:
                    await self.ledger.record(principal, request, hit, True)
                return
        ticket = await self.limiter.charge(principal, request) if self.limiter else None
        reservation = None
        usage: UsageEvent | None = None
        cancelled = False
        kept: list[Event] = []
        # For a stream the caller cancels (dispatch then sends no Usage): what was decided,
        # where it was going, and the tokens that came.
        decided: Plan | None = None
        serving = ""
        streamed = 0
        try:
            events = dispatcher.generate(request, deadline=deadline, access=access, stop=stop)
            if self.pii is not None:
                events = self.pii.watch(request, events)
            async with contextlib.aclosing(events):
                async for ev in events:
                    kind = type(ev)
                    if kind is DecisionEvent and lookup is not None:
                        # Why the cache did not answer ("miss: first time", "not cacheable...").
                        ev = DecisionEvent(replace(ev.plan, cache=lookup.reason))  # type: ignore[union-attr]
                    if kind is DecisionEvent and self.budgets is not None:
                        # Before the first attempt starts: a refusal calls no model.
                        plan = ev.plan  # type: ignore[union-attr]
                        reservation = await self.budgets.reserve(principal, request, plan)
                    elif (
                        (kind is FailoverEvent or kind is ContinuationEvent)
                        and reservation is not None
                        and self.budgets
                    ):
                        # Before the fallback starts: a dearer one grows the reservation.
                        await self.budgets.failover(reservation, ev)  # type: ignore[arg-type]
                    elif kind is UsageEvent:
                        usage = ev  # type: ignore[assignment]
                    if kind is DecisionEvent:
                        decided = ev.plan  # type: ignore[union-attr]
                        serving = decided.primary
                    elif kind is FailoverEvent or kind is ContinuationEvent:
                        serving = ev.to_backend  # type: ignore[union-attr]
                    elif kind is DeltaEvent:
                        streamed += ev.tokens  # type: ignore[union-attr]
                    if lookup is not None and lookup.key:
                        kept.append(ev)  # a cacheable request: its events, to replay
                    yield ev
        except (asyncio.CancelledError, GeneratorExit):
            cancelled = True  # the caller went away: a model may have worked without a Usage
            if usage is None and decided is not None:
                usage = _cancelled_usage(request, decided, serving, streamed)
            raise
        finally:
            # Always settled: success, failure, cancellation.
            if self.limiter is not None and ticket is not None:
                await self.limiter.correct(ticket, usage)
            if self.budgets is not None and reservation is not None:
                await self.budgets.settle(reservation, usage, cancelled=cancelled)
            if usage is not None and self.ledger is not None:
                await self.ledger.record(principal, request, usage, False)
        if lookup is not None and lookup.key and usage is not None and usage.complete:
            assert self.cache is not None
            await self.cache.store(lookup, request, tuple(kept))

    async def close(self) -> None:
        closers, self.closers = self.closers, []
        for close in closers:
            result = close()
            if hasattr(result, "__await__"):
                await result


def _cancelled_usage(
    request: InferenceRequest, plan: Plan, backend: str, streamed: int
) -> UsageEvent | None:
    """The ledger's record of a stream the caller cancelled: the backend it was going to,
    the tokens that came, the prompt and cost as estimated (what a budget charges)."""
    report = plan.report(backend)
    if report is None or report.estimate is None:
        return None
    est = report.estimate
    return UsageEvent(
        request_id=request.request_id,
        backend=backend,
        tier=report.tier,
        input_tokens=est.prompt_tokens,
        output_tokens=streamed,
        cost_usd=est.cost_usd,
        ttft_ms=0.0,
        total_ms=0.0,
        finish_reason=FinishReason.CANCELLED,
        complete=False,
        error="cancelled by the caller (tokens and cost as estimated)",
        tokens_estimated=True,
        template=request.template,
        template_version=request.template_version,
    )
