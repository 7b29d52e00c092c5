"""Build an engine for an installed model, and smoke-test it before it serves.

- ``llamacpp``: the artifact is a GGUF file (``None`` = the model bundled with the engine
  package, Gemma 3 270M). The context window is the manifest's unless the agent sets one.
- ``scripted``: the deterministic test engine of ``serving/`` (not a model). Its
  "artifact" is a small JSON file of engine options, so that tests exercise the whole
  sync path (download, size, sha256, install, load, smoke test) on a few bytes; an
  artifact that is not a JSON object fails to load, and one with
  ``{"fail_before_first_token": "unavailable"}`` fails its smoke test, and one with
  ``{"fail_after_requests": 1}`` passes it and fails every later request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from greengrass.config import AgentConfig
from greengrass.slot import ModelRecord
from serving.engines import create_engine
from serving.engines.base import Engine, EngineError, EngineRequest, Message

BUNDLED_CONTEXT_WINDOW = 2048
_SCRIPTED_KEYS = frozenset(
    {
        "ttft_ms",
        "tokens_per_s",
        "prefill_tokens_per_s",
        "reply_tokens",
        "fail_before_first_token",
        "fail_after_tokens",
        "fail_after_requests",
        "max_concurrency",
        "model_family",
        "context_window",
    }
)


def _scripted_options(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = set(options) - _SCRIPTED_KEYS
    if unknown:
        raise EngineError(
            f"{where}: unknown scripted engine option(s) {', '.join(sorted(unknown))}",
            "invalid",
        )
    return dict(options)


def build_engine(cfg: AgentConfig, model: ModelRecord) -> Engine:
    """An engine (not started) serving ``model``. Raises EngineError when the artifact
    cannot be used."""
    if cfg.engine == "llamacpp":
        return create_engine(
            "llamacpp",
            model_path=model.path or None,
            n_ctx=cfg.context_window or model.context_window or BUNDLED_CONTEXT_WINDOW,
            n_threads=cfg.n_threads,
            max_decode_tokens_per_s=cfg.max_decode_tokens_per_s or None,
            model_name=model.name,
            version=model.version,
            model_family=model.model_family,
        )
    options = _scripted_options(cfg.scripted, "scripted")
    if model.path:
        try:
            data = json.loads(Path(model.path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EngineError(f"cannot load {model.path}: {exc}", "unavailable") from None
        if not isinstance(data, dict):
            raise EngineError(f"cannot load {model.path}: not a JSON object", "unavailable")
        options.update(_scripted_options(data, model.path))
    options.pop("context_window", None)
    family = options.pop("model_family", model.model_family or "scripted")
    try:
        return create_engine(
            "scripted",
            model_name=model.name,
            version=model.version,
            model_family=family,
            context_window=model.context_window,
            **options,
        )
    except (TypeError, ValueError) as exc:
        raise EngineError(f"scripted engine options: {exc}", "invalid") from None


def bundled_model(cfg: AgentConfig) -> ModelRecord | None:
    """The model to serve before any version is installed, if the agent has one."""
    if not cfg.bundled_model:
        return None
    if cfg.engine == "scripted":
        window = int(cfg.scripted.get("context_window", 8192))
        return ModelRecord(cfg.model_name, "builtin", window, model_family="scripted")
    return ModelRecord(
        cfg.model_name,
        "bundled",
        cfg.context_window or BUNDLED_CONTEXT_WINDOW,
        model_family=cfg.model_family,
    )


async def smoke_test(engine: Engine, timeout_s: float) -> None:
    """A short generation must finish with at least one token. Raises EngineError."""
    request = EngineRequest(
        request_id="smoke-test",
        messages=(Message("user", "Say hello."),),
        max_output_tokens=4,
        temperature=0.0,
        seed=0,
    )
    tokens = 0
    done = False
    try:
        async with asyncio.timeout(timeout_s):
            stream = engine.generate(request)
            async with contextlib.aclosing(stream) as chunks:
                async for chunk in chunks:
                    tokens += chunk.tokens
                    if chunk.done:
                        done = True
                        tokens = max(tokens, chunk.output_tokens)
    except TimeoutError:
        raise EngineError(f"smoke test: no answer within {timeout_s:g} s", "unavailable") from None
    except EngineError as exc:
        raise EngineError(f"smoke test failed: {exc}", exc.error_class) from None
    if not done or tokens == 0:
        raise EngineError("smoke test: the model produced no token", "unavailable")
