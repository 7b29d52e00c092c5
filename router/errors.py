"""The router's one exception tree.

Every error the router raises on purpose derives from :class:`RouterError` and
declares the gRPC status it maps to (as a ``grpc.StatusCode`` *name*, so this
module and ``router.policy`` stay free of grpc imports). One interceptor
(``router.server.interceptors``) turns them into statuses; anything else
becomes INTERNAL with a generic message and a logged traceback.

    RouterError
    ├── ConfigError                    (not a request error: bad router.yaml / env)
    ├── InvalidRequest                 INVALID_ARGUMENT   names the field
    ├── Unauthenticated                UNAUTHENTICATED
    ├── PermissionDenied               PERMISSION_DENIED
    ├── ResourceExhausted              RESOURCE_EXHAUSTED
    │   └── NoWindowFits               no context window big enough (names the largest)
    ├── NoTierAllowed                  FAILED_PRECONDITION  no tier may take this data class
    ├── NoCandidate                    UNAVAILABLE       all filtered out (health, capacity...)
    ├── AllCandidatesFailed            UNAVAILABLE       lists each attempt and why
    ├── StreamInterrupted              UNAVAILABLE       failure after the first token
    ├── DeadlineExceeded               DEADLINE_EXCEEDED
    ├── Cancelled                      CANCELLED
    └── BackendError                   raised by adapters; carries an ErrorClass
        (RETRYABLE / TOO_LARGE / FATAL) that dispatch acts on. Never reaches a
        caller directly: dispatch wraps it in one of the errors above.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class RouterError(Exception):
    """Base of every error the router raises on purpose."""

    grpc_code: str = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(RouterError):
    """router.yaml or an environment override is invalid. Names the file, key and fix."""

    def __init__(self, message: str, *, source: str = "", key: str = "") -> None:
        prefix = ""
        if source:
            prefix += f"{source}: "
        if key:
            prefix += f"{key}: "
        super().__init__(prefix + message)
        self.source = source
        self.key = key


class InvalidRequest(RouterError):
    grpc_code = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Unauthenticated(RouterError):
    grpc_code = "UNAUTHENTICATED"


class PermissionDenied(RouterError):
    grpc_code = "PERMISSION_DENIED"


class ResourceExhausted(RouterError):
    grpc_code = "RESOURCE_EXHAUSTED"


class NoWindowFits(ResourceExhausted):
    def __init__(self, needed_tokens: int, largest_window: int, largest_backend: str) -> None:
        super().__init__(
            f"request needs {needed_tokens} tokens (prompt + max_output_tokens) but the largest "
            f"context window among the backends this request may use is {largest_window} "
            f"tokens ({largest_backend}); shorten the prompt or lower max_output_tokens"
        )
        self.needed_tokens = needed_tokens
        self.largest_window = largest_window


class NoTierAllowed(RouterError):
    grpc_code = "FAILED_PRECONDITION"


class NoCandidate(RouterError):
    """Every backend was filtered out for reasons that may pass (health, capacity, pins...)."""

    grpc_code = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class Attempt:
    backend: str
    reason: str


def _describe(attempts: Sequence[Attempt]) -> str:
    return "; ".join(f"{a.backend}: {a.reason}" for a in attempts)


class AllCandidatesFailed(RouterError):
    grpc_code = "UNAVAILABLE"

    def __init__(self, attempts: Sequence[Attempt]) -> None:
        super().__init__(f"every candidate failed: {_describe(attempts)}")
        self.attempts = tuple(attempts)


class StreamInterrupted(RouterError):
    """The backend failed after the first token; the output is incomplete."""

    grpc_code = "UNAVAILABLE"

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"{backend} failed after the first token, output is incomplete: {reason}")
        self.backend = backend
        self.reason = reason


class DeadlineExceeded(RouterError):
    grpc_code = "DEADLINE_EXCEEDED"


class Cancelled(RouterError):
    grpc_code = "CANCELLED"


class ErrorClass(enum.Enum):
    """How dispatch treats a backend failure."""

    #: Transient (unavailable, throttled, 5xx, timeout): try the next candidate; counts
    #: toward the circuit breaker.
    RETRYABLE = "retryable"
    #: The request does not fit this backend (context length, payload): try a candidate
    #: with a larger window; does not count toward the circuit breaker.
    TOO_LARGE = "too_large"
    #: The request itself is bad for any backend (bad request, auth): stop, no failover.
    FATAL = "fatal"


class BackendError(RouterError):
    """Raised by adapters at their boundary, wrapping the dependency's own error."""

    grpc_code = "UNAVAILABLE"

    def __init__(
        self,
        backend: str,
        message: str,
        error_class: ErrorClass = ErrorClass.RETRYABLE,
        *,
        retry_after_s: float | None = None,
        grpc_code: str | None = None,
    ) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        self.reason = message
        self.error_class = error_class
        self.retry_after_s = retry_after_s
        if grpc_code is not None:
            self.grpc_code = grpc_code
