"""Requests from the link, run on the engine in use; their events go back tagged with the
request id.

Each request is a task holding a lease on the engine (``greengrass.slot``). Its tools,
tool choice and response format reach the engine with it (``serving.engines.wire``), and
tool-call fragments go back as ``tool_call`` events. A
``CancelRequest`` cancels the task, which closes the engine's stream (decoding stops).
Engine errors go back as ``RequestError``:

===============  =============  =================================================
EngineError      error_class    router
===============  =============  =================================================
``invalid``      ``fatal``      stops, INVALID_ARGUMENT
``too_large``    ``too_large``  tries a backend with a larger window
``unavailable``  ``retryable``  fails over (before the first token)
anything else    ``retryable``  fails over; the traceback is logged here
===============  =============  =================================================

While draining, new requests are refused (``retryable``: the router fails over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from hybrid_router.v1 import edge_link_pb2 as epb
from hybrid_router.v1 import model_service_pb2 as mpb

from greengrass.slot import EngineSlot
from serving.engines.base import EngineChunk, EngineError
from serving.engines.wire import event_for, to_engine_request

log = logging.getLogger(__name__)

Send = Callable[[epb.DeviceMessage], None]

_CLASSES = {"invalid": "fatal", "too_large": "too_large", "unavailable": "retryable"}


def event_message(rid: str, chunk: EngineChunk) -> epb.DeviceMessage:
    return epb.DeviceMessage(event=epb.RequestEvent(request_id=rid, event=event_for(chunk)))


def error_message(rid: str, error_class: str, message: str) -> epb.DeviceMessage:
    return epb.DeviceMessage(
        error=epb.RequestError(request_id=rid, error_class=error_class, message=message)
    )


class RequestRunner:
    def __init__(self, slot: EngineSlot) -> None:
        self._slot = slot
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.draining = False
        self.served = 0
        self.failed = 0

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def start(self, req: mpb.ModelGenerateRequest, send: Send) -> None:
        rid = req.request_id
        if self.draining:
            send(error_message(rid, "retryable", "device is draining (shutting down)"))
            return
        if not rid or rid in self._tasks:
            send(error_message(rid, "fatal", "request_id: must be set and unique on the link"))
            return
        task = asyncio.get_running_loop().create_task(self._run(req, send))
        self._tasks[rid] = task
        task.add_done_callback(lambda _t: self._tasks.pop(rid, None))

    def cancel(self, rid: str) -> None:
        task = self._tasks.get(rid)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait for the requests in flight to finish; False when some are still running."""
        tasks = list(self._tasks.values())
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        return not pending

    async def _run(self, req: mpb.ModelGenerateRequest, send: Send) -> None:
        rid = req.request_id
        try:
            engine, model = self._slot.acquire()
        except EngineError as exc:
            send(error_message(rid, "retryable", str(exc)))
            return
        # The engine's outcome for the post-swap watchdog: None unless the engine ran it
        # (a wrong model, a bad request or a cancellation says nothing about the engine).
        ok: bool | None = None
        generating = False
        try:
            if req.model and req.model != model.name:
                raise EngineError(
                    f"model: this device serves {model.name!r}, not {req.model!r}", "unavailable"
                )
            stream = engine.generate(to_engine_request(req))
            generating = True
            async with contextlib.aclosing(stream) as chunks:
                async for chunk in chunks:
                    send(event_message(rid, chunk))
            self.served += 1
            ok = True
        except EngineError as exc:
            self.failed += 1
            if generating and exc.error_class not in ("invalid", "too_large"):
                ok = False
            send(error_message(rid, _CLASSES.get(exc.error_class, "retryable"), str(exc)))
        except asyncio.CancelledError:
            raise  # the router cancelled it, or the link is gone
        except Exception:
            self.failed += 1
            ok = False if generating else None
            log.exception("request %s: unexpected engine error", rid)
            send(error_message(rid, "retryable", "internal error on the device"))
        finally:
            self._slot.release(engine, ok)
