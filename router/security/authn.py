"""Bearer API keys in gRPC metadata -> a Principal (tenant and what it may use).

``authorization: Bearer hr_<id>_<secret>`` (the scheme is case-insensitive). Errors name
what is missing or wrong and, at most, the key's id; never the key or any part of a
secret, and never text the caller sent in place of a key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from router.errors import MalformedKey, PermissionDenied, Unauthenticated
from router.security.keys import parse_key, verify
from router.security.keystore import KeyStore
from router.security.tenants import TenantAccess

AUTH_METADATA = "authorization"
_HOW = "send gRPC metadata 'authorization: Bearer <key>' (hybrid-router keys create makes one)"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. ``access`` None: no restrictions (auth off on a loopback server)."""

    tenant: str
    key_id: str = ""
    access: TenantAccess | None = None


ANONYMOUS = Principal(tenant="")


class Authenticator:
    def __init__(self, store: KeyStore, tenants: Mapping[str, TenantAccess]) -> None:
        self._store = store
        self._tenants = dict(tenants)

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
        """The caller's Principal. Raises Unauthenticated or PermissionDenied."""
        header: str | None = None
        for k, v in metadata or ():
            if k == AUTH_METADATA:
                if header is not None:
                    raise Unauthenticated("send one authorization metadata entry, not several")
                header = v if isinstance(v, str) else ""
        if header is None:
            raise Unauthenticated(f"missing API key: {_HOW}")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(f"authorization metadata must be 'Bearer <key>': {_HOW}")
        token = token.strip()
        try:
            key_id = parse_key(token)
        except MalformedKey as exc:
            raise Unauthenticated(f"API key is malformed: {exc}") from None
        record = self._store.get(key_id)
        if record is None or not verify(token, record):
            raise Unauthenticated(
                f"API key {key_id} is not valid (unknown id or wrong secret); check the key "
                "or create a new one"
            )
        if record.revoked:
            raise Unauthenticated(f"API key {key_id} was revoked; use another key")
        access = self._tenants.get(record.tenant)
        if access is None:
            raise PermissionDenied(
                f"API key {key_id} belongs to tenant {record.tenant!r}, which auth.tenants "
                "does not define; an operator must add it"
            )
        return Principal(tenant=record.tenant, key_id=key_id, access=access)
