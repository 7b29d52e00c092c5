"""The router API key: from the environment, or from a Secrets Manager secret, cached.

The secret holds the key as its whole string value, or JSON with an ``api_key`` field.
It is fetched on first use (not at init: a missing permission then fails a request with
a clear message instead of the whole container), kept for ``ttl_s`` seconds, and dropped
at once by :meth:`ApiKeyProvider.invalidate` (called when the router answers
UNAUTHENTICATED, so a rotated key is picked up by the next request).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any


class CredentialsError(RuntimeError):
    """The key could not be read; the message says what to fix."""


class ApiKeyProvider:
    """Callable returning the current key (or None when no key is configured)."""

    def __init__(
        self,
        *,
        key: str = "",
        secret_id: str = "",
        ttl_s: float = 300.0,
        fetch: Callable[[str], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = key
        self.secret_id = secret_id
        self._ttl_s = ttl_s
        self._fetch = fetch
        self._clock = clock
        self._cached: str | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()
        self.fetches = 0

    @property
    def from_secret(self) -> bool:
        return bool(self.secret_id)

    def __call__(self) -> str | None:
        if not self.secret_id:
            return self._key or None
        with self._lock:
            now = self._clock()
            if self._cached is None or now - self._fetched_at >= self._ttl_s:
                self._cached = _parse(self.secret_id, self._get(self.secret_id))
                self._fetched_at = now
                self.fetches += 1
            return self._cached

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    def _get(self, secret_id: str) -> str:
        if self._fetch is None:
            self._fetch = _secrets_manager_fetch()
        try:
            return self._fetch(secret_id)
        except CredentialsError:
            raise
        except Exception as exc:  # botocore errors: convert at the boundary
            raise CredentialsError(
                f"cannot read the router API key from secret {secret_id!r}: {exc}; check "
                f"the secret exists and the function's role may secretsmanager:GetSecretValue"
            ) from exc


def _secrets_manager_fetch() -> Callable[[str], str]:
    import boto3  # lazy: only functions that use a secret pay for boto3

    client: Any = boto3.client("secretsmanager")

    def fetch(secret_id: str) -> str:
        resp = client.get_secret_value(SecretId=secret_id)
        if "SecretString" not in resp:
            raise CredentialsError(
                f"secret {secret_id!r} holds binary data; store the key as a string"
            )
        return str(resp["SecretString"])

    return fetch


def _parse(secret_id: str, value: str) -> str:
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise CredentialsError(f"secret {secret_id!r} looks like JSON but is not") from None
        key = data.get("api_key") if isinstance(data, dict) else None
        if not isinstance(key, str) or not key:
            raise CredentialsError(
                f"secret {secret_id!r} is JSON without a string 'api_key' field; store "
                f'{{"api_key": "hr_..."}} or the key alone'
            )
        return key
    if not text:
        raise CredentialsError(f"secret {secret_id!r} is empty")
    return text
