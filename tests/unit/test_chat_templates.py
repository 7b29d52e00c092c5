"""hybrid_router.prompt.render_chat: a model's own chat template, rendered as Hugging Face
and llama.cpp render it, and the Gemma 3 format for models without one (pure: no model)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gguf_families import GEMMA3_TEMPLATE, QWEN_TEMPLATE
from hybrid_router.prompt import (
    TOOLS_INSTRUCTION,
    ChatTemplate,
    chat_message,
    render_chat,
    render_gemma,
    tool_definition,
)

GEMMA = ChatTemplate(GEMMA3_TEMPLATE, bos_token="<bos>", eos_token="<eos>", adds_bos=True)
QWEN = ChatTemplate(QWEN_TEMPLATE, bos_token="", eos_token="<|im_end|>", adds_bos=False)
WEATHER = tool_definition(
    "get_weather",
    "Weather for a city",
    '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}',
)

PLAIN_CHATS = [
    (("user", "Hi there"),),
    (("system", "Answer briefly."), ("user", "Name three colors.")),
    (("user", "Hi"), ("assistant", "Hello!"), ("user", "Bye")),
    (("system", "S"), ("user", "ünïcödé ✓"), ("assistant", "A"), ("user", "U")),
]


def chat(pairs: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
    return [chat_message(role, content) for role, content in pairs]


@pytest.mark.parametrize("pairs", PLAIN_CHATS)
def test_gemmas_own_template_renders_what_render_gemma_renders(
    pairs: tuple[tuple[str, str], ...],
) -> None:
    """A GGUF carrying Gemma 3's official template gets the very prompt the Gemma format
    (used for a file without a template) gives, less the BOS the tokenizer adds."""
    assert render_chat(chat(pairs), template=GEMMA) == render_gemma(pairs)
    assert render_chat(chat(pairs)) == render_gemma(pairs)


def test_where_gemmas_template_and_render_gemma_differ() -> None:
    # The template keeps one system message and refuses turns out of order; the Gemma
    # format joins every system text and takes any order.
    pairs = (("system", "A."), ("system", "B."), ("user", "Q"))
    assert render_gemma(pairs).startswith("<start_of_turn>user\nA.\n\nB.\n\nQ")
    refused = r"^messages: the model's chat template refused them: Conversation roles must"
    with pytest.raises(ValueError, match=refused):
        render_chat(chat(pairs), template=GEMMA)


def test_bos_is_cut_only_when_the_tokenizer_adds_it() -> None:
    pairs = (("user", "Hi"),)
    keeps = ChatTemplate(GEMMA3_TEMPLATE, bos_token="<bos>", adds_bos=False)
    assert render_chat(chat(pairs), template=keeps) == "<bos>" + render_gemma(pairs)
    assert not render_chat(chat(pairs), template=GEMMA).startswith("<bos>")


def test_a_chatml_template_renders_tools_calls_and_results_its_own_way() -> None:
    messages = [
        chat_message("system", "Be brief."),
        chat_message("user", "Weather in Oslo?"),
        chat_message("assistant", "", tool_calls=[("call_1", "get_weather", '{"city": "Oslo"}')]),
        chat_message("tool", '{"celsius": 4.5}', tool_call_id="call_1", name="get_weather"),
    ]
    prompt = render_chat(messages, tools=[WEATHER], template=QWEN)
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert "<tools>\n" + json.dumps(WEATHER) + "\n</tools>" in prompt
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Oslo"}}\n</tool_call><|im_end|>\n'
    ) in prompt
    assert prompt.endswith(
        '<|im_start|>user\n<tool_response>\n{"celsius": 4.5}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n"
    )
    # without tools the template takes its other branch: no tool section at all
    plain = render_chat(chat((("user", "Hi"),)), template=QWEN)
    assert "# Tools" not in plain
    assert plain.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_templates_read_messages_as_hugging_face_builds_them() -> None:
    message = chat_message("assistant", "", tool_calls=[("c", "f", '{"a": [1, "é"]}')])
    assert message == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": [1, "é"]}}}
        ],
    }
    # arguments that are not a JSON object stay text
    assert (
        chat_message("assistant", "", tool_calls=[("c", "f", "oops")])["tool_calls"][0]["function"][
            "arguments"
        ]
        == "oops"
    )
    assert chat_message("tool", "4", tool_call_id="c", name="f") == {
        "role": "tool", "content": "4", "tool_call_id": "c", "name": "f"
    }  # fmt: skip
    assert tool_definition("f", "", "")["function"]["parameters"] == {
        "type": "object",
        "properties": {},
    }


def test_the_environment_is_hugging_faces() -> None:
    source = (
        "{% for m in messages %}{{ m.content | tojson }}{% endfor %}"
        "{% for t in tools %}{% if loop.index > 1 %}{% break %}{% endif %}{{ t.function.name }}"
        "{% endfor %}|{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}"
        "{{ strftime_now('%Y') | length }}"
    )
    template = ChatTemplate(source, bos_token="<s>", eos_token="</s>", adds_bos=False)
    prompt = render_chat(chat((("user", "é<b>"),)), tools=[WEATHER, WEATHER], template=template)
    # tojson keeps non-ASCII text and HTML characters; loopcontrols; the special tokens
    assert prompt == '"é<b>"get_weather|<s>|</s>|True4'
    # ``tools`` is undefined without tools (templates test ``if tools``)
    assert render_chat(chat((("user", "x"),)), template=ChatTemplate("{{ tools is defined }}")) == (
        "False"
    )


def test_the_sandbox_and_bad_templates_are_errors_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"^tokenizer\.chat_template: not a valid Jinja template"):
        render_chat(chat((("user", "x"),)), template=ChatTemplate("{% for %}"))
    unsafe = ChatTemplate("{{ messages.append(1) }}")  # immutable sandbox
    with pytest.raises(ValueError, match=r"^messages: the model's chat template refused them"):
        render_chat(chat((("user", "x"),)), template=unsafe)
    with pytest.raises(ValueError, match=r"^messages\[1\]\.role: unknown role 'bot'"):
        render_chat([chat_message("user", "a"), chat_message("bot", "b")])
    with pytest.raises(ValueError, match="^messages: must not be empty"):
        render_chat([], template=QWEN)


def test_the_gemma_format_writes_tools_calls_and_results() -> None:
    messages = [
        chat_message("system", "Be brief."),
        chat_message("user", "Weather in Oslo?"),
        chat_message("assistant", "", tool_calls=[("call_1", "get_weather", '{"city": "Oslo"}')]),
        chat_message("tool", "4.5", tool_call_id="call_1", name="get_weather"),
    ]
    prompt = render_chat(messages, tools=[WEATHER])
    assert prompt == (
        "<start_of_turn>user\nBe brief.\n\n"
        + TOOLS_INSTRUCTION
        + "\n\n"
        + json.dumps(WEATHER["function"])
        + "\n\nWeather in Oslo?<end_of_turn>\n"
        '<start_of_turn>model\n{"name": "get_weather", "arguments": {"city": "Oslo"}}'
        "<end_of_turn>\n"
        "<start_of_turn>user\nResult of get_weather (call_1):\n4.5<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_a_template_is_read_from_a_llama_object_as_llama_cpp_python_reads_it() -> None:
    class Model:
        def token_get_text(self, token: int) -> str:
            return {2: "<bos>", 1: "<eos>"}[token]

        def add_bos_token(self) -> bool:
            return True

    class Llama:
        metadata = {"tokenizer.chat_template": QWEN_TEMPLATE}
        _model = Model()

        def token_bos(self) -> int:
            return 2

        def token_eos(self) -> int:
            return 1

    assert ChatTemplate.from_llama(Llama()) == ChatTemplate(QWEN_TEMPLATE, "<bos>", "<eos>", True)
    Llama.metadata = {}
    assert ChatTemplate.from_llama(Llama()).source == ""
