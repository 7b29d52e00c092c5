"""Hard filters: each rejects for its reason (with the numbers), in a fixed order."""

from __future__ import annotations

import dataclasses

import pytest

from router.policy.filters import (
    FILTERS,
    RequestFilter,
    cost_rejection,
    prompt_tokens_for,
)
from router.types import (
    BackendSnapshot,
    BackendSpec,
    CircuitState,
    DataClass,
    Features,
    InferenceRequest,
    Message,
    Priors,
    Role,
    Tier,
    TokenCount,
)

NOW = 1000.0


def make_spec(name: str = "gpu-a", tier: Tier = Tier.GPU, **kw: object) -> BackendSpec:
    fields: dict[str, object] = {
        "name": name,
        "tier": tier,
        "kind": "model_service",
        "endpoint": "127.0.0.1:9000",
        "model": "gemma-3-270m",
        "model_family": "gemma",
        "context_window": 4096,
        "max_payload_bytes": 10_000,
        "max_concurrency": 4,
        "max_queue": 2,
        "data_classes": frozenset({DataClass.PUBLIC, DataClass.INTERNAL}),
        "priors": Priors(ttft_ms=100.0, decode_tokens_per_s=50.0),
    }
    fields.update(kw)
    return BackendSpec(**fields)  # type: ignore[arg-type]


def make_request(**kw: object) -> InferenceRequest:
    fields: dict[str, object] = {
        "messages": (Message(Role.USER, "hello"),),
        "max_output_tokens": 100,
        "request_id": "r1",
    }
    fields.update(kw)
    return InferenceRequest(**fields)  # type: ignore[arg-type]


def make_filter(
    tokens: int = 1000, exact: bool = False, payload: int = 500, **req: object
) -> RequestFilter:
    request = make_request(**req)
    features = Features(request, payload, {"estimate": TokenCount(tokens, exact)})
    return RequestFilter(features, request.max_output_tokens, NOW)


def check(
    flt: RequestFilter, spec: BackendSpec, snap: BackendSnapshot | None = None
) -> tuple[str, str] | None:
    return flt.check(spec, snap or BackendSnapshot(spec.name), flt.prompt_tokens(spec))


def test_filters_run_in_the_documented_order() -> None:
    assert FILTERS == (
        "pin",
        "capability",
        "data_class",
        "context_window",
        "payload",
        "edge_affinity",
        "health",
        "capacity",
        "cost",
    )


def test_a_fitting_healthy_backend_passes() -> None:
    assert check(make_filter(), make_spec()) is None


# --- pin ------------------------------------------------------------------------------


def test_pin_tiers_rejects_other_tiers() -> None:
    flt = make_filter(pin_tiers=frozenset({Tier.EDGE, Tier.HOSTED}))
    assert check(flt, make_spec()) == ("pin", "tier gpu not in pin_tiers (edge, hosted)")
    assert check(flt, make_spec("edge-a", Tier.EDGE)) is None


def test_pin_backends_rejects_other_names() -> None:
    flt = make_filter(pin_backends=frozenset({"gpu-b"}))
    assert check(flt, make_spec("gpu-a")) == ("pin", "not in pin_backends (gpu-b)")
    assert check(flt, make_spec("gpu-b")) is None


def test_tier_and_backend_pins_must_both_allow() -> None:
    flt = make_filter(pin_tiers=frozenset({Tier.EDGE}), pin_backends=frozenset({"gpu-a"}))
    assert check(flt, make_spec("gpu-a"))[0] == "pin"  # type: ignore[index]
    assert check(flt, make_spec("edge-a", Tier.EDGE))[0] == "pin"  # type: ignore[index]


def test_exclusions() -> None:
    flt = make_filter(exclude_tiers=frozenset({Tier.HOSTED}), exclude_backends=frozenset({"x"}))
    assert check(flt, make_spec("h", Tier.HOSTED)) == ("pin", "tier hosted in exclude_tiers")
    assert check(flt, make_spec("x")) == ("pin", "in exclude_backends")
    assert check(flt, make_spec("y")) is None


# --- capability -----------------------------------------------------------------------


def test_model_family_must_match_case_insensitively() -> None:
    assert check(make_filter(model_family="Gemma"), make_spec()) is None
    assert check(make_filter(model_family="llama"), make_spec()) == (
        "capability",
        "model family 'llama' requested; serves 'gemma' (gemma-3-270m)",
    )


def test_every_requested_capability_must_be_offered() -> None:
    flt = make_filter(capabilities=frozenset({"chat", "tools", "vision"}))
    assert check(flt, make_spec(capabilities=frozenset({"chat", "tools"}))) == (
        "capability",
        "missing capability vision (offers chat, tools)",
    )
    assert check(flt, make_spec(capabilities=frozenset({"chat", "tools", "vision"}))) is None


# --- data_class -----------------------------------------------------------------------


def test_data_class_must_be_allowed_on_the_backend() -> None:
    flt = make_filter(data_class=DataClass.RESTRICTED)
    assert check(flt, make_spec()) == (
        "data_class",
        "data class 'restricted' not allowed on this gpu backend (allows internal, public)",
    )
    allowed = make_spec(data_classes=frozenset({DataClass.RESTRICTED}))
    assert check(flt, allowed) is None


# --- context_window -------------------------------------------------------------------


def test_prompt_plus_max_output_must_fit_the_window() -> None:
    # 3996 + 100 = 4096 fits exactly; one more token does not.
    assert check(make_filter(tokens=3996), make_spec()) is None
    assert check(make_filter(tokens=3997), make_spec()) == (
        "context_window",
        "needs 4097 tokens (3997 prompt, estimated, + 100 max output) > context window 4096",
    )


def test_context_window_uses_the_backends_own_tokenizer_count() -> None:
    request = make_request()
    features = Features(
        request,
        10,
        {"estimate": TokenCount(5000, False), "gguf:m.gguf": TokenCount(3000, True)},
    )
    flt = RequestFilter(features, 100, NOW)
    assert check(flt, make_spec(tokenizer_id="gguf:m.gguf")) is None
    rejected = check(flt, make_spec(tokenizer_id="estimate"))
    assert rejected is not None and rejected[0] == "context_window"
    exact = Features(request, 10, {"gguf:m.gguf": TokenCount(4000, True)})
    rejected = check(RequestFilter(exact, 100, NOW), make_spec(tokenizer_id="gguf:m.gguf"))
    assert rejected is not None and "(4000 prompt, exact, + 100 max output)" in rejected[1]


def test_unknown_tokenizer_falls_back_to_estimate_then_largest() -> None:
    request = make_request()
    with_estimate = Features(request, 1, {"estimate": TokenCount(7, False)})
    assert prompt_tokens_for(with_estimate, "gguf:new.gguf") == TokenCount(7, False)
    without = Features(request, 1, {"a": TokenCount(3, True), "b": TokenCount(9, True)})
    assert prompt_tokens_for(without, "gguf:new.gguf") == TokenCount(9, True)
    assert prompt_tokens_for(Features(request, 1, {}), "x") == TokenCount(0, False)


# --- payload --------------------------------------------------------------------------


def test_payload_must_fit_the_limit() -> None:
    assert check(make_filter(payload=10_000), make_spec()) is None
    assert check(make_filter(payload=10_001), make_spec()) == (
        "payload",
        "payload 10001 bytes > limit 10000 bytes",
    )


# --- edge_affinity --------------------------------------------------------------------


def test_edge_site_and_device_must_match_when_given() -> None:
    edge = make_spec("edge-a", Tier.EDGE, site="plant-1", device_id="dev-1")
    assert check(make_filter(site="plant-1", device_id="dev-1"), edge) is None
    assert check(make_filter(site="plant-2"), edge) == (
        "edge_affinity",
        "site 'plant-2' requested; device is at 'plant-1'",
    )
    assert check(make_filter(device_id="dev-9"), edge) == (
        "edge_affinity",
        "device 'dev-9' requested; this is 'dev-1'",
    )
    assert check(make_filter(), edge) is None


def test_edge_affinity_does_not_apply_to_other_tiers() -> None:
    flt = make_filter(site="plant-2", device_id="dev-9")
    assert check(flt, make_spec("gpu-a", Tier.GPU)) is None
    assert check(flt, make_spec("hosted-a", Tier.HOSTED)) is None


# --- health ---------------------------------------------------------------------------


def test_unhealthy_backend_is_rejected_with_its_detail() -> None:
    spec = make_spec()
    down = BackendSnapshot(spec.name, healthy=False, detail="load probe failed: refused")
    assert check(make_filter(), spec, down) == ("health", "unhealthy: load probe failed: refused")
    assert check(make_filter(), spec, BackendSnapshot(spec.name, healthy=False)) == (
        "health",
        "unhealthy",
    )


def test_open_circuit_is_rejected_half_open_is_allowed() -> None:
    spec = make_spec()
    opened = BackendSnapshot(
        spec.name, circuit=CircuitState.OPEN, error_rate=0.6, failures=6, requests=10
    )
    assert check(make_filter(), spec, opened) == (
        "health",
        "circuit open (error rate 60%, 6 failures in 10 requests)",
    )
    half = BackendSnapshot(spec.name, circuit=CircuitState.HALF_OPEN)
    assert check(make_filter(), spec, half) is None


def test_retry_after_in_the_future_skips_with_seconds_left() -> None:
    spec = make_spec()
    later = BackendSnapshot(spec.name, retry_after_until=NOW + 12.5)
    assert check(make_filter(), spec, later) == ("health", "backend asked to retry after 12.5 s")
    passed = BackendSnapshot(spec.name, retry_after_until=NOW - 0.1)
    assert check(make_filter(), spec, passed) is None


# --- capacity -------------------------------------------------------------------------


def test_capacity_uses_the_larger_of_in_flight_and_reported_load() -> None:
    spec = make_spec(max_concurrency=4, max_queue=2)
    assert check(make_filter(), spec, BackendSnapshot(spec.name, in_flight=5)) is None
    full = ("capacity", "load 6 >= capacity 6 (4 concurrent + 2 queued)")
    assert check(make_filter(), spec, BackendSnapshot(spec.name, in_flight=6)) == full
    reported = BackendSnapshot(spec.name, in_flight=1, reported_load=6)
    assert check(make_filter(), spec, reported) == full
    lower_report = BackendSnapshot(spec.name, in_flight=6, reported_load=0)
    assert check(make_filter(), spec, lower_report) == full


# --- cost -----------------------------------------------------------------------------


def test_cost_rejection() -> None:
    assert cost_rejection(0.002, None) is None
    assert cost_rejection(0.001, 0.001) is None
    assert cost_rejection(0.0012346, 0.001) == ("estimated cost $0.001235 > max_cost_usd $0.001000")


# --- order ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_kw", "spec_kw", "snap_kw", "expected"),
    [
        # pinned out, wrong family, wrong class, too small, unhealthy: the pin wins
        (
            {"pin_tiers": frozenset({Tier.EDGE}), "model_family": "llama"},
            {"context_window": 10},
            {"healthy": False},
            "pin",
        ),
        ({"model_family": "llama", "data_class": DataClass.RESTRICTED}, {}, {}, "capability"),
        ({"data_class": DataClass.RESTRICTED}, {"context_window": 10}, {}, "data_class"),
        ({}, {"context_window": 10, "max_payload_bytes": 1}, {}, "context_window"),
        ({}, {"max_payload_bytes": 1}, {"healthy": False}, "payload"),
        ({}, {}, {"healthy": False, "in_flight": 100}, "health"),
    ],
)
def test_the_first_failing_filter_names_the_rejection(
    request_kw: dict[str, object],
    spec_kw: dict[str, object],
    snap_kw: dict[str, object],
    expected: str,
) -> None:
    spec = make_spec(**spec_kw)
    snap = dataclasses.replace(BackendSnapshot(spec.name), **snap_kw)
    rejected = check(make_filter(**request_kw), spec, snap)
    assert rejected is not None and rejected[0] == expected
