"""API keys: format, generation, hashing and verification.

A key is ``hr_<id>_<secret>``:

- ``id``: 12 lowercase hex digits (48 random bits). Not secret: it names the key in
  ``hybrid-router keys list``, in logs and in error messages, and it is how the router
  finds the key's record without looking at any other.
- ``secret``: 43 characters of URL-safe base64 (32 random bytes, 256 bits).

Only ``sha256:<hex>`` of the whole key is stored. A fast hash is enough here because the
secret is 256 random bits: there is no dictionary to try, and brute force of a 2**256
space is out of reach at any hashing speed, so a slow KDF (scrypt, argon2) would only
cost every request CPU. (Passwords chosen by people would need a slow KDF; these keys
are never chosen by people.) A salt would add nothing either: the same reasoning, and
the id already makes every hashed string unique. Verification compares digests with
``hmac.compare_digest`` (constant time).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from router.errors import MalformedKey  # the tree's class; importable from here

PREFIX = "hr_"
_ID_RE = re.compile(r"^[0-9a-f]{12}$")
_KEY_RE = re.compile(r"^hr_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
HASH_SCHEME = "sha256:"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A stored key: everything but the secret."""

    id: str
    tenant: str
    hash: str
    created: str = ""
    name: str = ""
    revoked: bool = False


def new_key() -> tuple[str, str]:
    """A fresh ``(key_id, key)``. Show ``key`` once; store only :func:`hash_key` of it."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{PREFIX}{key_id}_{secret}"


def parse_key(key: str) -> str:
    """The key's id. Raises MalformedKey when ``key`` is not in our format."""
    m = _KEY_RE.match(key)
    if m is None:
        raise MalformedKey("expected hr_<12 hex digits>_<43 characters>")
    return m.group(1)


def is_key_id(text: str) -> bool:
    return bool(_ID_RE.match(text))


def hash_key(key: str) -> str:
    return HASH_SCHEME + hashlib.sha256(key.encode("ascii")).hexdigest()


def verify(key: str, record: KeyRecord) -> bool:
    """Whether ``key`` hashes to ``record.hash`` (constant-time compare)."""
    return hmac.compare_digest(hash_key(key).encode("ascii"), record.hash.encode("ascii"))
