"""The router's one exception tree.

Every error the router raises on purpose derives from :class:`RouterError` and declares
the gRPC status it maps to (as a ``grpc.StatusCode`` *name*, so this module and
``router.policy`` stay free of grpc imports), and may declare an ``error_reason`` (sent as
``google.rpc.ErrorInfo``) and a ``retry_after_s`` (sent as ``google.rpc.RetryInfo`` and
``retry-after`` trailing metadata, in seconds). RESOURCE_EXHAUSTED means "wait and try
again"; a refusal that waiting cannot cure has another status (OUT_OF_RANGE,
FAILED_PRECONDITION), so callers never retry it. One interceptor
(``router.server.interceptors``, installed on the router port and on the edge relay port)
turns them into statuses for every RPC shape; anything else becomes INTERNAL with a
generic message and a logged traceback. The modules that raise a class below import it
from here, so its old name still works (``router.security.limits.StreamLimitExceeded``,
``router.backends.device_link.LinkClosed``, ``router.edge.hub.LinkRefused``...).

    RouterError                        status (a subclass without one inherits it)
    ├── ConfigError                    INTERNAL  not a request error: bad router.yaml / env
    ├── DuplicateBackend               INTERNAL  not a request error: a name registered twice
    ├── InvalidRequest                 INVALID_ARGUMENT   names the field
    │   ├── MalformedRequest           request bytes that are not a valid message
    │   ├── RequestLimitExceeded       too many messages / prompt bytes (server.limits)
    │   └── InvalidRegistration        an edge device's Register / Heartbeat
    ├── TemplateError                  INVALID_ARGUMENT  a template that cannot be published
    ├── Unauthenticated                UNAUTHENTICATED
    │   └── MalformedKey               not an hr_<id>_<secret> key (never quotes it)
    ├── PermissionDenied               PERMISSION_DENIED
    ├── ResourceExhausted              RESOURCE_EXHAUSTED  waiting cures it: retryable
    │   ├── StreamLimitExceeded        streams per connection / per tenant (server.limits)
    │   ├── RateLimited                a rate limit (controls.rate_limits); RetryInfo and
    │   │                              retry-after: when the same request would pass
    │   └── BudgetExceeded             a spend budget (controls.budgets) cannot hold the
    │                                  request's estimated cost: names the budget, what is
    │                                  left, when it resets; reason BUDGET_EXHAUSTED
    ├── OutOfRange                     OUT_OF_RANGE  the request is too big: never retryable
    │   ├── NoWindowFits               no context window big enough (names the largest);
    │   │                              reason PROMPT_TOO_LARGE
    │   ├── OverRateLimit              one request above a rate limit's burst
    │   │                              (controls.rate_limits); reason REQUEST_OVER_RATE_LIMIT
    │   └── OverBudget                 one request's estimated cost above a budget's whole
    │                                  limit (controls.budgets); reason REQUEST_OVER_BUDGET
    ├── NoTierAllowed                  FAILED_PRECONDITION  no tier may take this data class
    ├── CostCapTooLow                  FAILED_PRECONDITION  max_cost_usd below every
    │                                  candidate's estimate; reason COST_CAP
    ├── PiiFound                       FAILED_PRECONDITION  PII in a prompt bound for hosted
    │   │                              tiers (controls.pii): names the kinds found, never
    │   │                              the text; reason PII_FOUND
    │   ├── PiiRefused                 the tenant's PII guard refuses such prompts (refuse)
    │   ├── PiiNoPrivateBackend        kept off hosted tiers (route), and no private backend
    │   │                              can take it: the policy's own error's status and reason
    │   └── PiiWithheld                a hosted backend's copy of a session prompt holds PII
    │                                  (route): dispatch skips that backend (never reaches
    │                                  a caller)
    ├── NoCandidate                    UNAVAILABLE       all filtered out (health, capacity...)
    ├── AllCandidatesFailed            UNAVAILABLE       lists each attempt and why
    ├── StreamInterrupted              UNAVAILABLE       failure after the first token
    ├── DeadlineExceeded               DEADLINE_EXCEEDED
    ├── Cancelled                      CANCELLED
    ├── NotFound                       NOT_FOUND
    │   └── SessionNotFound            unknown, deleted, expired or another tenant's
    ├── AlreadyExists                  ALREADY_EXISTS    (a session id taken)
    ├── StoreUnavailable               UNAVAILABLE       a state store, named
    │   └── LedgerBacklog              the cost ledger's buffer is full (its store is slow
    │                                  or down): new requests wait, no record is dropped
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

# Base of reference errors (env:VAR, secrets); router.config.refs.ConfigRefError is both.
from hybrid_router.refs import RefError as RefError


class RouterError(Exception):
    """Base of every error the router raises; ``message`` is what a caller sees."""

    grpc_code: str = "INTERNAL"
    #: ``google.rpc.ErrorInfo`` reason sent with the status ("": none), e.g. COST_CAP.
    error_reason: str = ""
    #: ``google.rpc.ErrorInfo`` metadata (with ``error_reason``).
    error_metadata: Mapping[str, str] = MappingProxyType({})
    #: Seconds after which the same request may pass (``google.rpc.RetryInfo`` and the
    #: ``retry-after`` trailing metadata); None: nothing said.
    retry_after_s: float | None = None

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


class MalformedRequest(InvalidRequest):
    """Request bytes that are not a valid message of the RPC (or a stream message that is
    not): INVALID_ARGUMENT with a one-line reason (router/server/interceptors.py)."""

    def __init__(self, reason: str) -> None:
        super().__init__("", reason)


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


class StreamLimitExceeded(ResourceExhausted):
    """RESOURCE_EXHAUSTED; ``limit`` is ``max_streams_per_connection`` or
    ``max_streams_per_tenant``."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


class RateLimited(ResourceExhausted):
    """A rate limit (``controls.rate_limits``) refuses the request for now; it would pass
    after ``retry_after_s`` seconds. ``limit`` names the config key that set it."""

    error_reason = "RATE_LIMITED"

    def __init__(self, limit: str, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after_s = max(0.0, retry_after_s)
        self.error_metadata = MappingProxyType(
            {"limit": limit, "retry_after_s": f"{self.retry_after_s:.3f}"}
        )


class BudgetExceeded(ResourceExhausted):
    """A spend budget (``controls.budgets``, router/controls/budgets.py) cannot hold the
    request's estimated cost now. Names the budget, what is left and when it resets;
    ``retry_after_s`` is the wait until the reset, or a short wait when only requests in
    flight hold the rest (their reservations settle at their actual cost)."""

    error_reason = "BUDGET_EXHAUSTED"

    def __init__(
        self,
        budget: str,
        message: str,
        *,
        limit_usd: float,
        left_usd: float,
        resets_at: str,
        retry_after_s: float,
    ) -> None:
        super().__init__(message)
        self.budget = budget
        self.limit_usd = limit_usd
        self.left_usd = left_usd
        #: When the budget resets: ISO 8601, UTC.
        self.resets_at = resets_at
        self.retry_after_s = max(0.0, retry_after_s)
        self.error_metadata = MappingProxyType(
            {
                "budget": budget,
                "limit_usd": f"{limit_usd:.6f}",
                "left_usd": f"{left_usd:.6f}",
                "resets_at": resets_at,
                "retry_after_s": f"{self.retry_after_s:.3f}",
            }
        )


class OutOfRange(RouterError):
    """The request is larger than something that will not change by waiting: never
    retryable as it is."""

    grpc_code = "OUT_OF_RANGE"


class NoWindowFits(OutOfRange):
    error_reason = "PROMPT_TOO_LARGE"

    def __init__(self, needed_tokens: int, largest_window: int, largest_backend: str) -> None:
        super().__init__(
            f"request needs {needed_tokens} tokens (prompt + max_output_tokens) but the largest "
            f"context window among the backends this request may use is {largest_window} "
            f"tokens ({largest_backend}); shorten the prompt or lower max_output_tokens"
        )
        self.needed_tokens = needed_tokens
        self.largest_window = largest_window
        self.error_metadata = MappingProxyType(
            {
                "needed_tokens": str(needed_tokens),
                "largest_window": str(largest_window),
                "backend": largest_backend,
            }
        )


class OverRateLimit(OutOfRange):
    """One request needs more than a rate limit's burst holds (``controls.rate_limits``):
    no wait lets it through. ``limit`` names the config key."""

    error_reason = "REQUEST_OVER_RATE_LIMIT"

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.error_metadata = MappingProxyType({"limit": limit})


class OverBudget(OutOfRange):
    """One request's estimated cost is above a spend budget's whole limit
    (``controls.budgets``): no reset lets it through as it is (a smaller
    ``max_output_tokens``, or a cheaper tier, would)."""

    error_reason = "REQUEST_OVER_BUDGET"

    def __init__(self, budget: str, message: str, *, limit_usd: float) -> None:
        super().__init__(message)
        self.budget = budget
        self.limit_usd = limit_usd
        self.error_metadata = MappingProxyType({"budget": budget, "limit_usd": f"{limit_usd:.6f}"})


class NoTierAllowed(RouterError):
    grpc_code = "FAILED_PRECONDITION"


class CostCapTooLow(RouterError):
    """The request's ``max_cost_usd`` is below every candidate's estimated cost: a cap the
    caller set, which waiting does not change."""

    grpc_code = "FAILED_PRECONDITION"
    error_reason = "COST_CAP"

    def __init__(self, message: str, *, cap_usd: float, cheapest_usd: float) -> None:
        super().__init__(message)
        self.cap_usd = cap_usd
        self.cheapest_usd = cheapest_usd
        self.error_metadata = MappingProxyType(
            {"max_cost_usd": f"{cap_usd:.6f}", "cheapest_usd": f"{cheapest_usd:.6f}"}
        )


class PiiFound(RouterError):
    """A prompt bound for a hosted backend holds PII the tenant's guard acts on
    (``controls.pii``, router/controls/pii.py). The message names the kinds found (and
    where: the prompt, or a session's history), never the text; so do ``kinds`` and the
    ``kinds`` ErrorInfo metadata. Changing the prompt cures it, waiting does not."""

    grpc_code = "FAILED_PRECONDITION"
    error_reason = "PII_FOUND"

    def __init__(self, message: str, kinds: Sequence[str]) -> None:
        super().__init__(message)
        self.kinds = tuple(sorted(set(kinds)))
        self.error_metadata = MappingProxyType({"kinds": ",".join(self.kinds)})


class PiiRefused(PiiFound):
    """The tenant's guard refuses prompts with PII (action ``refuse``)."""


class PiiNoPrivateBackend(PiiFound):
    """The guard kept the prompt off hosted tiers (action ``route``) and the policy found
    no private backend that can take it: ``cause`` is the policy's error, whose status,
    reason and retry delay this one keeps (a busy private tier is still worth a retry)."""

    def __init__(self, message: str, kinds: Sequence[str], cause: RouterError) -> None:
        super().__init__(message, kinds)
        self.cause = cause
        self.grpc_code = cause.grpc_code
        self.error_reason = cause.error_reason or PiiFound.error_reason
        self.retry_after_s = cause.retry_after_s
        self.error_metadata = MappingProxyType(
            {**cause.error_metadata, "kinds": ",".join(self.kinds)}
        )


class PiiWithheld(PiiFound):
    """A hosted backend's copy of a session request (its fitted history) holds PII and the
    tenant's guard routes such prompts away: dispatch records the attempt and moves on
    to the next candidate. Never reaches a caller."""


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


class LedgerBacklog(StoreUnavailable):
    """The cost ledger's in-memory buffer is full because its store is slow or down
    (router/controls/ledger.py): new requests are refused rather than records dropped;
    ``retry_after_s`` suggests when to try again."""

    error_reason = "LEDGER_BACKLOG"

    def __init__(self, store: str, waiting: int, problem: str, retry_after_s: float) -> None:
        super().__init__(
            store,
            f"{waiting} usage records are waiting to be written ({problem}); new requests "
            "are refused until they are, so that no record is lost",
        )
        self.waiting = waiting
        self.retry_after_s = max(0.0, retry_after_s)


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
