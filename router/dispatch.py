"""Runs a Plan: the request's life after validation.

``Dispatcher.generate`` yields the stream of domain events:

    DecisionEvent, then DeltaEvent*, FailoverEvent (only before the first token),
    then one UsageEvent.

Before the first token, a RETRYABLE or TOO_LARGE backend error, or no first token
within the TTFT timeout, moves to the next candidate of the plan. A FATAL error stops
at once. After the first token, a failure yields a final UsageEvent with
``complete=False`` and raises StreamInterrupted. Cancellation (client gone, deadline)
propagates into the adapter, which cancels the backend call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import replace

from opentelemetry import trace

from router import policy
from router.config import PolicyConfig
from router.errors import (
    AllCandidatesFailed,
    Attempt,
    BackendError,
    DeadlineExceeded,
    ErrorClass,
    InvalidRequest,
    StreamInterrupted,
)
from router.policy.estimate import cost_usd
from router.policy.tokens import TokenCounter
from router.registry import BackendRegistry, Entry
from router.security.tenants import TenantAccess
from router.telemetry import tracing
from router.types import (
    BackendCall,
    Chunk,
    DecisionEvent,
    DeltaEvent,
    Event,
    FailoverEvent,
    Features,
    FinishReason,
    InferenceRequest,
    Plan,
    UsageEvent,
)

log = logging.getLogger(__name__)


class _FirstTokenTimeout(Exception):
    pass


class Dispatcher:
    def __init__(
        self,
        registry: BackendRegistry,
        cfg: PolicyConfig,
        *,
        token_counter: TokenCounter | None = None,
        clock: Callable[[], float] = time.monotonic,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.registry = registry
        self.cfg = cfg
        self.tokens = token_counter or TokenCounter(cfg.token_estimate)
        self._clock = clock
        self._tracer = tracer if tracer is not None else tracing.tracer_from(None)

    # --- deciding ---------------------------------------------------------------------

    #: Prompts longer than this (characters) are counted off the event loop when a backend
    #: uses an exact (gguf) tokenizer: llama.cpp releases the GIL, and ~1-3 ms per 1,000
    #: tokens would otherwise stall every other stream.
    OFFLOAD_CHARS = 4096

    def _tokenizer_ids(self) -> set[str]:
        return {e.spec.tokenizer_id for e in self.registry.entries()}

    async def decide(
        self, request: InferenceRequest, access: TenantAccess | None = None
    ) -> tuple[Plan, Features]:
        """Features + policy. Raises the policy's RouterErrors (no candidate etc.).

        ``access``: the caller's tenant; the policy then only sees its backends, and a
        request for anything else is PERMISSION_DENIED (router.security.tenants).
        """
        t0 = time.perf_counter()
        if access is not None:
            access.check_request(request)
        pairs = self.registry.pairs()
        if not pairs:
            raise AllCandidatesFailed([Attempt("(none)", "no backends are configured")])
        ids = self._tokenizer_ids()
        if len(ids) > 1 and sum(len(m.content) for m in request.messages) > self.OFFLOAD_CHARS:
            feats = await asyncio.to_thread(self.tokens.features, request, ids)
        else:
            feats = self.tokens.features(request, ids)
        largest = max((p[0] for p in pairs), key=lambda spec: spec.max_payload_bytes)
        if feats.payload_bytes > largest.max_payload_bytes:
            raise InvalidRequest(
                "messages",
                f"payload is {feats.payload_bytes} bytes; the largest any backend accepts is "
                f"{largest.max_payload_bytes} bytes ({largest.name}); send less text",
            )
        if access is None:
            plan = policy.plan(feats, pairs, self.cfg, self._clock())
        else:
            plan = access.plan(feats, pairs, self.cfg, self._clock())
        plan = replace(plan, decision_us=(time.perf_counter() - t0) * 1e6)
        return plan, feats

    # --- running ----------------------------------------------------------------------

    async def generate(
        self,
        request: InferenceRequest,
        *,
        deadline: float | None = None,
        access: TenantAccess | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Decide, then stream. ``deadline`` is a ``clock()`` value (or None)."""
        plan, feats = await self.decide(request, access)
        log.debug(  # the request's one INFO line comes at its end (router.telemetry)
            "decision request_id=%s backend=%s fallbacks=%s budget_unmet=%s decision_us=%.1f",
            request.request_id,
            plan.primary,
            ",".join(plan.fallbacks),
            plan.budget_unmet,
            plan.decision_us,
        )
        yield DecisionEvent(plan)

        attempts: list[Attempt] = []
        previous: str | None = None
        for name in plan.order:
            entry = self.registry.get(name)
            if entry is None:
                attempts.append(Attempt(name, "removed from the router"))
                continue
            if not entry.stats.allow():
                attempts.append(Attempt(name, "circuit open"))
                continue
            if deadline is not None and self._clock() >= deadline:
                raise DeadlineExceeded(
                    "deadline passed before a backend answered"
                    + (
                        f" (tried: {'; '.join(f'{a.backend}: {a.reason}' for a in attempts)})"
                        if attempts
                        else ""
                    )
                )
            if previous is not None:
                yield FailoverEvent(
                    from_backend=previous,
                    to_backend=name,
                    to_tier=entry.spec.tier,
                    reason=attempts[-1].reason if attempts else "",
                    attempt=len(attempts) + 1,
                )
            previous = name
            outcome = _Outcome()
            attempt = self._attempt(entry, request, feats, deadline, outcome, attempts)
            async with contextlib.aclosing(attempt) as events:
                async for event in events:
                    yield event
            if outcome.done:
                return
            attempts.append(Attempt(name, outcome.failure))
        raise AllCandidatesFailed(attempts)

    async def _attempt(
        self,
        entry: Entry,
        request: InferenceRequest,
        feats: Features,
        deadline: float | None,
        outcome: _Outcome,
        attempts: list[Attempt],
    ) -> AsyncGenerator[Event, None]:
        spec = entry.spec
        stats = entry.stats
        # One trace span per attempt; its context travels to the backend (traceparent).
        span = tracing.start_attempt(self._tracer, spec, len(attempts) + 1)
        call = BackendCall(request=request, deadline=deadline, metadata=tracing.inject(span))
        timeout_s = self.cfg.ttft_timeout_ms / 1000.0
        cut_by_deadline = False
        if deadline is not None:
            left = max(0.0, deadline - self._clock())
            if left < timeout_s:
                timeout_s, cut_by_deadline = left, True
        start = self._clock()
        stream = entry.backend.stream(call)
        stats.begin()
        first_at: float | None = None
        out_tokens = 0
        try:
            try:
                first = await _first_chunk(stream, timeout_s)
            except _FirstTokenTimeout:
                if cut_by_deadline:
                    # The caller's deadline, not the backend's TTFT, ran out: no failover.
                    raise DeadlineExceeded(
                        f"deadline passed waiting for the first token from {spec.name}"
                    ) from None
                reason = f"no first token within {timeout_s * 1000:.0f} ms"
                stats.record_failure(ErrorClass.RETRYABLE)
                outcome.failure = reason
                log.warning("ttft timeout request_id=%s backend=%s", request.request_id, spec.name)
                return
            except BackendError as exc:
                stats.record_failure(exc.error_class, exc.retry_after_s)
                if exc.error_class is ErrorClass.FATAL:
                    raise
                outcome.failure = f"{exc.error_class.value}: {exc.reason}"
                log.warning(
                    "backend failed before first token request_id=%s backend=%s class=%s: %s",
                    request.request_id,
                    spec.name,
                    exc.error_class.value,
                    exc.reason,
                )
                return
            except StopAsyncIteration:
                stats.record_failure(ErrorClass.RETRYABLE)
                outcome.failure = "stream ended without output"
                return
            except Exception as exc:  # an adapter bug must not stop failover
                log.exception(
                    "unexpected adapter error request_id=%s backend=%s",
                    request.request_id,
                    spec.name,
                )
                stats.record_failure(ErrorClass.RETRYABLE)
                outcome.failure = f"unexpected error ({type(exc).__name__})"
                return

            first_at = self._clock()
            chunk = first
            try:
                while True:
                    if chunk.text:
                        out_tokens += chunk.tokens
                        yield DeltaEvent(chunk.text, chunk.tokens)
                    if chunk.done:
                        final = chunk
                        break
                    try:
                        chunk = await anext(stream)
                    except StopAsyncIteration:
                        raise BackendError(
                            spec.name, "stream ended without a final message"
                        ) from None
            except BackendError as exc:
                # After the first token there is no failover: the answer ends incomplete.
                stats.record_first_token((first_at - start) * 1000.0)
                stats.record_failure(exc.error_class, exc.retry_after_s)
                yield self._usage(
                    request,
                    entry,
                    feats,
                    start,
                    first_at,
                    out_tokens,
                    None,
                    complete=False,
                    error=exc.reason,
                    attempts=len(attempts) + 1,
                )
                raise StreamInterrupted(spec.name, exc.reason) from exc
            end = self._clock()
            output_tokens = final.output_tokens if final.output_tokens is not None else out_tokens
            # Time spent in the backend's own queue is load, which the estimate adds from
            # the live queue; keep it out of the TTFT and service-time samples.
            queued_ms = final.queue_ms or 0.0
            stats.record_first_token(max(0.0, (first_at - start) * 1000.0 - queued_ms))
            stats.record_success(
                max(0.0, (end - start) * 1000.0 - queued_ms),
                output_tokens,
                (end - first_at) * 1000.0,
            )
            outcome.done = True
            yield self._usage(
                request,
                entry,
                feats,
                start,
                first_at,
                out_tokens,
                final,
                complete=True,
                error="",
                attempts=len(attempts) + 1,
            )
        finally:
            stats.end()
            tracing.end_attempt(span, outcome.done, outcome.failure, first_at is not None)
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]

    def _usage(
        self,
        request: InferenceRequest,
        entry: Entry,
        feats: Features,
        start: float,
        first_at: float,
        counted_tokens: int,
        final: Chunk | None,
        *,
        complete: bool,
        error: str,
        attempts: int,
    ) -> UsageEvent:
        spec = entry.spec
        estimated = False
        if final is not None and final.input_tokens is not None:
            input_tokens = final.input_tokens
        else:
            input_tokens = feats.prompt_tokens[spec.tokenizer_id].tokens
            estimated = not feats.prompt_tokens[spec.tokenizer_id].exact
        if final is not None and final.output_tokens is not None:
            output_tokens = final.output_tokens
        else:
            output_tokens = counted_tokens
            estimated = True
        if final is not None and final.finish_reason is not None:
            finish = final.finish_reason
        else:
            finish = FinishReason.STOP if complete else FinishReason.ERROR
        now = self._clock()
        return UsageEvent(
            request_id=request.request_id,
            backend=spec.name,
            tier=spec.tier,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd(spec, input_tokens, output_tokens),
            ttft_ms=(first_at - start) * 1000.0,
            total_ms=(now - start) * 1000.0,
            finish_reason=finish,
            complete=complete,
            error=error,
            tokens_estimated=estimated,
            attempts=attempts,
        )


class _Outcome:
    __slots__ = ("done", "failure")

    def __init__(self) -> None:
        self.done = False
        self.failure = ""


async def _first_chunk(stream: AsyncIterator[Chunk], timeout_s: float) -> Chunk:
    """The first chunk carrying text (or the final chunk), within ``timeout_s``."""
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise _FirstTokenTimeout()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                chunk = await anext(stream)
                if chunk.text or chunk.done:
                    return chunk
    except TimeoutError:
        raise _FirstTokenTimeout() from None
