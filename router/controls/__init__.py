"""Tenant controls across the fleet (docs/controls.md): rate limits, spend budgets with a
cost ledger, a response cache and a PII guard for hosted tiers.

==================  ============================================================
``pipeline``        Controls: the order the controls act in around one Generate,
                    and the interface each one implements
``limits``          Limiter: requests and tokens per minute, per tenant and key;
                    ``gcra`` (the pure arithmetic), ``limits_redis`` (a fleet)
``budgets``         Budgets: USD per day and month, reserve then settle;
                    ``budget_rules`` (pure), ``budget_memory``, ``budget_redis``
``ledger``          Ledger: every request's usage and cost, buffered then kept;
                    ``ledger_records``, ``ledger_sqlite``, ``ledger_redis``,
                    ``ledger_dynamodb``
``cache``           ResponseCache: exact-match answers of deterministic requests;
                    ``cache_store`` (memory), ``cache_sqlite``, ``cache_redis``
``pii``             PiiGuard: PII kept away from hosted tiers; ``pii_detect`` (pure)
==================  ============================================================

Each control is off until configured, and only a configured control's module (and its
store's client library) is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.config import RouterConfig
    from router.controls.pipeline import Controls


def build(config: RouterConfig, environ: Mapping[str, str] | None = None) -> Controls:
    """The router's controls: each one ``controls.*`` enables, built by its own module
    (only those modules are imported)."""
    from router.controls.pipeline import Controls

    env = os.environ if environ is None else environ
    cfg = config.controls
    controls = Controls()
    if cfg.pii.enabled:
        from router.controls.pii import build_pii

        controls.pii = build_pii(cfg.pii, config, env)
    if cfg.cache.enabled:
        from router.controls.cache import build_cache

        controls.cache, close = build_cache(cfg.cache, config, env)
        controls.closers.append(close)
    if cfg.rate_limits.enabled:
        from router.controls.limits import build_limiter

        controls.limiter, close = build_limiter(cfg.rate_limits, config, env)
        controls.closers.append(close)
    if cfg.budgets.enabled:
        from router.controls.budgets import build_budgets

        controls.budgets, close = build_budgets(cfg.budgets, config, env)
        controls.closers.append(close)
    if cfg.ledger.enabled:
        from router.controls.ledger import build_ledger

        controls.ledger, close = build_ledger(cfg.ledger, config, env)
        controls.closers.append(close)
    return controls
