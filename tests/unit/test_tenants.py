"""Tenants: requests held to what their tenant may use; the policy sees only those backends."""

from __future__ import annotations

import dataclasses

import pytest

from router.config import PolicyConfig, TenantConfig
from router.errors import InvalidRequest, NoCandidate, PermissionDenied
from router.records import policy_params
from router.security.tenants import TenantAccess
from router.types import (
    BACKEND_TIERS,
    BackendSnapshot,
    BackendSpec,
    DataClass,
    Features,
    InferenceRequest,
    Message,
    Priors,
    Role,
    Tier,
    TokenCount,
)

CFG = policy_params(PolicyConfig())
NOW = 100.0
ALL_CLASSES = frozenset(DataClass)


def spec(name: str, tier: Tier, window: int = 8192, classes=ALL_CLASSES) -> BackendSpec:  # type: ignore[no-untyped-def]
    return BackendSpec(
        name=name,
        tier=tier,
        kind="model_service",
        endpoint="127.0.0.1:1",
        model="m",
        context_window=window,
        max_payload_bytes=100_000,
        max_concurrency=2,
        max_queue=2,
        data_classes=frozenset(classes),
        priors=Priors(ttft_ms=100.0, decode_tokens_per_s=50.0),
    )


PAIRS = [
    (spec("edge-a", Tier.EDGE, window=512), BackendSnapshot("edge-a")),
    (spec("gpu-a", Tier.GPU, window=4096), BackendSnapshot("gpu-a")),
    (spec("hosted-a", Tier.HOSTED, window=100_000, classes={DataClass.PUBLIC}),
     BackendSnapshot("hosted-a")),
]  # fmt: skip


def features(tokens: int = 50, **kw: object) -> Features:
    req = InferenceRequest(
        messages=(Message(Role.USER, "hello"),), max_output_tokens=32, request_id="r", **kw
    )  # type: ignore[arg-type]
    return Features(req, payload_bytes=5, prompt_tokens={"estimate": TokenCount(tokens, False)})


def access(**kw: object) -> TenantAccess:
    cfg = TenantConfig.model_validate({"name": "acme", **kw})
    return TenantAccess.from_config(cfg, default_max_streams=7)


def test_config_defaults_allow_every_tier_but_not_restricted_data() -> None:
    a = access()

    assert a.tiers == frozenset(BACKEND_TIERS) and a.backends == frozenset()
    assert a.data_classes == {DataClass.PUBLIC, DataClass.INTERNAL}
    assert a.max_streams == 7
    assert access(max_streams=2).max_streams == 2


def test_policy_sees_only_the_tenants_backends() -> None:
    plan = access(tiers=["edge", "gpu"]).plan(features(), PAIRS, CFG, NOW)

    assert {c.backend for c in plan.candidates} == {"edge-a", "gpu-a"}
    assert "hosted-a" not in plan.order


def test_backend_list_narrows_within_allowed_tiers() -> None:
    plan = access(backends=["gpu-a"]).plan(features(), PAIRS, CFG, NOW)

    assert [c.backend for c in plan.candidates] == ["gpu-a"]


@pytest.mark.parametrize(
    ("tenant", "request_fields", "needle"),
    [
        ({}, {"data_class": DataClass.RESTRICTED}, "data class 'restricted'"),
        ({"tiers": ["edge"]}, {"pin_tiers": frozenset({Tier.GPU})}, "tier gpu named in pin_tiers"),
        ({"backends": ["gpu-a"]}, {"pin_backends": frozenset({"edge-a"})}, "backend edge-a"),
    ],
)
def test_naming_what_is_not_allowed_is_permission_denied(
    tenant: dict[str, object], request_fields: dict[str, object], needle: str
) -> None:
    req = features(**request_fields).request

    with pytest.raises(PermissionDenied) as err:
        access(**tenant).check_request(req)

    assert needle in err.value.message and "'acme'" in err.value.message


def test_pinning_a_backend_of_a_forbidden_tier_is_permission_denied_not_unknown() -> None:
    f = features(pin_backends=frozenset({"hosted-a"}))

    with pytest.raises(PermissionDenied) as err:
        access(tiers=["gpu"]).plan(f, PAIRS, CFG, NOW)

    assert "backend 'hosted-a' (hosted)" in err.value.message


def test_pinning_an_unknown_backend_stays_invalid_argument() -> None:
    with pytest.raises(InvalidRequest):
        access(tiers=["gpu"]).plan(features(pin_backends=frozenset({"nope"})), PAIRS, CFG, NOW)


def test_needing_a_forbidden_tier_is_permission_denied_with_the_policy_reason() -> None:
    big = features(tokens=20_000, data_class=DataClass.PUBLIC)  # only hosted-a's window fits

    with pytest.raises(PermissionDenied) as err:
        access(tiers=["edge", "gpu"]).plan(big, PAIRS, CFG, NOW)

    msg = err.value.message
    assert "hosted backend 'hosted-a', which this request needs" in msg
    assert "context window" in msg


def test_when_no_backend_at_all_could_serve_the_policy_error_stands() -> None:
    from router.errors import NoWindowFits

    internal_big = features(tokens=20_000)  # hosted-a fits but does not take internal data

    with pytest.raises(NoWindowFits):
        access(tiers=["edge", "gpu"]).plan(internal_big, PAIRS, CFG, NOW)


def test_a_tenant_backend_that_is_only_busy_keeps_the_transient_error() -> None:
    busy = [
        (s, dataclasses.replace(snap, in_flight=10)) if s.tier is Tier.GPU else (s, snap)
        for s, snap in PAIRS
    ]

    with pytest.raises(NoCandidate):
        access(tiers=["gpu"]).plan(features(), busy, CFG, NOW)


def test_a_tenant_with_no_usable_backend_is_told_so() -> None:
    with pytest.raises(PermissionDenied) as err:
        access(backends=["gone"]).plan(features(), PAIRS, CFG, NOW)

    assert "any backend this router has" in err.value.message


def test_an_unrestricted_tenant_plans_exactly_like_the_policy() -> None:
    from router import policy

    assert access(data_classes=["public", "internal", "restricted"]).plan(
        features(), PAIRS, CFG, NOW
    ) == policy.plan(features(), PAIRS, CFG, NOW)
