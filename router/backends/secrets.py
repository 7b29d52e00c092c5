"""API keys kept in AWS Secrets Manager (``api_key_secret`` in router.yaml).

The key is fetched with boto3 (imported only when a backend names a secret), cached for
``secret_ttl_s`` and fetched again after that, so a rotated key is picked up without a
restart. A backend that gets 401 calls :meth:`SecretsManagerKey.invalidate`: the next
request fetches the secret again at once.

Credentials for Secrets Manager come from the standard AWS chain (IRSA on EKS, the Lambda
or task role, the environment); the endpoint can be redirected with the standard
``AWS_ENDPOINT_URL_SECRETS_MANAGER`` variable (the tests point it at a moto server).

If a refresh fails while an older value is cached, the older value keeps being used (a
Secrets Manager outage does not take a working provider down) and a warning is logged.
The value is never logged, and never part of an error message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from router.backends.common import quiet_botocore_bodies, truncate
from router.errors import BackendError, ConfigError, ErrorClass

log = logging.getLogger(__name__)

#: Error codes that no retry will fix: the secret is missing, unreadable or not a key.
_PERMANENT = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "AccessDenied",
        "DecryptionFailure",
        "InvalidParameterException",
        "InvalidRequestException",
        "ValidationException",
    }
)


class SecretUnavailable(Exception):
    """The secret could not be read. ``permanent``: fixing it needs a change of config,
    IAM policy or the secret itself."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class SecretsManagerKey:
    """One secret's value, fetched on demand and cached for ``ttl_s`` seconds."""

    def __init__(
        self,
        secret_id: str,
        *,
        backend: str,
        field: str = "",
        region: str = "",
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secret_id = secret_id
        self._backend = backend
        self._field = field
        self._region = region
        self._ttl_s = ttl_s
        self._clock = clock
        self._value: str | None = None
        self._fetched_at = -math.inf
        self._lock: asyncio.Lock | None = None
        self._client: Any = None
        #: Times the secret was fetched (tests and logs read it).
        self.fetches = 0

    def __repr__(self) -> str:  # never the value
        return f"SecretsManagerKey({self.secret_id!r}, field={self._field!r})"

    def invalidate(self) -> None:
        """Fetch again on the next :meth:`get` (the provider rejected the key)."""
        self._fetched_at = -math.inf

    async def prefetch(self) -> None:
        """Fetch once at start: a missing or unreadable secret is a config error.

        A transient failure (network, throttling) only logs a warning; requests retry.
        """
        try:
            await self._refresh()
        except SecretUnavailable as exc:
            if exc.permanent:
                raise ConfigError(
                    f"{exc.message}; check the secret name, its region and that the "
                    "router's IAM role may call secretsmanager:GetSecretValue on it",
                    source=f"backend {self._backend}",
                    key="api_key_secret",
                ) from None
            log.warning("backend %s: %s (will retry on the first request)", self._backend, exc)

    async def get(self) -> str:
        """The key; raises BackendError (RETRYABLE) when it cannot be had."""
        if self._value is not None and self._clock() - self._fetched_at < self._ttl_s:
            return self._value
        try:
            return await self._refresh()
        except SecretUnavailable as exc:
            if self._value is not None:
                log.warning(
                    "backend %s: %s; using the value fetched before", self._backend, exc.message
                )
                return self._value
            raise BackendError(self._backend, exc.message, ErrorClass.RETRYABLE) from None

    async def _refresh(self) -> str:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._value is not None and self._clock() - self._fetched_at < self._ttl_s:
                return self._value  # another request refreshed it while this one waited
            value = await asyncio.to_thread(self._fetch)
            self._value = value
            self._fetched_at = self._clock()
            self.fetches += 1
            return value

    def _fetch(self) -> str:
        """Runs in a worker thread: one GetSecretValue call."""
        import botocore.exceptions

        what = f"cannot read API key from Secrets Manager secret {self.secret_id!r}"
        try:
            if self._client is None:
                import boto3

                quiet_botocore_bodies()
                self._client = boto3.session.Session().client(
                    "secretsmanager", region_name=self._region or None
                )
            resp = self._client.get_secret_value(SecretId=self.secret_id)
        except botocore.exceptions.ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            message = truncate(str(err.get("Message", "")))
            raise SecretUnavailable(
                f"{what}: {code}: {message}", permanent=code in _PERMANENT
            ) from None
        except botocore.exceptions.NoRegionError:
            raise SecretUnavailable(
                f"{what}: no AWS region (set the backend's region or AWS_REGION)", permanent=True
            ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise SecretUnavailable(f"{what}: {type(exc).__name__}", permanent=False) from None
        return self._extract(resp, what)

    def _extract(self, resp: dict[str, Any], what: str) -> str:
        raw = resp.get("SecretString")
        if raw is None and resp.get("SecretBinary") is not None:
            try:
                raw = bytes(resp["SecretBinary"]).decode("utf-8")
            except UnicodeDecodeError:
                raise SecretUnavailable(
                    f"{what}: SecretBinary is not UTF-8 text", permanent=True
                ) from None
        if not isinstance(raw, str):
            raise SecretUnavailable(f"{what}: the secret has no value", permanent=True)
        if self._field:
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            value = data.get(self._field) if isinstance(data, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise SecretUnavailable(
                    f"{what}: the secret is not a JSON object with a non-empty string field "
                    f"{self._field!r} (api_key_secret_field)",
                    permanent=True,
                )
            return value.strip()
        if not raw.strip():
            raise SecretUnavailable(f"{what}: the secret is empty", permanent=True)
        return raw.strip()
