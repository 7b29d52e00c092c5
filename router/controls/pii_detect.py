"""Finding PII in text: pure functions of a string (stdlib only, no I/O, no state).

Each kind is a precise pattern and, where the kind has one, a validator that a random
string of the right shape almost never passes:

==================  ========================================================================
kind                what matches
==================  ========================================================================
``email``           ``local@domain.tld``: an ASCII local part of at most 64 characters
                    (not ending with a dot; after a run of dots, as in ``see...x@y.io``,
                    the address starts after it), dotted domain labels, an alphabetic TLD
                    of 2..63 letters
``phone``           ``+`` and a country code, 8..15 digits in all (E.164), grouped or not;
                    the North American shape ``(415) 555-2671`` / ``415-555-2671`` (area
                    code and exchange start 2..9); a national number with a trunk ``0``
                    written in groups (``020 7946 0958``, ``06 12 34 56 78``: 9..12
                    digits). A bare run of digits is never a phone number (it is an id,
                    an amount...)
``card``            13..19 digits, alone or in groups split by single spaces or dashes
                    (one kind of separator), passing the Luhn check, with a card
                    network's prefix and length (Visa, Mastercard, Amex, Discover, JCB,
                    Diners, UnionPay, Maestro)
``iban``            a country code in capitals, 2 check digits and the country's BBAN
                    length (the IBAN registry's), contiguous or in groups of four,
                    passing the ISO 7064 mod-97 check
``ip``              IPv4 with every octet 0..255 and no leading zero, not part of a longer
                    dotted run (``1.2.3.4.5`` is a version); IPv6 as the stdlib
                    ``ipaddress`` parses it, with at least two non-empty groups (``::1``,
                    ``12:30:45`` and MAC addresses are not)
``aws_access_key``  an AWS access key id: ``AKIA``/``ASIA``/``ABIA``/``ACCA`` and 16
                    base-32 characters (``A-Z2-7``), 20 in all
``aws_secret_key``  40 base-64 characters (``A-Za-z0-9/+``) standing alone, with a
                    capital, a small letter and a digit and no ``//``; named as a secret
                    (``secret`` or ``aws`` in the 80 characters before it), or random
                    looking: at least 4.2 bits of entropy per character, 16 changes of
                    character class between neighbours and at most 4 slashes (a random
                    key passes with 99.7% odds; camel-case names, paths, hex digests fail)
==================  ========================================================================

:func:`find` returns the matches of the kinds asked for, in text order and never
overlapping (where two kinds claim the same characters, the one listed first in
:data:`KINDS` wins); :func:`redact` replaces each with its kind's label (:data:`LABELS`).

Cost: each pass over the text is a C loop (``str.find``, a regex whose first character
is a literal, ``bytes.translate``) except one regex pass for runs of digits; the patterns
proper only run where those found a candidate. ``bench/bench_pii.py`` measures it.
"""

from __future__ import annotations

import bisect
import ipaddress
import math
import re
import string
from collections.abc import Collection, Iterator
from dataclasses import dataclass

EMAIL = "email"
PHONE = "phone"
CARD = "card"
IBAN = "iban"
IP = "ip"
AWS_ACCESS_KEY = "aws_access_key"
AWS_SECRET_KEY = "aws_secret_key"

#: Every kind, in the order overlaps are settled (the first listed wins).
KINDS: tuple[str, ...] = (
    AWS_ACCESS_KEY,
    AWS_SECRET_KEY,
    EMAIL,
    IBAN,
    CARD,
    IP,
    PHONE,
)

#: What a match is replaced with in a redacted copy.
LABELS: dict[str, str] = {kind: f"[{kind.upper()}]" for kind in KINDS}


@dataclass(frozen=True, slots=True)
class Match:
    """One finding: its kind and where it is (``text[start:end]``). It never holds the
    text itself."""

    kind: str
    start: int
    end: int


Span = tuple[int, int]

# --- email ------------------------------------------------------------------------------

_EMAIL_LOCAL_CHARS = frozenset(string.ascii_letters + string.digits + "._%+-_")
_EMAIL_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,63}(?![A-Za-z0-9-])"
)


def _emails(text: str) -> Iterator[Span]:
    at = text.find("@")
    while at != -1:
        # The local part: back from the "@" over the characters a local part may hold.
        start = at
        while start > 0 and at - start <= 64 and text[start - 1] in _EMAIL_LOCAL_CHARS:
            start -= 1
        m = _EMAIL_DOMAIN.match(text, at + 1)
        if m is not None and at - start <= 64:
            # "see...john@x": the address starts after the last run of dots.
            local = text[start:at].rsplit("..", 1)[-1].lstrip(".")
            if local and not local.endswith(".") and ".." not in local:
                yield at - len(local), m.end()
        at = text.find("@", at + 1)


# --- runs of digits: phone, card, ip (v4), iban -----------------------------------------

#: A candidate for the digit kinds: a digit and 6 more digits, spaces, dots, dashes or
#: parentheses (the shortest thing found, an IPv4 address, has 7 characters).
_DIGITS = re.compile(r"[0-9][0-9 ().\-]{6,}")

# +CC then groups split by single spaces, dots or dashes (a "(0)" trunk prefix or a
# "(20)" area code may stand before them), or +CC and the number as one run of digits.
_PHONE_INTL = re.compile(
    r"(?<![\w+])\+(?:[0-9]{7,15}"
    r"|[1-9][0-9]{0,3}(?:[ .\-]?\([0-9]{1,4}\))?[ .\-]?[0-9]{1,8}(?:[ .\-][0-9]{1,8}){0,5})"
    r"(?![\w])(?![.\-][0-9])"
)
_PHONE_NANP = re.compile(
    r"(?<![\w+.\-])(?:1[ .\-]?)?(?:\(([0-9]{3})\) ?|([0-9]{3})[ .\-])([0-9]{3})[ .\-][0-9]{4}"
    r"(?![\w])(?![.\-][0-9])"
)
_PHONE_TRUNK = re.compile(
    r"(?<![\w+.\-])(?:\(0[0-9]{1,4}\) ?|0[0-9]{1,4}[ .\-])[0-9]{2,8}(?:[ .\-][0-9]{2,8}){0,4}"
    r"(?![\w])(?![.\-][0-9])"
)


def _digit_count(s: str) -> int:
    return sum(c in "0123456789" for c in s)


def _phones(text: str, lo: int, hi: int, digits: int) -> Iterator[Span]:
    if text[lo] == "+":
        for m in _PHONE_INTL.finditer(text, lo, hi):
            if 8 <= _digit_count(m.group().replace("(0)", "")) <= 15:
                yield m.span()
    if digits >= 10:
        for m in _PHONE_NANP.finditer(text, lo, hi):
            area = m.group(1) or m.group(2)
            if area[0] not in "01" and m.group(3)[0] not in "01":  # both start 2..9
                yield m.span()
    run = text[lo:hi]
    if digits >= 9 and (run[0] == "0" or any(c + "0" in run for c in " (.-")):
        for m in _PHONE_TRUNK.finditer(text, lo, hi):
            if 9 <= _digit_count(m.group()) <= 12:
                yield m.span()


# Digit groups split by single spaces or dashes, each group as long as it goes.
_CARD_RUN = re.compile(r"(?<![\w.\-])[0-9]+(?:[ \-][0-9]+)*(?![\w])(?!\.[0-9])")
_SEPARATOR = re.compile(r"[ \-]")


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check of a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_network(digits: str) -> bool:
    """A card network issues numbers of this prefix and length."""
    n = len(digits)
    p2 = int(digits[:2])
    p4 = int(digits[:4])
    if digits[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # American Express
        return n == 15
    if p2 in (30, 36, 38, 39):  # Diners Club
        return 14 <= n <= 19
    if p2 == 35:  # JCB
        return 16 <= n <= 19
    if digits[0] == "6":  # Discover, UnionPay, Maestro
        return 16 <= n <= 19
    if p2 == 50 or 56 <= p2 <= 58:  # Maestro
        return 13 <= n <= 19
    return False


def card_ok(digits: str) -> bool:
    """13..19 digits a card network issues, passing the Luhn check."""
    return 13 <= len(digits) <= 19 and _card_network(digits) and luhn_ok(digits)


def _cards(text: str, lo: int, hi: int) -> Iterator[Span]:
    for m in _CARD_RUN.finditer(text, lo, hi):
        raw = m.group()
        if len(raw) < 13:
            continue
        start = m.start()
        if raw.isdigit():
            if card_ok(raw):
                yield m.span()
            continue
        if " " in raw and "-" in raw:
            continue  # "4111 1111-1111 1111" is not how a card number is written
        # A run of groups: a card is a few consecutive groups of it written the way card
        # numbers are (a first group of 4..6 digits, the others 3..6), or one group of
        # 13..19 digits. Where several would pass, the longest from the left.
        groups = _SEPARATOR.split(raw)
        offsets = [start]
        for g in groups[:-1]:
            offsets.append(offsets[-1] + len(g) + 1)
        i = 0
        while i < len(groups):
            taken = 0
            if card_ok(groups[i]):
                taken = 1
            elif 4 <= len(groups[i]) <= 6:
                total, stop = len(groups[i]), i + 1
                while stop < len(groups) and 3 <= len(groups[stop]) <= 6 and total < 19:
                    total += len(groups[stop])
                    stop += 1
                for j in range(stop, i + 1, -1):
                    if card_ok("".join(groups[i:j])):
                        taken = j - i
                        break
            if taken:
                last = i + taken - 1
                yield offsets[i], offsets[last] + len(groups[last])
                i += taken
            else:
                i += 1


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w])(?!\.[0-9])")


def _ipv4s(text: str, lo: int, hi: int) -> Iterator[Span]:
    for m in _IPV4.finditer(text, lo, hi):
        yield m.span()


#: Length of an IBAN (country code and check digits included), by country (the SWIFT
#: IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
_IBAN_HEAD = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}")
# Country code, check digits, then the BBAN: contiguous, or in groups of four split by
# single spaces (the printed form), the last group 1..4 long.
_IBAN = re.compile(
    r"([A-Z]{2})([0-9]{2})(?:([A-Z0-9]{11,30})|((?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?))"
    r"(?![A-Za-z0-9])"
)
#: Every BBAN holds a run of 7 digits or more (bank and account numbers): a candidate
#: IBAN is looked for up to this far before such a run.
_IBAN_REACH = 34


def iban_ok(iban: str) -> bool:
    """The ISO 7064 mod-97 check of an IBAN (no spaces)."""
    s = iban[4:] + iban[:4]
    total = 0
    for ch in s:
        if "0" <= ch <= "9":
            total = (total * 10 + ord(ch) - 48) % 97
        elif "A" <= ch <= "Z":
            total = (total * 100 + ord(ch) - 55) % 97
        else:
            return False
    return total == 1


def _ibans(text: str, lo: int, hi: int) -> Iterator[Span]:
    """IBANs that reach into ``text[lo:hi]`` (a run of digits) from up to
    ``_IBAN_REACH`` characters before it."""
    for head in _IBAN_HEAD.finditer(text, max(0, lo - _IBAN_REACH), min(hi, lo + 2)):
        m = _IBAN.match(text, head.start())
        if m is None or m.end() <= lo:
            continue
        country = m.group(1)
        bban = m.group(3) or m.group(4).replace(" ", "")
        if IBAN_LENGTHS.get(country) == 4 + len(bban) and iban_ok(country + m.group(2) + bban):
            yield m.span()


def _digit_kinds(text: str, kinds: Collection[str]) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {IBAN: [], CARD: [], IP: [], PHONE: []}
    iban, card, ip, phone = IBAN in kinds, CARD in kinds, IP in kinds, PHONE in kinds
    iban_end = -1
    for run in _DIGITS.finditer(text):
        lo, hi = run.span()
        s = run.group()
        dots = s.count(".")
        digits = len(s) - s.count(" ") - dots - s.count("-") - s.count("(") - s.count(")")
        if lo > 0 and text[lo - 1] in "+(":
            lo -= 1
        hi = min(len(text), hi + 2)  # what the patterns' look-aheads read
        # An IBAN's first run of 7 digits or more follows a capital (the country code,
        # or a group of the BBAN), perhaps with one space between.
        before = text[lo - 2 : lo] if lo >= 2 else ""
        capital = before[-1:].isupper() or (before[-1:] == " " and before[:1].isupper())
        if digits >= 7 and iban and capital and lo >= iban_end:
            for span in _ibans(text, lo, hi):
                out[IBAN].append(span)
                iban_end = span[1]
        if digits >= 13 and card:
            out[CARD].extend(_cards(text, lo, hi))
        if dots >= 3 and ip:
            out[IP].extend(_ipv4s(text, lo, hi))
        if digits >= 8 and phone:
            out[PHONE].extend(_phones(text, lo, hi, digits))
    return out


# --- ip (v6) ----------------------------------------------------------------------------

_IPV6_SEED = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6_CHARS = frozenset(string.hexdigits + ":")
_IPV6_TAIL_CHARS = frozenset(string.hexdigits + ":.")


def _ipv6s(text: str) -> Iterator[Span]:
    """Grow each ``:x:`` seed over the characters an address may hold, then ask
    ``ipaddress``."""
    pos = 0
    n = len(text)
    while True:
        seed = _IPV6_SEED.search(text, pos)
        if seed is None:
            return
        start = seed.start()
        while start > 0 and text[start - 1] in _IPV6_CHARS:
            start -= 1
        end = seed.end()
        while end < n and text[end] in _IPV6_TAIL_CHARS:
            end += 1
        pos = end
        while end > start and text[end - 1] == ".":  # a sentence's full stop
            end -= 1
        if (start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_.")) or (
            end < n and (text[end].isalnum() or text[end] == "_")
        ):
            continue
        cand = text[start:end]
        groups = cand.split(":")
        if "::" in cand:
            if cand.count("::") > 1 or len(groups) > 9:
                continue
        elif len(groups) != 8 and not (len(groups) == 7 and "." in groups[-1]):
            continue  # "10:30:45", a MAC address
        if sum(1 for g in groups if g) < 2 or any(len(g) > 4 for g in groups[:-1]):
            continue
        try:
            ipaddress.IPv6Address(cand)
        except ValueError:
            continue
        yield start, end


# --- AWS keys ---------------------------------------------------------------------------

_AWS_KEY_ID = re.compile(r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}")
_ALNUM = frozenset(string.ascii_letters + string.digits)


def _aws_key_ids(text: str) -> Iterator[Span]:
    n = len(text)
    for m in _AWS_KEY_ID.finditer(text):
        s, e = m.span()
        if (s == 0 or text[s - 1] not in _ALNUM) and (e == n or text[e] not in _ALNUM):
            yield s, e


_B64_CHARS = string.ascii_letters + string.digits + "/+"
#: bytes.translate table: base-64 characters -> 1, anything else -> 0.
_B64_MAP = bytes(1 if chr(i) in _B64_CHARS else 0 for i in range(256))
_B64_RUN = b"\x01" * 40
_DIGIT_CHARS = "0123456789"
# A 40-character token not named as a secret must look random: a random key (base-64 of
# random bytes) passes all three with 99.7% odds; identifiers, paths and words do not.
#: Bits per character (a random key: ~4.7; "AbstractSingletonProxyFactoryBean2Helper" 4.2).
SECRET_MIN_ENTROPY = 4.2
#: Neighbours of different class (a random key: ~25 of 39; camel-case names: ~12..15).
SECRET_MIN_CLASS_CHANGES = 16
#: Slashes (a random key: ~0.6; a path: many).
SECRET_MAX_SLASHES = 4


def entropy(s: str) -> float:
    """Shannon entropy of ``s``, bits per character."""
    n = len(s)
    counts: dict[str, int] = {}
    for ch in s:
        counts[ch] = counts.get(ch, 0) + 1
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _class_changes(s: str) -> int:
    """How often neighbours differ in class (capital, small letter, digit, other)."""
    classes = [
        "u" if c.isupper() else "l" if c.islower() else "d" if c.isdigit() else "o" for c in s
    ]
    return sum(a != b for a, b in zip(classes, classes[1:], strict=False))


def _looks_like_a_secret(text: str, start: int, s: str) -> bool:
    if "//" in s or s == s.lower() or s == s.upper() or not any(d in s for d in _DIGIT_CHARS):
        return False  # needs a capital, a small letter and a digit
    before = text[max(0, start - 80) : start].lower()
    if "secret" in before or "aws" in before:
        return True  # named as one: "aws_secret_access_key = ..."
    return (
        s.count("/") <= SECRET_MAX_SLASHES
        and _class_changes(s) >= SECRET_MIN_CLASS_CHANGES
        and entropy(s) >= SECRET_MIN_ENTROPY
    )


def _aws_secrets(text: str) -> Iterator[Span]:
    # Runs of exactly 40 base-64 characters, found by C loops over a 0/1 map of the text.
    marks = text.encode("ascii", "replace").translate(_B64_MAP)
    n = len(marks)
    at = marks.find(_B64_RUN)
    while at != -1:
        end = marks.find(b"\x00", at)
        if end == -1:
            end = n
        # ``at`` is where the run starts: find only ever lands on a run's first 40.
        if end - at == 40 and (at == 0 or text[at - 1] != "=") and (end == n or text[end] != "="):
            s = text[at:end]
            if _looks_like_a_secret(text, at, s):
                yield at, end
        at = marks.find(_B64_RUN, end)


# --- all kinds --------------------------------------------------------------------------

_DIGIT_KINDS = frozenset({IBAN, CARD, IP, PHONE})


def find(text: str, kinds: Collection[str] = KINDS) -> list[Match]:
    """The PII of ``kinds`` in ``text``: in text order, never overlapping."""
    spans: dict[str, list[Span]] = {}
    if AWS_ACCESS_KEY in kinds and "A" in text:
        spans[AWS_ACCESS_KEY] = list(_aws_key_ids(text))
    if AWS_SECRET_KEY in kinds:
        spans[AWS_SECRET_KEY] = list(_aws_secrets(text))
    if EMAIL in kinds and "@" in text:
        spans[EMAIL] = list(_emails(text))
    if not _DIGIT_KINDS.isdisjoint(kinds):
        spans.update(_digit_kinds(text, kinds))
    if IP in kinds and ":" in text:
        spans[IP] = [*_ipv6s(text), *spans.get(IP, ())]
    found: list[Match] = []
    starts: list[int] = []  # of found, sorted
    for kind in KINDS:
        for start, end in spans.get(kind, ()):
            i = bisect.bisect_left(starts, start)
            if i > 0 and found[i - 1].end > start:
                continue  # overlaps the one before it (of a kind listed earlier)
            if i < len(found) and found[i].start < end:
                continue  # overlaps the one after it
            starts.insert(i, start)
            found.insert(i, Match(kind, start, end))
    return found


def redact(text: str, matches: list[Match]) -> str:
    """``text`` with each match (from :func:`find`) replaced by its kind's label."""
    if not matches:
        return text
    parts: list[str] = []
    pos = 0
    for m in matches:
        parts.append(text[pos : m.start])
        parts.append(LABELS[m.kind])
        pos = m.end
    parts.append(text[pos:])
    return "".join(parts)
