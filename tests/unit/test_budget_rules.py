"""Spend budgets, the pure part (router/controls/budget_rules.py): UTC periods, the
budgets a caller has, a plan's estimate, and the refusal's words."""

from __future__ import annotations

import datetime as dt

import pytest

from router.config import parse_config
from router.controls.budget_rules import (
    NANO,
    BudgetTable,
    Limits,
    Usage,
    estimate,
    fits,
    lines,
    periods,
    refusal,
    to_nano,
)
from router.controls.budgets import table_of
from router.errors import BudgetExceeded, OverBudget
from router.types import CandidateReport, Estimate, Objective, Plan, Tier


def _at(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def plan(**costs: float) -> Plan:
    """A plan over ``costs`` (backend -> estimated USD), in that order."""
    candidates = tuple(
        CandidateReport(
            backend=name,
            tier=Tier.HOSTED,
            accepted=True,
            rejected_by="",
            reason="",
            estimate=Estimate(10, 100, cost, 0, True, 10, True),
            rank=i + 1,
        )
        for i, (name, cost) in enumerate(costs.items())
    )
    return Plan("r1", Objective.CHEAPEST, tuple(costs), candidates, False, "test")


def test_money_is_whole_nano_dollars_rounded_up() -> None:
    assert to_nano(1.0) == NANO
    assert to_nano(0.1) == 100_000_000  # not 100_000_001 from 0.1 * 1e9's float error
    assert to_nano(1e-12) == 1  # any cost at all is at least one nano-dollar
    assert to_nano(0.0) == 0 and to_nano(-1.0) == 0 and to_nano(float("nan")) == 0


def test_periods_are_utc_calendar_days_and_months() -> None:
    (day, day_end), (month, month_end) = periods(_at("2025-12-31T23:59:59"))
    assert (day, month) == ("2025-12-31", "2025-12")
    assert day_end == month_end == _at("2026-01-01T00:00:00")
    (day, day_end), (month, month_end) = periods(_at("2024-02-29T00:00:00"))
    assert (day, month) == ("2024-02-29", "2024-02")
    assert day_end == _at("2024-03-01T00:00:00") == month_end


def test_a_tenant_entry_replaces_the_default_and_a_key_adds_its_own() -> None:
    table = BudgetTable(
        default=Limits(day=10 * NANO),
        tenants={"acme": Limits(month=500 * NANO)},
        keys={"0123456789ab": Limits(day=2 * NANO)},
    )
    now = _at("2025-05-01T12:00:00")
    assert [ln.key for ln in lines(table, "other", "", now)] == ["day:2025-05-01"]
    assert [ln.key for ln in lines(table, "acme", "", now)] == ["month:2025-05"]
    held = lines(table, "acme", "0123456789ab", now)
    assert [ln.key for ln in held] == ["month:2025-05", "key:0123456789ab:day:2025-05-01"]
    assert held[1].label == "key 0123456789ab, UTC day 2025-05-01"
    assert lines(BudgetTable(), "acme", "", now) == ()
    assert lines(table, "", "", now)[0].label == "requests without an API key, UTC day 2025-05-01"


def test_the_table_comes_from_the_config() -> None:
    cfg = parse_config(
        {
            "controls": {
                "budgets": {
                    "default": {"usd_per_day": 1.5},
                    "tenants": {"acme": {"usd_per_day": 10, "usd_per_month": 200}},
                    "keys": {"0123456789ab": {"usd_per_month": 3}},
                }
            }
        },
        source="test",
    ).controls.budgets
    assert cfg.enabled
    table = table_of(cfg)
    assert table.default == Limits(day=1_500_000_000)
    assert table.tenants["acme"] == Limits(day=10 * NANO, month=200 * NANO)
    assert table.keys["0123456789ab"] == Limits(month=3 * NANO)
    off = parse_config({"controls": {"budgets": {"tenants": {"acme": {}}}}}, source="t")
    assert not off.controls.budgets.enabled


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"keys": {"hr_abc": {"usd_per_day": 1}}}, "not API key ids"),
        ({"tenants": {"a/b": {"usd_per_day": 1}}}, "not tenant names"),
        ({"default": {"usd_per_day": -1}}, "must be >= 0"),
        ({"store": "redis", "default": {"usd_per_day": 1}}, "needs redis.url"),
    ],
)
def test_bad_budgets_are_config_errors(section: dict, expected: str) -> None:
    from router.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config({"controls": {"budgets": section}}, source="t")
    assert expected in str(err.value)


def test_the_estimate_is_the_backends_and_the_dearest_for_an_unknown_one() -> None:
    p = plan(edge=0.001, hosted=0.25)
    assert estimate(p, "edge") == to_nano(0.001)
    assert estimate(p, "hosted") == to_nano(0.25)
    assert estimate(p, "added-later") == to_nano(0.25)


def test_fits_counts_what_is_reserved() -> None:
    table = BudgetTable(default=Limits(day=NANO))
    (line,) = lines(table, "t", "", _at("2025-05-01T00:00:00"))
    assert fits(line, Usage(spent=600_000_000, reserved=300_000_000), 100_000_000)
    assert not fits(line, Usage(spent=600_000_000, reserved=300_000_000), 100_000_001)


def test_a_refusal_names_the_budget_what_is_left_and_the_reset() -> None:
    table = BudgetTable(default=Limits(day=10 * NANO))
    now = _at("2025-05-01T21:30:00")
    (line,) = lines(table, "acme", "", now)
    err = refusal(line, Usage(spent=9_990_000_000, reserved=0), to_nano(0.05), now, backend="h")
    assert isinstance(err, BudgetExceeded) and err.grpc_code == "RESOURCE_EXHAUSTED"
    assert err.message == (
        "budget tenant acme, UTC day 2025-05-01 is exhausted: $0.0100 of $10.0000 left, this "
        "request may cost up to $0.0500 (h's estimate); it resets at 2025-05-02T00:00:00Z "
        "(in 2h 30m)"
    )
    assert err.retry_after_s == 2.5 * 3600
    assert err.left_usd == pytest.approx(0.01) and err.resets_at == "2025-05-02T00:00:00Z"
    assert err.error_reason == "BUDGET_EXHAUSTED"
    assert err.error_metadata["budget"] == "tenant acme, UTC day 2025-05-01"


def test_only_reservations_in_flight_in_the_way_suggest_a_short_wait() -> None:
    table = BudgetTable(default=Limits(day=NANO))
    now = _at("2025-05-01T10:00:00")
    (line,) = lines(table, "acme", "", now)
    err = refusal(line, Usage(spent=0, reserved=NANO), NANO // 2, now, backend="h")
    assert isinstance(err, BudgetExceeded)
    assert err.retry_after_s == 1.0 and "requests in flight hold $1.0000" in err.message


def test_a_request_dearer_than_the_whole_budget_is_out_of_range() -> None:
    table = BudgetTable(default=Limits(month=NANO))
    now = _at("2025-05-01T10:00:00")
    (line,) = lines(table, "acme", "", now)
    err = refusal(line, Usage(0, 0), 2 * NANO, now, backend="hosted-1")
    assert isinstance(err, OverBudget) and err.grpc_code == "OUT_OF_RANGE"
    assert "lower max_output_tokens" in err.message
