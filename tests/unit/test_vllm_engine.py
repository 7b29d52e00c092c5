"""serving/engines/vllm.py against a stand-in with vLLM AsyncLLM's interface.

vLLM needs a GPU, which development and CI machines do not have. The stand-in implements
the part of ``AsyncLLM`` the engine uses (``get_tokenizer``, ``model_config``,
``generate`` with DELTA outputs, ``abort``, ``shutdown``) as vLLM 0.29.0 defines it; what
this leaves unverified is listed in docs/gpu-tier.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from serving.engines import create_engine
from serving.engines.base import (
    CHAT_CAPABILITIES,
    EngineError,
    EngineRequest,
    ResponseFormat,
    Tool,
    ToolChoice,
)
from serving.engines.grammar import tool_call_schema
from serving.engines.vllm import VllmEngine

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".tools" / "vllm-venv" / "bin" / "python"


class Tokenizer:
    def apply_chat_template(self, chat: list[dict[str, Any]], **kw: Any) -> str:
        tools = kw.pop("tools", None)
        assert kw == {"tokenize": False, "add_generation_prompt": True}
        listed = "".join(f"<tool> {t['function']['name']} " for t in tools or ())
        return listed + "".join(f"<{m['role']}>{m['content']}" for m in chat) + "<assistant>"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        assert add_special_tokens is False  # the template already has its markers
        return list(range(len(text.split())))


@dataclass
class Piece:
    text: str
    token_ids: list[int]
    finish_reason: str | None = None


@dataclass
class Output:
    outputs: list[Piece]
    finished: bool
    prompt_token_ids: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])


@dataclass
class ModelConfig:
    max_model_len: int = 64


class StandIn:
    """Emits the words of ``script`` one per output, like DELTA streaming."""

    def __init__(self, script: list[str], finish: str = "length", gap_s: float = 0.0) -> None:
        self.script = script
        self.finish = finish
        self.gap_s = gap_s
        self.model_config = ModelConfig()
        self.aborted: list[str] = []
        self.sampling: list[Any] = []
        self.shut = False

    def get_tokenizer(self) -> Tokenizer:
        return Tokenizer()

    async def generate(
        self, prompt: str, sampling: Any, request_id: str
    ) -> AsyncGenerator[Output, None]:
        self.sampling.append(sampling)
        for i, word in enumerate(self.script):
            if self.gap_s:
                await asyncio.sleep(self.gap_s)
            last = i == len(self.script) - 1
            yield Output([Piece(word, [i], self.finish if last else None)], finished=last)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def shutdown(self) -> None:
        self.shut = True


def make(stand_in: StandIn, **kw: Any) -> VllmEngine:
    return VllmEngine(
        {"model": "org/model", "max_num_seqs": 16, **kw},
        engine_factory=lambda kwargs: stand_in,
        sampling_factory=lambda **s: s,
    )


def request(max_tokens: int = 10, **kw: Any) -> EngineRequest:
    return EngineRequest("r1", (("user", "hi there"),), max_tokens, **kw)


async def test_streams_deltas_then_usage() -> None:
    llm = StandIn(["Hello", " world", "!"], finish="stop")
    engine = make(llm)
    await engine.start()
    assert engine.info.context_window == 64 and engine.info.max_concurrency == 16
    assert engine.info.model == "org/model" and engine.info.engine == "vllm"
    chunks = [c async for c in engine.generate(request(temperature=0.2, seed=3))]
    assert [c.text for c in chunks[:-1]] == ["Hello", " world", "!"]
    done = chunks[-1]
    assert done.done and done.finish_reason == "stop"
    assert (done.input_tokens, done.output_tokens) == (5, 3)
    assert llm.sampling == [{"max_tokens": 10, "temperature": 0.2, "seed": 3}]
    assert llm.aborted == []  # finished by vLLM: nothing to abort
    assert engine.load().queue_depth == 0 and engine.load().in_flight == 0
    await engine.close()
    assert llm.shut


async def test_closing_the_stream_aborts_the_request_in_vllm() -> None:
    llm = StandIn(["a"] * 50, gap_s=0.001)
    engine = make(llm)
    await engine.start()
    async with contextlib.aclosing(engine.generate(request(max_tokens=50))) as stream:
        async for _ in stream:
            assert engine.load().in_flight == 1
            break
    assert len(llm.aborted) == 1 and llm.aborted[0].startswith("r1-")
    assert engine.load().in_flight == 0


async def test_stop_strings_cut_the_text_and_free_the_sequence() -> None:
    llm = StandIn(["one", " two", " STOP", " three"])
    engine = make(llm)
    await engine.start()
    chunks = [c async for c in engine.generate(request(stop=("STOP",)))]
    assert "".join(c.text for c in chunks) == "one two "
    assert chunks[-1].finish_reason == "stop"
    assert len(llm.aborted) == 1


async def test_bad_and_too_large_requests_are_refused_before_vllm() -> None:
    llm = StandIn(["x"])
    engine = make(llm)
    await engine.start()
    with pytest.raises(EngineError, match="max_output_tokens") as bad:
        [c async for c in engine.generate(request(max_tokens=0))]
    assert bad.value.error_class == "invalid"
    with pytest.raises(EngineError, match="context window of 64") as big:
        [c async for c in engine.generate(request(max_tokens=100))]
    assert big.value.error_class == "too_large"
    assert llm.sampling == []


async def test_model_id_and_missing_model() -> None:
    llm = StandIn(["x"])
    engine = create_engine(
        "vllm",
        engine_kwargs={},
        model_name="meta-llama/Llama-3.1-8B-Instruct",
        engine_factory=lambda kwargs: llm,
    )
    assert engine.info.model == "meta-llama/Llama-3.1-8B-Instruct"
    with pytest.raises(ValueError, match=r"engine_kwargs\.model: required"):
        VllmEngine({})


async def test_start_failure_is_an_unavailable_engine_error() -> None:
    def boom(kwargs: dict[str, Any]) -> Any:
        raise RuntimeError("CUDA out of memory")

    engine = VllmEngine({"model": "m"}, engine_factory=boom)
    with pytest.raises(EngineError, match="cannot start vLLM: CUDA out of memory") as err:
        await engine.start()
    assert err.value.error_class == "unavailable"


# --- tools and JSON answers -----------------------------------------------------------

WEATHER = Tool("get_weather", "", '{"type": "object", "properties": {"city": {"type": "string"}}}')


def tool_engine(llm: StandIn, **kw: Any) -> VllmEngine:
    return VllmEngine(
        {"model": "org/model"},
        engine_factory=lambda kwargs: llm,
        sampling_factory=lambda **s: s,
        structured_factory=lambda schema: ("structured", schema),
        **kw,
    )


def calls_of(chunks: list[Any]) -> dict[int, tuple[str, str]]:
    out: dict[int, tuple[str, str]] = {}
    for c in chunks:
        if c.tool_call is not None:
            name, args = out.get(c.tool_call.index, ("", ""))
            out[c.tool_call.index] = (name or c.tool_call.name, args + c.tool_call.arguments)
    return out


async def test_json_answers_and_forced_calls_decode_under_structured_outputs() -> None:
    llm = StandIn(['{"name": "get_weather", ', '"arguments": {"city"', ': "Oslo"}}'], "stop")
    engine = tool_engine(llm)
    await engine.start()
    assert engine.info.capabilities == CHAT_CAPABILITIES
    forced = request(max_tokens=20, tools=(WEATHER,), tool_choice=ToolChoice("required"))
    chunks = [c async for c in engine.generate(forced)]
    assert calls_of(chunks) == {0: ("get_weather", '{"city": "Oslo"}')}
    assert "".join(c.text for c in chunks) == ""
    assert chunks[-1].finish_reason == "tool_calls"
    assert llm.sampling[-1]["structured_outputs"] == ("structured", tool_call_schema(forced))
    fmt = ResponseFormat("json_schema", '{"type": "object", "required": ["a"]}')
    llm.script = ['{"a":', " 1}"]
    chunks = [c async for c in engine.generate(request(max_tokens=20, response_format=fmt))]
    assert "".join(c.text for c in chunks) == '{"a": 1}' and chunks[-1].finish_reason == "stop"
    assert llm.sampling[-1]["structured_outputs"] == ("structured", json.loads(fmt.schema_json))
    llm.script = ["{}"]
    [c async for c in engine.generate(request(response_format=ResponseFormat("json_object")))]
    assert llm.sampling[-1]["structured_outputs"] == ("structured", None)  # json_object=True


async def test_auto_renders_the_tools_and_reads_calls_without_a_parser() -> None:
    llm = StandIn(
        ["Checking.", '<tool_call>{"name": "get_weather", ', '"arguments": {}}</tool_call>']
    )
    llm.finish = "stop"
    engine = tool_engine(llm)
    await engine.start()
    chunks = [c async for c in engine.generate(request(max_tokens=20, tools=(WEATHER,)))]
    assert "".join(c.text for c in chunks) == "Checking."
    assert calls_of(chunks) == {0: ("get_weather", "{}")}
    assert chunks[-1].finish_reason == "tool_calls"
    assert "structured_outputs" not in llm.sampling[-1]
    assert engine.count_tokens((("user", "hi"),), (WEATHER,)) > engine.count_tokens(
        (("user", "hi"),)
    )


class FakeParser:
    """A vLLM ToolParser's streaming interface (DeltaMessage-like answers)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def extract_tool_calls_streaming(self, previous: str, current: str, delta: str,
                                     *ids_and_request: Any) -> Any:  # fmt: skip
        self.seen.append((previous, delta))
        if "CALL" not in current:
            return type("Delta", (), {"content": delta, "tool_calls": []})()
        function = type("F", (), {"name": "get_weather", "arguments": '{"city": "Oslo"}'})()
        call = type("C", (), {"index": 0, "id": "chatcmpl-tool-1", "function": function})()
        return type("Delta", (), {"content": None, "tool_calls": [call]})()


async def test_a_named_vllm_tool_parser_reads_auto_answers() -> None:
    parser = FakeParser()
    made: list[tuple[str, list[Any]]] = []

    def factory(name: str, tokenizer: Any, tools: list[Any]) -> Any:
        made.append((name, tools))
        return parser, type("Req", (), {"skip_special_tokens": False})()

    llm = StandIn(["Hi ", "CALL"], "stop")
    engine = tool_engine(llm, tool_parser="hermes", tool_parser_factory=factory)
    await engine.start()
    chunks = [c async for c in engine.generate(request(max_tokens=20, tools=(WEATHER,)))]
    function = {"name": "get_weather", "description": "", "parameters": json.loads(WEATHER[2])}
    assert made == [("hermes", [{"type": "function", "function": function}])]
    assert "".join(c.text for c in chunks) == "Hi "
    assert calls_of(chunks) == {0: ("get_weather", '{"city": "Oslo"}')}
    assert chunks[-1].finish_reason == "tool_calls"
    assert parser.seen == [("", "Hi "), ("Hi ", "CALL")]
    assert llm.sampling[-1]["skip_special_tokens"] is False
    # without tools (or with a forced call) the parser is not used
    [c async for c in engine.generate(request(max_tokens=20))]
    assert len(made) == 1


@pytest.mark.tools
def test_the_engine_against_the_installed_vllm() -> None:
    """vLLM 0.29.0's own SamplingParams, StructuredOutputsParams, ChatCompletionRequest and
    hermes tool parser through VllmEngine, on a stand-in AsyncLLM (no GPU): see
    serving/engines/vllm_check.py for what it proves and what it cannot."""
    if not VLLM_PYTHON.is_file():
        pytest.fail(
            f"{VLLM_PYTHON} not found: run `make tools` (scripts/install_vllm_check.sh) to "
            "install the vLLM check environment"
        )
    env = {
        **os.environ,
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_LOGGING_LEVEL": "ERROR",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "proto")]),
    }
    done = subprocess.run(
        [str(VLLM_PYTHON), "-m", "serving.engines.vllm_check"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["vllm"] == "0.29.0"
    assert set(report["names"].values()) == {"ok"} and all(report["checks"].values())
    assert sys.executable != str(VLLM_PYTHON)  # it ran in vLLM's own environment
