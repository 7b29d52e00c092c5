"""A deterministic engine for tests and benchmarks. It is not a model.

Output: the words of the last message, cycled (``"hello world"`` -> ``"hello world hello
..."``), one word per token; a message without words gives ``"lorem ipsum ..."``. The answer
is ``max_output_tokens`` long (finish ``"length"``) unless ``reply_tokens`` makes it
shorter (finish ``"stop"``) or a stop string appears (finish ``"stop"``).

Tools and JSON answers (``serving.engines.instances.minimal_instance``: a small valid
instance of a schema):

- a tool call when ``tool_choice`` is ``required`` (the first tool) or ``named``, or, with
  ``auto``, when the last message is a user message that names one of the tools (a tool
  result last: a text answer, so an orchestrator's loop ends). The call's id is
  ``call_`` + 16 hex digits of the request id; its first fragment carries the id and the
  name, then the arguments (a minimal instance of the tool's parameters) follow in
  fragments of ``FRAGMENT_CHARS`` characters; finish ``"tool_calls"``;
- otherwise, with a ``json_schema`` / ``json_object`` response format, the answer is a
  minimal instance of the schema (``{}`` for ``json_object``) as text, in pieces of
  ``FRAGMENT_CHARS`` characters; finish ``"stop"``.

Each fragment or piece is one token; an answer longer than ``max_output_tokens`` is cut
there (finish ``"length"``).

Token counting rule (``count_tokens``): whitespace-separated words of every message (and
of its tool calls' names and arguments), plus 4 per message (turn markers and role) plus
3 for the start and the open answer turn; with tools, the words of each tool's name,
description and parameters plus 4 per tool.

Timing: ``ttft_ms`` before the first token, then ``tokens_per_s`` (0: as fast as the
consumer reads), scheduled against the injected clock so that the rate does not drift.
At most ``max_concurrency`` requests generate at once; the others wait in FIFO order
(``load()`` reports both).

Failure injection (plain attributes, may be changed between requests):
``fail_before_first_token`` (an error class, raised once the request holds a slot, before
the TTFT wait), ``fail_after_tokens`` (``"unavailable"`` after that many tokens) and
``fail_after_requests`` (the first N requests to get a slot are served, every later one
fails with ``"unavailable"`` before its first token: a model that passes a smoke test and
then breaks).

Bookkeeping for tests: ``started`` lists request ids in the order they got a slot;
``cancelled`` lists request ids whose consumer closed or cancelled the stream before the
last chunk (while queued or while generating).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence

from serving.engines.base import (
    PREFILL_CAPABILITIES,
    Engine,
    EngineChunk,
    EngineError,
    EngineInfo,
    EngineLoad,
    EngineRequest,
    MessageLike,
    Tool,
    as_messages,
)
from serving.engines.grammar import answer_schema
from serving.engines.instances import minimal_instance
from serving.engines.prompt import StopMatcher, check_fits, validate_request
from serving.engines.tool_calls import call_chunks, with_tokens

ERROR_CLASSES = ("invalid", "too_large", "unavailable")
DEFAULT_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet")
#: count_tokens: tokens per message (turn markers, role) and for the whole prompt.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_PROMPT = 3
TOKENS_PER_TOOL = 4
#: Characters per tool-call fragment and per piece of a JSON answer.
FRAGMENT_CHARS = 8


def count_scripted_tokens(messages: Sequence[MessageLike], tools: Sequence[Tool] = ()) -> int:
    """The scripted engine's token rule (see the module docstring)."""
    turns = as_messages(messages)
    words = 0
    for m in turns:
        words += len(m.content.split())
        for call in m.tool_calls:
            words += len(f"{call.name} {call.arguments}".split())
    for tool in tools:
        words += len(f"{tool.name} {tool.description} {tool.parameters_json}".split())
    return (
        words + TOKENS_PER_MESSAGE * len(turns) + TOKENS_PER_TOOL * len(tools) + TOKENS_PER_PROMPT
    )


class ScriptedEngine(Engine):
    def __init__(
        self,
        *,
        model_name: str = "scripted",
        version: str = "1",
        model_family: str = "scripted",
        context_window: int = 8192,
        max_concurrency: int = 8,
        ttft_ms: float = 0.0,
        tokens_per_s: float = 0.0,
        prefill_tokens_per_s: float = 0.0,
        reply_tokens: int | None = None,
        fail_before_first_token: str | None = None,
        fail_after_tokens: int | None = None,
        fail_after_requests: int | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if context_window <= 0:
            raise ValueError("context_window: must be > 0")
        if max_concurrency <= 0:
            raise ValueError("max_concurrency: must be > 0")
        if ttft_ms < 0 or tokens_per_s < 0 or prefill_tokens_per_s < 0:
            raise ValueError("ttft_ms, tokens_per_s and prefill_tokens_per_s: must be >= 0")
        if fail_before_first_token not in (None, *ERROR_CLASSES):
            raise ValueError(f"fail_before_first_token: must be one of {ERROR_CLASSES} or None")
        if fail_after_requests is not None and (
            isinstance(fail_after_requests, bool)
            or not isinstance(fail_after_requests, int)
            or fail_after_requests < 0
        ):
            raise ValueError(
                f"fail_after_requests: must be an integer >= 0 or None, got {fail_after_requests!r}"
            )
        self._info = EngineInfo(
            model=model_name,
            version=version,
            context_window=context_window,
            max_concurrency=max_concurrency,
            engine="scripted",
            model_family=model_family,
            capabilities=PREFILL_CAPABILITIES,
        )
        self.ttft_ms = ttft_ms
        self.tokens_per_s = tokens_per_s
        #: Prompt tokens read per second before the first token (on top of ttft_ms); 0:
        #: the first token after ttft_ms whatever the prompt.
        self.prefill_tokens_per_s = prefill_tokens_per_s
        self.reply_tokens = reply_tokens
        self.fail_before_first_token = fail_before_first_token
        self.fail_after_tokens = fail_after_tokens
        self.fail_after_requests = fail_after_requests
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self._sleep = sleep
        self._clock = clock
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def info(self) -> EngineInfo:
        return self._info

    def load(self) -> EngineLoad:
        return EngineLoad(
            queue_depth=sum(1 for waiter in self._waiters if not waiter.done()),
            in_flight=self._in_flight,
            decode_tokens_per_s=float(self.tokens_per_s),
            prefill_tokens_per_s=float(self.prefill_tokens_per_s),
        )

    def count_tokens(self, messages: Sequence[MessageLike], tools: Sequence[Tool] = ()) -> int:
        return count_scripted_tokens(messages, tools)

    async def close(self) -> None:
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(EngineError("engine closed", "unavailable"))

    def generate(self, request: EngineRequest) -> AsyncGenerator[EngineChunk, None]:
        """Close the generator (or cancel its consumer) to stop decoding."""
        return self._generate(request)

    async def _generate(self, request: EngineRequest) -> AsyncGenerator[EngineChunk, None]:
        if self._closed:
            raise EngineError("engine closed", "unavailable")
        validate_request(request)
        structured = _structured(request)  # checks the schemas before a slot is taken
        input_tokens = self.count_tokens(request.messages, request.offered_tools)
        check_fits(input_tokens, request.max_output_tokens, self._info.context_window)
        queued_at = self._clock()
        holds_slot = False
        finished = False
        try:
            await self._acquire()
            holds_slot = True
            queue_ms = (self._clock() - queued_at) * 1000.0
            self.started.append(request.request_id)
            if self.fail_before_first_token is not None:
                raise EngineError(
                    "scripted failure before the first token", self.fail_before_first_token
                )
            limit_requests = self.fail_after_requests
            if limit_requests is not None and len(self.started) > limit_requests:
                raise EngineError(
                    f"scripted failure: only the first {limit_requests} request(s) are served",
                    "unavailable",
                )
            first_ms = self.ttft_ms
            if self.prefill_tokens_per_s > 0:
                first_ms += input_tokens / self.prefill_tokens_per_s * 1000.0
            if first_ms > 0:
                await self._sleep(first_ms / 1000.0)
            if structured is None:
                # A continued turn goes on where its text stops: the reply to the message
                # before it, from the word after the ones already written.
                skip = 0
                asked = request.messages
                if request.continue_final_message:
                    skip, asked = len(asked[-1].content.split()), asked[:-1]
                words = _reply_words(asked)
                limit = request.max_output_tokens
                finish = "length"
                if self.reply_tokens is not None and self.reply_tokens - skip < limit:
                    limit, finish = max(0, self.reply_tokens - skip), "stop"
                pieces: Iterable[EngineChunk] = (
                    EngineChunk(
                        text=words[i % len(words)] if i == 0 else " " + words[i % len(words)]
                    )
                    for i in range(skip, skip + limit)
                )  # made as they stream: max_output_tokens may be large
                matcher: StopMatcher | None = StopMatcher(request.stop)
            else:
                pieces, finish = structured
                if len(structured[0]) > request.max_output_tokens:
                    pieces, finish = structured[0][: request.max_output_tokens], "length"
                matcher = None
            pending_tokens = 0
            output_tokens = 0
            first_at = self._clock()
            for index, piece in enumerate(pieces):
                if self.fail_after_tokens is not None and index >= self.fail_after_tokens:
                    raise EngineError(
                        f"scripted failure after {self.fail_after_tokens} tokens", "unavailable"
                    )
                if index and self.tokens_per_s > 0:
                    delay = first_at + index / self.tokens_per_s - self._clock()
                    if delay > 0:
                        await self._sleep(delay)
                output_tokens += 1
                pending_tokens += 1
                if matcher is None:
                    yield with_tokens([piece], pending_tokens)[0]
                    pending_tokens = 0
                    continue
                text, stopped = matcher.feed(piece.text)
                if text:
                    yield EngineChunk(text=text, tokens=pending_tokens)
                    pending_tokens = 0
                if stopped:
                    finish = "stop"
                    break
            else:
                tail = matcher.flush() if matcher is not None else ""
                if tail:
                    yield EngineChunk(text=tail, tokens=pending_tokens)
            finished = True
            yield EngineChunk(
                done=True,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                finish_reason=finish,
                queue_ms=queue_ms,
            )
        except (GeneratorExit, asyncio.CancelledError):
            if not finished:
                self.cancelled.append(request.request_id)
            raise
        finally:
            if holds_slot:
                self._release()

    async def _acquire(self) -> None:
        if self._in_flight < self._info.max_concurrency and not self._waiters:
            self._in_flight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release()  # the slot was handed over just as we were cancelled
            raise

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # hand the slot over: in_flight is unchanged
                return
        self._in_flight -= 1


def _reply_words(messages: Sequence[MessageLike]) -> tuple[str, ...]:
    words = tuple(as_messages(messages)[-1].content.split())
    return words or DEFAULT_WORDS


def call_id(request_id: str, index: int) -> str:
    """The scripted engine's tool-call id: deterministic per request and call."""
    return "call_" + hashlib.sha256(f"{request_id}:{index}".encode()).hexdigest()[:16]


def _called_tool(request: EngineRequest) -> Tool | None:
    """The tool the scripted model calls, if any (see the module docstring)."""
    if request.forced_tool:
        if request.tool_choice.mode == "named":
            return next(t for t in request.tools if t.name == request.tool_choice.name)
        return request.tools[0]
    last = request.messages[-1]
    if request.offered_tools and last.role == "user":
        return next((t for t in request.offered_tools if t.name in last.content), None)
    return None


def _structured(request: EngineRequest) -> tuple[list[EngineChunk], str] | None:
    """A tool call's fragments or a JSON answer's pieces, and the finish; None: text."""
    tool = _called_tool(request)
    if tool is not None:
        params = json.loads(tool.parameters_json) if tool.parameters_json else {}
        arguments = json.dumps(minimal_instance(params))
        chunks = call_chunks(
            0, call_id(request.request_id, 0), tool.name, arguments, FRAGMENT_CHARS
        )
        return chunks, "tool_calls"
    if not request.response_format.is_json:
        return None
    schema = answer_schema(request) or {"type": "object"}
    text = json.dumps(minimal_instance(schema))
    pieces = [
        EngineChunk(text=text[i : i + FRAGMENT_CHARS]) for i in range(0, len(text), FRAGMENT_CHARS)
    ]
    return pieces, "stop"
