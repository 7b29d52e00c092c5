"""Check the vLLM engine's tools and JSON answers against the installed vLLM, without a GPU.

Run it in the vLLM check environment (``scripts/install_vllm_check.sh``: vllm==0.29.0)
with this repository on the path::

    VLLM_TARGET_DEVICE=cpu PYTHONPATH=.:proto .tools/vllm-venv/bin/python \\
        -m serving.engines.vllm_check

It imports every vLLM name the engine uses (``vllm_tools.VLLM_NAMES``), then runs
``VllmEngine`` with vLLM's own ``SamplingParams``, ``StructuredOutputsParams``,
``ChatCompletionRequest`` and tool parser (``hermes``) over a stand-in for ``AsyncLLM``
that streams a scripted answer (what a GPU would decode). Checked: the structured-output
constraint of a JSON answer and of a forced call reaches ``SamplingParams``; a Hermes
``<tool_call>`` answer comes out as a tool call with the exact arguments, and the parser's
``skip_special_tokens=False`` reaches the sampling; a forced call streams as a call.

Not checked (needs a GPU and weights): that the model follows the constraint (vLLM's
xgrammar backend does it), and a real model's template. Prints one JSON report and exits 1
on a failed check.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from serving.engines.base import EngineRequest, Message, ResponseFormat, Tool, ToolChoice
from serving.engines.grammar import tool_call_schema
from serving.engines.vllm import VllmEngine
from serving.engines.vllm_tools import VLLM_NAMES

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOL = Tool("get_weather", "Weather for a city", json.dumps(SCHEMA))
HERMES_ANSWER = ["Sure.", " <tool", '_call>\n{"name": "get_', 'weather", "arguments": {"ci',
                 'ty": "Oslo"}}\n</tool_call>']  # fmt: skip
FORCED_ANSWER = ['{"name": "get_weather", ', '"arguments": {"city"', ': "Oslo"}}']


class _Tokenizer:
    """Enough of a Hugging Face tokenizer: a ChatML template, and no vocabulary."""

    def apply_chat_template(self, chat: list[dict[str, Any]], **kw: Any) -> str:
        tools = "".join(json.dumps(t) for t in kw.get("tools") or ())
        turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in chat)
        return f"{tools}{turns}<|im_start|>assistant\n"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(range(len(text.split())))

    def get_vocab(self) -> dict[str, int]:
        return {}


@dataclass
class _Piece:
    text: str
    token_ids: list[int]
    finish_reason: str | None = None


@dataclass
class _Output:
    outputs: list[_Piece]
    finished: bool
    prompt_token_ids: list[int] = field(default_factory=lambda: [1, 2, 3])


class _StandIn:
    """AsyncLLM's interface, streaming ``script`` as DELTA outputs."""

    model_config = type("ModelConfig", (), {"max_model_len": 4096})()

    def __init__(self) -> None:
        self.script: list[str] = []
        self.sampling: list[Any] = []

    def get_tokenizer(self) -> _Tokenizer:
        return _Tokenizer()

    async def generate(self, prompt: str, sampling: Any, request_id: str) -> Any:
        self.sampling.append(sampling)
        for i, text in enumerate(self.script):
            last = i == len(self.script) - 1
            yield _Output([_Piece(text, [i], "stop" if last else None)], finished=last)

    async def abort(self, request_id: str) -> None:
        return None

    def shutdown(self) -> None:
        return None


def _request(**kw: Any) -> EngineRequest:
    return EngineRequest("check", (Message("user", "Weather in Oslo?"),), 64, **kw)


async def _run(engine: VllmEngine, llm: _StandIn, script: list[str], request: EngineRequest) -> Any:
    llm.script = script
    chunks = [c async for c in engine.generate(request)]
    calls: dict[int, list[str]] = {}
    for c in chunks:
        if c.tool_call is not None:
            calls.setdefault(c.tool_call.index, [c.tool_call.name]).append(c.tool_call.arguments)
    text = "".join(c.text for c in chunks)
    return text, {i: (v[0], "".join(v[1:])) for i, v in calls.items()}, chunks[-1], llm.sampling[-1]


async def _checks() -> dict[str, Any]:
    import vllm

    report: dict[str, Any] = {"vllm": vllm.__version__, "names": {}, "checks": {}}
    for module, name in VLLM_NAMES:
        try:
            getattr(importlib.import_module(module), name)
            report["names"][f"{module}.{name}"] = "ok"
        except Exception as exc:  # report every missing name, not only the first
            report["names"][f"{module}.{name}"] = f"{type(exc).__name__}: {exc}"
    llm = _StandIn()
    engine = VllmEngine({"model": "m"}, tool_parser="hermes", engine_factory=lambda kw: llm)
    await engine.start()
    checks = report["checks"]

    fmt = ResponseFormat("json_schema", json.dumps(SCHEMA))
    _, _, _, sampling = await _run(engine, llm, ['{"city": "Oslo"}'], _request(response_format=fmt))
    checks["json_schema -> StructuredOutputsParams(json=schema)"] = (
        sampling.structured_outputs is not None and sampling.structured_outputs.json == SCHEMA
    )
    fmt = ResponseFormat("json_object")
    _, _, _, sampling = await _run(engine, llm, ["{}"], _request(response_format=fmt))
    checks["json_object -> StructuredOutputsParams(json_object=True)"] = (
        sampling.structured_outputs is not None and sampling.structured_outputs.json_object is True
    )
    forced = _request(tools=(TOOL,), tool_choice=ToolChoice("required"))
    text, calls, done, sampling = await _run(engine, llm, FORCED_ANSWER, forced)
    checks["required -> the call's schema as structured outputs"] = (
        sampling.structured_outputs.json == tool_call_schema(forced)
    )
    checks["required -> a streamed tool call"] = (
        text == "" and calls == {0: ("get_weather", '{"city": "Oslo"}')}
        and done.finish_reason == "tool_calls"
    )  # fmt: skip
    text, calls, done, sampling = await _run(engine, llm, HERMES_ANSWER, _request(tools=(TOOL,)))
    checks["auto + hermes parser -> text, then the tool call"] = (
        text.strip() == "Sure." and calls == {0: ("get_weather", '{"city": "Oslo"}')}
        and done.finish_reason == "tool_calls"
    )  # fmt: skip
    checks["auto + hermes parser -> skip_special_tokens=False"] = (
        sampling.skip_special_tokens is False and sampling.structured_outputs is None
    )
    await engine.close()
    return report


def main() -> int:
    report = asyncio.run(_checks())
    print(json.dumps(report, indent=2))
    ok = all(v == "ok" for v in report["names"].values()) and all(report["checks"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
