"""serving/engines/vllm.py against a stand-in with vLLM AsyncLLM's interface.

vLLM needs a GPU, which development and CI machines do not have. The stand-in implements
the part of ``AsyncLLM`` the engine uses (``get_tokenizer``, ``model_config``,
``generate`` with DELTA outputs, ``abort``, ``shutdown``) as vLLM 0.29.0 defines it; what
this leaves unverified is listed in docs/gpu-tier.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import pytest

from serving.engines import create_engine
from serving.engines.base import EngineError, EngineRequest
from serving.engines.vllm import VllmEngine


class Tokenizer:
    def apply_chat_template(self, chat: list[dict[str, str]], **kw: Any) -> str:
        assert kw == {"tokenize": False, "add_generation_prompt": True}
        return "".join(f"<{m['role']}>{m['content']}" for m in chat) + "<assistant>"

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
