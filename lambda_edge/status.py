"""Router gRPC status -> HTTP status, in one table (docs/lambda.md#errors).

The router's message is passed through: it already names the field, the limit or the
backends that failed. RESOURCE_EXHAUSTED is 413 when the request is too big for every
allowed backend (the router says "context window" or "too large"), else 429 (a rate or
budget limit). FAILED_PRECONDITION (no tier may take the data class) is 422: the body is
valid, the policy refuses it.
"""

from __future__ import annotations

HTTP_FOR_GRPC = {
    "INVALID_ARGUMENT": 400,
    "OUT_OF_RANGE": 400,
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
    """True when retrying the same request cannot help (bad request, policy, auth)."""
    return code not in RETRYABLE or http_status(code, message) == 413
