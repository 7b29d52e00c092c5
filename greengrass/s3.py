"""Reading the model store in S3 with boto3.

Credentials come from botocore's default chain. Under Greengrass that is the Token
Exchange Service: a component that depends on ``aws.greengrass.TokenExchangeService`` runs
with ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` and ``AWS_CONTAINER_AUTHORIZATION_TOKEN`` set,
and botocore's container-credentials provider fetches (and refreshes) the role's
credentials from the nucleus. Nothing here is Greengrass-specific.

Downloads stream to a ``.part`` file; the caller verifies and installs it (greengrass/store).
botocore errors become :class:`StoreError` here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from greengrass.manifest import Manifest, manifest_key, parse_manifest

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class StoreError(Exception):
    """The model store could not be read (missing object, access denied, network)."""


class S3ModelSource:
    def __init__(
        self,
        bucket: str,
        prefix: str = "models",
        *,
        region: str = "",
        endpoint_url: str = "",
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._region = region
        self._endpoint_url = endpoint_url
        self._client = client

    def _s3(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            kwargs: dict[str, Any] = {
                "config": Config(retries={"max_attempts": 5, "mode": "standard"})
            }
            if self._region:
                kwargs["region_name"] = self._region
            if self._endpoint_url:
                kwargs["endpoint_url"] = self._endpoint_url
            self._client = boto3.client("s3", **kwargs)
        return self._client

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def manifest(self, name: str, version: str) -> Manifest:
        """Read and validate ``<prefix>/<name>/<version>/manifest.json``. Raises StoreError
        or ManifestError."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = manifest_key(self.prefix, name, version)
        try:
            body = self._s3().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                raise StoreError(f"{self._where(key)}: no such manifest (not published?)") from None
            raise StoreError(f"{self._where(key)}: {code or exc}") from None
        except BotoCoreError as exc:
            raise StoreError(f"{self._where(key)}: {exc}") from None
        manifest = parse_manifest(body, where=self._where(key))
        if manifest.name != name or manifest.version != version:
            raise StoreError(
                f"{self._where(key)}: describes {manifest.name} {manifest.version}, "
                f"not {name} {version}"
            )
        return manifest

    def download(
        self,
        manifest: Manifest,
        dest: Path,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Stream the artifact into ``dest`` (truncated first: a retry starts clean).
        Stops early when the object is larger than the manifest says. Raises StoreError."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = manifest.artifact_key
        written = 0
        try:
            body = self._s3().get_object(Bucket=self.bucket, Key=key)["Body"]
            with dest.open("wb") as f:
                for chunk in body.iter_chunks(CHUNK):
                    written += len(chunk)
                    if written > manifest.size:
                        raise StoreError(
                            f"{self._where(key)}: larger than the manifest's {manifest.size} bytes"
                        )
                    f.write(chunk)
                    if progress is not None:
                        progress(written)
                f.flush()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise StoreError(f"{self._where(key)}: {code or exc}") from None
        except (BotoCoreError, OSError) as exc:
            raise StoreError(f"{self._where(key)}: download failed: {exc}") from None
