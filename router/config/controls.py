"""``controls:``: tenant controls across the fleet (docs/controls.md). Each section is off
until configured; its keys live in its own module."""

from __future__ import annotations

from router.config._base import _Model
from router.config.budgets import BudgetsConfig
from router.config.cache import CacheConfig
from router.config.ledger import LedgerConfig
from router.config.pii import PiiConfig
from router.config.ratelimits import RateLimitsConfig


class ControlsConfig(_Model):
    #: Requests and tokens per minute, per tenant and per key.
    rate_limits: RateLimitsConfig = RateLimitsConfig()
    #: USD per day and per month, per tenant and per key.
    budgets: BudgetsConfig = BudgetsConfig()
    #: Every request's usage and cost.
    ledger: LedgerConfig = LedgerConfig()
    #: Exact-match answers of deterministic requests.
    cache: CacheConfig = CacheConfig()
    #: PII kept away from hosted tiers.
    pii: PiiConfig = PiiConfig()
