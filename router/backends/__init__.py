"""Backend adapters: one per ``kind`` behind :class:`router.backends.base.Backend`.

:func:`create_backend` turns a validated :class:`router.config.BackendConfig` into an
adapter. Adapter modules are imported on demand, so a router that uses no OpenAI
or Anthropic backend never imports httpx, and one without a Bedrock backend (or a Secrets
Manager key) never imports boto3.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from router.backends.base import Backend
from router.config import BackendConfig, backend_refs
from router.errors import ConfigError

__all__ = ["Backend", "create_backend"]


def create_backend(cfg: BackendConfig, *, environ: Mapping[str, str] | None = None) -> Backend:
    """The adapter for ``cfg.kind``, not yet started (the registry calls ``start()``).

    ``environ`` (default ``os.environ``) supplies secrets named in the config (an OpenAI or
    Anthropic backend's ``api_key_env`` and ``env:VAR`` header values); they are resolved
    here, once, by ``router.config.backend_refs`` (hybrid_router.refs: an unset or empty
    variable is a ConfigError naming the backend, the key and the variable) and handed to
    the adapter, which never reads the environment. Bedrock credentials and Secrets
    Manager keys come from the AWS chain instead. Raises ConfigError for an unknown kind or
    a missing secret.
    """
    spec = cfg.to_spec()
    if cfg.kind == "model_service":
        from router.backends.model_service import ModelServiceBackend

        return ModelServiceBackend(spec, timeout_s=cfg.timeout_s, application=cfg.serve_application)
    if cfg.kind == "ray_serve":
        from router.backends.ray_serve import RayServeBackend

        return RayServeBackend(
            spec,
            application=cfg.serve_application,
            load_application=cfg.serve_load_application,
            timeout_s=cfg.timeout_s,
        )
    if cfg.kind == "openai":
        from router.backends.openai_compat import OpenAIBackend

        env = os.environ if environ is None else environ
        return OpenAIBackend(spec, cfg, refs=backend_refs(cfg, env))
    if cfg.kind == "anthropic":
        from router.backends.anthropic import AnthropicBackend

        env = os.environ if environ is None else environ
        return AnthropicBackend(spec, cfg, refs=backend_refs(cfg, env))
    if cfg.kind == "bedrock":
        from router.backends.bedrock import BedrockBackend

        return BedrockBackend(spec, cfg)
    raise ConfigError(
        f"unknown backend kind {cfg.kind!r}; use 'model_service', 'ray_serve', 'openai', "
        "'anthropic' or 'bedrock'",
        source=f"backend {cfg.name}",
        key="kind",
    )
