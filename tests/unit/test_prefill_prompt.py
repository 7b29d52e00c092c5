"""A continued (prefilled) assistant turn: the prompt ends with its text, the turn open
(hybrid_router.prompt.render_chat(continue_final=True)), for a model's own template and
for the Gemma 3 format."""

from __future__ import annotations

import pytest
from hybrid_router.prompt import ChatTemplate, render_chat

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ASKED = [{"role": "user", "content": "Count to five"}]


def test_a_template_renders_the_turn_open() -> None:
    t = ChatTemplate(source=CHATML)
    full = render_chat(ASKED, template=t)
    cont = render_chat([*ASKED, {"role": "assistant", "content": "one two"}], template=t,
                       continue_final=True)  # fmt: skip
    assert full == "<|im_start|>user\nCount to five<|im_end|>\n<|im_start|>assistant\n"
    assert cont == full + "one two"


def test_the_gemma_format_renders_the_turn_open() -> None:
    full = render_chat(ASKED)
    cont = render_chat([*ASKED, {"role": "assistant", "content": "one two "}], continue_final=True)
    assert full.endswith("<start_of_turn>model\n")
    assert cont == full + "one two "


def test_continuing_needs_an_assistant_turn_last() -> None:
    with pytest.raises(ValueError, match="continuing a turn needs an assistant message last"):
        render_chat(ASKED, continue_final=True)
