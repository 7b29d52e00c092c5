"""``RouterConfig``: the whole router.yaml, one field per section."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import PrivateAttr, model_validator

from router.config._base import _Model
from router.config.auth import AuthConfig
from router.config.backends import BackendConfig
from router.config.controls import ControlsConfig
from router.config.discovery import DiscoveryConfig
from router.config.edge import EdgeConfig
from router.config.policy import PolicyConfig
from router.config.server import ServerConfig
from router.config.sessions import SessionsConfig
from router.config.telemetry import TelemetryConfig
from router.config.templates import TemplatesConfig
from router.errors import ConfigError


class RouterConfig(_Model):
    server: ServerConfig = ServerConfig()
    policy: PolicyConfig = PolicyConfig()
    backends: tuple[BackendConfig, ...] = ()
    discovery: DiscoveryConfig = DiscoveryConfig()
    auth: AuthConfig = AuthConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    edge: EdgeConfig = EdgeConfig()
    sessions: SessionsConfig = SessionsConfig()
    templates: TemplatesConfig = TemplatesConfig()
    controls: ControlsConfig = ControlsConfig()

    #: Where the config came from (the file given), and which keys something else set:
    #: ``{"server.address": "--address", "policy.objective": "HYBRID_ROUTER__POLICY__..."}``
    #: (set by the loader and by ``serve``'s flags; errors name them, see :meth:`origin`).
    _source: str = PrivateAttr(default="router.yaml")
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    def located_at(self, source: str, origins: Mapping[str, str] | None = None) -> RouterConfig:
        """This config, saying it came from ``source`` with ``origins``'s keys set elsewhere
        (added to those it already has)."""
        out = self.model_copy()
        out._source = source
        out._origins = {**self._origins, **dict(origins or {})}
        return out

    @property
    def source(self) -> str:
        """The file the config was read from ("router.yaml" when built in code)."""
        return self._source

    def origin(self, key: str) -> str:
        """Where ``key``'s value came from: the environment variable or flag that set it
        (or set a section above it), else the file."""
        for set_key, origin in self._origins.items():
            if key == set_key or key.startswith((set_key + ".", set_key + "[")):
                return origin
        return self._source

    def locate(self, error: ConfigError) -> ConfigError:
        """``error`` naming where its key was set (components name the key only)."""
        return error.located(self.origin(error.key))

    @model_validator(mode="after")
    def _unique_names(self) -> RouterConfig:
        seen: set[str] = set()
        for b in self.backends:
            if b.name in seen:
                raise ValueError(f"backend name {b.name!r} is used twice; names must be unique")
            seen.add(b.name)
        return self
