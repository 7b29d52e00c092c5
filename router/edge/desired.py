"""Desired model versions for the fleet: ``edge.desired_versions`` in router.yaml, over the
model store's pointers (``s3://<bucket>/<prefix>/<model>/desired.json``, written by
``hybrid-router models publish`` and ``models set-desired``).

Every replica reads the same pointers, so every link hears the same versions. boto3 is
imported only when ``edge.models.bucket`` is set; calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from router.config import EdgeModelStoreConfig

log = logging.getLogger(__name__)


def pointer_key(prefix: str, model: str) -> str:
    """``<prefix>/<model>/desired.json`` (the layout of greengrass/manifest.py)."""
    p = prefix.strip("/")
    return f"{p}/{model}/desired.json" if p else f"{model}/desired.json"


class DesiredVersions:
    """The versions to push to devices. ``current`` is the merged view."""

    def __init__(self, static: Mapping[str, str], store: EdgeModelStoreConfig) -> None:
        self._static = dict(static)
        self._store = store
        self._from_store: dict[str, str] = {}
        self._client: Any = None

    @property
    def current(self) -> dict[str, str]:
        return {**self._from_store, **self._static}

    @property
    def polls_store(self) -> bool:
        return bool(self._store.bucket)

    def _s3(self) -> Any:
        if self._client is None:
            import boto3

            kwargs: dict[str, Any] = {}
            if self._store.region:
                kwargs["region_name"] = self._store.region
            if self._store.endpoint_url:
                kwargs["endpoint_url"] = self._store.endpoint_url
            self._client = boto3.client("s3", **kwargs)
        return self._client

    def _read_pointer(self, model: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = pointer_key(self._store.prefix, model)
        try:
            body = self._s3().get_object(Bucket=self._store.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                return None
            raise RuntimeError(f"s3://{self._store.bucket}/{key}: {code or exc}") from None
        except BotoCoreError as exc:
            raise RuntimeError(f"s3://{self._store.bucket}/{key}: {exc}") from None
        try:
            version = json.loads(body)["version"]
        except (ValueError, KeyError, TypeError):
            raise RuntimeError(
                f"s3://{self._store.bucket}/{key}: not a desired-version pointer "
                '({"version": "..."})'
            ) from None
        return str(version)

    async def refresh(self, models: Iterable[str]) -> bool:
        """Re-read the pointers of ``models``; True when the merged view changed."""
        if not self.polls_store:
            return False
        before = self.current
        found: dict[str, str] = {}
        for model in sorted(set(models)):
            try:
                version = await asyncio.to_thread(self._read_pointer, model)
            except RuntimeError as exc:
                log.warning("desired version of %s unknown: %s", model, exc)
                if model in self._from_store:
                    found[model] = self._from_store[model]  # keep the last good answer
                continue
            if version:
                found[model] = version
        self._from_store = found
        return self.current != before
