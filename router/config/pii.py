"""``controls.pii:``: the PII guard for hosted tiers (docs/controls.md#pii-guard).

What the guard does with a prompt bound for a ``hosted`` backend that holds PII of the
kinds it looks for: ``route`` it to a private tier (hosted backends are excluded),
``redact`` the copy hosted backends get, or ``refuse`` it; ``allow`` lets it go (the
guard does nothing; not ``off``, which YAML reads as ``false``). The
``default`` applies to every tenant (and to callers without a key); an entry under
``tenants`` overrides it key by key (a key left unset there is the default's).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from router.config._base import _Model

PiiAction = Literal["allow", "route", "redact", "refuse"]
PiiKind = Literal["email", "phone", "card", "iban", "ip", "aws_access_key", "aws_secret_key"]
#: Every kind, as the guard's detector names them (router/controls/pii_detect.py).
PII_KINDS: tuple[PiiKind, ...] = (
    "email",
    "phone",
    "card",
    "iban",
    "ip",
    "aws_access_key",
    "aws_secret_key",
)
#: A tenant name as ``auth.tenants[].name`` takes it.
_TenantName = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]


def _unique_kinds(kinds: tuple[PiiKind, ...] | None) -> tuple[PiiKind, ...] | None:
    if kinds is not None:
        twice = sorted({k for k in kinds if kinds.count(k) > 1})
        if twice:
            raise ValueError(f"lists a kind twice: {', '.join(twice)}")
    return kinds


class PiiDefaultConfig(_Model):
    """What the guard does for every tenant without its own entry."""

    action: PiiAction = "allow"
    #: The kinds looked for (at least one).
    kinds: tuple[PiiKind, ...] = Field(PII_KINDS, min_length=1)

    unique_kinds = field_validator("kinds")(_unique_kinds)


class PiiTenantConfig(_Model):
    """One tenant's override; a key left unset (null) is the default's."""

    action: PiiAction | None = None
    kinds: tuple[PiiKind, ...] | None = Field(None, min_length=1)

    unique_kinds = field_validator("kinds")(_unique_kinds)


class PiiConfig(_Model):
    default: PiiDefaultConfig = PiiDefaultConfig()
    #: Overrides by tenant name (``auth.tenants[].name``).
    tenants: dict[_TenantName, PiiTenantConfig] = {}

    def rule(self, tenant: str) -> tuple[PiiAction, tuple[PiiKind, ...]]:
        """The action and kinds for ``tenant`` ("" = a caller without a key: the default)."""
        d = self.default
        own = self.tenants.get(tenant) if tenant else None
        if own is None:
            return d.action, d.kinds
        return (
            d.action if own.action is None else own.action,
            d.kinds if own.kinds is None else own.kinds,
        )

    @property
    def enabled(self) -> bool:
        """Some tenant (or the default) has an action other than ``allow``."""
        return self.default.action != "allow" or any(
            t.action not in (None, "allow") for t in self.tenants.values()
        )
