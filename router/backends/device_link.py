"""One device's EdgeLink stream as the router holds it: an outbox of RouterMessages and the
requests in flight on the link, each with its own queue of device events.

The EdgeLink servicer (``router.server.edge_link``) writes the outbox to the stream and
feeds what the device sends into :meth:`DeviceLink.deliver`. :func:`link_events` is how a
request travels over the link, as a channel is for the other adapters: the local edge
backend (``router.backends.edge_device``) and the relay servicer (``router.server.relay``)
both use it.

When the link closes (device gone, heartbeat timeout, router draining) every open
request gets :class:`~router.errors.LinkClosed`; callers fail over before the first token
or end the stream with a clear status after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeAlias

from hybrid_router.v1 import edge_link_pb2 as epb
from hybrid_router.v1 import model_service_pb2 as mpb

# A request's errors over a link are the tree's (router.errors.DeviceError); importable
# from here too.
from router.errors import DeviceRequestError, LinkClosed, SilenceTimeout

log = logging.getLogger(__name__)


_Item: TypeAlias = mpb.ModelGenerateEvent | DeviceRequestError | LinkClosed


class DeviceLink:
    """The router's end of one device's link. Create on the running loop."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._outbox: asyncio.Queue[epb.RouterMessage | None] = asyncio.Queue()
        self._streams: dict[str, asyncio.Queue[_Item]] = {}
        self._seq = itertools.count(1)
        self.closed_reason: str | None = None

    @property
    def closed(self) -> bool:
        return self.closed_reason is not None

    @property
    def open_requests(self) -> int:
        return len(self._streams)

    def send(self, msg: epb.RouterMessage) -> None:
        if self.closed_reason is not None:
            raise LinkClosed(self.closed_reason)
        self._outbox.put_nowait(msg)

    async def outgoing(self) -> AsyncIterator[epb.RouterMessage]:
        """Messages to write to the device, until the link closes."""
        while True:
            msg = await self._outbox.get()
            if msg is None:
                return
            yield msg

    def open(self, request: mpb.ModelGenerateRequest) -> tuple[str, asyncio.Queue[_Item]]:
        """Send a request down the link; its id on the link and the queue of its events."""
        rid = request.request_id or "req"
        if rid in self._streams:
            rid = f"{rid}~{next(self._seq)}"
        out = mpb.ModelGenerateRequest()
        out.CopyFrom(request)
        out.request_id = rid
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.send(epb.RouterMessage(generate=out))
        self._streams[rid] = queue
        return rid, queue

    def release(self, rid: str, *, cancel: bool) -> None:
        """Forget a request; tell the device to stop it when it did not finish."""
        if self._streams.pop(rid, None) is not None and cancel and not self.closed:
            self._outbox.put_nowait(epb.RouterMessage(cancel=epb.CancelRequest(request_id=rid)))

    def deliver(self, msg: epb.DeviceMessage) -> None:
        """A RequestEvent or RequestError from the device (unknown ids are dropped: the
        request was cancelled or timed out here)."""
        kind = msg.WhichOneof("message")
        if kind == "event":
            queue = self._streams.get(msg.event.request_id)
            if queue is not None:
                queue.put_nowait(msg.event.event)
        elif kind == "error":
            err = msg.error
            queue = self._streams.get(err.request_id)
            if queue is not None:
                queue.put_nowait(DeviceRequestError(err.error_class, err.message))

    def close(self, reason: str) -> None:
        """End the link: open requests fail with LinkClosed, the writer stops."""
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        for queue in self._streams.values():
            queue.put_nowait(LinkClosed(reason))
        self._outbox.put_nowait(None)
        log.info("edge link to %s closed: %s", self.device_id, reason)


async def link_events(
    link: DeviceLink, request: mpb.ModelGenerateRequest, *, silence_s: float
) -> AsyncGenerator[mpb.ModelGenerateEvent, None]:
    """The events of one request over ``link``, up to and including ``done``.

    Raises LinkClosed, DeviceRequestError or SilenceTimeout (no event for ``silence_s``).
    Closing the iterator early (caller cancelled, deadline) sends a CancelRequest.
    """
    rid, queue = link.open(request)
    finished = False
    try:
        while True:
            try:
                async with asyncio.timeout(silence_s):
                    item = await queue.get()
            except TimeoutError:
                raise SilenceTimeout(f"no event from the device for {silence_s:g} s") from None
            if isinstance(item, Exception):
                finished = True  # the device (or the link) ended it: nothing to cancel
                raise item
            if item.WhichOneof("event") == "done":
                finished = True
                yield item
                return
            yield item
    finally:
        with contextlib.suppress(Exception):
            link.release(rid, cancel=not finished)
