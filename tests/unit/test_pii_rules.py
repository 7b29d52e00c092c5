"""The PII guard's rules (router/controls/pii.py, router/config/pii.py) on real requests,
principals and configs; the end-to-end behaviour is in tests/functional/test_pii_guard.py."""

from __future__ import annotations

import pytest

from router.config import parse_config
from router.config.pii import PII_KINDS, PiiConfig
from router.controls import build
from router.controls.pii import (
    Guard,
    HostedCopy,
    Rule,
    ScanMemo,
    describe,
    may_reach_hosted,
    preflight,
)
from router.errors import ConfigError, PiiRefused
from router.preflight import FAIL, OK, Options
from router.security.authn import Principal
from router.security.tenants import TenantAccess
from router.types import (
    CandidateReport,
    DataClass,
    InferenceRequest,
    Message,
    Objective,
    Plan,
    Role,
    Tier,
)

BACKEND = {
    "name": "gpu-a", "tier": "gpu", "kind": "model_service", "endpoint": "127.0.0.1:1",
    "model": "m", "context_window": 4096, "priors": {"ttft_ms": 50, "decode_tokens_per_s": 50},
}  # fmt: skip
ANON = Principal(tenant="")


def request(text: str, **fields: object) -> InferenceRequest:
    return InferenceRequest(
        messages=(Message(Role.SYSTEM, "be brief"), Message(Role.USER, text)),
        max_output_tokens=16,
        request_id="r-1",
        **fields,  # type: ignore[arg-type]
    )


def guard(default: str = "route", **tenants: dict[str, object]) -> Guard:
    return Guard(PiiConfig.model_validate({"default": {"action": default}, "tenants": tenants}))


def test_a_tenant_entry_overrides_the_default_key_by_key() -> None:
    cfg = PiiConfig.model_validate(
        {"default": {"action": "redact", "kinds": ["email", "card"]},
         "tenants": {"a": {"action": "refuse"}, "b": {"kinds": ["iban"]}, "c": {}}}
    )  # fmt: skip
    assert cfg.rule("a") == ("refuse", ("email", "card"))
    assert cfg.rule("b") == ("redact", ("iban",))
    assert cfg.rule("c") == cfg.rule("") == cfg.rule("nobody") == ("redact", ("email", "card"))
    assert cfg.enabled
    assert not PiiConfig().enabled and PiiConfig().default.kinds == PII_KINDS
    only_one = PiiConfig.model_validate({"tenants": {"a": {"action": "route"}}})
    assert only_one.enabled and only_one.rule("") == ("allow", PII_KINDS)
    assert describe(cfg) == (
        "default redact (email, card); a: refuse (email, card); b: redact (iban); "
        "c: redact (email, card)"
    )


def test_a_tenant_auth_tenants_lacks_is_a_config_error_and_a_failed_check() -> None:
    config = parse_config(
        {"backends": [BACKEND],
         "auth": {"keys_file": "/nonexistent/keys.yaml", "tenants": [{"name": "acme"}]},
         "controls": {"pii": {"default": {"action": "route"}, "tenants": {"acme": {},
                                                                          "acm": {}}}}},
        source="test",
    )  # fmt: skip
    with pytest.raises(ConfigError) as err:
        build(config, {})
    message = str(err.value)
    assert "controls.pii.tenants" in message and "'acm' not in auth.tenants" in message
    findings = preflight(config, {}, Options())
    assert [f.level for f in findings] == [OK, FAIL]


def test_off_builds_no_guard() -> None:
    config = parse_config({"backends": [BACKEND]}, source="test")
    assert build(config, {}).pii is None


async def test_route_excludes_hosted_and_keeps_the_rest_of_the_request() -> None:
    req = request("mail a@example.com", exclude_backends=frozenset({"x"}))
    out = await guard("route").apply(ANON, req)
    assert out.exclude_tiers == {Tier.HOSTED} and out.exclude_backends == {"x"}
    assert out.messages == req.messages and out.hosted_copy is not None


async def test_redact_marks_the_request_and_the_copy_is_redacted() -> None:
    req = request("mail a@example.com or 10.0.0.1")
    out = await guard("redact").apply(ANON, req)
    assert out.exclude_tiers == frozenset() and out.messages == req.messages
    assert out.hosted_copy is not None
    copy = out.hosted_copy(out)
    assert [m.content for m in copy.messages] == ["be brief", "mail [EMAIL] or [IP]"]


async def test_refuse_names_kinds_and_tenant_never_values() -> None:
    g = guard("allow", acme={"action": "refuse"})
    with pytest.raises(PiiRefused) as err:
        await g.apply(Principal("acme"), request("card 4111111111111111 mail a@example.com"))
    assert err.value.kinds == ("card", "email")
    assert "tenant 'acme'" in err.value.message and "4111" not in err.value.message
    assert err.value.grpc_code == "FAILED_PRECONDITION" and err.value.error_reason == "PII_FOUND"
    # The default (allow) for everybody else.
    same = request("card 4111111111111111")
    assert await g.apply(Principal("other"), same) is same


async def test_a_clean_prompt_passes_unchanged_but_a_session_gets_its_copy_checked() -> None:
    g = guard("refuse")
    clean = request("nothing to see")
    assert await g.apply(ANON, clean) is clean
    session = request("nothing to see", session_id="s1")
    out = await g.apply(ANON, session)
    assert out.hosted_copy is not None
    # The history dispatch adds is what the copy checks.
    with_history = InferenceRequest(
        messages=(Message(Role.USER, "I am a@example.com"), *session.messages),
        max_output_tokens=16,
        request_id="r-1",
    )
    assert out.hosted_copy(out) is out
    with pytest.raises(PiiRefused) as err:
        out.hosted_copy(with_history)
    assert err.value.message.startswith("this session's history holds PII (email)")


@pytest.mark.parametrize(
    ("fields", "tiers", "reach"),
    [
        ({}, None, True),
        ({"exclude_tiers": frozenset({Tier.HOSTED})}, None, False),
        ({"pin_tiers": frozenset({Tier.GPU, Tier.EDGE})}, None, False),
        ({"pin_tiers": frozenset({Tier.GPU, Tier.HOSTED})}, None, True),
        ({}, frozenset({Tier.GPU}), False),
        ({}, frozenset({Tier.HOSTED}), True),
    ],
)
async def test_a_request_no_hosted_backend_could_take_is_not_scanned(
    fields: dict[str, object], tiers: frozenset[Tier] | None, reach: bool
) -> None:
    access = None
    if tiers is not None:
        access = TenantAccess("t", tiers, frozenset(), frozenset({DataClass.INTERNAL}))
    principal = Principal("t" if access else "", access=access)
    req = request("mail a@example.com", **fields)
    assert may_reach_hosted(req, principal) is reach
    out = await guard("route").apply(principal, req)
    assert (out is req) is not reach


async def test_a_long_prompt_is_scanned_off_the_event_loop_with_the_same_result() -> None:
    g = guard("redact")
    long = "lorem ipsum " * (Guard.OFFLOAD_CHARS // 12 + 1) + " a@example.com"
    out = await g.apply(ANON, request(long))
    assert out.hosted_copy is not None
    assert out.hosted_copy(out).messages[1].content.endswith(" [EMAIL]")


def _report(name: str, tier: Tier, accepted: bool, by: str = "", why: str = "") -> CandidateReport:
    return CandidateReport(name, tier, accepted, by, why)


def test_explain_rejects_only_the_hosted_backends_the_guard_excluded() -> None:
    report = _report

    plan = Plan(
        request_id="r-1",
        objective=Objective.CHEAPEST,
        order=("gpu-a",),
        candidates=(
            report("gpu-a", Tier.GPU, True),
            report("hosted-a", Tier.HOSTED, False, "pin", "tier hosted in exclude_tiers"),
            report("hosted-b", Tier.HOSTED, False, "pin", "in exclude_backends"),
            report("hosted-c", Tier.HOSTED, False, "health", "unhealthy"),
        ),
        budget_unmet=False,
        explanation="gpu-a is the cheapest",
    )
    g = guard("route")
    prompt = g.scan((Message(Role.USER, "a@example.com"),), frozenset(PII_KINDS))
    copy = HostedCopy(g, Rule("route", frozenset(PII_KINDS)), "acme", prompt)
    req = request("x", exclude_backends=frozenset({"hosted-b"}))
    out = copy.explain(plan, req)
    by = {c.backend: (c.rejected_by, c.reason) for c in out.candidates}
    assert by["hosted-a"][0] == "pii" and "(email); tenant 'acme'" in by["hosted-a"][1]
    assert by["hosted-b"] == ("pin", "in exclude_backends")
    assert by["hosted-c"] == ("health", "unhealthy")
    assert out.explanation.endswith("hosted tiers excluded: the prompt holds PII (email)")


def test_the_memo_scans_a_text_once_and_stays_within_its_size() -> None:
    memo = ScanMemo(max_chars=3000, min_chars=100)
    kinds = frozenset(PII_KINDS)
    text = "x" * 900 + " a@example.com"
    first = memo.find(text, kinds)
    assert memo.find(text, kinds) is first and len(memo) == 1
    assert memo.find("short a@example.com", kinds)[0].kind == "email"  # not kept
    for i in range(5):
        memo.find(f"{i}" * 1000, kinds)
    assert len(memo) <= 3
