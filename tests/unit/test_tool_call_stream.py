"""serving/engines/tool_calls.py: decoded text -> text or tool-call fragments, however the
decoder splits it (pure)."""

from __future__ import annotations

import json

import pytest

from serving.engines.base import (
    EngineChunk,
    EngineRequest,
    Tool,
    ToolCallFragment,
    ToolChoice,
)
from serving.engines.tool_calls import Answer, parse_tool_calls, with_tokens

TOOLS = (Tool("get_weather", "", '{"type": "object"}'), Tool("search", "", ""))
ARGS = '{"city": "Oslo \\"centre\\"", "days": [1, {"x": "}"}]}'


def request(mode: str = "auto", name: str = "", stop: tuple[str, ...] = ()) -> EngineRequest:
    return EngineRequest(
        "r", (("user", "hi"),), 64, stop=stop, tools=TOOLS, tool_choice=ToolChoice(mode, name)
    )


def run(answer: Answer, pieces: list[str]) -> tuple[str, list[ToolCallFragment], bool]:
    out: list[EngineChunk] = []
    stopped = False
    for piece in pieces:
        chunks, stopped = answer.feed(piece)
        out += chunks
        if stopped:
            break
    out += answer.finish()
    text = "".join(c.text for c in out)
    return text, [c.tool_call for c in out if c.tool_call is not None], stopped


def joined(fragments: list[ToolCallFragment]) -> list[tuple[int, str, str]]:
    calls: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    for f in fragments:
        calls.setdefault(f.index, []).append(f.arguments)
        names[f.index] = names.get(f.index) or f.name
    return [(i, names[i], "".join(calls[i])) for i in sorted(calls)]


FORCED = '{ "name": "get_weather",\n  "arguments": ' + ARGS + " }"


@pytest.mark.parametrize("at", range(1, len(FORCED)))
def test_a_forced_call_streams_its_arguments_exactly_wherever_the_text_splits(at: int) -> None:
    answer = Answer(request("required"), call_id=lambda: "call_x")
    text, fragments, _ = run(answer, [FORCED[:at], FORCED[at:]])
    assert text == ""
    assert joined(fragments) == [(0, "get_weather", ARGS)]
    assert fragments[0] == ToolCallFragment(0, "call_x", "get_weather", "")
    assert answer.complete and answer.calls == 1
    assert answer.finish_reason("stop") == "tool_calls"
    assert answer.finish_reason("length") == "length"


def test_a_forced_call_streams_token_by_token_and_ignores_stop_strings() -> None:
    answer = Answer(request("named", "get_weather", stop=("Oslo",)), call_id=lambda: "c")
    text, fragments, stopped = run(answer, list(FORCED))
    assert not stopped and joined(fragments) == [(0, "get_weather", ARGS)]
    assert len(fragments) > 10  # the arguments went out as they decoded


def test_an_unfinished_forced_call_is_not_complete() -> None:
    answer = Answer(request("required"), call_id=lambda: "c")
    _, fragments, _ = run(answer, [FORCED[:40]])
    assert not answer.complete and answer.calls == 1
    assert joined(fragments)[0][2] == FORCED[FORCED.index("{", 2) : 40]


HERMES = (
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": ' + ARGS + "}\n</tool_call>"
)


@pytest.mark.parametrize("at", range(0, len(HERMES), 3))
def test_auto_streams_text_then_holds_a_tool_call_tag(at: int) -> None:
    answer = Answer(request(), call_id=lambda: "call_h")
    text, fragments, _ = run(answer, [HERMES[:at], HERMES[at:]])
    assert text == "Let me check.\n"
    assert fragments[0] == ToolCallFragment(0, "call_h", "get_weather", "")
    assert joined(fragments) == [(0, "get_weather", json.dumps(json.loads(ARGS)))]
    assert answer.finish_reason("stop") == "tool_calls"


def test_auto_text_goes_out_as_it_comes() -> None:
    answer = Answer(request())
    chunks, _ = answer.feed("Hello <tool")
    assert [c.text for c in chunks] == ["Hello "]  # "<tool" may open a call: held
    chunks, _ = answer.feed("s> are fun")
    assert [c.text for c in chunks] == ["<tools> are fun"]
    assert answer.finish() == [] and answer.finish_reason("stop") == "stop"


@pytest.mark.parametrize(
    ("output", "calls"),
    [
        ('{"name": "search", "arguments": {"q": "x"}}', [(0, "search", '{"q": "x"}')]),
        ('  {"name": "search", "parameters": {}}', [(0, "search", "{}")]),
        (
            '```json\n{"name": "search", "arguments": "{\\"q\\": 1}"}\n```',
            [(0, "search", '{"q": 1}')],
        ),
        (
            '[{"name": "search", "arguments": {}}, {"name": "get_weather", "arguments": {}}]',
            [(0, "search", "{}"), (1, "get_weather", "{}")],
        ),
        (
            '<tool_call>{"name": "search", "arguments": {}}</tool_call>\n'
            '<tool_call>{"name": "get_weather", "arguments": {"a": 1}}</tool_call>',
            [(0, "search", "{}"), (1, "get_weather", '{"a": 1}')],
        ),
    ],
)
def test_auto_reads_calls_in_the_formats_models_write(
    output: str, calls: list[tuple[int, str, str]]
) -> None:
    text, fragments, _ = run(Answer(request()), [output])
    assert text == "" and joined(fragments) == calls


@pytest.mark.parametrize(
    "output",
    [
        '{"name": "unknown_tool", "arguments": {}}',
        '{"answer": 42}',
        '{"name": "search", "arguments": [1]}',
        "{not json",
        "<tool_call>{broken</tool_call>",
    ],
)
def test_held_output_that_is_not_a_call_of_the_tools_is_text_after_all(output: str) -> None:
    answer = Answer(request())
    text, fragments, _ = run(answer, [output[:5], output[5:]])
    assert text == output and fragments == [] and answer.calls == 0


def test_choice_none_and_no_tools_are_plain_text_with_stop_strings() -> None:
    plain = EngineRequest("r", (("user", "x"),), 8, stop=("END",), tools=TOOLS,
                          tool_choice=ToolChoice("none"))  # fmt: skip
    text, fragments, stopped = run(Answer(plain), ['{"name": "search", "arguments": {}} EN', "D!"])
    assert text == '{"name": "search", "arguments": {}} ' and stopped and fragments == []
    # the format's own stop strings (a ChatML marker the vocabulary splits) cut too
    text, _, stopped = run(Answer(EngineRequest("r", (("user", "x"),), 8), ("<|im_end|>",)),
                           ["Hi<|im_", "end|>more"])  # fmt: skip
    assert (text, stopped) == ("Hi", True)


def test_parse_tool_calls_keeps_the_text_outside_the_calls() -> None:
    assert parse_tool_calls('Sure. <tool_call>{"name": "search", "arguments": {}}</tool_call>',
                            ["search"]) == ([("search", "{}")], "Sure.")  # fmt: skip
    assert parse_tool_calls("no calls", ["search"]) is None


def test_tokens_ride_on_the_first_piece() -> None:
    pieces = [EngineChunk(text="a"), EngineChunk(tool_call=ToolCallFragment(0, "c", "f"))]
    out = with_tokens(pieces, 3)
    assert [c.tokens for c in out] == [3, 0] and out[0].text == "a"
    assert with_tokens([], 3) == []
