"""Tools and JSON answers on vLLM (``vllm==0.29.0``): structured outputs and tool parsers.

- A JSON answer or a forced tool call (``serving.engines.grammar.answer_schema``) decodes
  under ``vllm.sampling_params.StructuredOutputsParams`` (``json=<schema>``, or
  ``json_object=True``), passed as ``SamplingParams(structured_outputs=...)``. A forced
  call's text is the ``{"name", "arguments"}`` object, streamed as a call by
  ``serving.engines.tool_calls.Answer`` as on llama.cpp.
- ``auto``: the tools go into the model's chat template (``apply_chat_template(tools=...)``)
  and the output is read by a vLLM tool parser named in the engine's ``tool_parser``
  option (``vllm.tool_parsers.ToolParserManager``: ``hermes`` for Hermes / Qwen
  ``<tool_call>`` output, ``llama3_json``, ``mistral``, ...) with its streaming
  extraction, as ``vllm serve --tool-call-parser`` does; without one, the engine's own
  reader of ``<tool_call>`` blocks and bare JSON calls.

``vllm`` is imported only by the default factories (the GPU image has it);
``VLLM_NAMES`` lists every vLLM name used here, checked against the installed vLLM by
``python -m serving.engines.vllm_check`` (tests/unit/test_vllm_engine.py, ``tools``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from serving.engines.base import EngineChunk, EngineError, EngineRequest, ToolCallFragment
from serving.engines.grammar import answer_schema

#: (module, attribute) of every vLLM name the engine uses.
VLLM_NAMES: tuple[tuple[str, str], ...] = (
    ("vllm", "AsyncEngineArgs"),
    ("vllm", "SamplingParams"),
    ("vllm.sampling_params", "RequestOutputKind"),
    ("vllm.sampling_params", "StructuredOutputsParams"),
    ("vllm.v1.engine.async_llm", "AsyncLLM"),
    ("vllm.tool_parsers", "ToolParserManager"),
    ("vllm.entrypoints.openai.chat_completion.protocol", "ChatCompletionRequest"),
)

#: ``(schema or None for json_object) -> StructuredOutputsParams``.
StructuredFactory = Callable[[dict[str, Any] | None], Any]
#: ``(parser name, tokenizer, tools as dicts) -> (parser, request object)``.
ParserFactory = Callable[[str, Any, list[dict[str, Any]]], tuple[Any, Any]]


def default_structured(schema: dict[str, Any] | None) -> Any:
    from vllm.sampling_params import StructuredOutputsParams

    if schema is None:
        return StructuredOutputsParams(json_object=True)
    return StructuredOutputsParams(json=schema)


def default_tool_parser(name: str, tokenizer: Any, tools: list[dict[str, Any]]) -> tuple[Any, Any]:
    """A vLLM tool parser and the chat request it reads (its ``tools``, ``tool_choice``
    auto), adjusted as vLLM's server adjusts it (e.g. ``skip_special_tokens`` off)."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers import ToolParserManager

    try:
        parser_class = ToolParserManager.get_tool_parser(name)
    except KeyError:
        names = ", ".join(ToolParserManager.list_registered())
        raise EngineError(
            f"tool_parser: vLLM has no tool parser {name!r} (it has: {names})", "unavailable"
        ) from None
    request = ChatCompletionRequest(
        messages=[{"role": "user", "content": ""}], tools=tools, tool_choice="auto"
    )
    parser = parser_class(tokenizer, request.tools)
    return parser, parser.adjust_request(request)


def structured_outputs(request: EngineRequest, factory: StructuredFactory) -> Any:
    """The request's ``StructuredOutputsParams``, or None when it constrains nothing."""
    schema = answer_schema(request)
    if schema is None:
        return None
    return factory(None if schema == {"type": "object"} else schema)


class ParsedAnswer:
    """A vLLM tool parser's streaming extraction behind ``Answer``'s interface."""

    def __init__(self, parser: Any, chat_request: Any) -> None:
        self._parser = parser
        self._request = chat_request
        self._text = ""
        self._ids: list[int] = []
        self._indexes: set[int] = set()
        self.forced = False
        self.complete = False

    @property
    def calls(self) -> int:
        return len(self._indexes)

    @property
    def skip_special_tokens(self) -> bool:
        return bool(getattr(self._request, "skip_special_tokens", True))

    def feed(self, text: str, token_ids: Sequence[int] = ()) -> tuple[list[EngineChunk], bool]:
        previous, previous_ids = self._text, list(self._ids)
        self._text += text
        self._ids += token_ids
        delta = self._parser.extract_tool_calls_streaming(
            previous,
            self._text,
            text,
            previous_ids,
            list(self._ids),
            list(token_ids),
            self._request,
        )
        out: list[EngineChunk] = []
        if delta is None:
            return out, False
        if delta.content:
            out.append(EngineChunk(text=delta.content))
        for call in delta.tool_calls or ():
            function = call.function
            self._indexes.add(call.index)
            out.append(
                EngineChunk(
                    tool_call=ToolCallFragment(
                        call.index,
                        call.id or "",
                        (function.name if function else None) or "",
                        (function.arguments if function else None) or "",
                    )
                )
            )
        return out, False

    def finish(self) -> list[EngineChunk]:
        """Arguments the parser read but has not streamed (vLLM's server sends them last)."""
        remaining = getattr(self._parser, "get_remaining_unstreamed_args", None)
        rest = remaining() if remaining is not None and self._indexes else ""
        if not rest:
            return []
        return [EngineChunk(tool_call=ToolCallFragment(max(self._indexes), arguments=rest))]

    def finish_reason(self, finish: str) -> str:
        return "tool_calls" if finish == "stop" and self.calls else finish
