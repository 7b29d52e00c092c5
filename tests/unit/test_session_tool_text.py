"""Tool turns as text: ``hybrid-router sessions show`` (from hand-made SessionService
messages, at 80 columns), the summary request's lines, what a backend without tools gets,
and the token counts of a session request with tools (router/sessions/context.py)."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

from hybrid_router.v1 import sessions_pb2 as spb
from hybrid_router.v1 import types_pb2 as tpb
from rich.console import Console

from hybrid_router_cli import render_sessions
from router.config import SessionsConfig, TokenEstimateConfig
from router.sessions.context import Sessions, as_text, turn_text
from router.sessions.model import Turn
from router.sessions.sqlite import SqliteSessionStore
from router.sessions.summaries import TOOL_TEXT_CHARS, summary_line
from router.tokenizers import Tokenizers
from router.types import (
    BackendSnapshot,
    BackendSpec,
    DataClass,
    InferenceRequest,
    Message,
    Priors,
    Role,
    Tier,
    ToolCall,
    ToolSpec,
)

NOW_MS = 1_700_000_000_000
CALL = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
TURNS = [
    Turn("user", "Weather in Oslo?"),
    Turn("assistant", "", tool_calls=(CALL,)),
    Turn("tool", "12 C", tool_call_id="call_1", name="get_weather"),
    Turn("assistant", "It is 12 C."),
]


def _text(renderable: object, width: int = 80) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(renderable)
    return buf.getvalue()


def _session(arguments: str = '{"city": "Oslo"}') -> spb.Session:
    return spb.Session(
        session_id="agent-1",
        ttl_s=3600,
        turn_count=4,
        history_tokens=60,
        turns=[
            spb.Turn(role=tpb.ROLE_USER, content="Weather in Oslo?", seq=0, tokens=10),
            spb.Turn(
                role=tpb.ROLE_ASSISTANT,
                seq=1,
                tokens=15,
                backend="hosted-1",
                tool_calls=[tpb.ToolCall(id="call_1", name="get_weather", arguments=arguments)],
            ),
            spb.Turn(
                role=tpb.ROLE_TOOL,
                content="12 C",
                seq=2,
                tokens=20,
                tool_call_id="call_1",
                name="get_weather",
            ),
            spb.Turn(role=tpb.ROLE_ASSISTANT, content="It is 12 C.", seq=3, tokens=15),
        ],
    )


def test_show_gives_the_calls_and_the_call_a_result_answers() -> None:
    out = _text(render_sessions.session_view(_session(), content_chars=200, now_ms=NOW_MS))
    assert '→ get_weather({"city": "Oslo"}) call_1' in out
    assert "result of get_weather call_1: 12 C" in out
    assert "tool" in out and "4 turns, ~60 tokens" in out
    assert "long turns are cut" not in out


def test_show_cuts_long_arguments_and_says_so() -> None:
    long_args = '{"q": "' + "x" * 400 + '"}'
    chars = render_sessions.content_chars_for(80)
    out = _text(render_sessions.session_view(_session(long_args), content_chars=chars))
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80
    assert "…" in out and "chars)" in out and "long turns are cut" in out
    full = _text(render_sessions.session_view(_session(long_args), content_chars=None))
    assert full.count("x") >= 400 and "long turns are cut" not in full


def test_summary_lines_spell_out_calls_and_results() -> None:
    assert [summary_line(t) for t in TURNS] == [
        "user: Weather in Oslo?",
        'assistant: [called get_weather({"city": "Oslo"})]',
        "tool get_weather (call_1): 12 C",
        "assistant: It is 12 C.",
    ]
    page = Turn("tool", "y" * (TOOL_TEXT_CHARS + 50), tool_call_id="c2")
    line = summary_line(page)
    assert line.startswith("tool (c2): yyy") and line.endswith("... (50 more)")
    both = Turn("assistant", "Checking.", tool_calls=(CALL, ToolCall("c3", "now", "{}")))
    assert summary_line(both) == (
        'assistant: Checking. [called get_weather({"city": "Oslo"}); now({})]'
    )


def test_a_backend_without_tools_gets_alternating_text_turns() -> None:
    two = [
        Turn("user", "Weather and time?"),
        Turn("assistant", "Checking.", tool_calls=(CALL, ToolCall("c2", "now", "{}"))),
        Turn("tool", "12 C", tool_call_id="call_1", name="get_weather"),
        Turn("tool", "14:05", tool_call_id="c2"),
        Turn("assistant", "12 C at 14:05."),
    ]
    assert as_text(two) == [
        Message(Role.USER, "Weather and time?"),
        Message(Role.ASSISTANT, 'Checking.\nget_weather({"city": "Oslo"})\nnow({})'),
        Message(Role.USER, "[result of get_weather call_1] 12 C\n[result of a tool c2] 14:05"),
        Message(Role.ASSISTANT, "12 C at 14:05."),
    ]
    assert turn_text(TURNS[0]) == "Weather in Oslo?"


def _spec(name: str, capabilities: frozenset[str]) -> BackendSpec:
    return BackendSpec(
        name=name,
        tier=Tier.HOSTED,
        kind="openai",
        endpoint="http://x",
        model=name,
        context_window=8192,
        max_payload_bytes=1 << 20,
        max_concurrency=4,
        max_queue=4,
        data_classes=frozenset(DataClass),
        priors=Priors(ttft_ms=50, decode_tokens_per_s=100),
        capabilities=capabilities,
    )


async def test_a_session_prompt_counts_calls_and_tool_definitions(tmp_path: Path) -> None:
    store = SqliteSessionStore(str(tmp_path / "s.sqlite3"), ttl_s=3600, max_turns=100)
    counter = Tokenizers(TokenEstimateConfig())
    sessions = Sessions(store, SessionsConfig(), counter, wall_ms=lambda: NOW_MS)
    try:
        # The first step stores the question and the model's call.
        ask = InferenceRequest(
            messages=(Message(Role.USER, "Weather in Oslo?"),),
            max_output_tokens=64,
            request_id="r1",
            session_id="agent-1",
        )
        conv = await sessions.open(ask, None)
        await conv.commit("", "hosted-1", (CALL,))
        # The next step: only the result; with and without tool definitions.
        result = Message(Role.TOOL, "12 C", tool_call_id="call_1", name="get_weather")
        step = InferenceRequest(
            messages=(result,), max_output_tokens=64, request_id="r2", session_id="agent-1"
        )
        tools = (ToolSpec("get_weather", "The weather now.", '{"type": "object"}'),)
        pairs = [
            (_spec("tools", frozenset({"chat", "tools"})), BackendSnapshot("tools")),
            (_spec("chat", frozenset({"chat"})), BackendSnapshot("chat")),
        ]
        plain = (await sessions.open(step, None)).fit(pairs, 64)
        conv = await sessions.open(replace(step, tools=tools), None)
        with_tools = conv.fit(pairs, 64)
        assert with_tools["tools"].tokens.tokens > plain["tools"].tokens.tokens
        assert with_tools["tools"].payload_bytes > plain["tools"].payload_bytes
        assert list(conv.fitted["tools"].messages) == [
            Message(Role.USER, "Weather in Oslo?"),
            Message(Role.ASSISTANT, "", (CALL,)),
            result,
        ]
        # The call turn's count includes its name and arguments.
        key = ("anonymous", "agent-1", NOW_MS)
        alone = counter.count("estimate", (Message(Role.ASSISTANT, ""),)).tokens
        assert sessions.counts.turn("estimate", key, conv.session.turns[1]).tokens > alone
        # A backend without tools gets the same history as text.
        assert [m.role for m in conv.fitted["chat"].messages] == [
            Role.USER, Role.ASSISTANT, Role.TOOL,
        ]  # fmt: skip
        assert conv.fitted["chat"].messages[1] == Message(
            Role.ASSISTANT, 'get_weather({"city": "Oslo"})'
        )
    finally:
        await store.close()
