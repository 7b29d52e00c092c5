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
from router.continuation import continuation_request, join
from router.errors import (
    AllCandidatesFailed,
    Attempt,
    BackendError,
    DeadlineExceeded,
    ErrorClass,
    InvalidRequest,
    PiiWithheld,
    StreamInterrupted,
)
from router.output_lengths import OutputLengths
from router.policy.estimate import cost_usd, ttft_sample_ms
from router.policy.filters import prompt_count
from router.records import policy_params
from router.registry import BackendRegistry, Entry
from router.security.tenants import TenantAccess
from router.sessions.context import Conversation, Sessions
from router.telemetry import tracing
from router.tokenizers import TokenCounter, Tokenizers, features
from router.tools.calls import ToolCallBuffer
from router.tools.schema import answer_error, arguments_error
from router.types import (
    BackendCall,
    Chunk,
    ContinuationEvent,
    DecisionEvent,
    DeltaEvent,
    Event,
    FailoverEvent,
    Features,
    FinishReason,
    InferenceRequest,
    Plan,
    StreamStop,
    Tier,
    ToolCall,
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
        sessions: Sessions | None = None,
    ) -> None:
        self.registry = registry
        self.cfg = cfg
        #: What the policy reads of ``cfg``, as a plain record (the policy never sees pydantic).
        self.params = policy_params(cfg)
        #: Prompt token counts for the policy (router.tokenizers).
        self.tokens: TokenCounter = token_counter or Tokenizers(cfg.token_estimate)
        self._clock = clock
        self._tracer = tracer if tracer is not None else tracing.tracer_from(None)
        #: Conversations kept for stateless callers (router/sessions/); None: refused.
        self.sessions = sessions
        #: How much of max_output_tokens each tenant's answers use (latency estimates).
        self.outputs = OutputLengths(cfg.output_estimate)

    # --- deciding ---------------------------------------------------------------------

    #: Prompts longer than this (characters) are counted off the event loop when a backend
    #: uses an exact (gguf) tokenizer: llama.cpp releases the GIL, and ~1-3 ms per 1,000
    #: tokens would otherwise stall every other stream.
    OFFLOAD_CHARS = 4096

    def _tokenizer_ids(self) -> set[str]:
        return {e.spec.tokenizer_id for e in self.registry.entries()}

    async def open_session(
        self, request: InferenceRequest, access: TenantAccess | None, *, dry_run: bool = False
    ) -> Conversation:
        """The request's session (router/sessions/): its stored history; an unknown id
        starts one (``dry_run``: an empty one, not stored)."""
        if self.sessions is None:
            raise InvalidRequest("session_id", "this router keeps no sessions")
        return await self.sessions.open(request, access, dry_run=dry_run)

    async def decide(
        self,
        request: InferenceRequest,
        access: TenantAccess | None = None,
        *,
        conversation: Conversation | None = None,
    ) -> tuple[Plan, Features]:
        """Features + policy. Raises the policy's RouterErrors (no candidate etc.).

        ``access``: the caller's tenant; the policy then only sees its backends, and a
        request for anything else is PERMISSION_DENIED (router.security.tenants).
        ``conversation``: a session request's history (else, with ``session_id``, it is
        read here, as a dry run): fitted to each backend's window before the policy runs.
        """
        t0 = time.perf_counter()
        if access is not None:
            access.check_request(request)
        pairs = self.registry.pairs()
        if not pairs:
            raise AllCandidatesFailed([Attempt("(none)", "no backends are configured")])
        if request.session_id and conversation is None:
            conversation = await self.open_session(request, access, dry_run=True)
        ids = self._tokenizer_ids()
        if len(ids) > 1 and sum(len(m.content) for m in request.messages) > self.OFFLOAD_CHARS:
            feats = await asyncio.to_thread(features, request, self.tokens, ids)
        else:
            feats = features(request, self.tokens, ids)
        max_out = request.max_output_tokens or self.cfg.default_max_output_tokens
        expected = self.outputs.expected(request.tenant, max_out)
        if expected is not None and expected < max_out:
            feats = replace(feats, expected_output_tokens=expected)
        if conversation is not None:
            if len(conversation.session.turns) > 64:
                fitted = await asyncio.to_thread(conversation.fit, pairs, max_out)
            else:
                fitted = conversation.fit(pairs, max_out)
            feats = replace(feats, fitted=fitted)
        largest = max((p[0] for p in pairs), key=lambda spec: spec.max_payload_bytes)
        if conversation is None and feats.payload_bytes > largest.max_payload_bytes:
            raise InvalidRequest(
                "messages",
                f"payload is {feats.payload_bytes} bytes; the largest any backend accepts is "
                f"{largest.max_payload_bytes} bytes ({largest.name}); send less text",
            )
        if access is None:
            plan = policy.plan(feats, pairs, self.params, self._clock())
        else:
            plan = access.plan(feats, pairs, self.params, self._clock())
        if conversation is not None:
            plan = conversation.annotate(plan)
        plan = replace(plan, decision_us=(time.perf_counter() - t0) * 1e6)
        return plan, feats

    # --- running ----------------------------------------------------------------------

    async def generate(
        self,
        request: InferenceRequest,
        *,
        deadline: float | None = None,
        access: TenantAccess | None = None,
        stop: StreamStop | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Decide, then stream. ``deadline`` is a ``clock()`` value (or None); ``stop``
        goes to each backend call (set when the caller went away: router.types.StreamStop).

        A session request (``session_id``): each backend gets its own fitted history; once
        the answer is complete, the new turn and the answer are appended to the session
        (a store failure then ends the stream UNAVAILABLE, naming the store)."""
        conv = await self.open_session(request, access) if request.session_id else None
        plan, feats = await self.decide(request, access, conversation=conv)
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
        may_continue = request.continue_on_failure or (
            access is not None and access.continue_on_failure
        )
        carry: _Carry | None = None  # the answer so far, once a backend failed mid-answer
        for name in plan.order:
            entry = self.registry.get(name)
            if entry is None:
                attempts.append(Attempt(name, "removed from the router"))
                continue
            if not entry.stats.allow():
                attempts.append(Attempt(name, "circuit open"))
                continue
            if deadline is not None and self._clock() >= deadline:
                if carry is not None:
                    yield carry.usage
                    raise StreamInterrupted(carry.usage.backend, "deadline passed")
                raise DeadlineExceeded(
                    "deadline passed before a backend answered"
                    + (
                        f" (tried: {'; '.join(f'{a.backend}: {a.reason}' for a in attempts)})"
                        if attempts
                        else ""
                    )
                )
            # The attempt runs inline (no async generator per attempt): each token passes
            # one generator layer here on its way from the adapter to the relay.
            sent = request if conv is None else conv.request_for(name, request)
            if request.hosted_copy is not None and entry.spec.tier is Tier.HOSTED:
                try:  # the PII guard's copy for hosted backends (router/controls/pii.py)
                    sent = request.hosted_copy(sent)
                except PiiWithheld as exc:
                    attempts.append(Attempt(name, exc.message))
                    previous = name  # the next one's Failover names this one
                    continue
            held_space = ""
            if carry is not None:
                sent, method, held_space = continuation_request(
                    sent, carry.text, carry.usage.output_tokens, entry.spec
                )
                yield ContinuationEvent(
                    from_backend=carry.usage.backend,
                    to_backend=name,
                    to_tier=entry.spec.tier,
                    reason=attempts[-1].reason if attempts else carry.usage.error,
                    tokens_so_far=carry.usage.output_tokens,
                    method=method,
                    attempt=len(attempts) + 1,
                )
            elif previous is not None:
                yield FailoverEvent(
                    from_backend=previous,
                    to_backend=name,
                    to_tier=entry.spec.tier,
                    reason=attempts[-1].reason if attempts else "",
                    attempt=len(attempts) + 1,
                )
            previous = name
            att = _Attempt(self, entry, sent, deadline, len(attempts) + 1, stop)
            try:
                if request.validate_before_streaming:
                    held = await att.whole_answer()
                    if held is None:
                        attempts.append(Attempt(name, att.failure))
                        continue
                    first, rest = held[0], iter(held[1:])
                else:
                    got = await att.first_chunk()
                    if got is None:
                        attempts.append(Attempt(name, att.failure))
                        continue
                    first, rest = got, None
                if held_space and first.text:
                    first = replace(first, text=join(held_space, first.text))
                stream = att.stream
                chunk = first
                out_tokens = 0
                text: list[str] = []
                calls = ToolCallBuffer()
                try:
                    while True:
                        if chunk.text:
                            out_tokens += chunk.tokens
                            text.append(chunk.text)
                            yield DeltaEvent(chunk.text, chunk.tokens)
                        if chunk.tool_calls:
                            if not chunk.text:
                                out_tokens += chunk.tokens  # a tool call's tokens count too
                            for tc in chunk.tool_calls:
                                calls.add(tc)
                                yield tc
                        if chunk.done:
                            break
                        try:
                            chunk = next(rest) if rest is not None else await anext(stream)
                        except StopAsyncIteration:
                            raise BackendError(
                                name, "stream ended without a final message"
                            ) from None
                except BackendError as exc:
                    cut = att.interrupted(feats, out_tokens, exc)
                    if carry is not None:
                        cut = carry.add(cut)
                    # An answer that already has all max_output_tokens (the backend failed
                    # after its last token, before its end) leaves nothing to go on with.
                    budget = request.max_output_tokens or self.cfg.default_max_output_tokens
                    if may_continue and not len(calls) and cut.output_tokens < budget:
                        # Go on with the next candidate: the answer so far is its prompt.
                        so_far = (carry.text if carry is not None else "") + "".join(text)
                        carry = _Carry(so_far, cut)
                        attempts.append(Attempt(name, f"failed mid-answer: {exc.reason}"))
                        continue
                    # No continuation: the answer ends incomplete.
                    yield cut
                    raise StreamInterrupted(name, exc.reason) from exc
                whole = "".join(text)
                if carry is not None:
                    whole = carry.text + whole
                done_calls = calls.calls()
                if conv is not None:
                    await conv.commit(whole, name, done_calls)
                # A held answer (validate_before_streaming) was checked before it was sent.
                checked = "" if rest is not None else answer_check(request, whole, done_calls)
                usage = att.succeeded(feats, out_tokens, chunk, checked, len(done_calls))
                yield usage if carry is None else carry.add(usage)
                return
            finally:
                await att.finish()
        if carry is not None:
            # Every candidate after the failure failed too: the answer ends incomplete.
            yield carry.usage
            raise StreamInterrupted(carry.usage.backend, carry.usage.error)
        raise AllCandidatesFailed(attempts)

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
        format_error: str = "",
        tool_calls: int = 0,
    ) -> UsageEvent:
        spec = entry.spec
        estimated = False
        if final is not None and final.input_tokens is not None:
            input_tokens = final.input_tokens
        else:
            counted = prompt_count(feats, spec)
            input_tokens = counted.tokens
            estimated = not counted.exact
        if final is not None and final.output_tokens is not None:
            output_tokens = final.output_tokens
        else:
            output_tokens = counted_tokens
            estimated = True
        if final is not None and final.finish_reason is not None:
            finish = final.finish_reason
        else:
            finish = FinishReason.STOP if complete else FinishReason.ERROR
        if tool_calls and finish is FinishReason.STOP:
            finish = FinishReason.TOOL_CALLS  # an engine that reports a plain stop
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
            template=request.template,
            template_version=request.template_version,
            format_error=format_error,
            tool_calls=tool_calls,
        )


class _Carry:
    """An answer continued after a failure mid-stream: the text so far and the usage of
    the backends that wrote it (an incomplete Usage of the last of them)."""

    __slots__ = ("text", "usage")

    def __init__(self, text: str, usage: UsageEvent) -> None:
        self.text = text
        self.usage = usage

    def add(self, usage: UsageEvent) -> UsageEvent:
        """``usage`` of the backend that went on, with the earlier backends' tokens, cost,
        time and attempts summed in."""
        first = self.usage
        return replace(
            usage,
            input_tokens=usage.input_tokens + first.input_tokens,
            output_tokens=usage.output_tokens + first.output_tokens,
            cost_usd=usage.cost_usd + first.cost_usd,
            ttft_ms=first.ttft_ms,
            total_ms=first.total_ms + usage.total_ms,
            tokens_estimated=usage.tokens_estimated or first.tokens_estimated,
            continued=True,
        )


class _Attempt:
    """One backend attempt's state: the call, its span, stats and timings."""

    __slots__ = (
        "d",
        "entry",
        "request",
        "number",
        "span",
        "stream",
        "start",
        "first_at",
        "timeout_s",
        "cut_by_deadline",
        "done",
        "failure",
        "stop",
        "_caller_stop",
    )

    def __init__(
        self,
        d: Dispatcher,
        entry: Entry,
        request: InferenceRequest,
        deadline: float | None,
        number: int,
        stop: StreamStop | None = None,
    ) -> None:
        self.d = d
        self.entry = entry
        self.request = request
        self.number = number
        self.done = False
        self.failure = ""
        self.first_at: float | None = None
        # One trace span per attempt; its context travels to the backend (traceparent).
        self.span = tracing.start_attempt(d._tracer, entry.spec, number)
        # The attempt's own stop: the caller's (when it goes away) and the first-token
        # timeout's; it cancels a gRPC backend call rather than the task reading it.
        self.stop = StreamStop()
        self._caller_stop = stop
        if stop is not None:
            stop.watch(self.stop.set)
        call = BackendCall(
            request=request, deadline=deadline, metadata=tracing.inject(self.span), stop=self.stop
        )
        self.timeout_s = d.cfg.ttft_timeout_ms / 1000.0
        self.cut_by_deadline = False
        if deadline is not None:
            left = max(0.0, deadline - d._clock())
            if left < self.timeout_s:
                self.timeout_s, self.cut_by_deadline = left, True
        self.start = d._clock()
        self.stream: AsyncIterator[Chunk] = entry.backend.stream(call)
        entry.stats.begin()

    async def first_chunk(self) -> Chunk | None:
        """The first chunk with text (or the final one); None with ``failure`` set when the
        attempt failed in a way that moves on to the next candidate. Raises FATAL errors and
        DeadlineExceeded."""
        spec, stats, rid = self.entry.spec, self.entry.stats, self.request.request_id
        try:
            first = await _first_chunk(self.stream, self.timeout_s, self.stop)
        except _FirstTokenTimeout:
            if self.cut_by_deadline:
                # The caller's deadline, not the backend's TTFT, ran out: no failover.
                raise DeadlineExceeded(
                    f"deadline passed waiting for the first token from {spec.name}"
                ) from None
            self.failure = f"no first token within {self.timeout_s * 1000:.0f} ms"
            stats.record_failure(ErrorClass.RETRYABLE, message=self.failure)
            log.warning("ttft timeout request_id=%s backend=%s", rid, spec.name)
            return None
        except BackendError as exc:
            self._failed(exc)
            log.warning(
                "backend failed before first token request_id=%s backend=%s class=%s: %s",
                rid,
                spec.name,
                exc.error_class.value,
                exc.reason,
            )
            return None
        except StopAsyncIteration:
            self.failure = "stream ended without output"
            stats.record_failure(ErrorClass.RETRYABLE, message=self.failure)
            return None
        except Exception as exc:  # an adapter bug must not stop failover
            log.exception("unexpected adapter error request_id=%s backend=%s", rid, spec.name)
            self.failure = f"unexpected error ({type(exc).__name__})"
            stats.record_failure(ErrorClass.RETRYABLE, message=f"{self.failure}: {exc}")
            return None
        self.first_at = self.d._clock()
        return first

    def interrupted(self, feats: Features, out_tokens: int, exc: BackendError) -> UsageEvent:
        """After the first token: record the failure; the incomplete Usage."""
        assert self.first_at is not None
        stats = self.entry.stats
        spec = self.entry.spec
        stats.record_first_token(
            ttft_sample_ms(
                stats.prefill_rate(spec.priors),
                prompt_count(feats, spec).tokens,
                (self.first_at - self.start) * 1000.0,
            )
        )
        stats.record_failure(
            exc.error_class, exc.retry_after_s, message=f"after the first token: {exc.reason}"
        )
        return self.d._usage(
            self.request,
            self.entry,
            feats,
            self.start,
            self.first_at,
            out_tokens,
            None,
            complete=False,
            error=exc.reason,
            attempts=self.number,
        )

    def _failed(self, exc: BackendError) -> None:
        """A backend error before anything was sent: counted; FATAL is raised, the rest
        leave ``failure`` set (the next candidate is tried)."""
        self.entry.stats.record_failure(exc.error_class, exc.retry_after_s, message=exc.reason)
        if exc.error_class is ErrorClass.FATAL:
            raise exc
        self.failure = f"{exc.error_class.value}: {exc.reason}"

    async def whole_answer(self) -> list[Chunk] | None:
        """validate_before_streaming: the whole answer, held and checked against the
        request's format before anything is sent; None with ``failure`` set when the
        backend failed (at any point: nothing was sent yet) or its answer is not valid
        (that backend's failure, RETRYABLE). Raises FATAL errors and DeadlineExceeded."""
        first = await self.first_chunk()
        if first is None:
            return None
        held = [first]
        spec, stats = self.entry.spec, self.entry.stats
        try:
            chunk = first
            while not chunk.done:
                chunk = await anext(self.stream)
                held.append(chunk)
        except StopAsyncIteration:
            self.failure = "stream ended without a final message"
            stats.record_failure(ErrorClass.RETRYABLE, message=self.failure)
            return None
        except BackendError as exc:
            self._failed(exc)
            return None
        calls = ToolCallBuffer()
        for c in held:
            for tc in c.tool_calls:
                calls.add(tc)
        error = answer_check(self.request, "".join(c.text for c in held), calls.calls())
        if error:
            self.failure = f"invalid answer: {error}"
            stats.record_failure(ErrorClass.RETRYABLE, message=self.failure)
            log.warning(
                "invalid answer request_id=%s backend=%s: %s",
                self.request.request_id,
                spec.name,
                error,
            )
            return None
        return held

    def succeeded(
        self,
        feats: Features,
        out_tokens: int,
        final: Chunk,
        format_error: str = "",
        tool_calls: int = 0,
    ) -> UsageEvent:
        """The answer is complete: record the stats; the final Usage."""
        assert self.first_at is not None
        first_at, start, stats = self.first_at, self.start, self.entry.stats
        end = self.d._clock()
        output_tokens = final.output_tokens if final.output_tokens is not None else out_tokens
        # Time spent in the backend's own queue is load, which the estimate adds from
        # the live queue; keep it out of the TTFT and service-time samples.
        queued_ms = final.queue_ms or 0.0
        spec = self.entry.spec
        prompt = final.input_tokens
        if prompt is None:
            prompt = prompt_count(feats, spec).tokens
        # ... and so is the prompt's own prefill, which each estimate adds for its prompt
        # (when the backend reports a prompt reading rate or its priors give one).
        stats.record_first_token(
            ttft_sample_ms(
                stats.prefill_rate(spec.priors), prompt, (first_at - start) * 1000.0 - queued_ms
            )
        )
        stats.record_success(
            max(0.0, (end - start) * 1000.0 - queued_ms),
            output_tokens,
            (end - first_at) * 1000.0,
        )
        req = self.request
        self.d.outputs.record(
            req.tenant, req.max_output_tokens or self.d.cfg.default_max_output_tokens, output_tokens
        )
        self.done = True
        return self.d._usage(
            self.request,
            self.entry,
            feats,
            start,
            first_at,
            out_tokens,
            final,
            complete=True,
            error="",
            attempts=self.number,
            format_error=format_error,
            tool_calls=tool_calls,
        )

    async def finish(self) -> None:
        if self._caller_stop is not None:
            self._caller_stop.unwatch(self.stop.set)
        self.entry.stats.end()
        tracing.end_attempt(self.span, self.done, self.failure, self.first_at is not None)
        with contextlib.suppress(Exception):
            await self.stream.aclose()  # type: ignore[attr-defined]


def answer_check(request: InferenceRequest, text: str, calls: tuple[ToolCall, ...]) -> str:
    """Why an answer does not fit the request ("" when it does): a JSON response format
    (when the answer is text, not tool calls), and each tool call's arguments against
    its tool's schema."""
    for call in calls:
        err = arguments_error(call, request.tools)
        if err:
            return err
    if request.response_format.is_json and not calls:
        return answer_error(text, request.response_format)
    return ""


async def _first_chunk(stream: AsyncIterator[Chunk], timeout_s: float, stop: StreamStop) -> Chunk:
    """The first chunk carrying text (or the final chunk), within ``timeout_s``.

    When the time is up, ``stop`` is set: a gRPC backend call it watches is cancelled and
    its pending read ends the stream by itself (a task cancelled inside a grpc.aio read
    leaks the read's batch: grpc/grpc#43360). With no such call (an HTTP backend, or a
    call not started yet) this task is cancelled, as ``asyncio.timeout`` would."""
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise _FirstTokenTimeout()
    task = asyncio.current_task()
    assert task is not None
    cancelling = task.cancelling()
    expired = cancelled_task = False

    def expire() -> None:
        nonlocal expired, cancelled_task
        expired = True
        if not stop.set():
            cancelled_task = True
            task.cancel()

    timer = asyncio.get_running_loop().call_later(timeout_s, expire)
    try:
        while True:
            chunk = await anext(stream)
            if chunk.text or chunk.done or chunk.tool_calls:
                break
    except asyncio.CancelledError:
        if not expired:
            raise  # the caller went away
        if cancelled_task:
            task.uncancel()  # the timeout's own cancel
        if task.cancelling() > cancelling:
            raise  # cancelled by someone else too
        raise _FirstTokenTimeout() from None
    finally:
        timer.cancel()
    if expired:
        # The time ran out as the chunk arrived: the call is cancelled already (its next
        # read would end the stream), so this attempt timed out.
        raise _FirstTokenTimeout()
    return chunk
