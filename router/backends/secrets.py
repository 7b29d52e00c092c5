"""API keys kept in AWS Secrets Manager (``api_key_secret`` in router.yaml).

The key is fetched with boto3 (imported only when a backend names a secret), cached for
``secret_ttl_s`` and fetched again after that, so a rotated key is picked up without a
restart. A backend that gets 401 calls :meth:`SecretsManagerKey.invalidate`: the next
request fetches the secret again at once.

Credentials for Secrets Manager come from the standard AWS chain (IRSA on EKS, the Lambda
or task role, the environment); the endpoint can be redirected with the standard
``AWS_ENDPOINT_URL_SECRETS_MANAGER`` variable (the tests point it at a moto server).

The secret is read, and its value checked, by :mod:`hybrid_router.refs` (the resolver every
component uses): an empty value is an error, as for every reference.

If a refresh fails while an older value is cached, the older value keeps being used (a
Secrets Manager outage does not take a working provider down) and a warning is logged.
The value is never logged, and never part of an error message.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from hybrid_router.refs import RefError, SecretsManager, SecretUnreadable, resolve_secret

from router.errors import BackendError, ConfigError, ErrorClass

log = logging.getLogger(__name__)


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
        self._source: SecretsManager | None = None
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
        """Runs in a worker thread: one GetSecretValue call (hybrid_router.refs reads it and
        applies the one rule: an empty value, or a JSON object without a non-empty
        ``api_key_secret_field``, is an error)."""
        what = f"cannot read API key from Secrets Manager secret {self.secret_id!r}"
        if self._source is None:
            self._source = SecretsManager(region=self._region, binary=True)
        try:
            return resolve_secret(
                self.secret_id, field="api_key_secret", json_key=self._field, secrets=self._source
            )
        except SecretUnreadable as exc:
            raise SecretUnavailable(f"{what}: {exc.detail}", permanent=exc.permanent) from None
        except RefError as exc:
            where = " (api_key_secret_field)" if self._field else ""
            raise SecretUnavailable(
                f"{what}: the secret {exc.detail}{where}", permanent=True
            ) from None
