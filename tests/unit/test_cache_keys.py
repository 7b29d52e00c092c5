"""The response cache's pure parts: what is deterministic, the key, the stored record and
its replay (router/controls/cache.py)."""

from __future__ import annotations

import dataclasses

import pytest

from router.controls.cache import (
    REPLAY_CHUNK,
    cache_key,
    decode,
    encode,
    nondeterministic,
    replay,
)
from router.types import (
    DataClass,
    DecisionEvent,
    DeltaEvent,
    FinishReason,
    InferenceRequest,
    Message,
    Objective,
    Role,
    Sampling,
    Tier,
    UsageEvent,
)


def _req(**over) -> InferenceRequest:
    fields = {
        "messages": (Message(Role.USER, "alpha beta"),),
        "max_output_tokens": 16,
        "request_id": "r1",
        "sampling": Sampling(temperature=0.0),
    }
    fields.update(over)
    return InferenceRequest(**fields)


def _usage(**over) -> UsageEvent:
    fields = {
        "request_id": "r1",
        "backend": "gpu-1",
        "tier": Tier.GPU,
        "input_tokens": 9,
        "output_tokens": 3,
        "cost_usd": 0.0012,
        "ttft_ms": 80.0,
        "total_ms": 120.0,
        "finish_reason": FinishReason.STOP,
        "complete": True,
    }
    fields.update(over)
    return UsageEvent(**fields)


@pytest.mark.parametrize(
    ("sampling", "why"),
    [
        (Sampling(temperature=0.0), ""),
        (Sampling(temperature=1.3, seed=7), ""),
        (Sampling(seed=0), ""),
        (Sampling(), "default temperature and no seed"),
        (Sampling(temperature=0.7), "temperature 0.7 and no seed"),
    ],
)
def test_deterministic_means_temperature_zero_or_a_seed(sampling: Sampling, why: str) -> None:
    assert nondeterministic(_req(sampling=sampling)) == why


def test_the_key_ignores_the_request_id_and_tenant_and_names_the_data_class() -> None:
    base = cache_key(_req())
    assert base.startswith("internal/") and len(base) == len("internal/") + 64
    assert cache_key(_req(request_id="other", tenant="team-a")) == base
    assert cache_key(_req(exclude_tiers=frozenset({Tier.CACHE}))) == base
    assert cache_key(_req(data_class=DataClass.PUBLIC)) == "public/" + base.split("/")[1]


@pytest.mark.parametrize(
    "change",
    [
        {"messages": (Message(Role.USER, "alpha beta!"),)},
        {"messages": (Message(Role.SYSTEM, "alpha beta"),)},
        {"max_output_tokens": 17},
        {"sampling": Sampling(temperature=0.0, stop=("x",))},
        {"sampling": Sampling(temperature=0.0, top_k=4)},
        {"sampling": Sampling(temperature=0.0, seed=1)},
        {"pin_tiers": frozenset({Tier.GPU})},
        {"pin_backends": frozenset({"gpu-1"})},
        {"exclude_tiers": frozenset({Tier.HOSTED})},
        {"exclude_backends": frozenset({"b"})},
        {"model_family": "gemma3"},
        {"capabilities": frozenset({"tools"})},
        {"objective": Objective.FASTEST},
        {"max_cost_usd": 0.01},
        {"ttft_budget_ms": 300.0},
        {"site": "plant-1"},
        {"template": "support", "template_version": "3"},
    ],
)
def test_the_key_changes_with_whatever_shapes_the_answer(change: dict) -> None:
    assert cache_key(_req(**change)) != cache_key(_req())


def test_sets_are_keyed_in_any_order() -> None:
    a = _req(pin_backends=frozenset({"a", "b", "c"}), capabilities=frozenset({"x", "y"}))
    b = _req(pin_backends=frozenset({"c", "a", "b"}), capabilities=frozenset({"y", "x"}))
    assert cache_key(a) == cache_key(b)


def test_every_request_field_is_in_the_key_or_named_as_not() -> None:
    """A field added to InferenceRequest is keyed unless NOT_IN_KEY lists it."""
    from router.controls.cache import NOT_IN_KEY

    names = {f.name for f in dataclasses.fields(InferenceRequest)}
    assert NOT_IN_KEY <= names


def test_a_record_replays_as_decision_deltas_and_usage() -> None:
    events = (
        DecisionEvent(plan=None),  # type: ignore[arg-type]  (not stored)
        DeltaEvent("alpha", 1),
        DeltaEvent(" beta", 1),
        DeltaEvent(" alpha", 1),
        _usage(),
    )
    value = encode(events, stored_ms=1_000)
    assert value is not None
    record = decode(value)
    assert record is not None
    out = replay(
        record,
        _req(request_id="r2", template="t", template_version="1"),
        objective=Objective.CHEAPEST,
        now_ms=61_000,
        elapsed_ms=0.2,
    )
    decision, delta, usage = out
    assert isinstance(decision, DecisionEvent) and isinstance(usage, UsageEvent)
    plan = decision.plan
    assert plan.primary == "cache" and plan.report("cache").tier is Tier.CACHE  # type: ignore[union-attr]
    assert plan.cache == "hit: gpu-1 (gpu), kept 60s ago" and plan.request_id == "r2"
    assert "gpu-1 (gpu)" in plan.explanation and "$0.001200" in plan.explanation
    assert delta == DeltaEvent("alpha beta alpha", 3)
    assert usage.backend == "cache" and usage.tier is Tier.CACHE and usage.cost_usd == 0.0
    assert (usage.input_tokens, usage.output_tokens, usage.request_id) == (9, 3, "r2")
    assert usage.complete and usage.finish_reason is FinishReason.STOP and usage.attempts == 0
    assert (usage.template, usage.template_version) == ("t", "1")


def test_long_answers_replay_in_a_few_deltas() -> None:
    words = [DeltaEvent("word ", 1) for _ in range(10_000)]
    value = encode((*words, _usage(output_tokens=10_000)), stored_ms=0)
    record = decode(value)  # type: ignore[arg-type]
    out = replay(record, _req(), objective=Objective.CHEAPEST, now_ms=0, elapsed_ms=0)  # type: ignore[arg-type]
    deltas = [e for e in out if isinstance(e, DeltaEvent)]
    assert 1 < len(deltas) <= 50_000 // REPLAY_CHUNK + 1
    assert "".join(d.text for d in deltas) == "word " * 10_000
    assert sum(d.tokens for d in deltas) == 10_000


@pytest.mark.parametrize(
    "usage",
    [
        _usage(complete=False, finish_reason=FinishReason.ERROR, error="cut"),
        _usage(finish_reason=FinishReason.CANCELLED),
        _usage(backend="cache", tier=Tier.CACHE),
        None,
    ],
)
def test_only_complete_model_answers_are_kept(usage: UsageEvent | None) -> None:
    events = (DeltaEvent("x", 1), *((usage,) if usage else ()))
    assert encode(events, stored_ms=0) is None


@pytest.mark.parametrize(
    "value",
    [b"", b"not json", b"[]", b'{"v": 99}', b'{"v": 1, "tier": "gpu"}'],
)
def test_a_record_this_code_did_not_write_is_never_replayed(value: bytes) -> None:
    assert decode(value) is None
