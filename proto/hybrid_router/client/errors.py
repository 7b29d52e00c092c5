"""The client's two errors: a bad option (:class:`OptionError`, before any call) and a
failed call (:class:`RouterCallError`, the one type every ``grpc.RpcError`` becomes).

``grpc.RpcError`` never leaves this package: :func:`call_error` maps it once, for the
sync and the async client alike, with the status name, the router's message, the
request id (given, or the ``x-request-id`` the router sent in its headers) and a
server's pushback (``retry-after`` seconds or gRPC's ``grpc-retry-pushback-ms``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from hybrid_router.client.completion import Completion

__all__ = ["OptionError", "RouterCallError", "call_error"]

#: The metadata key that carries the request id, both ways.
REQUEST_ID_METADATA = "x-request-id"


class OptionError(ValueError):
    """A request or connection option is wrong; ``option`` names it (``pin_tiers``,
    ``ca_bundle``, ``messages[0].role``...), ``problem`` says what is wrong; the text is
    ``"<option>: <problem>"`` unless ``text`` gives it whole."""

    def __init__(self, option: str, problem: str, *, text: str | None = None) -> None:
        super().__init__(text or f"{option}: {problem}")
        self.option = option
        self.problem = problem


class RouterCallError(Exception):
    """A router call failed. ``code`` is the gRPC status name (``"UNAVAILABLE"``...).

    ``request_id`` is the request's id when known; ``retry_after`` the seconds the server
    asked the caller to wait (None when it said nothing); ``events`` counts the stream
    events received before the failure (0 for unary calls); ``attempts`` the calls made;
    ``partial`` holds what a buffered ``complete()`` had gathered.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        request_id: str = "",
        retry_after: float | None = None,
        events: int = 0,
        attempts: int = 1,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after
        self.events = events
        self.attempts = attempts
        self.partial: Completion | None = None

    @property
    def status(self) -> grpc.StatusCode:
        """``code`` as a ``grpc.StatusCode`` (UNKNOWN for a name gRPC does not have)."""
        return getattr(grpc.StatusCode, self.code, grpc.StatusCode.UNKNOWN)


def _metadata(exc: Any, which: str) -> Iterable[tuple[str, Any]]:
    method = getattr(exc, which, None)
    if not callable(method):
        return ()
    try:
        return tuple(method() or ())
    except Exception:  # noqa: BLE001 - a call that failed before its headers has none
        return ()


def request_id_from(metadata: Iterable[tuple[str, Any]]) -> str:
    """The ``x-request-id`` in a call's metadata, else ""."""
    for key, value in metadata:
        if key == REQUEST_ID_METADATA and isinstance(value, str):
            return value
    return ""


def _retry_after(metadata: Iterable[tuple[str, Any]]) -> float | None:
    for key, value in metadata:
        try:
            if key == "retry-after":
                return max(float(value), 0.0)
            if key == "grpc-retry-pushback-ms":
                return max(float(value), 0.0) / 1000.0
        except (TypeError, ValueError):
            continue
    return None


def call_error(
    exc: grpc.RpcError, *, request_id: str = "", events: int = 0, attempts: int = 1
) -> RouterCallError:
    """The :class:`RouterCallError` for a failed sync or ``grpc.aio`` call."""
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = exc.details() if callable(getattr(exc, "details", None)) else None
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return RouterCallError(
        name,
        details or name.lower(),
        request_id=request_id or request_id_from(_metadata(exc, "initial_metadata")),
        retry_after=_retry_after(_metadata(exc, "trailing_metadata")),
        events=events,
        attempts=attempts,
    )
