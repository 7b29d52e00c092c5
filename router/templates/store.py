"""Where templates live, and the router's cache of them.

``templates.store``:

========  ===========================================================================
file      one YAML file (``templates.file``): the embedded default, for one router
          and the demo; ``hybrid-router templates publish|pin --file`` edits it
sessions  the sessions store's backend (``sessions.store``: sqlite, redis, dynamodb):
          one place for a fleet; every replica sees a publish or a pin
========  ===========================================================================

A version, once published, never changes: publishing the same name and version again
with other content is ALREADY_EXISTS (the same content is a no-op). A pin names the
version requests get when they name no version; with no pin, the newest published
version. :class:`TemplateRegistry` caches versions for good (they are immutable) and pins
for ``pin_ttl_s``, so a pin reaches every replica within that time.
"""

from __future__ import annotations

import abc
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from router.errors import AlreadyExists, InvalidRequest, NotFound, StoreUnavailable
from router.templates.model import Template, TemplateError, parse


class TemplateStore(abc.ABC):
    name: str = "templates store"

    @abc.abstractmethod
    async def names(self) -> list[str]:
        """Every template name, sorted."""

    @abc.abstractmethod
    async def versions(self, name: str) -> list[str]:
        """The template's versions, oldest published first ([] for an unknown name)."""

    @abc.abstractmethod
    async def get(self, name: str, version: str) -> Template | None: ...

    @abc.abstractmethod
    async def publish(self, template: Template) -> bool:
        """Store a new version (False: the same content was there already);
        AlreadyExists when the version holds other content."""

    @abc.abstractmethod
    async def pin(self, name: str, version: str) -> None:
        """Requests naming no version get ``version``; NotFound when it is not published."""

    @abc.abstractmethod
    async def pinned(self, name: str) -> str:
        """The pinned version ("" when none)."""

    async def close(self) -> None:  # noqa: B027 - stores with connections override it
        pass


def same(a: Template, b: Template) -> bool:
    return a.to_dict() == b.to_dict()


class FileTemplateStore(TemplateStore):
    """Templates in one YAML file: ``{templates: [...], pins: {name: version}}``. Written
    whole to a temporary file and renamed over the old one, so readers never see half a
    file; re-read when its modification time changes."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.name = f"templates file {path}"
        self._mtime: float | None = None
        self._templates: dict[tuple[str, str], Template] = {}
        self._order: dict[str, list[str]] = {}
        self._pins: dict[str, str] = {}
        self._lock = asyncio.Lock()

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._mtime, self._templates, self._order, self._pins = None, {}, {}, {}
            return
        except OSError as exc:
            raise StoreUnavailable(self.name, exc.strerror or str(exc)) from None
        if mtime == self._mtime:
            return
        try:
            doc = yaml.safe_load(self.path.read_text("utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise StoreUnavailable(self.name, f"cannot read: {exc}") from None
        if not isinstance(doc, dict) or set(doc) - {"templates", "pins"}:
            raise StoreUnavailable(self.name, "expected a mapping with templates and pins")
        templates: dict[tuple[str, str], Template] = {}
        order: dict[str, list[str]] = {}
        for i, item in enumerate(doc.get("templates") or []):
            try:
                t = parse(item, f"templates[{i}]")
            except TemplateError as exc:
                raise StoreUnavailable(self.name, str(exc)) from None
            templates[(t.name, t.version)] = t
            order.setdefault(t.name, []).append(t.version)
        self._mtime, self._templates, self._order = mtime, templates, order
        self._pins = {str(k): str(v) for k, v in (doc.get("pins") or {}).items()}

    def _save(self) -> None:
        doc: dict[str, Any] = {
            "templates": [
                self._templates[(n, v)].to_dict()
                for n in sorted(self._order)
                for v in self._order[n]
            ],
            "pins": dict(sorted(self._pins.items())),
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                yaml.safe_dump(doc, f, sort_keys=False, allow_unicode=True)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise StoreUnavailable(self.name, f"cannot write: {exc.strerror or exc}") from None
        self._mtime = self.path.stat().st_mtime

    async def names(self) -> list[str]:
        self._load()
        return sorted(self._order)

    async def versions(self, name: str) -> list[str]:
        self._load()
        return list(self._order.get(name, []))

    async def get(self, name: str, version: str) -> Template | None:
        self._load()
        return self._templates.get((name, version))

    async def publish(self, template: Template) -> bool:
        async with self._lock:
            self._load()
            old = self._templates.get((template.name, template.version))
            if old is not None:
                if same(old, template):
                    return False
                raise AlreadyExists(
                    f"template {template.name}@{template.version} is published with other "
                    "content; versions never change: publish a new version"
                )
            self._templates[(template.name, template.version)] = template
            self._order.setdefault(template.name, []).append(template.version)
            self._save()
            return True

    async def pin(self, name: str, version: str) -> None:
        async with self._lock:
            self._load()
            if (name, version) not in self._templates:
                raise NotFound(f"template {name}@{version} is not published")
            self._pins[name] = version
            self._save()

    async def pinned(self, name: str) -> str:
        self._load()
        return self._pins.get(name, "")


class TemplateRegistry:
    """What the router resolves a request's template with (a cache over a store)."""

    def __init__(
        self,
        store: TemplateStore,
        *,
        pin_ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._pin_ttl_s = pin_ttl_s
        self._clock = clock
        self._versions: dict[tuple[str, str], Template] = {}
        self._defaults: dict[str, tuple[float, str]] = {}

    async def resolve(self, name: str, version: str = "") -> Template:
        """The template to render; InvalidRequest/NotFound naming what is missing."""
        if not name:
            raise InvalidRequest("template", "give the template's name")
        if not version:
            version = await self._default(name)
        key = (name, version)
        hit = self._versions.get(key)
        if hit is not None:
            return hit
        template = await self.store.get(name, version)
        if template is None:
            known = await self.store.versions(name)
            if not known:
                raise NotFound(f"template {name!r} is not published")
            raise NotFound(
                f"template {name}@{version} is not published (versions: {', '.join(known)})"
            )
        self._versions[key] = template
        return template

    async def _default(self, name: str) -> str:
        now = self._clock()
        cached = self._defaults.get(name)
        if cached is not None and now - cached[0] < self._pin_ttl_s:
            return cached[1]
        version = await self.store.pinned(name)
        if not version:
            versions = await self.store.versions(name)
            if not versions:
                raise NotFound(f"template {name!r} is not published")
            version = versions[-1]
        self._defaults[name] = (now, version)
        return version
