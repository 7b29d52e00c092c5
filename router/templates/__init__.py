"""Prompt templates with versions (docs/templates.md).

=========  ==================================================================
``model``  Template, Variable, parse (publish-time checks), render (typed)
``store``  TemplateStore, FileTemplateStore, TemplateRegistry (the cache)
=========  ==================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.config import RouterConfig
    from router.templates.store import TemplateRegistry


def build(
    config: RouterConfig, environ: Mapping[str, str] | None = None
) -> TemplateRegistry | None:
    """The router's template registry on the store ``templates.store`` names (None: no
    templates file configured)."""
    from router.templates.store import FileTemplateStore, TemplateRegistry

    cfg = config.templates
    if cfg.store == "file":
        if not cfg.file:
            return None
        return TemplateRegistry(FileTemplateStore(cfg.file), pin_ttl_s=cfg.pin_ttl_s)
    from router.templates.backends import open_template_store

    store = open_template_store(config.sessions, os.environ if environ is None else environ)
    return TemplateRegistry(store, pin_ttl_s=cfg.pin_ttl_s)
