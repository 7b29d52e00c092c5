"""A vLLM engine (GPU): the production engine of the Ray Serve app (``engine: vllm``).

Wraps vLLM's ``AsyncLLM`` (``vllm==0.29.0``; the ``vllm`` extra). ``engine_kwargs`` are
vLLM's own ``AsyncEngineArgs`` (``model``, ``max_model_len``, ``gpu_memory_utilization``,
``max_num_seqs``, ``dtype``, ...), passed through unchanged; ``deploy/ray/check_vllm_args.py``
validates a config's kwargs with vLLM's own argument parser (``make tools`` installs a
vLLM environment for it; tests/deploy/test_ray_manifests.py runs it).

- Prompts: the model's chat template (``tokenizer.apply_chat_template``,
  ``add_generation_prompt=True``, ``tools=`` when the request offers tools), so use an
  instruction-tuned model with a template.
- Tools and JSON answers (``serving.engines.vllm_tools``): vLLM's structured outputs for
  JSON answers and forced tool calls; with ``tool_choice`` auto, the vLLM tool parser
  named by ``tool_parser`` (``hermes``, ``llama3_json``, ...; "" = the engine's own
  reader of ``<tool_call>`` blocks and bare JSON calls). Info reports ``chat``, ``tools``
  and ``json_schema``.
- Streaming: ``SamplingParams(output_kind=DELTA)``; every ``RequestOutput`` becomes one
  chunk with the new text and token count.
- Cancellation: closing the stream (or cancelling its consumer) aborts the request in
  vLLM (``AsyncLLM.abort``), which frees its KV cache at the next scheduler step.
- Load: requests submitted without a first output count as queued, the others as
  decoding; ``max_concurrency`` is vLLM's ``max_num_seqs`` (continuous batching).

Not run here: no GPU in development or CI. ``tests/unit/test_vllm_engine.py`` runs this
wrapper against a stand-in with ``AsyncLLM``'s interface; what that leaves unverified is
listed in docs/gpu-tier.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from serving.engines.base import (
    CHAT_CAPABILITIES,
    Engine,
    EngineChunk,
    EngineError,
    EngineInfo,
    EngineLoad,
    EngineRequest,
    MessageLike,
    Tool,
)
from serving.engines.prompt import chat_dicts, check_fits, tool_dicts, validate_request
from serving.engines.tool_calls import Answer, with_tokens
from serving.engines.vllm_tools import (
    ParsedAnswer,
    ParserFactory,
    StructuredFactory,
    default_structured,
    default_tool_parser,
    structured_outputs,
)

logger = logging.getLogger(__name__)

#: The vLLM version the kwargs are validated against and the GPU image installs.
VLLM_VERSION = "0.29.0"
DEFAULT_MAX_NUM_SEQS = 256
_FINISH = {"stop": "stop", "length": "length", "abort": "cancelled"}


def _default_factory(engine_kwargs: dict[str, Any]) -> Any:
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    return AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_kwargs))


def _default_sampling(**kwargs: Any) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(output_kind=RequestOutputKind.DELTA, **kwargs)


class VllmEngine(Engine):
    def __init__(
        self,
        engine_kwargs: dict[str, Any] | None = None,
        *,
        model_name: str = "",
        version: str = "",
        model_family: str = "",
        tool_parser: str = "",
        engine_factory: Callable[[dict[str, Any]], Any] = _default_factory,
        sampling_factory: Callable[..., Any] = _default_sampling,
        structured_factory: StructuredFactory = default_structured,
        tool_parser_factory: ParserFactory = default_tool_parser,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``tool_parser``: the vLLM tool parser for ``auto`` tool choices (``hermes`` for
        Hermes / Qwen models, ...; "" = the engine's own reader)."""
        kwargs = dict(engine_kwargs or {})
        if not kwargs.get("model") and model_name:
            kwargs["model"] = model_name  # the Ray app's model.id names what vLLM loads
        if not kwargs.get("model"):
            raise ValueError(
                "engine_kwargs.model: required (a Hugging Face model id or a local path; "
                "the Ray app's model.id is used when it is not given)"
            )
        self._kwargs = kwargs
        self._factory = engine_factory
        self._sampling = sampling_factory
        self._structured = structured_factory
        self._tool_parser = tool_parser
        self._parser_factory = tool_parser_factory
        self._clock = clock
        self._model_name = model_name or str(kwargs.get("served_model_name") or kwargs["model"])
        self._version = version or str(kwargs.get("revision") or "main")
        self._family = model_family
        self._llm: Any = None
        self._tokenizer: Any = None
        self._info = self._make_info(int(kwargs.get("max_model_len") or 0))
        self._queued = 0
        self._decoding = 0
        self._closed = False

    def _make_info(self, context_window: int) -> EngineInfo:
        return EngineInfo(
            model=self._model_name,
            version=self._version,
            context_window=context_window,
            max_concurrency=int(self._kwargs.get("max_num_seqs") or DEFAULT_MAX_NUM_SEQS),
            engine="vllm",
            model_family=self._family,
            capabilities=CHAT_CAPABILITIES,
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    def load(self) -> EngineLoad:
        if self._closed:
            raise EngineError("engine closed", "unavailable")
        return EngineLoad(queue_depth=self._queued, in_flight=self._decoding)

    async def start(self) -> None:
        if self._llm is not None:
            return
        if self._closed:
            raise EngineError("engine closed", "unavailable")
        try:
            self._llm = self._factory(self._kwargs)
            self._tokenizer = self._llm.get_tokenizer()
        except Exception as exc:
            raise EngineError(f"cannot start vLLM: {exc}", "unavailable") from exc
        max_len = int(getattr(self._llm.model_config, "max_model_len", 0) or 0)
        self._info = self._make_info(max_len or self._info.context_window)
        logger.info("vLLM ready: %s, max_model_len %d", self._model_name, max_len)

    async def close(self) -> None:
        self._closed = True
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.shutdown()

    def _prompt(self, messages: Sequence[MessageLike], tools: Sequence[Tool] = ()) -> str:
        if self._tokenizer is None:
            raise EngineError("engine not started", "unavailable")
        options: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
        if tools:
            options["tools"] = tool_dicts(tools)
        try:
            return str(self._tokenizer.apply_chat_template(chat_dicts(messages), **options))
        except Exception as exc:  # the template's raise_exception (jinja2.TemplateError)
            raise EngineError(
                f"messages: the model's chat template refused them: {exc}", "invalid"
            ) from None

    def count_tokens(self, messages: Sequence[MessageLike], tools: Sequence[Tool] = ()) -> int:
        prompt = self._prompt(messages, tools)
        return len(self._tokenizer.encode(prompt, add_special_tokens=False))

    def _answer(self, request: EngineRequest) -> Answer | ParsedAnswer:
        if self._tool_parser and request.offered_tools and not request.forced_tool:
            parser, chat_request = self._parser_factory(
                self._tool_parser, self._tokenizer, tool_dicts(request.offered_tools)
            )
            return ParsedAnswer(parser, chat_request)
        return Answer(request)

    def generate(self, request: EngineRequest) -> AsyncGenerator[EngineChunk, None]:
        """Close the generator (or cancel its consumer) to abort the request in vLLM."""
        return self._generate(request)

    async def _generate(self, request: EngineRequest) -> AsyncGenerator[EngineChunk, None]:
        if self._closed or self._llm is None:
            raise EngineError("engine closed" if self._closed else "engine not started")
        validate_request(request)
        prompt = self._prompt(request.messages, request.offered_tools)
        input_tokens = len(self._tokenizer.encode(prompt, add_special_tokens=False))
        check_fits(input_tokens, request.max_output_tokens, self._info.context_window)
        sampling: dict[str, Any] = {"max_tokens": request.max_output_tokens}
        for key in ("temperature", "top_p", "top_k", "seed"):
            value = getattr(request, key)
            if value is not None:
                sampling[key] = value
        constraint = structured_outputs(request, self._structured)
        if constraint is not None:
            sampling["structured_outputs"] = constraint
        # Stop strings are matched here (as the other engines do), so text is never cut
        # differently on GPU and CPU; tool calls are read here too (vllm_tools).
        answer = self._answer(request)
        if isinstance(answer, ParsedAnswer) and not answer.skip_special_tokens:
            sampling["skip_special_tokens"] = False  # the parser reads its tags
        request_id = f"{request.request_id or 'req'}-{uuid.uuid4().hex[:8]}"
        queued_at = self._clock()
        queue_ms = 0.0
        output_tokens = 0
        finish = "length"
        first = True
        done = False
        cut_here = False
        self._queued += 1
        stream = self._llm.generate(prompt, self._sampling(**sampling), request_id)
        try:
            async for out in stream:
                if first:
                    first = False
                    self._queued -= 1
                    self._decoding += 1
                    queue_ms = (self._clock() - queued_at) * 1000.0
                    input_tokens = len(out.prompt_token_ids or ()) or input_tokens
                piece = out.outputs[0]
                new_tokens = len(piece.token_ids)
                output_tokens += new_tokens
                if isinstance(answer, ParsedAnswer):
                    pieces, stopped = answer.feed(piece.text, piece.token_ids)
                else:
                    pieces, stopped = answer.feed(piece.text)
                for chunk in with_tokens(pieces, new_tokens):
                    yield chunk
                if stopped or answer.complete:
                    finish, cut_here = "stop", not out.finished
                    break
                if out.finished:
                    finish = _FINISH.get(piece.finish_reason or "length", "stop")
                    break
            for chunk in answer.finish():
                yield chunk
            done = True
            yield EngineChunk(
                done=True,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                finish_reason=answer.finish_reason(finish),
                queue_ms=queue_ms,
            )
        finally:
            if first:
                self._queued -= 1
            else:
                self._decoding -= 1
            await stream.aclose()
            if not done or cut_here:
                # Cancelled, failed, or stopped here by a stop string: free the sequence.
                await asyncio.shield(self._abort(request_id))

    async def _abort(self, request_id: str) -> None:
        llm = self._llm
        if llm is None:
            return
        try:
            await llm.abort(request_id)
        except Exception:  # the request may already be gone
            logger.debug("abort of %s failed", request_id, exc_info=True)
