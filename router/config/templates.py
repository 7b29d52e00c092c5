"""``templates:``: prompt templates with versions (docs/templates.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from router.config._base import _Model


class TemplatesConfig(_Model):
    #: file: one YAML file (templates.file), for one router; sessions: the sessions
    #: store's backend (sessions.store), shared by a fleet.
    store: Literal["file", "sessions"] = "file"
    #: The templates file ("" = none: requests naming a template get NOT_FOUND).
    file: str = ""
    #: Seconds a replica keeps a pin before reading it again.
    pin_ttl_s: float = Field(5.0, gt=0)
