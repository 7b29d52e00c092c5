"""``ModelServer``: the Serve deployment behind the model application.

Serve's gRPC proxy calls ``Generate`` / ``Info`` by the method names of
``hybrid_router.v1.ModelService`` with the request message and a ``grpc_context``.
``Generate`` is an async generator: Serve streams each yielded event to the caller as it
is produced. Errors end the call with a status set on ``grpc_context`` (the proxy keeps
a status a replica sets before raising):

===============================  ==================  ==================================
what                             status              message
===============================  ==================  ==================================
bad field (role, model, ...)     INVALID_ARGUMENT    names the field (``messages[0].role:
                                                     ...``)
engine ``invalid``               INVALID_ARGUMENT    names the field
engine ``too_large``             OUT_OF_RANGE        ``too_large: ...`` (router: TOO_LARGE)
engine ``unavailable``           UNAVAILABLE         the engine's reason
anything else                    INTERNAL            generic; traceback in the replica log
===============================  ==================  ==================================

A client that cancels (or whose deadline passes) raises ``CancelledError`` inside
``Generate``; leaving the ``aclosing`` block closes the engine's stream, which stops
decoding. Each replica reports its load to the load board (``serving.ray_app.load``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from hybrid_router.v1 import model_service_pb2

from serving.engines import create_engine
from serving.engines.base import EngineError
from serving.model_server import (
    BadRequest,
    ModelServiceServicer,
    event_for,
    status_for,
    to_engine_request,
)
from serving.ray_app.load import LoadReporter, ReplicaLoad
from serving.ray_app.settings import (
    LOAD_DEPLOYMENT,
    ModelAppArgs,
    load_app_name,
)

logger = logging.getLogger(__name__)


class CallFailed(Exception):
    """Ends a call with the status already set on its grpc_context."""


def _fail(grpc_context: Any, code: grpc.StatusCode, message: str) -> CallFailed:
    if grpc_context is not None:
        grpc_context.set_code(code)
        grpc_context.set_details(message)
    return CallFailed(f"{code.name}: {message}")


class ModelServer:
    """One replica: an engine, ModelService methods, a load reporter."""

    async def __init__(self, args: dict[str, Any] | ModelAppArgs) -> None:  # type: ignore[misc]
        from ray import serve

        self._args = args if isinstance(args, ModelAppArgs) else ModelAppArgs.model_validate(args)
        context = serve.get_replica_context()
        self._app_name = context.app_name
        self._replica_id = f"{context.app_name}#{context.replica_id.unique_id}"
        self._engine = create_engine(self._args.engine, **self._args.engine_kwargs())
        await self._engine.start()
        # Info of one replica reuses the plain server's servicer (same fields).
        self._servicer = ModelServiceServicer(self._engine, self._replica_id)
        self._reporter = LoadReporter(
            self._sample,
            self._push_factory(),
            min_interval_s=self._args.report_min_interval_s,
            heartbeat_s=self._args.report_heartbeat_s,
        )
        self._reporter.start()
        info = self._engine.info
        logger.info(
            "replica %s serving %s (%s), context window %d",
            self._replica_id,
            info.model,
            info.engine,
            info.context_window,
        )

    def _push_factory(self) -> Any:
        load_app = self._args.load_application or load_app_name(self._app_name)
        if load_app == "-":

            async def no_push(load: ReplicaLoad) -> None:
                return None

            return no_push
        from ray import serve

        handle: Any = None

        async def push(load: ReplicaLoad) -> None:
            nonlocal handle
            if handle is None:
                handle = serve.get_deployment_handle(LOAD_DEPLOYMENT, app_name=load_app)
            await handle.report.remote(load)

        self._forget = lambda: handle.forget.remote(self._replica_id) if handle else None
        return push

    def _sample(self) -> ReplicaLoad:
        info = self._engine.info
        load = self._engine.load()
        return ReplicaLoad(
            replica_id=self._replica_id,
            decoding=load.in_flight,
            capacity=info.max_concurrency,
            decode_tokens_per_s=load.decode_tokens_per_s,
            prefill_tokens_per_s=load.prefill_tokens_per_s,
            model=info.model,
            version=info.version,
            context_window=info.context_window,
            engine=info.engine,
            model_family=info.model_family,
            capabilities=info.capabilities,
        )

    # --- ModelService ----------------------------------------------------------------

    async def Generate(
        self, request: model_service_pb2.ModelGenerateRequest, grpc_context: Any = None
    ) -> AsyncIterator[model_service_pb2.ModelGenerateEvent]:
        info = self._engine.info
        try:
            engine_request = to_engine_request(request)
            if request.model and request.model != info.model:
                raise BadRequest(f"model: this server holds {info.model!r}, not {request.model!r}")
        except BadRequest as exc:
            raise _fail(grpc_context, grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        self._reporter.begin()
        outcome = "failed"
        failure: tuple[grpc.StatusCode, str] | None = None
        try:
            async with contextlib.aclosing(self._engine.generate(engine_request)) as chunks:
                async for chunk in chunks:
                    yield event_for(chunk)
            outcome = "completed"
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            logger.info("generate %s cancelled by the client", engine_request.request_id)
            raise
        except EngineError as exc:
            failure = status_for(exc)
            logger.info(
                "generate %s failed: %s (%s)", engine_request.request_id, exc, exc.error_class
            )
        except Exception:
            logger.exception("generate %s: unexpected engine error", engine_request.request_id)
            failure = (grpc.StatusCode.INTERNAL, "internal error in the model server")
        finally:
            self._reporter.end(outcome)
        if failure is not None:
            raise _fail(grpc_context, *failure)

    async def Info(
        self, request: model_service_pb2.InfoRequest, grpc_context: Any = None
    ) -> model_service_pb2.InfoResponse:
        response: model_service_pb2.InfoResponse = await self._servicer.Info(request, grpc_context)
        # Requests waiting for the engine inside this replica, as the load board counts them.
        response.queue_depth = max(0, self._reporter.ongoing - response.in_flight)
        return response

    # --- Serve lifecycle ---------------------------------------------------------------

    async def check_health(self) -> None:
        """Serve calls this periodically; raising restarts the replica."""
        try:
            self._engine.load()
        except EngineError as exc:
            raise RuntimeError(f"engine unhealthy: {exc}") from exc

    async def __del__(self) -> None:
        """Serve calls this when the replica stops: say goodbye, release the model."""
        reporter = getattr(self, "_reporter", None)
        if reporter is not None:
            await reporter.close()
        forget = getattr(self, "_forget", None)
        if forget is not None:
            with contextlib.suppress(Exception):
                response = forget()
                if response is not None:
                    await asyncio.wait_for(response, 2.0)
        engine = getattr(self, "_engine", None)
        if engine is not None:
            await engine.close()
