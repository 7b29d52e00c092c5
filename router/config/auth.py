"""``auth:``: API keys, their sources, and tenants."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from router.config._base import _Model
from router.config.backends import BackendTier
from router.types import DataClass, Tier

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class ApiKeyConfig(_Model):
    """One API key as stored: its id, tenant and hash; never the secret (docs/security.md)."""

    id: Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")]
    tenant: Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME_PATTERN)]
    #: "sha256:<64 hex digits>" of the whole key (router/security/keys.py).
    hash: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
    created: str = ""
    name: str = ""
    revoked: bool = False


class TenantConfig(_Model):
    """What the holders of a tenant's keys may use."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME_PATTERN)]
    tiers: tuple[BackendTier, ...] = (Tier.HOSTED, Tier.GPU, Tier.EDGE)
    #: Backend names allowed (empty: any backend of the allowed tiers).
    backends: tuple[str, ...] = ()
    data_classes: tuple[DataClass, ...] = (DataClass.PUBLIC, DataClass.INTERNAL)
    #: Open Generate streams for this tenant (None: server.limits.max_streams_per_tenant).
    max_streams: int | None = Field(None, ge=0)
    #: How this tenant's session histories are fitted to a window ("" = sessions.strategy).
    context_strategy: Literal["", "sliding", "summarize", "strict"] = ""
    #: Continue every request of this tenant on the next candidate when its backend fails
    #: mid-answer (as GenerateRequest.continue_on_failure does for one request).
    continue_on_failure: bool = False


class SecretsManagerConfig(_Model):
    """An AWS Secrets Manager secret holding a keys file (YAML or JSON)."""

    secret_id: str = ""
    region: str = ""
    #: Override the service endpoint (VPC endpoint, or a local test server).
    endpoint_url: str = ""


class AuthConfig(_Model):
    """API keys and tenants. Keys come from every source that is set (docs/security.md)."""

    keys: tuple[ApiKeyConfig, ...] = ()
    #: YAML keys file written by `hybrid-router keys`; "env:VAR" reads the path from VAR.
    keys_file: str = ""
    secrets_manager: SecretsManagerConfig = SecretsManagerConfig()
    #: Seconds between re-reads of keys_file and the secret (revocations take effect).
    refresh_s: float = Field(60.0, gt=0)
    tenants: tuple[TenantConfig, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> AuthConfig:
        names = [t.name for t in self.tenants]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"tenant names must be unique; used twice: {', '.join(dup)}")
        ids = [k.id for k in self.keys]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"key ids must be unique; used twice: {', '.join(dup)}")
        return self

    @property
    def configured(self) -> bool:
        return bool(self.keys or self.keys_file or self.secrets_manager.secret_id)
