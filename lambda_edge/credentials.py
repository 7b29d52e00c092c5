"""The router API key: from the environment, or from a Secrets Manager secret, cached.

The secret holds the key as its whole string value, or JSON with an ``api_key`` field. It
is read, and its value checked, by :mod:`hybrid_router.refs`, the resolver every component
uses: an empty value is an error naming ``HYBRID_ROUTER_API_KEY_SECRET`` and the secret.
It is fetched on first use (not at init: a missing permission then fails a request with
a clear message instead of the whole container), kept for ``ttl_s`` seconds, and dropped
at once by :meth:`ApiKeyProvider.invalidate` (called when the router answers
UNAUTHENTICATED, so a rotated key is picked up by the next request).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from hybrid_router.env import ENV_API_KEY_SECRET
from hybrid_router.refs import RefError, SecretsManager, secret_value


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
            # boto3 is imported on the first read: only functions that use a secret pay for it.
            self._fetch = SecretsManager()
        try:
            return self._fetch(secret_id)
        except CredentialsError:
            raise
        except Exception as exc:  # SecretUnreadable, botocore errors: convert at the boundary
            reason = exc.detail if isinstance(exc, RefError) else str(exc)
            raise CredentialsError(
                f"cannot read the router API key from secret {secret_id!r}: {reason}; check "
                f"the secret exists and the function's role may secretsmanager:GetSecretValue"
            ) from exc


def _parse(secret_id: str, value: str) -> str:
    """The key in the secret's text: the whole (stripped) text, or the ``api_key`` field when
    the text is a JSON object. Empty is an error (hybrid_router.refs' one rule)."""
    try:
        return secret_value(
            value,
            secret_id=secret_id,
            field=ENV_API_KEY_SECRET,
            json_key="api_key",
            detect_json=True,
        )
    except RefError as exc:
        raise CredentialsError(exc.message) from None
