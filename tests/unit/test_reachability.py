"""Which tenant can reach which backend: a pure function of specs, tenants and one probe.

``router.policy.reachability`` is what ``check`` and ``serve`` report as ``routable NAME``
(router/security/tenants.py formats it). Plain records in, plain records out.
"""

from __future__ import annotations

import dataclasses

from router.policy.reachability import ANYONE, Reach, probe_request, reachability
from router.security.tenants import TenantAccess
from router.types import BackendSpec, DataClass, Features, Priors, Tier, TokenCount

ALL = frozenset(DataClass)


def spec(
    name: str,
    tier: Tier = Tier.GPU,
    *,
    window: int = 8192,
    classes: frozenset[DataClass] = ALL,
) -> BackendSpec:
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
        data_classes=classes,
        priors=Priors(ttft_ms=100, decode_tokens_per_s=50),
    )


def tenant(
    name: str,
    tiers: frozenset[Tier] = frozenset(Tier),
    classes: frozenset[DataClass] = frozenset({DataClass.PUBLIC, DataClass.INTERNAL}),
    backends: frozenset[str] = frozenset(),
) -> TenantAccess:
    return TenantAccess(name=name, tiers=tiers, backends=backends, data_classes=classes)


def probe(max_out: int = 16, tokens: int = 2) -> Features:
    """The one-word prompt, counted as the caller's token counter would."""
    return Features(probe_request(max_out), 5, {"estimate": TokenCount(tokens, False)})


def test_with_auth_off_anyone_reaches_every_class_a_backend_accepts() -> None:
    public = spec("gpu-a", classes=frozenset({DataClass.PUBLIC}))
    (reach,) = reachability([public], None, probe(), 16)
    assert reach == Reach("gpu-a", Tier.GPU, None, {DataClass.PUBLIC: frozenset({ANYONE})})
    assert reach.usable


def test_tenants_reach_only_the_tiers_backends_and_classes_they_may_use() -> None:
    specs = [spec("gpu-a"), spec("edge-a", Tier.EDGE), spec("hosted-a", Tier.HOSTED)]
    tenants = [
        tenant("gpu-only", tiers=frozenset({Tier.GPU})),
        tenant("named", backends=frozenset({"hosted-a"}), classes=frozenset({DataClass.PUBLIC})),
    ]
    gpu, edge, hosted = reachability(specs, tenants, probe(), 16)
    assert gpu.callers == ("gpu-only",)
    assert gpu.reached == {
        DataClass.PUBLIC: frozenset({"gpu-only"}),
        DataClass.INTERNAL: frozenset({"gpu-only"}),
    }
    assert edge.callers == () and not edge.usable and edge.reached == {}
    assert hosted.callers == ("named",)
    assert hosted.reached == {DataClass.PUBLIC: frozenset({"named"})}


def test_no_shared_data_class_reaches_nothing() -> None:
    restricted = spec("gpu-r", classes=frozenset({DataClass.RESTRICTED}))
    (reach,) = reachability([restricted], [tenant("team-a")], probe(), 16)
    assert reach.usable and reach.reached == {} and reach.window is None


def test_a_window_the_default_answer_does_not_fit_names_the_filter_reason() -> None:
    (reach,) = reachability([spec("tiny", window=64)], [tenant("team-a")], probe(256, 3), 256)
    assert reach.reached == {}
    assert reach.window is not None
    assert "context window 64" in reach.window and "256 max output" in reach.window


def test_the_probe_is_counted_per_tokenizer() -> None:
    """Each backend's own tokenizer's count decides whether the prompt fits."""
    exact = dataclasses.replace(spec("exact", window=20), tokenizer_id="gguf:x")
    loose = spec("loose", window=20)
    counts = {"estimate": TokenCount(2, False), "gguf:x": TokenCount(10, True)}
    features = Features(probe_request(16), 5, counts)
    first, second = reachability([exact, loose], None, features, 16)
    assert first.window is not None and first.reached == {}
    assert second.window is None and second.reached
