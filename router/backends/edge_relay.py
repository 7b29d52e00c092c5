"""The ``edge-relay`` adapter: a device linked to another replica, reached through that
replica's relay port (``router.server.relay``), which speaks the ModelService protocol and
sends the request down its link. So this is a :class:`ModelServiceBackend` that names the
device (and the relay token) in metadata; its errors are that adapter's.

It reads the device's live state from its entry (:class:`~router.backends.edge_device.
DeviceView`, kept by the hub from the shared directory): ``stream`` and ``poll_load`` fail
with RETRYABLE while the device is offline or draining, without calling the other replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Protocol

import grpc.aio
from hybrid_router.v1 import model_service_pb2_grpc

from router.backends.edge_device import DeviceView, HeartbeatLoad
from router.backends.model_service import ModelServiceBackend
from router.errors import BackendError
from router.types import BackendCall, BackendSpec, Chunk

#: gRPC metadata naming the device on a relay call, and carrying the relay token.
DEVICE_METADATA = "x-edge-device"
TOKEN_METADATA = "x-edge-relay-token"

#: How long a channel replaced after a certificate rotation lets its open streams finish.
RETIRE_GRACE_S = 600.0


class RelayChannels(Protocol):
    """Makes mTLS channels to relay ports (``router.server.relay.RelayTls``)."""

    def channel(self, endpoint: str) -> tuple[int, grpc.aio.Channel]:
        """A new channel built from the credential files as they are now, and their
        generation."""

    def generation(self) -> int:
        """The generation of the credential files (changes when they are rotated)."""


class RelayBackend(HeartbeatLoad, ModelServiceBackend):
    """A device linked to another replica, reached through that replica's relay port.

    With ``channels`` (relay mTLS), the channel is made from the credential files as they
    are when it is made; when the files change (rotation), the next request gets a new
    channel and the old one closes once its open streams end (up to RETIRE_GRACE_S)."""

    def __init__(
        self,
        spec: BackendSpec,
        entry: DeviceView,
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


async def _fail(exc: BackendError) -> AsyncIterator[Chunk]:
    raise exc
    yield  # pragma: no cover - makes this an async generator
