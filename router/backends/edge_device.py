"""The ``edge`` adapter: a device whose EdgeLink this replica holds. Requests go down the
link (``router.backends.device_link``) and the device's events come back on it. A device
linked to another replica is the ``edge-relay`` adapter (``router.backends.edge_relay``).

Both adapters read the device's live state from its entry (:class:`DeviceView`:
``router.edge.devices.DeviceEntry``, kept by the hub), so a device that reconnects, drains
or goes offline is seen at once without replacing the backend. ``poll_load`` raises while
the device is not online or is draining: the registry then marks the backend unhealthy,
which is how the policy stops choosing it.

Errors (all :class:`~router.errors.BackendError`):

====================================  ====================================================
link closed / device offline          RETRYABLE (before the first token: failover; after
                                      it: the stream ends incomplete, UNAVAILABLE)
RequestError ``retryable``            RETRYABLE
RequestError ``too_large``            TOO_LARGE
RequestError ``fatal``                FATAL (INVALID_ARGUMENT)
no event for ``edge.backend.timeout_s``  RETRYABLE (the device is told to cancel)
stream ends without ``done``          RETRYABLE
====================================  ====================================================
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from router.backends.base import Backend
from router.backends.device_link import DeviceLink, link_events
from router.backends.model_service import _FINISH, to_proto
from router.errors import BackendError, DeviceError, DeviceRequestError, ErrorClass
from router.tools.calls import tool_call_event
from router.types import BackendCall, BackendSpec, Chunk, FinishReason, LoadMark

_CLASSES = {
    "retryable": ErrorClass.RETRYABLE,
    "too_large": ErrorClass.TOO_LARGE,
    "fatal": ErrorClass.FATAL,
}


class DeviceLoad(Protocol):
    """What the adapters read of a device's state (``router.edge.devices.DeviceState``)."""

    @property
    def device_id(self) -> str: ...

    @property
    def load(self) -> int: ...

    @property
    def last_seen_ms(self) -> int:
        """When the heartbeat that carried ``load`` arrived (unix ms, at its holder)."""
        ...

    @property
    def prefill_tokens_per_s(self) -> float:
        """The device's reported prompt reading rate (0.0: not reported)."""
        ...


class DeviceView(Protocol):
    """A device as the hub keeps it (``router.edge.devices.DeviceEntry``), read-only here."""

    @property
    def state(self) -> DeviceLoad: ...

    @property
    def link(self) -> DeviceLink | None: ...

    def availability(self) -> str:
        """ "" when the device can take a request now, else why not."""
        ...


def device_error(backend: str, exc: DeviceRequestError) -> BackendError:
    cls = _CLASSES.get(exc.error_class, ErrorClass.RETRYABLE)
    code = "INVALID_ARGUMENT" if cls is ErrorClass.FATAL else None
    return BackendError(backend, f"device: {exc.message}", cls, grpc_code=code)


class HeartbeatLoad(Backend):
    """A device's load: the figure of its last heartbeat (or directory entry), and that
    figure's mark, taken when this adapter first saw it (``Backend.load_mark``): the
    registry polls it every ``load_poll_interval_s``, far more often than a device beats,
    and a stream that ended since the beat must not come back with each poll."""

    entry: DeviceView
    _seen: tuple[tuple[int, int], LoadMark] | None = None

    async def poll_load(self) -> int | None:
        # The heartbeat's figure (the directory's, for a device on another replica): no
        # call to the device or to the replica it is linked to.
        why = self.entry.availability()
        if why:
            raise BackendError(self.name, why)
        return self.entry.state.load

    def prefill_rate(self) -> float | None:
        return self.entry.state.prefill_tokens_per_s or None

    def load_mark(self, polled: LoadMark) -> LoadMark:
        # A directory read makes a new state of the same heartbeat: its time tells them apart.
        state = self.entry.state
        figure = (state.last_seen_ms, state.load)
        seen = self._seen
        if seen is None or seen[0] != figure:
            seen = self._seen = (figure, polled)
        return seen[1]


class EdgeBackend(HeartbeatLoad):
    """A device linked to this replica."""

    def __init__(
        self,
        spec: BackendSpec,
        entry: DeviceView,
        *,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(spec)
        self.entry = entry
        self._timeout_s = timeout_s
        self._clock = clock

    async def stream(self, call: BackendCall) -> AsyncIterator[Chunk]:
        entry = self.entry
        why = entry.availability()
        link = entry.link
        if why or link is None or link.closed:
            raise BackendError(self.name, why or "device is not linked to this replica")
        silence = self._timeout_s
        if call.deadline is not None:
            left = call.deadline - self._clock()
            if left <= 0:
                raise BackendError(self.name, "deadline exceeded", ErrorClass.RETRYABLE)
            silence = min(silence, left)
        request = to_proto(call.request)
        request.model = self.spec.model
        final: Chunk | None = None
        try:
            async for event in link_events(link, request, silence_s=silence):
                kind = event.WhichOneof("event")
                if kind == "delta":
                    if event.delta.text:
                        yield Chunk(text=event.delta.text, tokens=event.delta.tokens or 1)
                elif kind == "tool_call":
                    yield Chunk(tool_calls=(tool_call_event(event.tool_call),))
                else:
                    d = event.done
                    final = Chunk(
                        done=True,
                        input_tokens=d.input_tokens,
                        output_tokens=d.output_tokens,
                        finish_reason=_FINISH.get(d.finish_reason, FinishReason.STOP),
                        queue_ms=d.queue_ms,
                    )
        except DeviceRequestError as exc:
            raise device_error(self.name, exc) from None
        except DeviceError as exc:  # LinkClosed, SilenceTimeout
            raise BackendError(self.name, exc.message) from None
        if final is None:
            raise BackendError(self.name, "stream ended early (no done event)")
        yield final
