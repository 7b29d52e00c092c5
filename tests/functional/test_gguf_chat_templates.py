"""Any GGUF family on llama.cpp: the engine renders the model's OWN chat template (from the
file's metadata), and the router's exact ``gguf:`` counts render the very same text.

Two files are built from the packaged Gemma 3 270M with the ``gguf`` package (same
weights and vocabulary, another ``tokenizer.chat_template``; tests/gguf_families.py):
one with Gemma 3's official template, one with Qwen2.5's ChatML template (tools in
``<tools>``, calls in ``<tool_call>`` tags). Gemma's own template gives the prompt the
Gemma format gives the packaged file (which has no template); the ChatML one gives
ChatML, in the engine's prompt, in the router's count and in a real generation.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from gguf_families import GEMMA3_TEMPLATE, QWEN_TEMPLATE, with_chat_template
from testkit import collect

from router.config import TokenEstimateConfig
from router.tokenizers import Tokenizers, _Vocab
from router.types import Message, Role, ToolSpec
from serving.engines.base import EngineRequest, Tool, ToolChoice
from serving.engines.llamacpp import LlamaCppEngine, PromptTokenizer, default_model_path
from serving.engines.prompt import render_gemma

pytestmark = [pytest.mark.model, pytest.mark.slow]

CHAT = (("system", "Answer briefly."), ("user", "Name three colors."))
ROUTER_CHAT = (Message(Role.SYSTEM, "Answer briefly."), Message(Role.USER, "Name three colors."))
CHATML = (
    "<|im_start|>system\nAnswer briefly.<|im_end|>\n"
    "<|im_start|>user\nName three colors.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}},
    "required": ["city"],
}
WEATHER = Tool("get_weather", "Current weather for a city", json.dumps(PARAMS))


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("families")
    return {
        "gemma": with_chat_template(
            default_model_path(), where / "gemma-own.gguf", GEMMA3_TEMPLATE
        ),
        "chatml": with_chat_template(default_model_path(), where / "chatml.gguf", QWEN_TEMPLATE),
    }


@pytest.fixture(scope="module")
def chatml_engine(families: dict[str, Path]) -> Iterator[LlamaCppEngine]:
    engine = LlamaCppEngine(str(families["chatml"]), n_ctx=1024, n_threads=2, seed=5)
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.close())


def test_gemmas_own_template_gives_the_prompt_and_counts_of_the_gemma_format(
    families: dict[str, Path],
) -> None:
    own = PromptTokenizer(str(families["gemma"]))
    packaged = PromptTokenizer()
    assert own.template.source == GEMMA3_TEMPLATE and packaged.template.source == ""
    assert own.template.bos_token == "<bos>" and own.template.adds_bos  # BOS not doubled
    for chat in (CHAT, (("user", "Hi"), ("assistant", "Hello!"), ("user", "Bye"))):
        assert own.count(chat) == packaged.count(chat)
    router = Tokenizers(TokenEstimateConfig())
    exact = router.count(f"gguf:{families['gemma']}", ROUTER_CHAT)
    assert exact.exact and exact.tokens == packaged.count(CHAT)
    assert router.count("gguf:gemma3-270m", ROUTER_CHAT) == exact


async def test_a_chatml_family_uses_its_template_in_the_engine_the_router_and_generation(
    chatml_engine: LlamaCppEngine, families: dict[str, Path]
) -> None:
    engine = chatml_engine
    assert engine.template.source == QWEN_TEMPLATE
    request = EngineRequest("chatml", CHAT, 8, temperature=0.0, seed=1)
    assert engine.prompt(request) == CHATML  # the Gemma vocabulary adds <bos> itself
    expected = PromptTokenizer(str(families["chatml"])).count(CHAT)
    assert engine.count_tokens(CHAT) == expected
    assert expected != PromptTokenizer().count(CHAT)  # not the Gemma format's count
    router = Tokenizers(TokenEstimateConfig()).count(f"gguf:{families['chatml']}", ROUTER_CHAT)
    assert router.exact and router.tokens == expected
    done = (await collect(engine.generate(request)))[-1]
    assert done.done and done.input_tokens == expected
    assert "<|im_end|>" in engine._stop_texts  # several tokens in this vocabulary: a text stop


async def test_the_chatml_family_renders_tools_its_own_way_and_calls_one(
    chatml_engine: LlamaCppEngine, families: dict[str, Path]
) -> None:
    engine = chatml_engine
    asked = (("user", "What is the weather in Oslo?"),)
    request = EngineRequest(
        "tool", asked, 64, temperature=0.0, seed=2, tools=(WEATHER,),
        tool_choice=ToolChoice("named", "get_weather"),
    )  # fmt: skip
    prompt = engine.prompt(request)
    assert prompt.startswith("<|im_start|>system\nYou are Qwen")
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in prompt
    chunks = await collect(engine.generate(request))
    fragments = [c.tool_call for c in chunks if c.tool_call is not None]
    assert fragments[0].name == "get_weather" and fragments[0].id
    jsonschema.validate(json.loads("".join(f.arguments for f in fragments)), PARAMS)
    done = chunks[-1]
    assert done.finish_reason == "tool_calls"
    assert done.input_tokens == engine.count_tokens(asked, (WEATHER,))
    # the router's GGUF counter renders tools the same way when it is given them
    vocab = _Vocab(str(families["chatml"]))
    spec = ToolSpec(WEATHER.name, WEATHER.description, WEATHER.parameters_json)
    assert vocab.count((Message(Role.USER, asked[0][1]),), (spec,)) == done.input_tokens
    # tool choice "none": the template's branch without tools
    plain = EngineRequest("none", asked, 4, tools=(WEATHER,), tool_choice=ToolChoice("none"))
    assert "# Tools" not in engine.prompt(plain)
    assert render_gemma(asked) not in engine.prompt(plain)
