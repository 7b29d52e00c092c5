"""A session request on its way through dispatch: load the history, fit it to every
candidate's window, hand each backend its own prompt, store the turn and the answer.

:class:`Sessions` is what the dispatcher holds (one per router); :meth:`Sessions.open`
gives a :class:`Conversation` for one request::

    conv = await sessions.open(request, access)      # StoreUnavailable before any model call
    fitted = conv.fit(pairs, max_output_tokens)      # per backend: FittedPrompt (policy input)
    request_for_gpu = conv.request_for("gpu-a", request)
    ...                                              # the answer streams
    await conv.commit(answer_text, "gpu-a", calls)   # appends the new turn and the answer

The history is counted turn by turn with each backend's tokenizer (router.tokenizers);
counts are cached per turn, so a turn is counted once per tokenizer for its whole life.
The fitting itself is pure (router/sessions/fitting.py).

Tool use (docs/tools.md) is stored as turns: the assistant's tool calls with its answer,
and the caller's tool results (``ROLE_TOOL`` messages) as ``tool`` turns. So an agent
loop sends only its tool results with the session id, and the backend gets the history
with the assistant's tool-call turn right before them. A tool call counts with its name
and arguments. A backend that does not take tools (no ``tools`` capability: a later
plain question in a session that used tools may go to one) gets the tool turns as text:
the calls in the assistant's turn, the results as a user turn.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from router.config import SessionsConfig
from router.errors import AlreadyExists, InvalidRequest, StoreUnavailable
from router.security.tenants import TenantAccess
from router.sessions.fitting import FitResult, fit, paired
from router.sessions.model import (
    SESSION_ID_RULE,
    STRATEGIES,
    SUMMARIZE,
    Session,
    SessionInfo,
    Summary,
    Turn,
    calls_text,
    valid_session_id,
)
from router.sessions.store import SessionStore
from router.tokenizers import TokenCounter
from router.tools.needs import TOOLS
from router.tools.schema import tools_text
from router.types import (
    BackendSnapshot,
    BackendSpec,
    ContextFit,
    FittedPrompt,
    InferenceRequest,
    Message,
    Plan,
    Role,
    TokenCount,
    ToolCall,
)

log = logging.getLogger(__name__)

#: The tenant of sessions made while auth is off.
ANONYMOUS = "anonymous"
#: How the summary goes in front of the kept turns.
SUMMARY_PREFIX = "Summary of the earlier conversation: "
_ROLES = {"user": Role.USER, "assistant": Role.ASSISTANT, "tool": Role.TOOL}


def turn_message(turn: Turn) -> Message:
    """A stored turn as a backend that takes tools gets it."""
    return Message(
        _ROLES.get(turn.role, Role.USER),
        turn.content,
        turn.tool_calls,
        turn.tool_call_id,
        turn.name,
    )


def tool_result_text(turn: Turn | Message) -> str:
    """A tool result as text: ``[result of get_weather call_1] 12 C``."""
    return f"[result of {turn.name or 'a tool'} {turn.tool_call_id}] {turn.content}"


def turn_text(turn: Turn | Message) -> str:
    """A turn's text with its tool calls or its tool result spelled out (what is counted,
    and what a backend without tools gets)."""
    if turn.tool_call_id:
        return tool_result_text(turn)
    if turn.tool_calls:
        calls = calls_text(turn.tool_calls)
        return f"{turn.content}\n{calls}" if turn.content else calls
    return turn.content


def _counted(role: str | Role, text: str) -> Message:
    # A tool result is counted as the user text a backend without tools gets (a counter's
    # chat template may not know the tool role).
    r = _ROLES.get(role, Role.USER)
    return Message(Role.USER if r is Role.TOOL else r, text)


def as_text(turns: Sequence[Turn]) -> list[Message]:
    """``turns`` for a backend without tools: the calls in the assistant's text, each run
    of tool results one user message (so user and assistant turns still alternate)."""
    out: list[Message] = []
    after_result = False
    for t in turns:
        if t.role == "tool":
            text = tool_result_text(t)
            if after_result:
                out[-1] = Message(Role.USER, f"{out[-1].content}\n{text}")
            else:
                out.append(Message(Role.USER, text))
            after_result = True
        else:
            out.append(Message(_ROLES.get(t.role, Role.USER), turn_text(t)))
            after_result = False
    return out


def tenant_of(request: InferenceRequest) -> str:
    return request.tenant or ANONYMOUS


@dataclass(frozen=True, slots=True)
class Fitted:
    """One backend's copy of the prompt."""

    prompt: FittedPrompt
    result: FitResult
    messages: tuple[Message, ...]

    @property
    def report(self) -> ContextFit:
        r = self.result
        return ContextFit(
            turns_kept=r.turns_kept,
            turns_dropped=r.turns_dropped,
            turns_summarized=r.turns_summarized,
            tokens_kept=r.tokens,
            tokens_dropped=r.tokens_dropped,
            summary_used=r.summary_used,
            note=r.note,
        )


class _Counts:
    """Per-turn token counts, by (tokenizer, tenant, session incarnation, seq): a turn
    never changes, so it is counted once per tokenizer (LRU of ``size`` turns)."""

    def __init__(self, counter: TokenCounter, size: int = 200_000) -> None:
        self._counter = counter
        self._cache: OrderedDict[tuple[str, str, str, int, int], TokenCount] = OrderedDict()
        self._size = size

    def turn(self, tid: str, key: tuple[str, str, int], turn: Turn) -> TokenCount:
        k = (tid, *key, turn.seq)
        hit = self._cache.get(k)
        if hit is not None:
            return hit
        if turn.tool_calls or turn.tool_call_id:
            m = _counted(turn.role, turn_text(turn))
        else:
            m = Message(_ROLES.get(turn.role, Role.USER), turn.content)
        tc = self._counter.count(tid, (m,))
        self._cache[k] = tc
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return tc

    def messages(self, tid: str, messages: tuple[Message, ...]) -> TokenCount:
        """Tokens of ``messages``, each counted on its own, tool calls and results as text."""
        total, exact = 0, True
        for m in messages:
            if m.tool_calls or m.role is Role.TOOL:
                m = _counted(m.role, turn_text(m))
            tc = self._counter.count(tid, (m,))
            total += tc.tokens
            exact = exact and tc.exact
        return TokenCount(total, exact)


class Conversation:
    """One session request: the stored history and how it goes to each backend."""

    def __init__(
        self,
        sessions: Sessions,
        request: InferenceRequest,
        session: Session,
        summary: Summary | None,
        strategy: str,
        created: bool,
        access: TenantAccess | None = None,
    ) -> None:
        self._sessions = sessions
        self.request = request
        #: The caller's tenant access (summaries are made within it).
        self.access = access
        self.session = session
        self.summary = summary
        self.strategy = strategy
        #: The session was started by this request (an unknown id).
        self.created = created
        self.fitted: dict[str, Fitted] = {}

    @property
    def session_id(self) -> str:
        return self.session.info.session_id

    @property
    def next_seq(self) -> int:
        """The seq the next stored turn gets (the history's end, before this turn)."""
        turns = self.session.turns
        return turns[-1].seq + 1 if turns else self.session.info.turn_count

    @property
    def appended(self) -> int:
        """Turns this request stores: its non-system messages and the answer."""
        return sum(1 for m in self.request.messages if m.role is not Role.SYSTEM) + 1

    # --- fitting -----------------------------------------------------------------------

    def fit(
        self, pairs: Sequence[tuple[BackendSpec, BackendSnapshot]], max_output_tokens: int
    ) -> dict[str, FittedPrompt]:
        """Fit the history to every backend's window; the prompts for the policy."""
        info = self.session.info
        key = (info.tenant, info.session_id, info.created_ms)
        turns = self.session.turns
        roles = [t.role for t in turns]
        head, tail = self._head(), self.request.messages
        # The tool definitions go with every prompt (counted as the adapters' wrapping
        # would give or take: one system message, router.tokenizers.counted_messages).
        tools = (
            (Message(Role.SYSTEM, tools_text(self.request.tools)),) if self.request.tools else ()
        )
        fixed_bytes = _bytes(head) + _bytes(tail) + _bytes(tools)
        tool_turns = any(t.tool_calls or t.tool_call_id for t in turns)
        if tool_turns:
            turn_bytes = [_text_bytes(turn_text(t)) for t in turns]
        else:
            turn_bytes = [_text_bytes(t.content) for t in turns]
        answers = {m.tool_call_id for m in tail if m.role is Role.TOOL}
        required = _answered_from(turns, answers) if answers else None
        summary = self.summary
        summary_text = SUMMARY_PREFIX + summary.text if summary is not None else ""
        summary_upto = summary.upto - self._first_seq() if summary is not None else 0
        counts = self._sessions.counts
        # Per tokenizer: each turn's tokens, the fixed part's, exact?, the summary's.
        by_tokenizer: dict[str, tuple[list[int], int, bool, int]] = {}
        out: dict[str, FittedPrompt] = {}
        for spec, _ in pairs:
            tid = spec.tokenizer_id
            known = by_tokenizer.get(tid)
            if known is None:
                per_turn, exact = [], True
                for t in turns:
                    tc = counts.turn(tid, key, t)
                    per_turn.append(tc.tokens)
                    exact = exact and tc.exact
                fixed = counts.messages(tid, (*tools, *head, *tail))
                summary_tokens = (
                    counts.messages(tid, (Message(Role.SYSTEM, summary_text),)).tokens
                    if summary_text
                    else 0
                )
                known = (per_turn, fixed.tokens, exact and fixed.exact, summary_tokens)
                by_tokenizer[tid] = known
            per_turn, fixed_tokens, exact, summary_tokens = known
            result = fit(
                per_turn,
                roles,
                fixed=fixed_tokens,
                budget=spec.context_window - max_output_tokens,
                strategy=self.strategy,
                summary_upto=summary_upto,
                summary_tokens=summary_tokens,
                required=required,
            )
            messages = list(head)
            payload = fixed_bytes + sum(turn_bytes[result.start :])
            if result.summary_used:
                messages.append(Message(Role.SYSTEM, summary_text))
                payload += _text_bytes(summary_text)
            if not tool_turns:
                messages.extend(Message(_ROLES[t.role], t.content) for t in turns[result.start :])
            elif TOOLS in spec.capabilities:
                messages.extend(turn_message(t) for t in paired(turns[result.start :], answers))
            else:
                messages.extend(as_text(paired(turns[result.start :], answers)))
            messages.extend(tail)
            # A prompt that does not fit (strict, or the new turn alone too long) keeps its
            # full size: the window filter then rejects the backend and says why.
            prompt = FittedPrompt(TokenCount(result.tokens, exact), payload)
            self.fitted[spec.name] = Fitted(prompt, result, tuple(messages))
            out[spec.name] = prompt
        return out

    def _first_seq(self) -> int:
        turns = self.session.turns
        return turns[0].seq if turns else 0

    def _head(self) -> tuple[Message, ...]:
        system = self.session.info.system
        return (Message(Role.SYSTEM, system),) if system else ()

    def annotate(self, plan: Plan) -> Plan:
        """``plan`` with each candidate's fitting report and the session's facts."""
        candidates = tuple(
            replace(c, context=self.fitted[c.backend].report) if c.backend in self.fitted else c
            for c in plan.candidates
        )
        return replace(
            plan,
            candidates=candidates,
            session_id=self.session_id,
            context_strategy=self.strategy,
            session_turns=self.session.info.turn_count,
        )

    def request_for(self, backend: str, request: InferenceRequest) -> InferenceRequest:
        """The request as ``backend`` gets it: its fitted history, then the new turn."""
        fitted = self.fitted.get(backend)
        if fitted is None:
            return request
        return replace(request, messages=fitted.messages)

    # --- after the answer ----------------------------------------------------------------

    async def commit(
        self, answer: str, backend: str, tool_calls: tuple[ToolCall, ...] = ()
    ) -> None:
        """Append the new turn(s) and the answer. StoreUnavailable (naming the store and
        the session) when the store fails: the caller sends the turn again."""
        now = self._sessions.now_ms()
        turns = [
            Turn(
                role=m.role.value,
                content=m.content,
                at_ms=now,
                tool_calls=m.tool_calls,
                tool_call_id=m.tool_call_id,
                name=m.name,
            )
            for m in self.request.messages
            if m.role is not Role.SYSTEM
        ]
        turns.append(
            Turn(
                role="assistant",
                content=answer,
                at_ms=now,
                backend=backend,
                tool_calls=tuple(tool_calls),
            )
        )
        store = self._sessions.store
        info = self.session.info
        try:
            await store.append(info.tenant, info.session_id, turns, now_ms=now)
        except StoreUnavailable as exc:
            raise StoreUnavailable(
                exc.store,
                f"{exc.message.partition(': ')[2] or exc.message}; the answer was not saved to "
                f"session {info.session_id!r}: send the turn again",
            ) from None
        self._sessions.after_commit(self, backend)


class Sessions:
    """The router's sessions: its store, its strategy and its token counts."""

    def __init__(
        self,
        store: SessionStore,
        cfg: SessionsConfig,
        counter: TokenCounter,
        *,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        on_commit: Callable[[Conversation, str], None] | None = None,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.counts = _Counts(counter)
        self.now_ms = wall_ms
        #: Called after each stored turn (the summarizer's ``after_commit``).
        self.on_commit = on_commit

    def strategy(
        self, request: InferenceRequest, access: TenantAccess | None, info: SessionInfo
    ) -> str:
        for choice in (
            request.context_strategy,
            info.strategy,
            access.context_strategy if access is not None else "",
        ):
            if choice:
                return choice
        return self.cfg.strategy

    async def open(
        self, request: InferenceRequest, access: TenantAccess | None, *, dry_run: bool = False
    ) -> Conversation:
        """The request's conversation; an unknown id starts a session (``dry_run``: an
        empty one that is not stored, for Route)."""
        sid = request.session_id
        if not valid_session_id(sid):
            raise InvalidRequest(
                "session_id",
                SESSION_ID_RULE,
            )
        if request.context_strategy and request.context_strategy not in STRATEGIES:
            raise InvalidRequest("context_strategy", f"must be one of {', '.join(STRATEGIES)}")
        tenant = tenant_of(request)
        now = self.now_ms()
        session = await self.store.get(tenant, sid, now_ms=now)
        created = False
        if session is None:
            info = SessionInfo(
                tenant=tenant,
                session_id=sid,
                created_ms=now,
                updated_ms=now,
                expires_ms=now + self.cfg.ttl_s * 1000,
                ttl_s=self.cfg.ttl_s,
            )
            if dry_run:
                session = Session(info)
            else:
                with contextlib.suppress(AlreadyExists):  # a concurrent first turn made it
                    await self.store.create(info)
                session = await self.store.get(tenant, sid, now_ms=now) or Session(info)
                created = True
        strategy = self.strategy(request, access, session.info)
        summary = None
        if strategy == SUMMARIZE and session.turns:
            summary = await self.store.get_summary(tenant, sid)
        return Conversation(self, request, session, summary, strategy, created, access)

    def after_commit(self, conv: Conversation, backend: str) -> None:
        if self.on_commit is not None:
            self.on_commit(conv, backend)


def _answered_from(turns: Sequence[Turn], answers: set[str]) -> int | None:
    """The index of the oldest turn holding a call that ``answers`` (the new turn's tool
    results' ids) answer, each id by the newest turn with it; None when none does."""
    pending = set(answers)
    found: int | None = None
    for i in range(len(turns) - 1, -1, -1):
        if not pending:
            break
        hit = pending.intersection(c.id for c in turns[i].tool_calls)
        if hit:
            found = i
            pending -= hit
    return found


def _text_bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _bytes(messages: Sequence[Message]) -> int:
    return sum(_text_bytes(turn_text(m)) for m in messages)


__all__ = [
    "ANONYMOUS",
    "Conversation",
    "Fitted",
    "Sessions",
    "as_text",
    "tenant_of",
    "turn_message",
    "turn_text",
]
