"""References in router.yaml (``env:VAR`` values, ``*_env`` fields), resolved for the router.

The router's side of the one resolver, :mod:`hybrid_router.refs`: the same forms, the same
rule (an unset, empty or whitespace-only referenced value is an error naming the field and
the variable) and the same messages. Errors are :class:`ConfigRefError`, a
:class:`router.errors.ConfigError` (so ``serve`` refuses to start and ``check`` reports
the key) that is also a :class:`hybrid_router.refs.RefError`.

The environment is a mapping passed in, read when these functions are called; the callers
that default to ``os.environ`` are the entry points (``create_backend``, ``KeyStore``,
``EdgeHub``, ``check``), never the adapters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from hybrid_router import refs
from hybrid_router.refs import RefError

from router.config.backends import BackendConfig
from router.errors import ConfigError

__all__ = ["BackendRefs", "ConfigRefError", "backend_refs", "resolve_env_var", "resolve_ref"]


class ConfigRefError(ConfigError, RefError):
    """A reference in router.yaml cannot be resolved: ``source: key: env:VAR is unset or
    empty; <fix>``. ``key`` is the config key (``headers.X-Team``), as for any ConfigError."""

    def __init__(self, error: RefError, *, source: str = "", key: str = "") -> None:
        # error.message already starts with the key (the resolver's ``field``).
        ConfigError.__init__(self, error.message, source=source)
        self.key = key or error.field
        self.field = error.field
        self.ref = error.ref
        self.detail = error.detail
        self.permanent = error.permanent
        self._error = error

    def located(self, source: str) -> ConfigRefError:
        if self.source or not source:
            return self
        return ConfigRefError(self._error, source=source, key=self.key)


def _raise(error: RefError, source: str, key: str) -> NoReturn:
    raise ConfigRefError(error, source=source, key=key) from None


def resolve_ref(
    value: str,
    *,
    env: Mapping[str, str],
    key: str,
    source: str = "",
    fix: str = "",
) -> str:
    """``value``, or the variable it names when it is ``env:VAR`` (hybrid_router.refs.resolve)."""
    try:
        return refs.resolve(value, field=key, env=env, fix=fix)
    except RefError as exc:
        _raise(exc, source, key)


def resolve_env_var(
    name: str,
    *,
    env: Mapping[str, str],
    key: str,
    source: str = "",
    fix: str = "",
) -> str:
    """The variable a ``*_env`` field names (hybrid_router.refs.resolve_env)."""
    try:
        return refs.resolve_env(name, field=key, env=env, fix=fix)
    except RefError as exc:
        _raise(exc, source, key)


@dataclass(frozen=True, slots=True)
class BackendRefs:
    """A hosted backend's resolved references, read once when the backend is created (never
    shown by ``repr``)."""

    #: ``headers`` with every ``env:VAR`` value read (literals as written).
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: The key ``api_key_env`` names ("" when it names none).
    api_key: str = field(default="", repr=False)


def backend_refs(cfg: BackendConfig, env: Mapping[str, str]) -> BackendRefs:
    """Resolve ``headers`` and ``api_key_env`` of an ``openai`` or ``anthropic`` backend.
    Raises ConfigRefError naming the backend, the key and the variable."""
    source = f"backend {cfg.name}"
    headers = {
        name: resolve_ref(value, env=env, key=f"headers.{name}", source=source)
        for name, value in cfg.headers.items()
        # anthropic: the key comes from api_key_env / api_key_secret; the adapter drops it.
        if not (cfg.kind == "anthropic" and name.lower() == "x-api-key")
    }
    api_key = ""
    if cfg.api_key_env:
        fix = (
            "export the Anthropic API key there, or use api_key_secret"
            if cfg.kind == "anthropic"
            else "export the API key there or remove api_key_env"
        )
        api_key = resolve_env_var(
            cfg.api_key_env, env=env, key="api_key_env", source=source, fix=fix
        )
    return BackendRefs(headers=headers, api_key=api_key)
