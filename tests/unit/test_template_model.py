"""Prompt templates (router/templates/model.py): publish-time checks and typed rendering."""

from __future__ import annotations

import pytest

from router.errors import InvalidRequest
from router.templates.model import TemplateError, parse, render
from router.types import Role

DOC = {
    "name": "support-answer",
    "version": "3",
    "variables": {
        "product": {"type": "string"},
        "max_words": {"type": "integer", "default": 120},
        "formal": {"type": "boolean", "default": False},
    },
    "messages": [
        {"role": "system", "content": "About {{product}}: at most {{ max_words }} words."},
        {"role": "user", "content": "Formal: {{formal}}"},
    ],
}


def test_render_fills_typed_values_and_defaults():
    t = parse(DOC)
    messages = render(t, {"product": "Acme Router", "formal": "yes"})
    assert [m.role for m in messages] == [Role.SYSTEM, Role.USER]
    assert messages[0].content == "About Acme Router: at most 120 words."
    assert messages[1].content == "Formal: true"


@pytest.mark.parametrize(
    ("values", "field", "words"),
    [
        ({}, "template_variables.product", "needs it (string)"),
        ({"product": "x", "colour": "red"}, "template_variables.colour", "has no variable"),
        ({"product": "x", "max_words": "many"}, "template_variables.max_words", "whole number"),
        ({"product": "x", "formal": "perhaps"}, "template_variables.formal", "true or false"),
    ],
)
def test_missing_unknown_or_mistyped_variables_are_named(values, field, words):
    with pytest.raises(InvalidRequest) as err:
        render(parse(DOC), values)
    assert err.value.field == field and words in err.value.message


def _doc(variables: dict, content: str) -> dict:
    return {"name": "t", "version": "1", "variables": variables,
            "messages": [{"role": "user", "content": content}]}  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({**DOC, "name": "bad name"}, "name:"),
        ({**DOC, "version": ""}, "version:"),
        ({**DOC, "messages": []}, "non-empty list"),
        ({**DOC, "messages": [{"role": "robot", "content": "x"}]}, "role must be"),
        (_doc({}, "{{nope}}"), "does not declare"),
        (_doc({"x": {"type": "date"}}, "{{x}}"), "type must be one of"),
        (_doc({"x": {}, "unused": {}}, "{{x}}"), "declared but not used"),
        (_doc({"n": {"type": "integer", "default": "ten"}}, "{{n}}"), "whole number"),
    ],
)
def test_a_bad_template_is_refused_at_publish(doc, words):
    with pytest.raises((TemplateError, InvalidRequest)) as err:
        parse(doc)
    assert words in str(err.value)
