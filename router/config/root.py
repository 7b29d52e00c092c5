"""``RouterConfig``: the whole router.yaml, one field per section."""

from __future__ import annotations

from pydantic import model_validator

from router.config._base import _Model
from router.config.auth import AuthConfig
from router.config.backends import BackendConfig
from router.config.discovery import DiscoveryConfig
from router.config.edge import EdgeConfig
from router.config.policy import PolicyConfig
from router.config.server import ServerConfig
from router.config.telemetry import TelemetryConfig


class RouterConfig(_Model):
    server: ServerConfig = ServerConfig()
    policy: PolicyConfig = PolicyConfig()
    backends: tuple[BackendConfig, ...] = ()
    discovery: DiscoveryConfig = DiscoveryConfig()
    auth: AuthConfig = AuthConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    edge: EdgeConfig = EdgeConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> RouterConfig:
        seen: set[str] = set()
        for b in self.backends:
            if b.name in seen:
                raise ValueError(f"backend name {b.name!r} is used twice; names must be unique")
            seen.add(b.name)
        return self
