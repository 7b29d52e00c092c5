"""The ModelService gRPC server (grpc.aio) over an Engine, with grpc.health.v1.

``Generate`` streams the engine's text as ``delta`` events and its tool-call fragments as
``tool_call`` events, then one ``done`` (usage, finish reason, queue time). ``Info``
reports the engine's capabilities (``chat``, ``tools``, ``json_schema``). While a write
to the client is pending, the text chunks that arrive are merged into one delta whose
``tokens`` counts them (``coalesce``, the default; the ``--no-coalesce`` flag sends one
delta per engine chunk); tool-call fragments are never merged. Engine errors end the RPC
with a status:

===============  ===================  =====================================================
EngineError      status               message
===============  ===================  =====================================================
``invalid``      INVALID_ARGUMENT     names the field: ``max_output_tokens: must be > 0``
``too_large``    OUT_OF_RANGE         starts with ``too_large:`` (``TOO_LARGE_PREFIX``);
                                      the router maps it to its TOO_LARGE error class
``unavailable``  UNAVAILABLE          the engine's reason (closed, overloaded, failed)
(other)          INTERNAL             generic; the traceback is logged
===============  ===================  =====================================================

A client that cancels (or whose deadline passes) closes the engine's stream, which stops
decoding. ``create_server`` returns a server that is bound but not started; ``drain``
marks health NOT_SERVING and stops it gracefully. Run as a program::

    python -m serving.model_server --engine scripted --port 0

prints ``READY <port>`` on stdout once serving and drains on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from hybrid_router.v1 import model_service_pb2, model_service_pb2_grpc, types_pb2

from serving.engines import ENGINE_KINDS, create_engine
from serving.engines.base import Engine, EngineChunk, EngineError
from serving.engines.wire import BadRequest, event_for, to_engine_request
from serving.malformed import MalformedRequestInterceptor

logger = logging.getLogger(__name__)

SERVICE_NAME = "hybrid_router.v1.ModelService"
TOO_LARGE_PREFIX = "too_large:"
DEFAULT_GRACE_S = 10.0

_STATUS = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "too_large": grpc.StatusCode.OUT_OF_RANGE,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}


def status_for(error: EngineError) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message for an engine error (see the module docstring)."""
    code = _STATUS.get(error.error_class, grpc.StatusCode.UNAVAILABLE)
    message = str(error)
    if error.error_class == "too_large" and not message.startswith(TOO_LARGE_PREFIX):
        message = f"{TOO_LARGE_PREFIX} {message}"
    return code, message


class _Pending:
    """Text deltas merged while a write to the client is pending."""

    __slots__ = ("parts", "tokens")

    def __init__(self, text: str, tokens: int) -> None:
        self.parts = [text]
        self.tokens = tokens

    def to_proto(self) -> model_service_pb2.ModelGenerateEvent:
        return model_service_pb2.ModelGenerateEvent(
            delta=types_pb2.TextDelta(text="".join(self.parts), tokens=self.tokens)
        )


async def relay_chunks(
    chunks: AsyncIterator[EngineChunk], context: grpc.aio.ServicerContext
) -> None:
    """Write an engine's chunks in order, merging the deltas that arrive while a write is
    pending into one message (``tokens`` says how many tokens it carries).

    A client (the router) that reads slower than the engine produces then gets fewer,
    larger deltas instead of a queue, and this server makes one write per batch instead of
    one per token; a client that keeps up gets every chunk as it comes. An engine that
    produces without awaiting (the scripted engine at full speed) is read one chunk per
    event-loop turn, so writes and the first token are never starved.
    """
    loop = asyncio.get_running_loop()
    buf: deque[_Pending | EngineChunk] = deque()
    parked: asyncio.Future[None] | None = None

    def wake() -> None:
        nonlocal parked
        fut = parked
        if fut is not None:
            parked = None
            if not fut.done():
                fut.set_result(None)

    async def produce() -> None:
        try:
            async for chunk in chunks:
                if chunk.done:
                    buf.append(chunk)
                elif chunk.tool_call is not None:  # fragments go out as they are, in order
                    buf.append(chunk)
                    wake()
                    await asyncio.sleep(0)
                    continue
                else:
                    last = buf[-1] if buf else None
                    if type(last) is _Pending:
                        last.parts.append(chunk.text)
                        last.tokens += chunk.tokens
                    else:
                        buf.append(_Pending(chunk.text, chunk.tokens))
                    wake()
                    await asyncio.sleep(0)  # one chunk per loop turn (see the docstring)
                    continue
                wake()
        finally:
            wake()

    producer = loop.create_task(produce())
    try:
        while True:
            if buf:
                item = buf.popleft()
                if type(item) is _Pending:
                    await context.write(item.to_proto())
                else:
                    await context.write(event_for(item))  # type: ignore[arg-type]
                continue
            if producer.done():
                break
            parked = loop.create_future()
            await parked
        producer.result()
    finally:
        if not producer.done():
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer


class ModelServiceServicer(model_service_pb2_grpc.ModelServiceServicer):
    """Thin: proto <-> engine records; the engine does the work.

    ``coalesce``: merge deltas while a write is pending (``relay_chunks``); off, every
    engine chunk is its own message and gRPC flow control pushes back on the engine.
    """

    def __init__(self, engine: Engine, replica_id: str = "", *, coalesce: bool = True) -> None:
        self._engine = engine
        self._replica_id = replica_id
        self._coalesce = coalesce

    async def Generate(
        self,
        request: model_service_pb2.ModelGenerateRequest,
        context: grpc.aio.ServicerContext,
    ) -> None:
        info = self._engine.info
        try:
            engine_request = to_engine_request(request)
            if request.model and request.model != info.model:
                raise BadRequest(f"model: this server holds {info.model!r}, not {request.model!r}")
        except BadRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        logger.debug(
            "generate %s: %d messages, max_output_tokens=%d",
            engine_request.request_id,
            len(engine_request.messages),
            engine_request.max_output_tokens,
        )
        failure: tuple[grpc.StatusCode, str] | None = None
        try:
            # Engines return async generators; closing one stops decoding (client cancel).
            stream = self._engine.generate(engine_request)
            async with contextlib.aclosing(stream) as chunks:
                if self._coalesce:
                    await relay_chunks(chunks, context)
                else:
                    async for chunk in chunks:
                        await context.write(event_for(chunk))
        except EngineError as exc:
            failure = status_for(exc)
            logger.info(
                "generate %s failed: %s (%s)", engine_request.request_id, exc, exc.error_class
            )
        except Exception:
            logger.exception("generate %s: unexpected engine error", engine_request.request_id)
            failure = (grpc.StatusCode.INTERNAL, "internal error in the model server")
        if failure is not None:
            await context.abort(*failure)

    async def Info(
        self, request: model_service_pb2.InfoRequest, context: grpc.aio.ServicerContext
    ) -> model_service_pb2.InfoResponse:
        info = self._engine.info
        load = self._engine.load()
        return model_service_pb2.InfoResponse(
            model=info.model,
            version=info.version,
            context_window=info.context_window,
            queue_depth=load.queue_depth,
            in_flight=load.in_flight,
            max_concurrency=info.max_concurrency,
            decode_tokens_per_s=load.decode_tokens_per_s,
            prefill_tokens_per_s=load.prefill_tokens_per_s,
            engine=info.engine,
            replica_id=self._replica_id,
            model_family=info.model_family,
            capabilities=list(info.capabilities),
        )


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def create_server(
    engine: Engine,
    address: str = "127.0.0.1:0",
    *,
    health_servicer: health.aio.HealthServicer | None = None,
    replica_id: str | None = None,
    coalesce: bool = True,
) -> tuple[grpc.aio.Server, int]:
    """A bound, not yet started server for ``engine`` and the port it bound.

    Health (``""`` and ``hybrid_router.v1.ModelService``) is SERVING; pass your own
    ``health_servicer`` to ``drain`` it later. Call ``await server.start()``.
    ``coalesce``: merge deltas while a write is pending (see the module docstring).
    """
    # No SO_REUSEPORT: a second server on a taken port must fail, not share it.
    server = grpc.aio.server(
        interceptors=[MalformedRequestInterceptor()], options=[("grpc.so_reuseport", 0)]
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServiceServicer(engine, replica_id or default_replica_id(), coalesce=coalesce),
        server,
    )
    health_servicer = health_servicer or health.aio.HealthServicer()
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc raises RuntimeError("Failed to bind ...")
        raise OSError(f"cannot bind {address}: {exc}") from exc
    if port == 0:
        raise OSError(f"cannot bind {address}")
    return server, port


async def drain(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    grace_s: float = DEFAULT_GRACE_S,
) -> None:
    """Mark every service NOT_SERVING, refuse new RPCs, let streams finish within grace_s."""
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace_s)


# -- command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.model_server",
        description=(
            "Serve one model engine over hybrid_router.v1.ModelService (gRPC) with "
            "grpc.health.v1. Prints 'READY <port>' on stdout once serving; drains on "
            "SIGTERM/SIGINT."
        ),
    )
    parser.add_argument("--engine", choices=ENGINE_KINDS, required=True, help="engine kind")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port to bind; 0 picks a free one (default: 0)"
    )
    parser.add_argument("--model-name", help="model name reported by Info (default: the engine's)")
    parser.add_argument(
        "--model-version", help="model version reported by Info (default: the engine's)"
    )
    parser.add_argument(
        "--model-family", help="model family reported by Info (default: the engine's)"
    )
    parser.add_argument(
        "--replica-id", help="replica id reported by Info (default: <hostname>-<pid>)"
    )
    parser.add_argument(
        "--grace-s",
        type=float,
        default=DEFAULT_GRACE_S,
        help="seconds in-flight streams get to finish on SIGTERM (default: %(default)s)",
    )
    parser.add_argument(
        "--no-coalesce",
        dest="coalesce",
        action="store_false",
        help=(
            "send one delta per engine chunk even when the client reads slower than the "
            "engine produces (default: merge the chunks that arrive while a write is pending)"
        ),
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="logging level; logs go to stderr (default: %(default)s)",
    )
    llama = parser.add_argument_group("llamacpp engine")
    llama.add_argument("--model-path", help="GGUF file (default: the packaged Gemma 3 270M)")
    llama.add_argument(
        "--n-ctx", type=int, default=2048, help="context window, tokens (default: %(default)s)"
    )
    llama.add_argument(
        "--n-threads", type=int, default=2, help="CPU threads for decoding (default: %(default)s)"
    )
    llama.add_argument(
        "--max-decode-tokens-per-s",
        type=float,
        help="cap decoding at this many tokens/s to emulate a slow edge device (default: no cap)",
    )
    llama.add_argument(
        "--seed",
        type=int,
        default=0,
        help="sampling seed for requests without one (default: %(default)s)",
    )
    scripted = parser.add_argument_group("scripted engine (deterministic, not a model)")
    scripted.add_argument(
        "--context-window",
        type=int,
        default=8192,
        help="context window, tokens (default: %(default)s)",
    )
    scripted.add_argument(
        "--max-concurrency",
        type=int,
        default=8,
        help="requests generating at once; the rest queue FIFO (default: %(default)s)",
    )
    scripted.add_argument(
        "--ttft-ms",
        type=float,
        default=0.0,
        help="milliseconds before the first token (default: %(default)s)",
    )
    scripted.add_argument(
        "--prefill-tokens-per-s",
        type=float,
        default=0.0,
        help="prompt tokens read per second before the first token, on top of --ttft-ms; "
        "0: the prompt's length adds nothing (default: %(default)s)",
    )
    scripted.add_argument(
        "--tokens-per-s",
        type=float,
        default=0.0,
        help="tokens per second; 0 is as fast as possible (default: %(default)s)",
    )
    scripted.add_argument(
        "--reply-tokens", type=int, help="answer length in tokens (default: max_output_tokens)"
    )
    return parser


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """Engine keyword arguments from parsed command-line arguments."""
    options: dict[str, Any] = {}
    if args.engine == "llamacpp":
        options.update(
            model_path=args.model_path,
            n_ctx=args.n_ctx,
            n_threads=args.n_threads,
            max_decode_tokens_per_s=args.max_decode_tokens_per_s,
            seed=args.seed,
        )
    else:
        options.update(
            context_window=args.context_window,
            max_concurrency=args.max_concurrency,
            ttft_ms=args.ttft_ms,
            prefill_tokens_per_s=args.prefill_tokens_per_s,
            tokens_per_s=args.tokens_per_s,
            reply_tokens=args.reply_tokens,
        )
    for key, value in (
        ("model_name", args.model_name),
        ("version", args.model_version),
        ("model_family", args.model_family),
    ):
        if value is not None:
            options[key] = value
    return options


async def serve(args: argparse.Namespace) -> None:
    """Bind (fail fast on a taken port), load the model, serve until SIGTERM/SIGINT, drain."""
    engine = create_engine(args.engine, **engine_options(args))
    health_servicer = health.aio.HealthServicer()
    server, port = await create_server(
        engine,
        f"{args.host}:{args.port}",
        health_servicer=health_servicer,
        replica_id=args.replica_id,
        coalesce=args.coalesce,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await engine.start()
        await server.start()
        info = engine.info
        logger.info("serving %s (%s) on %s:%d", info.model, info.engine, args.host, port)
        print(f"READY {port}", flush=True)
        await stop.wait()
        logger.info("draining (grace %.1fs)", args.grace_s)
        await drain(server, health_servicer, args.grace_s)
    finally:
        await server.stop(None)
        await engine.close()
    logger.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(args))
    except (EngineError, ValueError, OSError) as exc:
        print(f"model_server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
