"""``controls.rate_limits:``: rate limits (requests and tokens per minute) (docs/controls.md).

Two scopes, each with its own limits: a tenant's (every key of the tenant together) and a
key's (that key alone). A request passes when every limit that applies to it has room.
A scope's settings come from its own entry (``tenants.<name>``, ``keys.<key id>``), key by
key, falling back to the scope's default (``default``, ``key_default``); a key left unset
in both is no limit, and ``0`` is no limit even when the default sets one.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from router.config._base import _Model

#: A tenant name as ``auth.tenants[].name`` takes it.
TenantName = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
#: A key id as ``hybrid-router keys`` makes it (the ``<id>`` of ``hr_<id>_<secret>``).
KeyId = Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")]


class RateLimit(_Model):
    """One scope's limits. Unset (null): the scope's default; 0: no limit."""

    #: Requests per minute.
    requests_per_min: float | None = Field(None, ge=0)
    #: Tokens per minute, counted as ``controls.rate_limits.tokens`` says.
    tokens_per_min: float | None = Field(None, ge=0)
    #: Requests that may arrive at once after a quiet spell (null: one minute's worth).
    burst_requests: float | None = Field(None, ge=1)
    #: Tokens one burst may use; also the most one request may be charged (null: one
    #: minute's worth).
    burst_tokens: float | None = Field(None, ge=1)

    def over(self, fallback: RateLimit) -> RateLimit:
        """These settings, each unset one taken from ``fallback``."""
        return RateLimit(
            requests_per_min=_first(self.requests_per_min, fallback.requests_per_min),
            tokens_per_min=_first(self.tokens_per_min, fallback.tokens_per_min),
            burst_requests=_first(self.burst_requests, fallback.burst_requests),
            burst_tokens=_first(self.burst_tokens, fallback.burst_tokens),
        )

    @property
    def limits_anything(self) -> bool:
        return bool(self.requests_per_min) or bool(self.tokens_per_min)


def _first(value: float | None, fallback: float | None) -> float | None:
    return fallback if value is None else value


class RedisRateLimitsConfig(_Model):
    #: redis://host:6379/0 (rediss:// for TLS), or env:VAR naming the variable holding it.
    url: str = ""
    key_prefix: str = "hybrid-router:limits:"
    #: Seconds to connect / for one command.
    timeout_s: float = Field(0.5, gt=0)


class RateLimitsConfig(_Model):
    """Requests and tokens per minute, per tenant and per key; off until a limit is set."""

    #: Every tenant's limits (all its keys together) unless ``tenants`` names it; callers
    #: without a key (auth off) are one tenant.
    default: RateLimit = RateLimit()
    #: Limits of named tenants, over ``default``.
    tenants: dict[TenantName, RateLimit] = {}
    #: Every key's own limits unless ``keys`` names it.
    key_default: RateLimit = RateLimit()
    #: Limits of named keys (by key id), over ``key_default``.
    keys: dict[KeyId, RateLimit] = {}
    #: What a request's tokens are: input (the prompt), output (the answer), or total.
    #: Charged from the estimate before the request runs (the prompt's estimate,
    #: max_output_tokens), corrected from Usage after.
    tokens: Literal["input", "output", "total"] = "total"
    #: Where the counts live: memory (this replica), redis (shared by a fleet).
    store: Literal["memory", "redis"] = "memory"
    redis: RedisRateLimitsConfig = RedisRateLimitsConfig()
    #: When the store cannot be reached: false refuses the request (UNAVAILABLE naming the
    #: store), true lets it through uncounted.
    fail_open: bool = False

    @model_validator(mode="after")
    def _store(self) -> RateLimitsConfig:
        if self.store == "redis" and not self.redis.url:
            raise ValueError("store 'redis' needs redis.url (redis://host:6379/0)")
        return self

    @property
    def enabled(self) -> bool:
        """On when any limit is set."""
        return any(
            s.limits_anything
            for s in (self.default, self.key_default, *self.tenants.values(), *self.keys.values())
        )
