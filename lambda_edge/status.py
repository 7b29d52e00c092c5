"""Router gRPC status -> HTTP status, in one table (docs/lambda.md#errors).

The router's message is passed through: it already names the field, the limit or the
backends that failed. The router tells "wait and try again" from "this will not pass":

- RESOURCE_EXHAUSTED (a rate limit, open streams) is 429, with ``Retry-After`` when the
  router said how long to wait (:func:`retry_after_header`): retrying later can pass.
- OUT_OF_RANGE (no context window holds the prompt, or one request above a rate limit's
  burst) is 413: the same request never passes.
- FAILED_PRECONDITION (no tier may take the data class, or ``max_cost_usd`` below every
  candidate's estimate) is 422: the body is valid, the policy refuses it.

A router from before that split answered RESOURCE_EXHAUSTED for a prompt no window holds;
its message ("context window") still makes that 413, not a retryable 429.
"""

from __future__ import annotations

import math

HTTP_FOR_GRPC = {
    "INVALID_ARGUMENT": 400,
    "OUT_OF_RANGE": 413,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "FAILED_PRECONDITION": 422,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 503,
    "UNAVAILABLE": 503,
    "UNIMPLEMENTED": 501,
    "DEADLINE_EXCEEDED": 504,
    "INTERNAL": 502,
    "UNKNOWN": 502,
    "DATA_LOSS": 502,
}

_TOO_LARGE_HINTS = ("context window", "too large", "too long", "payload")

#: Statuses a client may retry as they are (the same request may succeed later).
RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED"})


def http_status(code: str, message: str = "") -> int:
    if code == "RESOURCE_EXHAUSTED" and any(h in message.lower() for h in _TOO_LARGE_HINTS):
        return 413
    return HTTP_FOR_GRPC.get(code, 502)


def permanent(code: str, message: str = "") -> bool:
    """True when retrying the same request cannot help (bad request, policy, auth, size)."""
    return code not in RETRYABLE or http_status(code, message) == 413


def retry_after_header(code: str, message: str, retry_after: float | None) -> dict[str, str]:
    """``{"Retry-After": "<whole seconds>"}`` for a retryable answer whose wait the router
    gave (rounded up: HTTP counts whole seconds), else ``{}``."""
    if retry_after is None or permanent(code, message):
        return {}
    return {"Retry-After": str(max(0, math.ceil(retry_after - 1e-9)))}
