"""The router's one exception tree.

Every error the router raises on purpose derives from :class:`RouterError` and declares
the gRPC status it maps to (as a ``grpc.StatusCode`` *name*, so this module and
``router.policy`` stay free of grpc imports). One interceptor
(``router.server.interceptors``, installed on the router port and on the edge relay port)
turns them into statuses for every RPC shape; anything else becomes INTERNAL with a
generic message and a logged traceback. The modules that raise a class below import it
from here, so its old name still works (``router.security.limits.StreamLimitExceeded``,
``router.backends.device_link.LinkClosed``, ``router.edge.hub.LinkRefused``...).

    RouterError                        status (a subclass without one inherits it)
    ├── ConfigError                    INTERNAL  not a request error: bad router.yaml / env
    ├── DuplicateBackend               INTERNAL  not a request error: a name registered twice
    ├── InvalidRequest                 INVALID_ARGUMENT   names the field
    │   ├── RequestLimitExceeded       too many messages / prompt bytes (server.limits)
    │   └── InvalidRegistration        an edge device's Register / Heartbeat
    ├── TemplateError                  INVALID_ARGUMENT  a template that cannot be published
    ├── Unauthenticated                UNAUTHENTICATED
    │   └── MalformedKey               not an hr_<id>_<secret> key (never quotes it)
    ├── PermissionDenied               PERMISSION_DENIED
    ├── ResourceExhausted              RESOURCE_EXHAUSTED
    │   ├── NoWindowFits               no context window big enough (names the largest)
    │   └── StreamLimitExceeded        streams per connection / per tenant (server.limits)
    ├── NoTierAllowed                  FAILED_PRECONDITION  no tier may take this data class
    ├── NoCandidate                    UNAVAILABLE       all filtered out (health, capacity...)
    ├── AllCandidatesFailed            UNAVAILABLE       lists each attempt and why
    ├── StreamInterrupted              UNAVAILABLE       failure after the first token
    ├── DeadlineExceeded               DEADLINE_EXCEEDED
    ├── Cancelled                      CANCELLED
    ├── NotFound                       NOT_FOUND
    │   └── SessionNotFound            unknown, deleted, expired or another tenant's
    ├── AlreadyExists                  ALREADY_EXISTS    (a session id taken)
    ├── StoreUnavailable               UNAVAILABLE       a state store, named
    ├── LinkRefused                    an EdgeLink the hub will not take
    │   ├── ReplicaDraining            UNAVAILABLE       this replica is shutting down
    │   └── BackendNameTaken           FAILED_PRECONDITION  edge-<id> is a configured backend
    ├── DeviceError                    UNAVAILABLE       a request to an edge device failed
    │   ├── DeviceUnavailable          not linked to this replica, offline or draining
    │   ├── LinkClosed                 the link ended while the request was open
    │   ├── SilenceTimeout             no event from the device in time
    │   └── DeviceRequestError         the device's RequestError; status from its class:
    │                                  too_large OUT_OF_RANGE, fatal INVALID_ARGUMENT,
    │                                  otherwise UNAVAILABLE
    └── BackendError                   raised by adapters; carries an ErrorClass
        (RETRYABLE / TOO_LARGE / FATAL) that dispatch acts on. Never reaches a
        caller directly: dispatch wraps it in one of the errors above.

Private control-flow errors derive from the tree too: ``router.security.tls._Bad``
(a ConfigError naming one TLS file), ``router.backends.openai_compat._EmptyStream``, and
the DynamoDB stores' retries (``router.sessions.dynamodb._Retry``,
``router.templates.backends._Lost``).
The edge errors travel inside the router as well: ``EdgeBackend`` turns a DeviceError
into a BackendError, the relay port lets it end the RPC with its own status.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

# Base of reference errors (env:VAR, secrets); router.config.refs.ConfigRefError is both.
from hybrid_router.refs import RefError as RefError


class RouterError(Exception):
    """Base of every error the router raises; ``message`` is what a caller sees."""

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
        #: The file, environment variable or flag the value came from; "" until the
        #: config locates it (``RouterConfig.locate``): components name only the key.
        self.source = source
        self.key = key
        #: The message without its source and key.
        self.detail = message

    def located(self, source: str) -> ConfigError:
        """This error naming ``source`` (itself when it already names one)."""
        if self.source or not source:
            return self
        return ConfigError(self.detail, source=source, key=self.key)


class DuplicateBackend(RouterError, ValueError):
    """A backend name is registered twice (static config, discovery, edge)."""


class InvalidRequest(RouterError):
    """The request names a bad field: the message is ``<field>: <message>`` (just
    ``message`` when ``field`` is "" because the message names it)."""

    grpc_code = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class RequestLimitExceeded(InvalidRequest):
    """INVALID_ARGUMENT naming the field and the limit (``max_messages``,
    ``max_prompt_bytes``)."""

    def __init__(self, limit: str, field: str, message: str) -> None:
        super().__init__(field, message)
        self.limit = limit


class InvalidRegistration(InvalidRequest, ValueError):
    """A device's Register or Heartbeat message; names the bad field."""


class Unauthenticated(RouterError):
    grpc_code = "UNAUTHENTICATED"


class MalformedKey(Unauthenticated, ValueError):
    """The text is not an ``hr_<id>_<secret>`` key (the message never quotes it)."""


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


class StreamLimitExceeded(ResourceExhausted):
    """RESOURCE_EXHAUSTED; ``limit`` is ``max_streams_per_connection`` or
    ``max_streams_per_tenant``."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


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


class NotFound(RouterError):
    """NOT_FOUND: a named thing the caller may see does not exist (a session of another
    tenant is one of these too: it never says more)."""

    grpc_code = "NOT_FOUND"


class SessionNotFound(NotFound):
    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"session {session_id!r} not found (never created, deleted, or expired); "
            "create it, or send the turn without session_id"
        )
        self.session_id = session_id


class AlreadyExists(RouterError):
    grpc_code = "ALREADY_EXISTS"


class StoreUnavailable(RouterError):
    """A state store (sessions, ledger, limits) cannot be reached or answered an error;
    names the store. Nothing it had accepted is lost."""

    grpc_code = "UNAVAILABLE"

    def __init__(self, store: str, problem: str) -> None:
        super().__init__(f"{store} is unavailable: {problem}")
        self.store = store


class LinkRefused(RouterError):
    """An EdgeLink the hub will not take; each subclass declares its status."""


class ReplicaDraining(LinkRefused):
    grpc_code = "UNAVAILABLE"

    def __init__(self, message: str = "this router replica is shutting down; dial again") -> None:
        super().__init__(message)


class BackendNameTaken(LinkRefused):
    grpc_code = "FAILED_PRECONDITION"

    def __init__(self, backend: str) -> None:
        super().__init__(
            f"backend name {backend!r} is taken by a configured backend; rename the device "
            "or that backend"
        )
        self.backend = backend


class DeviceError(RouterError):
    """A request to an edge device failed (raised by ``router.edge``)."""

    grpc_code = "UNAVAILABLE"


class DeviceUnavailable(DeviceError):
    """The device is not linked to this replica, or it is offline or draining."""


class LinkClosed(DeviceError):
    """The link ended while the request was open (or before it could be sent)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"link to the device closed: {reason}")
        self.reason = reason


class SilenceTimeout(DeviceError):
    """No event from the device for the allowed time."""


#: A device's RequestError class -> status (any other class: UNAVAILABLE).
_DEVICE_CODES = {"too_large": "OUT_OF_RANGE", "fatal": "INVALID_ARGUMENT"}


class DeviceRequestError(DeviceError):
    """The device answered the request with a RequestError (``error_class`` is
    ``retryable``, ``too_large`` or ``fatal``); the status follows the class."""

    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.grpc_code = _DEVICE_CODES.get(error_class, DeviceError.grpc_code)


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
