"""Backend adapters: one per ``kind`` behind :class:`router.backends.base.Backend`.

:func:`create_backend` turns a validated :class:`router.config.BackendConfig` into an
adapter. Adapter modules are imported on demand, so a router that uses no OpenAI
backend never imports httpx (and later, no Bedrock backend never imports botocore).
"""

from __future__ import annotations

from collections.abc import Mapping

from router.backends.base import Backend
from router.config import BackendConfig
from router.errors import ConfigError

__all__ = ["Backend", "create_backend"]


def create_backend(cfg: BackendConfig, *, environ: Mapping[str, str] | None = None) -> Backend:
    """The adapter for ``cfg.kind``, not yet started (the registry calls ``start()``).

    ``environ`` (default ``os.environ``) supplies secrets named in the config (an OpenAI
    backend's ``api_key_env`` and ``env:VAR`` header values); they are read here, once.
    Raises ConfigError for an unknown kind or a missing secret.
    """
    spec = cfg.to_spec()
    if cfg.kind == "model_service":
        from router.backends.model_service import ModelServiceBackend

        return ModelServiceBackend(spec, timeout_s=cfg.timeout_s)
    if cfg.kind == "openai":
        from router.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(spec, cfg, environ=environ)
    raise ConfigError(
        f"unknown backend kind {cfg.kind!r}; use 'model_service' or 'openai'",
        source=f"backend {cfg.name}",
        key="kind",
    )
