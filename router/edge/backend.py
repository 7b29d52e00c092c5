"""Backends for edge devices: one per device that holds a model.

- :class:`EdgeBackend` (kind ``edge``): this replica holds the device's link; requests
  go down the link and the device's events come back on it.
- :class:`RelayBackend` (kind ``edge-relay``): another replica holds the link; requests go
  to that replica's relay port (the ModelService protocol, the device named in metadata),
  which sends them down its link (``router.edge.relay``).

Both read the device's live state from its :class:`DeviceEntry` (kept by the hub), so a
device that reconnects, drains or goes offline is seen at once without replacing the
backend. ``poll_load`` raises while the device is not online or is draining: the registry
then marks the backend unhealthy, which is how the policy stops choosing it.

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

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Protocol

import grpc.aio
from hybrid_router.v1 import model_service_pb2_grpc

from router.backends.base import Backend
from router.backends.model_service import _FINISH, ModelServiceBackend, to_proto
from router.edge.devices import DeviceState
from router.edge.link import DeviceLink, link_events
from router.errors import BackendError, DeviceError, DeviceRequestError, ErrorClass
from router.types import BackendCall, BackendSpec, Chunk, FinishReason

#: gRPC metadata naming the device on a relay call, and carrying the relay token.
DEVICE_METADATA = "x-edge-device"
TOKEN_METADATA = "x-edge-relay-token"

_CLASSES = {
    "retryable": ErrorClass.RETRYABLE,
    "too_large": ErrorClass.TOO_LARGE,
    "fatal": ErrorClass.FATAL,
}


@dataclass(slots=True, eq=False)
class DeviceEntry:
    """A device known to this replica: its state, and its link when this replica holds it."""

    state: DeviceState
    link: DeviceLink | None = None
    #: Monotonic time of the last heartbeat on ``link``.
    last_heartbeat: float = 0.0
    #: Why the device is not a candidate ("" when it is).
    detail: str = ""
    backend: Backend | None = None

    def availability(self) -> str:
        """ "" when the device can take a request now, else why not."""
        if not self.state.online:
            return self.detail or "offline"
        if self.state.draining:
            return "draining: finishing its requests, takes no new one"
        return ""


def device_error(backend: str, exc: DeviceRequestError) -> BackendError:
    cls = _CLASSES.get(exc.error_class, ErrorClass.RETRYABLE)
    code = "INVALID_ARGUMENT" if cls is ErrorClass.FATAL else None
    return BackendError(backend, f"device: {exc.message}", cls, grpc_code=code)


class EdgeBackend(Backend):
    """A device linked to this replica."""

    def __init__(
        self,
        spec: BackendSpec,
        entry: DeviceEntry,
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
                if event.WhichOneof("event") == "delta":
                    if event.delta.text:
                        yield Chunk(text=event.delta.text, tokens=event.delta.tokens or 1)
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

    async def poll_load(self) -> int | None:
        why = self.entry.availability()
        if why:
            raise BackendError(self.name, why)
        return self.entry.state.load


#: How long a channel replaced after a certificate rotation lets its open streams finish.
RETIRE_GRACE_S = 600.0


class RelayChannels(Protocol):
    """Makes mTLS channels to relay ports (``router.edge.relay.RelayTls``)."""

    def channel(self, endpoint: str) -> tuple[int, grpc.aio.Channel]:
        """A new channel built from the credential files as they are now, and their
        generation."""

    def generation(self) -> int:
        """The generation of the credential files (changes when they are rotated)."""


class RelayBackend(ModelServiceBackend):
    """A device linked to another replica, reached through that replica's relay port.

    With ``channels`` (relay mTLS), the channel is made from the credential files as they
    are when it is made; when the files change (rotation), the next request gets a new
    channel and the old one closes once its open streams end (up to RETIRE_GRACE_S)."""

    def __init__(
        self,
        spec: BackendSpec,
        entry: DeviceEntry,
        *,
        token: str = "",
        channels: RelayChannels | None = None,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(spec, timeout_s=timeout_s, clock=clock)
        self.entry = entry
        meta = [(DEVICE_METADATA, entry.state.device_id)]
        if token:
            meta.append((TOKEN_METADATA, token))
        self._meta = tuple(meta)
        self._channels = channels
        self._generation = 0
        self._retiring: dict[asyncio.Task[None], grpc.aio.Channel] = {}

    def _ensure_stub(self) -> model_service_pb2_grpc.ModelServiceStub:
        channels = self._channels
        if channels is None:
            return super()._ensure_stub()
        if self._stub is not None and channels.generation() != self._generation:
            self._retire()
        if self._stub is None:
            self._generation, self._channel = channels.channel(self.spec.endpoint)
            self._stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
        return self._stub

    def _retire(self) -> None:
        old, self._channel, self._stub = self._channel, None, None
        if old is not None:
            task = asyncio.get_running_loop().create_task(old.close(grace=RETIRE_GRACE_S))
            self._retiring[task] = old
            task.add_done_callback(lambda t: self._retiring.pop(t, None))

    async def close(self) -> None:
        await super().close()
        retiring, self._retiring = self._retiring, {}
        for task in retiring:
            task.cancel()
        for task, channel in list(retiring.items()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await channel.close()

    def stream(self, call: BackendCall) -> AsyncIterator[Chunk]:
        why = self.entry.availability()
        if why:
            return _fail(BackendError(self.name, why))
        return super().stream(replace(call, metadata=call.metadata + self._meta))

    async def poll_load(self) -> int | None:
        # The directory carries the device's heartbeats: no call to the other replica.
        why = self.entry.availability()
        if why:
            raise BackendError(self.name, why)
        return self.entry.state.load


async def _fail(exc: BackendError) -> AsyncIterator[Chunk]:
    raise exc
    yield  # pragma: no cover - makes this an async generator
