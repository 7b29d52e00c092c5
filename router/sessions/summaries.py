"""Running summaries for the ``summarize`` strategy, made off the request path.

After a turn is stored (``Sessions.after_commit``), when the backend that answered had to
leave out turns the cached summary does not cover, :class:`Summarizer` makes a new
summary in the background: the previous summary plus the turns since, condensed by a
model. It goes through the router's own dispatch as an ordinary request of the session's
tenant, with the session request's data class and the ``cheapest`` objective: so it is
made by the cheapest backend that tenant may send that data to, and never by a tier the
data may not go to. The result is cached in the session store with the turn range it
covers (``Summary.upto``); a summary covering fewer turns never replaces a newer one.
One summary at a time per session; a failure is logged and the next turn tries again
(until then, the strategy falls back to ``sliding`` and the Decision says so).

Tool use goes into the summary request as text (:func:`summary_line`): an assistant
turn's calls as ``name(arguments)`` after its text, a tool result as
``tool get_weather (call_1): ...``; arguments and results longer than
:data:`TOOL_TEXT_CHARS` are cut (a page a tool fetched need not be summarised whole).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Callable

from router.config import SummariesConfig
from router.security.tenants import TenantAccess
from router.sessions.context import Conversation, Sessions
from router.sessions.model import SUMMARIZE, Summary, Turn
from router.types import (
    DeltaEvent,
    Event,
    InferenceRequest,
    Message,
    Objective,
    Role,
    UsageEvent,
)

log = logging.getLogger(__name__)

#: The characters of one tool call's arguments or one tool result a summary request gets.
TOOL_TEXT_CHARS = 2000

Generate = Callable[[InferenceRequest, TenantAccess | None], AsyncGenerator[Event, None]]

INSTRUCTIONS = (
    "You keep a running summary of a conversation between a user and an assistant. "
    "Write the updated summary: facts, names, numbers, decisions and open questions, in "
    "plain sentences, no preamble."
)


def _clip(text: str, limit: int = TOOL_TEXT_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more)"


def summary_line(turn: Turn) -> str:
    """One turn as the summary request shows it: ``user: ...``, ``assistant: ...`` with
    its tool calls, ``tool get_weather (call_1): ...``."""
    if turn.role == "tool":
        name = f" {turn.name}" if turn.name else ""
        return f"tool{name} ({turn.tool_call_id}): {_clip(turn.content)}"
    text = turn.content
    if turn.tool_calls:
        calls = "; ".join(f"{c.name}({_clip(c.arguments)})" for c in turn.tool_calls)
        text = f"{text} [called {calls}]" if text else f"[called {calls}]"
    return f"{turn.role}: {text}"


class Summarizer:
    def __init__(self, sessions: Sessions, generate: Generate, cfg: SummariesConfig) -> None:
        self.sessions = sessions
        self._generate = generate
        self.cfg = cfg
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        #: Summaries made, and failures (for tests and metrics).
        self.made = 0
        self.failed = 0

    def after_commit(self, conv: Conversation, backend: str) -> None:
        """Start a summary when ``backend``'s prompt had to leave turns out. It covers the
        turns left out, and as many more as were just appended: the window moves on by
        that much on the next turn, so the summary is ready for it."""
        if conv.strategy != SUMMARIZE or not self.cfg.enabled:
            return
        fitted = conv.fitted.get(backend)
        if fitted is None:
            return
        result = fitted.result
        if result.turns_dropped == 0 and not result.summary_used:
            return  # the whole history fits
        turns = conv.session.turns
        first_kept = turns[result.start].seq if result.start < len(turns) else conv.next_seq
        # Never the newest question and its answer: they always go whole.
        upto = min(first_kept + conv.appended, conv.next_seq + conv.appended - 2)
        info = conv.session.info
        key = (info.tenant, info.session_id)
        covered = conv.summary.upto if conv.summary is not None else 0
        if key in self._running or upto <= covered:
            return
        task = asyncio.get_running_loop().create_task(
            self._make(conv, upto), name=f"summary {info.session_id}"
        )
        self._running[key] = task
        task.add_done_callback(lambda _t: self._running.pop(key, None))

    async def wait(self) -> None:
        """Until every running summary is done (tests, shutdown)."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        for task in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _make(self, conv: Conversation, upto: int) -> None:
        info = conv.session.info
        store = self.sessions.store
        try:
            previous = await store.get_summary(info.tenant, info.session_id)
            since = previous.upto if previous is not None else 0
            if previous is not None and previous.upto >= upto:
                return
            # The turns as stored now (with the turn just appended).
            session = await store.get(info.tenant, info.session_id, now_ms=self.sessions.now_ms())
            if session is None:
                return
            lines = [summary_line(t) for t in session.turns if since <= t.seq < upto]
            if not lines:
                return
            text = (f"Summary so far: {previous.text}\n\n" if previous else "") + (
                "New turns:\n" + "\n".join(lines)
            )
            request = InferenceRequest(
                messages=(Message(Role.SYSTEM, INSTRUCTIONS), Message(Role.USER, text)),
                max_output_tokens=self.cfg.max_output_tokens,
                request_id=f"summary-{uuid.uuid4().hex[:16]}",
                data_class=conv.request.data_class,
                tenant=conv.request.tenant,
                objective=Objective.CHEAPEST,
                # The PII guard's hosted copy (router/controls/pii.py): a summary of a
                # history is held to the same rule as the history itself.
                hosted_copy=conv.request.hosted_copy,
            )
            answer, backend = await asyncio.wait_for(
                self._answer(request, conv), self.cfg.timeout_s
            )
            if not answer.strip():
                raise ValueError("the model answered nothing")
            summary = Summary(
                upto=upto, text=answer.strip(), backend=backend, made_ms=self.sessions.now_ms()
            )
            await store.put_summary(info.tenant, info.session_id, summary)
            self.made += 1
            log.info(
                "summary of session %s turns 0-%d made by %s", info.session_id, upto - 1, backend
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed += 1
            log.warning(
                "summary of session %s failed (%s: %s); sliding until one is made",
                info.session_id,
                type(exc).__name__,
                exc,
            )

    async def _answer(self, request: InferenceRequest, conv: Conversation) -> tuple[str, str]:
        parts: list[str] = []
        backend = ""
        events = self._generate(request, conv.access)
        async with contextlib.aclosing(events):
            async for ev in events:
                if type(ev) is DeltaEvent:
                    parts.append(ev.text)
                elif type(ev) is UsageEvent:
                    backend = ev.backend
        return "".join(parts), backend
