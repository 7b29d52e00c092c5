"""Rate limits: the GCRA arithmetic (pure, clock passed in), which limits apply to a caller,
and the limiter over the in-process store with an injected clock."""

from __future__ import annotations

import random
from typing import Any

import grpc
import pytest
from pydantic import ValidationError

from router.config import parse_config
from router.config.ratelimits import RateLimitsConfig
from router.controls.gcra import Rate, adjust, admit, admit_all, remaining
from router.controls.limits import MemoryLimitStore, RateLimiter, applicable, describe
from router.errors import (
    CostCapTooLow,
    NoWindowFits,
    OverRateLimit,
    RateLimited,
    StoreUnavailable,
)
from router.security.authn import Principal
from router.server.status_details import read_details, trailing_metadata
from router.tokenizers import Tokenizers
from router.types import FinishReason, InferenceRequest, Message, Role, Tier, UsageEvent

# --- the arithmetic -------------------------------------------------------------------------


def test_a_burst_passes_then_the_rate_holds() -> None:
    rate = Rate.per_minute(60, 3)  # one a second, three at once
    tat = 0.0
    for _ in range(3):
        v = admit(tat, 100.0, 1, rate)
        assert v.admitted and v.wait == 0
        (tat,) = v.tats
    v = admit(tat, 100.0, 1, rate)
    assert not v.admitted and v.wait == pytest.approx(1.0) and v.tats == (tat,)
    assert admit(tat, 100.999, 1, rate).admitted is False
    assert admit(tat, 101.0, 1, rate).admitted is True


def test_the_burst_defaults_to_one_minute_and_to_at_least_one_unit() -> None:
    assert Rate.per_minute(600).burst == 600
    assert Rate.per_minute(0.5).burst == 1 and Rate.per_minute(0.5).interval == 120


def test_a_charge_above_the_burst_never_passes() -> None:
    v = admit(0.0, 0.0, 1001, Rate.per_minute(1000))
    assert not v.admitted and v.never and v.refused_by == 0
    assert admit(0.0, 0.0, 1000, Rate.per_minute(1000)).admitted


def test_all_or_none_and_the_longest_wait() -> None:
    fast, slow = Rate.per_minute(600, 1), Rate.per_minute(6, 1)  # 0.1 s and 10 s a unit
    first = admit_all([(0.0, 1, fast), (0.0, 1, slow)], 50.0)
    assert first.admitted
    tats = first.tats
    # 1 s later the fast limit has room, the slow one does not: nothing is charged.
    v = admit_all([(tats[0], 1, fast), (tats[1], 1, slow)], 51.0)
    assert not v.admitted and v.refused_by == 1 and v.wait == pytest.approx(9.0)
    assert v.tats == tats


def test_corrections_charge_a_debt_and_refund_no_further_than_full() -> None:
    rate = Rate.per_minute(60, 10)  # 1 unit a second
    (tat,) = admit(0.0, 0.0, 10, rate).tats  # the bucket is empty
    assert remaining(tat, 0.0, rate) == pytest.approx(0)
    # Used 4 less than charged: 4 come back.
    tat = adjust(tat, 0.0, -4, rate)
    assert remaining(tat, 0.0, rate) == pytest.approx(4)
    # A refund never fills the bucket past full.
    assert adjust(tat, 0.0, -100, rate) == 0.0
    # Used 5 more than charged: a debt; the next charge waits for it.
    tat = adjust(tat, 0.0, 9, rate)
    assert remaining(tat, 0.0, rate) == pytest.approx(-5)
    v = admit(tat, 0.0, 1, rate)
    assert not v.admitted and v.wait == pytest.approx(6.0)


def test_no_window_ever_admits_more_than_burst_plus_rate() -> None:
    """Random arrivals and costs: in every window of length w, what was admitted is at most
    burst + rate * w (the GCRA's guarantee)."""
    rng = random.Random(14)
    rate = Rate.per_minute(1200, 50)  # 20 units/s
    tat, now, admitted = 0.0, 0.0, []
    for _ in range(3000):
        now += rng.expovariate(40)
        cost = rng.randint(1, 10)
        v = admit(tat, now, cost, rate)
        if v.admitted:
            (tat,) = v.tats
            admitted.append((now, cost))
    for i, (start, _) in enumerate(admitted[:500]):
        for w in (0.1, 1.0, 5.0):
            total = sum(c for t, c in admitted[i:] if t - start <= w)
            assert total <= rate.burst + rate.per_s * w + 1e-6
    assert sum(c for _, c in admitted) > 0.9 * rate.per_s * now  # and it is not stingy


# --- config ---------------------------------------------------------------------------------


def test_off_until_a_limit_is_set_and_zero_is_no_limit() -> None:
    assert not RateLimitsConfig().enabled
    assert not RateLimitsConfig.model_validate({"default": {"requests_per_min": 0}}).enabled
    assert RateLimitsConfig.model_validate(
        {"keys": {"0123456789ab": {"tokens_per_min": 5}}}
    ).enabled


def test_redis_needs_a_url_and_names_are_checked() -> None:
    with pytest.raises(ValidationError, match="redis.url"):
        RateLimitsConfig.model_validate({"store": "redis"})
    with pytest.raises(ValidationError):
        RateLimitsConfig.model_validate({"keys": {"not-a-key-id": {"requests_per_min": 1}}})
    with pytest.raises(ValidationError):
        RateLimitsConfig.model_validate({"tenants": {"{acme}": {"requests_per_min": 1}}})
    with pytest.raises(ValidationError):
        RateLimitsConfig.model_validate({"default": {"burst_tokens": 0}})


def test_a_tenant_entry_overrides_the_default_key_by_key_naming_the_source() -> None:
    cfg = RateLimitsConfig.model_validate(
        {
            "default": {"requests_per_min": 100, "tokens_per_min": 10_000, "burst_tokens": 500},
            "tenants": {"acme": {"tokens_per_min": 20_000}, "free": {"requests_per_min": 0}},
            "keys": {"0123456789ab": {"requests_per_min": 5}},
        }
    )
    acme = applicable(cfg, "acme", "ffffffffffff")
    (req,) = acme.requests
    (tok,) = acme.tokens
    assert req.limit == "controls.rate_limits.default.requests_per_min" and req.per_min == 100
    assert tok.limit == "controls.rate_limits.tenants[acme].tokens_per_min"
    assert tok.per_min == 20_000 and tok.rate.burst == 500
    assert tok.burst_limit == "controls.rate_limits.default.burst_tokens"
    assert req.key == "{acme}/t/req" and tok.key == "{acme}/t/tok"
    # A key with its own entry: its limit under the tenant's hash tag.
    keyed = applicable(cfg, "acme", "0123456789ab")
    assert [c.key for c in keyed.requests] == ["{acme}/t/req", "{acme}/k/0123456789ab/req"]
    assert keyed.requests[1].limit == "controls.rate_limits.keys[0123456789ab].requests_per_min"
    # 0 turns the default's request limit off for one tenant.
    assert applicable(cfg, "free", "").requests == ()
    # No key (auth off): the default, under "-".
    assert [c.key for c in applicable(cfg, "", "").requests] == ["{-}/t/req"]
    text = describe(cfg)
    assert "each tenant: 100 req/min, 10000 tokens/min (burst 500)" in text
    assert "tenant free: 10000 tokens/min (burst 500)" in text


# --- the limiter ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **section: Any) -> RateLimiter:
    config = parse_config({"controls": {"rate_limits": section}})
    cfg = config.controls.rate_limits
    return RateLimiter(
        cfg,
        MemoryLimitStore(clock),
        tokens=Tokenizers(config.policy.token_estimate),
        default_max_output_tokens=config.policy.default_max_output_tokens,
    )


def request(text: str = "hello there", max_out: int = 100) -> InferenceRequest:
    return InferenceRequest(
        messages=(Message(Role.USER, text),), max_output_tokens=max_out, request_id="r"
    )


def usage(input_tokens: int, output_tokens: int) -> UsageEvent:
    return UsageEvent(
        request_id="r",
        backend="b",
        tier=Tier.GPU,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=0.0,
        ttft_ms=1.0,
        total_ms=2.0,
        finish_reason=FinishReason.STOP,
        complete=True,
    )


ACME = Principal(tenant="acme", key_id="0123456789ab")


async def test_requests_per_minute_refuse_with_the_wait_and_the_key() -> None:
    clock = Clock()
    lim = limiter(clock, tenants={"acme": {"requests_per_min": 30, "burst_requests": 2}})
    await lim.charge(ACME, request())
    await lim.charge(ACME, request())
    with pytest.raises(RateLimited) as err:
        await lim.charge(ACME, request())
    e = err.value
    assert e.grpc_code == "RESOURCE_EXHAUSTED" and e.error_reason == "RATE_LIMITED"
    assert e.retry_after_s == pytest.approx(2.0)
    assert e.limit == "controls.rate_limits.tenants[acme].requests_per_min"
    assert "tenant 'acme' may use 30 requests a minute" in e.message
    assert "retry in 2.00 s" in e.message
    # Other tenants have no limit here; after the wait acme passes again.
    assert await lim.charge(Principal(tenant="beta"), request()) is None
    clock.now += 2.0
    await lim.charge(ACME, request())


@pytest.mark.parametrize(
    ("mode", "charged"),
    [("total", "prompt estimate 9 + max_output_tokens 100"), ("output", "max_output_tokens 100")],
)
async def test_tokens_are_charged_from_the_estimate_and_corrected_from_usage(
    mode: str, charged: str
) -> None:
    clock = Clock()
    lim = limiter(clock, tokens=mode, key_default={"tokens_per_min": 600})
    prompt, out = lim.estimate(request())
    assert (prompt, out) == (
        (9, 100) if mode == "total" else (0, 100)
    )  # with its per-message overhead
    cost = prompt + out
    ticket = await lim.charge(ACME, request())
    assert ticket is not None and ticket.tokens == cost
    (cell,) = ticket.cells
    assert cell.key == "{acme}/k/0123456789ab/tok"
    # The answer used 10 tokens: the charge becomes 10 (input counted only for total).
    await lim.correct(ticket, usage(3, 7))
    used = 10 if mode == "total" else 7
    tat = lim.store._tats[cell.key]  # type: ignore[attr-defined]
    assert tat - clock.now == pytest.approx(used * cell.rate.interval)
    # Five long requests in a row: the estimates alone fill the bucket (no response yet).
    tickets = []
    with pytest.raises(RateLimited) as err:
        for _ in range(10):
            tickets.append(await lim.charge(ACME, request()))
    assert len(tickets) == (600 - used) // cost
    assert charged in err.value.message
    # Nothing was used (refused later, failed before a model): the tokens come back.
    for t in tickets:
        await lim.correct(t, None)
    assert await lim.charge(ACME, request()) is not None


async def test_a_request_above_the_burst_is_out_of_range_not_retryable() -> None:
    lim = limiter(Clock(), default={"tokens_per_min": 50})
    with pytest.raises(OverRateLimit) as err:
        await lim.charge(Principal(tenant=""), request(max_out=100))
    e = err.value
    assert e.grpc_code == "OUT_OF_RANGE" and e.error_reason == "REQUEST_OVER_RATE_LIMIT"
    assert e.retry_after_s is None
    assert "callers without an API key may use at most 50 tokens at once" in e.message
    assert "one minute of controls.rate_limits.default.tokens_per_min" in e.message


class BrokenStore(MemoryLimitStore):
    name = "rate limit store broken"

    async def admit(self, charges: Any) -> Any:
        raise StoreUnavailable(self.name, "connection refused")

    async def adjust(self, changes: Any) -> None:
        raise StoreUnavailable(self.name, "connection refused")


@pytest.mark.parametrize("fail_open", [False, True])
async def test_an_unreachable_store_refuses_unless_fail_open(fail_open: bool) -> None:
    lim = limiter(Clock(), fail_open=fail_open, default={"requests_per_min": 5})
    lim.store = BrokenStore()
    if fail_open:
        assert await lim.charge(ACME, request()) is None
    else:
        with pytest.raises(StoreUnavailable, match="rate limit store broken"):
            await lim.charge(ACME, request())


# --- statuses that say whether to wait ------------------------------------------------------


def test_refusals_waiting_cannot_cure_are_not_resource_exhausted() -> None:
    assert NoWindowFits(900, 512, "edge-a").grpc_code == "OUT_OF_RANGE"
    assert NoWindowFits(900, 512, "edge-a").error_reason == "PROMPT_TOO_LARGE"
    cap = CostCapTooLow("below", cap_usd=0.001, cheapest_usd=0.002)
    assert cap.grpc_code == "FAILED_PRECONDITION" and cap.error_reason == "COST_CAP"
    assert dict(cap.error_metadata) == {"max_cost_usd": "0.001000", "cheapest_usd": "0.002000"}


def test_trailing_metadata_carries_retry_info_error_info_and_retry_after() -> None:
    err = RateLimited("controls.rate_limits.default.requests_per_min", "slow down", 1.25)
    md = trailing_metadata(err, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert ("retry-after", "1.250") in md
    info, retry = read_details(md)
    assert info is not None and retry is not None
    assert info.reason == "RATE_LIMITED" and info.domain == "hybrid-router"
    assert info.metadata["limit"] == "controls.rate_limits.default.requests_per_min"
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (1, 250_000_000)
    # An error declaring neither sends nothing extra.
    assert trailing_metadata(StoreUnavailable("s", "p"), grpc.StatusCode.UNAVAILABLE) == ()
    md = trailing_metadata(NoWindowFits(9, 8, "x"), grpc.StatusCode.OUT_OF_RANGE)
    assert [k for k, _ in md] == ["grpc-status-details-bin"]


def test_the_client_never_retries_what_waiting_cannot_cure() -> None:
    from hybrid_router.client import OptionError, RouterCallError
    from hybrid_router.client.retry import NEVER_RETRIED, RetryPolicy

    assert {"OUT_OF_RANGE", "FAILED_PRECONDITION"} <= NEVER_RETRIED
    assert "RESOURCE_EXHAUSTED" not in NEVER_RETRIED
    with pytest.raises(OptionError, match="OUT_OF_RANGE cannot pass on a retry"):
        RetryPolicy(codes=frozenset({"UNAVAILABLE", "OUT_OF_RANGE"}))
    policy = RetryPolicy(codes=frozenset({"UNAVAILABLE"}))
    for code in ("OUT_OF_RANGE", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"):
        err = RouterCallError(code, "no", retry_after=0.5)
        assert policy.retry(err, attempt=1, events=0, time_left=None) is None
    # A caller that opts in to RESOURCE_EXHAUSTED waits what the router said.
    opted = RetryPolicy(codes=frozenset({"RESOURCE_EXHAUSTED"}))
    err = RouterCallError("RESOURCE_EXHAUSTED", "rate limit", retry_after=0.5)
    assert opted.retry(err, attempt=1, events=0, time_left=10.0) == 0.5
    assert opted.retry(err, attempt=1, events=0, time_left=0.4) is None
