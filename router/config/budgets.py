"""``controls.budgets:``: spend budgets, USD per UTC day and per UTC month, per tenant and
per API key (docs/controls.md#spend-budgets)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from router.config._base import _Model

#: A tenant name as ``auth.tenants[].name`` allows it.
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: An API key id (``auth.keys[].id``).
_KEY_ID = re.compile(r"[0-9a-f]{12}")


class BudgetLimitsConfig(_Model):
    """The budgets of one tenant (or key): a key left out (null) sets no budget for it."""

    #: USD a UTC calendar day (00:00 to 24:00 UTC) may cost; null: no daily budget.
    usd_per_day: float | None = Field(None, ge=0)
    #: USD a UTC calendar month may cost; null: no monthly budget.
    usd_per_month: float | None = Field(None, ge=0)

    @property
    def any(self) -> bool:
        return self.usd_per_day is not None or self.usd_per_month is not None


class RedisBudgetsConfig(_Model):
    #: redis://host:6379/0 (rediss:// for TLS), or env:VAR naming the variable holding it.
    url: str = ""
    key_prefix: str = "hybrid-router:budgets:"
    #: Seconds to connect / for one command.
    timeout_s: float = Field(2.0, gt=0)


class BudgetsConfig(_Model):
    #: Where spend and reservations are kept: memory (one router; its spend this month is
    #: read back from an SQLite ledger at start) or redis (a fleet shares them).
    store: Literal["memory", "redis"] = "memory"
    redis: RedisBudgetsConfig = RedisBudgetsConfig()
    #: The budgets of every tenant without an entry in ``tenants`` (and of requests without
    #: an API key, tenant "").
    default: BudgetLimitsConfig = BudgetLimitsConfig()
    #: Tenant name -> its budgets; an entry replaces ``default`` for that tenant.
    tenants: dict[str, BudgetLimitsConfig] = {}
    #: API key id -> budgets of that key alone, checked besides its tenant's.
    keys: dict[str, BudgetLimitsConfig] = {}
    #: Seconds a reservation holds budget when its request never settles it (a replica
    #: that crashed mid-request); then it is released.
    reservation_ttl_s: float = Field(900.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> BudgetsConfig:
        bad = sorted(t for t in self.tenants if not _TENANT.fullmatch(t))
        if bad:
            raise ValueError(f"tenants: not tenant names: {', '.join(map(repr, bad))}")
        bad = sorted(k for k in self.keys if not _KEY_ID.fullmatch(k))
        if bad:
            raise ValueError(
                f"keys: not API key ids (12 hex digits, the part after hr_): "
                f"{', '.join(map(repr, bad))}"
            )
        if self.store == "redis" and not self.redis.url:
            raise ValueError("store 'redis' needs redis.url (redis://host:6379/0)")
        return self

    @property
    def enabled(self) -> bool:
        """On when any budget is set."""
        return (
            self.default.any
            or any(b.any for b in self.tenants.values())
            or any(b.any for b in self.keys.values())
        )
