"""The one seam every backend adapter implements.

An adapter streams a request (``stream``) and may report a load signal that the
backend measures itself (``poll_load``). Adapters convert their dependency's errors
into :class:`router.errors.BackendError` with an :class:`~router.errors.ErrorClass`
at the boundary; grpc, httpx and botocore errors never leak past an adapter.

Cancellation: dispatch consumes ``stream`` inside a task; cancelling that task or
calling ``aclose()`` on the iterator must cancel the underlying call (gRPC call
cancel, HTTP response close) so the backend stops generating. When the caller goes
away the server first sets ``BackendCall.stop`` (router.types.StreamStop): an adapter
whose read must not be interrupted by a task cancel (gRPC) watches it and cancels its
call, and its pending read ends the stream.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator

from router.types import BackendCall, BackendSpec, Chunk, LoadMark


class Backend(abc.ABC):
    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @abc.abstractmethod
    def stream(self, call: BackendCall) -> AsyncIterator[Chunk]:
        """Yield chunks of the answer; the last one has ``done=True`` and usage if known.

        Raises BackendError (with its ErrorClass) on failure.
        """

    async def poll_load(self) -> int | None:
        """Load the backend reports itself (queued + running, deployment-wide).

        ``None`` when the backend has no such signal; the router then relies on its own
        in-flight count. Raise BackendError when the backend does not answer: the registry
        marks it unhealthy until the next good probe. Called periodically by the registry,
        never on the request path.
        """
        return None

    def prefill_rate(self) -> float | None:
        """The prompt reading rate the backend reported at its last ``poll_load``, prompt
        tokens/s; None when it reports none. The registry hands it to the backend's stats
        after each good poll (its TTFT estimates add each prompt's prefill at it)."""
        return None

    def load_mark(self, polled: LoadMark) -> LoadMark:
        """When the figure ``poll_load`` just returned was taken, as the backend's stats'
        ``load_mark()``: ``polled`` holds the closes counted before the poll and the opens
        counted after it, right for a figure measured while the poll was out. An adapter
        whose figure is older (a device's last heartbeat) returns the mark of when it
        first saw that figure.
        """
        return polled

    async def start(self) -> None:
        """Open connections. Called once when the backend joins the registry."""

    async def close(self) -> None:
        """Release connections. Called once when the backend leaves the registry."""
