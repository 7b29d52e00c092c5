"""What a call takes from its caller's context: the W3C trace context (and Lambda's X-Ray
header converted to it), and a deadline from a Lambda invocation's remaining time."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ENV_XRAY_TRACE", "lambda_timeout_s", "traceparent_from_xray", "valid_traceparent"]

#: Lambda's X-Ray trace header for the current invocation.
ENV_XRAY_TRACE = "_X_AMZN_TRACE_ID"

_XRAY_ROOT = re.compile(r"Root=1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})")
_XRAY_PARENT = re.compile(r"Parent=([0-9a-fA-F]{16})")
_XRAY_SAMPLED = re.compile(r"Sampled=([01?])")
_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def traceparent_from_xray(header: str | None, *, parent_id: str | None = None) -> str | None:
    """W3C ``traceparent`` for an X-Ray trace header (``Root=1-...;Parent=...;Sampled=1``).

    The X-Ray trace id ``1-<8 hex>-<24 hex>`` is the W3C trace id ``<8 hex><24 hex>``
    (the mapping X-Ray and OpenTelemetry use); ``parent_id`` (e.g. a subsegment id)
    replaces the header's parent. None when the header has no usable root or parent.
    """
    if not header:
        return None
    root = _XRAY_ROOT.search(header)
    parent = parent_id or (m.group(1) if (m := _XRAY_PARENT.search(header)) else None)
    if root is None or parent is None or not re.fullmatch(r"[0-9a-fA-F]{16}", parent):
        return None
    sampled = _XRAY_SAMPLED.search(header)
    flags = "01" if sampled is not None and sampled.group(1) == "1" else "00"
    trace_id = (root.group(1) + root.group(2)).lower()
    return f"00-{trace_id}-{parent.lower()}-{flags}"


def valid_traceparent(value: str | None) -> str | None:
    """``value`` when it is a well-formed version-00 traceparent (lower case), else None."""
    if value and _TRACEPARENT.match(value.strip()):
        value = value.strip()
        if value[3:35] != "0" * 32 and value[36:52] != "0" * 16:
            return value
    return None


def lambda_timeout_s(
    context: Any, *, margin_s: float = 1.0, cap_s: float | None = None, floor_s: float = 0.05
) -> float:
    """The call timeout for a Lambda invocation: its remaining time minus ``margin_s``,
    at most ``cap_s`` (e.g. API Gateway's integration limit), at least ``floor_s``."""
    remaining = context.get_remaining_time_in_millis() / 1000.0 - margin_s
    if cap_s is not None:
        remaining = min(remaining, cap_s)
    return max(remaining, floor_s)
