"""Which tenant can ever be routed to which backend, with which data class. Pure.

Start-up analysis for ``hybrid-router check`` and ``serve`` (``router.security.tenants``
turns it into findings): for every backend, the tenants that may use it (their tiers and
backend lists), then, for every data class, whether one of them may send it and the
policy's own static filters (:class:`~router.policy.filters.RequestFilter`, on a healthy,
idle snapshot) let a one-word prompt with the default max output through. Live state
(health, load, cost caps) is left out: it changes while the router runs.

Inputs are plain records: backend specs, tenants (anything with ``name``, ``data_classes``,
``allows(spec)`` and ``check_request(request)``, such as
``router.security.tenants.TenantAccess``; ``None`` when auth is off and anyone may send
anything), the :class:`~router.types.Features` of :func:`probe_request` (the caller counts
its tokens) and the default max output tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from router.errors import PermissionDenied
from router.policy.filters import CONTEXT_WINDOW, RequestFilter
from router.types import (
    BackendSnapshot,
    BackendSpec,
    DataClass,
    Features,
    InferenceRequest,
    Message,
    Role,
    Tier,
)

#: The caller's name in :attr:`Reach.reached` when auth is off.
ANYONE = "anyone"


class Tenant(Protocol):
    """What the analysis reads of a tenant (``TenantAccess`` has it)."""

    @property
    def name(self) -> str: ...

    def allows(self, spec: BackendSpec) -> bool:
        """Whether the tenant may use the backend at all (tiers, backend names)."""
        ...

    def check_request(self, request: InferenceRequest) -> None:
        """PermissionDenied when the tenant may not send ``request`` (its data class)."""
        ...


@dataclass(frozen=True, slots=True)
class Reach:
    """Who can reach one backend."""

    backend: str
    tier: Tier
    #: Names of the tenants that may use the backend; None when auth is off (anyone).
    callers: tuple[str, ...] | None
    #: Data class -> names of the callers whose one-word prompt passes every static
    #: filter (:data:`ANYONE` when auth is off). Empty: no request can go there.
    reached: Mapping[DataClass, frozenset[str]]
    #: The context_window filter's reason when the one-word prompt with the default max
    #: output does not fit (for some caller and data class), else None.
    window: str | None = None

    @property
    def usable(self) -> bool:
        """Some tenant may use the backend (before data classes and windows)."""
        return self.callers is None or bool(self.callers)


def probe_request(max_output_tokens: int) -> InferenceRequest:
    """The one-word prompt the analysis routes (its data class is varied)."""
    return InferenceRequest(
        messages=(Message(Role.USER, "hello"),),
        max_output_tokens=max_output_tokens,
        request_id="check",
    )


def reachability(
    specs: Sequence[BackendSpec],
    tenants: Sequence[Tenant] | None,
    probe: Features,
    max_output_tokens: int,
) -> list[Reach]:
    """One :class:`Reach` per spec, in order (see the module doc)."""
    features = {
        dc: dataclasses.replace(probe, request=dataclasses.replace(probe.request, data_class=dc))
        for dc in DataClass
    }
    filters = {dc: RequestFilter(f, max_output_tokens, 0.0) for dc, f in features.items()}
    out = []
    for spec in specs:
        callers: Sequence[Tenant | None] = (
            [None] if tenants is None else [t for t in tenants if t.allows(spec)]
        )
        names = None if tenants is None else tuple(t.name for t in callers if t is not None)
        fresh = BackendSnapshot(name=spec.name)  # healthy, idle: only static filters bite
        reached: dict[DataClass, set[str]] = {}
        window: str | None = None
        for dc, f in filters.items():
            for tenant in callers:
                if tenant is not None:
                    try:
                        tenant.check_request(features[dc].request)
                    except PermissionDenied:
                        continue
                rejection = f.check(spec, fresh, f.prompt_tokens(spec))
                if rejection is None:
                    reached.setdefault(dc, set()).add(ANYONE if tenant is None else tenant.name)
                elif rejection[0] == CONTEXT_WINDOW:
                    window = rejection[1]
        out.append(
            Reach(
                backend=spec.name,
                tier=spec.tier,
                callers=names,
                reached={dc: frozenset(n) for dc, n in reached.items()},
                window=window,
            )
        )
    return out
