"""The PII detectors (router/controls/pii_detect.py): what each kind finds, and the
near-misses it must not (checksums that fail, versions, times, ids, hashes...)."""

from __future__ import annotations

import random
import string

import pytest

from router.config.pii import PII_KINDS
from router.controls import pii_detect as d
from router.controls.pii_detect import find, redact


def found(text: str, kind: str | None = None) -> list[str]:
    """The texts found (of ``kind``, or any)."""
    return [text[m.start : m.end] for m in find(text) if kind is None or m.kind == kind]


def kinds(text: str) -> list[str]:
    return [m.kind for m in find(text)]


def test_the_config_names_every_kind_the_detector_has() -> None:
    assert set(PII_KINDS) == set(d.KINDS)
    assert d.LABELS["email"] == "[EMAIL]" and d.LABELS["card"] == "[CARD]"


# --- email ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "john.doe@example.com",
        "j+tag@mail.example.co.uk",
        "first_last-99@sub.domain.io",
        "X%Y@EXAMPLE.ORG",
    ],
)
def test_email_found(address: str) -> None:
    assert found(f"write to {address}, thanks", "email") == [address]
    assert found(f"<{address}>.", "email") == [address]


@pytest.mark.parametrize(
    "text",
    [
        "user@localhost",  # no dotted domain
        "@handle on social",
        "trailing.@example.com",
        "x@example.c",  # one-letter TLD
        "x@example.c0m",  # TLD with a digit
        "name @ example . com",
        "x@-example.com",
    ],
)
def test_email_near_misses(text: str) -> None:
    assert found(text, "email") == []


def test_email_after_a_sentence_dot_keeps_only_the_address() -> None:
    assert found("see...john@example.com", "email") == ["john@example.com"]
    assert found("a..b@example.com", "email") == ["b@example.com"]


# --- phone ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "+44 20 7946 0958",
        "+44 (0)20 7946 0958",
        "+1 (415) 555-2671",
        "+14155552671",
        "+33 6 12 34 56 78",
        "+49-30-12345678",
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "1-800-555-0199",
        "020 7946 0958",
        "06 12 34 56 78",
        "(030) 12345678",
    ],
)
def test_phone_found(number: str) -> None:
    assert found(f"call {number} today", "phone") == [number]


@pytest.mark.parametrize(
    "text",
    [
        "123-456-7890",  # a North American area code never starts with 1
        "415-055-2671",  # nor an exchange with 0
        "555-1234",  # 7 digits
        "order 14155552671",  # a bare run of digits is an id, not a phone number
        "+123 45",  # too short for E.164
        "+1234567890123456",  # too long for E.164
        "on 2024-05-01 at 10:30",
        "due 05-06-2023",
        "version 1.2.3.4.5",
        "x+14155552671",  # an expression, not a number
        "20.5 10.25 30.75",
    ],
)
def test_phone_near_misses(text: str) -> None:
    assert found(text, "phone") == []


# --- card -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "4111 1111 1111 1111",  # Visa
        "4111-1111-1111-1111",
        "4111111111111111",
        "5555 5555 5555 4444",  # Mastercard
        "2223 0000 4841 0010",  # Mastercard 2-series
        "3782 822463 10005",  # Amex, 4-6-5
        "378282246310005",
        "6011 1111 1111 1117",  # Discover
        "3530 1113 3330 0000",  # JCB
        "4222222222222",  # 13-digit Visa
    ],
)
def test_card_found(number: str) -> None:
    assert found(f"card: {number}.", "card") == [number]


def test_a_card_followed_by_its_expiry_and_code() -> None:
    assert found("4111 1111 1111 1111 12/26 123", "card") == ["4111 1111 1111 1111"]
    assert found("4111 1111 1111 1111 123", "card") == ["4111 1111 1111 1111"]


def test_two_cards_side_by_side() -> None:
    text = "378282246310005 5555555555554444"
    assert found(text, "card") == ["378282246310005", "5555555555554444"]


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # Luhn fails
        "4111111111111112",
        "1234 5678 9012 3452",  # Luhn passes, but no network issues 1...
        "4111 1111-1111 1111",  # mixed separators
        "41111111111111111111",  # 20 digits
        "4111111111111111.5",  # a decimal
        "order 4111111111111111x",
        "79927398713",  # Luhn passes, too short
        "0000 0000 0000 0000",
        "4111 11 11 1111 1111",  # not how cards are grouped
    ],
)
def test_card_near_misses(text: str) -> None:
    assert found(text, "card") == []


def test_luhn() -> None:
    assert d.luhn_ok("79927398713") and not d.luhn_ok("79927398710")
    assert d.card_ok("4111111111111111") and not d.card_ok("4111111111111121")


# --- iban -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iban",
    [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "NL91ABNA0417164300",
        "FR14 2004 1010 0505 0001 3M02 606",
        "BE68539007547034",
        "CH9300762011623852957",
    ],
)
def test_iban_found(iban: str) -> None:
    assert found(f"pay to {iban} please", "iban") == [iban]


@pytest.mark.parametrize(
    "text",
    [
        "DE89 3704 0044 0532 0130 01",  # mod-97 fails
        "GB82WEST12345698765431",
        "DE89 3704 0044 0532 0130 0",  # one short for DE
        "DE8937040044053201300000",  # too long for DE
        "QQ89370400440532013000",  # no such country
        "de89370400440532013000",  # not written in capitals
        "XDE89370400440532013000",
    ],
)
def test_iban_near_misses(text: str) -> None:
    assert found(text, "iban") == []


def test_an_iban_is_not_also_a_card_or_a_phone() -> None:
    assert kinds("DE89 3704 0044 0532 0130 00") == ["iban"]


# --- ip ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "192.168.1.254", "8.8.8.8", "255.255.255.255", "0.0.0.0"],
)
def test_ipv4_found(address: str) -> None:
    assert found(f"host {address}.", "ip") == [address]
    assert found(f"{address}:8080", "ip") == [address]
    assert found(f"({address}/24)", "ip") == [address]


@pytest.mark.parametrize(
    "text",
    [
        "version 1.2.3.4.5",
        "release v1.2.3.4",
        "1.1.2.3.4",
        "192.168.1.256",
        "01.02.03.04",  # leading zeros
        "10.0.0",
        "1.2.3.4a",
        "3.14159",
    ],
)
def test_ipv4_near_misses(text: str) -> None:
    assert found(text, "ip") == []


@pytest.mark.parametrize(
    "address",
    ["2001:db8::1", "fe80::1", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "::ffff:192.0.2.1"],
)
def test_ipv6_found(address: str) -> None:
    assert found(f"from {address}.", "ip") == [address]
    assert found(f"[{address}]:443", "ip") == [address]


@pytest.mark.parametrize(
    "text",
    [
        "at 12:30:45",
        "mac 00:1a:2b:3c:4d:5e",
        "::1",  # one group: loopback, not a host
        "std::vector<int>",
        "a::b::c",
        "2024-05-01T10:30:45Z",
        "dead:beef:cafe",
    ],
)
def test_ipv6_near_misses(text: str) -> None:
    assert found(text, "ip") == []


def test_an_ipv4_inside_an_ipv6_is_one_address() -> None:
    assert found("::ffff:10.1.2.3") == ["::ffff:10.1.2.3"]


# --- AWS keys ---------------------------------------------------------------------------

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_aws_access_key_ids() -> None:
    assert found(f"aws_access_key_id={KEY_ID}", "aws_access_key") == [KEY_ID]
    assert found("ASIAY34FZKBOKMUTVV7A and", "aws_access_key") == ["ASIAY34FZKBOKMUTVV7A"]


@pytest.mark.parametrize(
    "text",
    [
        "AKIAIOSFODNN7EXAMPL",  # 19
        "AKIAIOSFODNN7EXAMPLEX",  # 21
        "AKIAIOSFODNN0EXAMPLE",  # 0 is not base-32
        "akiaiosfodnn7example",
        "XAKIAIOSFODNN7EXAMPLE",
        "AIDAIOSFODNN7EXAMPLE",  # a user id, not a key
    ],
)
def test_aws_access_key_near_misses(text: str) -> None:
    assert found(text, "aws_access_key") == []


def test_aws_secret_keys() -> None:
    assert found(f"aws_secret_access_key = {SECRET}", "aws_secret_key") == [SECRET]
    # Not named as one: it must look random.
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "/+"
    hits = 0
    for _ in range(300):
        key = "".join(rng.choice(alphabet) for _ in range(40))
        hits += found(f"use {key} here", "aws_secret_key") == [key]
    assert hits >= 290  # ~0.3% of random keys fail the randomness checks


@pytest.mark.parametrize(
    "text",
    [
        "commit 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",  # a SHA-1: no capitals
        "name AbstractSingletonProxyFactoryBean2Helper",  # camel case
        "id getUserAccountSettingsForTenantId2024v12",
        "path com/api/v1/Users/12345/Profile/Settings1",
        f"token {SECRET}x",  # 41 characters
        f"token {SECRET[:-1]}",  # 39
        f"blob {SECRET}==",  # part of longer base-64
        "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMN",  # capitals only
    ],
)
def test_aws_secret_near_misses(text: str) -> None:
    assert found(text, "aws_secret_key") == []


# --- find and redact --------------------------------------------------------------------


def test_redact_replaces_each_finding_with_its_label() -> None:
    text = (
        "Mail john@example.com or call +44 20 7946 0958; card 4111 1111 1111 1111, "
        f"IBAN DE89370400440532013000 from 10.0.0.1 with {KEY_ID}"
    )
    assert redact(text, find(text)) == (
        "Mail [EMAIL] or call [PHONE]; card [CARD], IBAN [IBAN] from [IP] with [AWS_ACCESS_KEY]"
    )


def test_find_looks_only_for_the_kinds_asked() -> None:
    text = "john@example.com 4111 1111 1111 1111"
    assert [m.kind for m in find(text, {"card"})] == ["card"]
    assert [m.kind for m in find(text, {"email"})] == ["email"]
    assert find(text, set()) == []


def test_matches_are_in_text_order_and_never_overlap() -> None:
    text = f"{KEY_ID} 10.0.0.1 a@b.io +1 415 555 2671 4111111111111111"
    ms = find(text)
    assert [m.start for m in ms] == sorted(m.start for m in ms)
    assert all(a.end <= b.start for a, b in zip(ms, ms[1:], strict=False))


def test_plain_prose_and_code_hold_nothing() -> None:
    text = (
        "The router picks a backend per request: def plan(x): return x + 1  # 2024-05-01\n"
        'config = {"ttl_s": 86400, "max": 1_000_000, "ratio": 0.6} at 10:30:45, v2.3.4, '
        "listen 0.0.0.0:50051? no: port 8080, pid 12345, sha256:9f86d081884c7d65"
    )
    assert find(text, set(d.KINDS) - {"ip"}) == []
    assert found(text) == ["0.0.0.0"]
