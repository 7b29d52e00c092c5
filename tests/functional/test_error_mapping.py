"""ErrorMappingInterceptor on a real grpc.aio server (127.0.0.1, port 0), every RPC shape.

A test service under ``/hybrid_router.v1.`` (raw bytes, no protobuf) has one method per
shape and handler style: coroutines that return or use ``context.write`` / ``read`` (as
InferenceRouter.Generate and EdgeLink.Connect do) and async generators (as the relay's
Generate does). The first request message picks what the handler does: answer, raise a
tree error or an unexpected exception before or after two messages, or abort by itself.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from router.errors import NoTierAllowed
from router.server.context import request_id_var
from router.server.interceptors import ErrorMappingInterceptor

SERVICE = "hybrid_router.v1.ErrorMappingTest"
TREE_MESSAGE = "no tier may take restricted data; allow one in policy.data_classes"
RID = "rid-7f3a"
METADATA = (("x-request-id", RID),)


def act(mode: bytes, sent: int) -> None:
    """Raise what ``mode`` asks for at this point (``sent`` messages already out): before
    the first message, or with ``-mid`` after two."""
    kind, _, when = mode.decode().partition("-")
    if sent != (2 if when == "mid" else 0):
        return
    if kind == "tree":
        raise NoTierAllowed(TREE_MESSAGE)
    if kind == "boom":
        raise KeyError("a bug")


async def own_abort(mode: bytes, context: grpc.aio.ServicerContext) -> None:
    if mode == b"abort":
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "the handler's own status")


async def first(requests: AsyncIterator[bytes]) -> bytes:
    async for message in requests:
        return message
    return b""


# --- one handler per shape and style ----------------------------------------------------


async def unary_unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await own_abort(request, context)
    act(request, 0)
    return request_id_var.get().encode()


async def unary_stream_write(request: bytes, context: grpc.aio.ServicerContext) -> None:
    await own_abort(request, context)
    for i in range(2):
        act(request, i)
        await context.write(b"m%d" % i)
    act(request, 2)
    await context.write(request_id_var.get().encode())


async def unary_stream_yield(request: bytes, context: grpc.aio.ServicerContext) -> Any:
    await own_abort(request, context)
    for i in range(2):
        act(request, i)
        yield b"m%d" % i
    act(request, 2)
    yield request_id_var.get().encode()


async def stream_unary(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    mode = await first(requests)
    await own_abort(mode, context)
    act(mode, 0)
    return request_id_var.get().encode()


async def stream_stream_read(requests: object, context: grpc.aio.ServicerContext) -> None:
    mode = await context.read()  # EdgeLink.Connect's style
    assert isinstance(mode, bytes)
    await own_abort(mode, context)
    for i in range(2):
        act(mode, i)
        await context.write(b"m%d" % i)
    act(mode, 2)
    await context.write(request_id_var.get().encode())


async def stream_stream_yield(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> Any:
    mode = await first(requests)
    await own_abort(mode, context)
    for i in range(2):
        act(mode, i)
        yield b"m%d" % i
    act(mode, 2)
    yield request_id_var.get().encode()


HANDLERS = {
    "UnaryUnary": grpc.unary_unary_rpc_method_handler(unary_unary),
    "UnaryStreamWrite": grpc.unary_stream_rpc_method_handler(unary_stream_write),
    "UnaryStreamYield": grpc.unary_stream_rpc_method_handler(unary_stream_yield),
    "StreamUnary": grpc.stream_unary_rpc_method_handler(stream_unary),
    "StreamStreamRead": grpc.stream_stream_rpc_method_handler(stream_stream_read),
    "StreamStreamYield": grpc.stream_stream_rpc_method_handler(stream_stream_yield),
}
UNARY_RESPONSE = ("UnaryUnary", "StreamUnary")
STREAM_RESPONSE = ("UnaryStreamWrite", "UnaryStreamYield", "StreamStreamRead", "StreamStreamYield")


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await server.stop(0)


async def call(channel: grpc.aio.Channel, method: str, mode: bytes) -> list[bytes]:
    """The messages received; raises AioRpcError (with ``.received``) on a status."""
    path = f"/{SERVICE}/{method}"
    received: list[bytes] = []
    try:
        if method == "UnaryUnary":
            received.append(await channel.unary_unary(path)(mode, metadata=METADATA))
        elif method == "StreamUnary":
            received.append(await channel.stream_unary(path)(iter([mode]), metadata=METADATA))
        elif method.startswith("UnaryStream"):
            async for m in channel.unary_stream(path)(mode, metadata=METADATA):
                received.append(m)
        else:
            async for m in channel.stream_stream(path)(iter([mode]), metadata=METADATA):
                received.append(m)
    except grpc.aio.AioRpcError as exc:
        exc.received = received  # type: ignore[attr-defined]
        raise
    return received


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("method", list(HANDLERS))
async def test_an_answer_passes_through_with_the_request_id_set(channel, method):
    received = await call(channel, method, b"ok")
    assert received[-1] == RID.encode()
    if method in STREAM_RESPONSE:
        assert received == [b"m0", b"m1", RID.encode()]


@pytest.mark.parametrize("method", list(HANDLERS))
async def test_a_tree_error_before_any_message_ends_the_rpc_with_its_status(channel, method):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(channel, method, b"tree")
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == TREE_MESSAGE


@pytest.mark.parametrize("method", STREAM_RESPONSE)
async def test_a_tree_error_mid_stream_ends_the_rpc_with_its_status(channel, method):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(channel, method, b"tree-mid")
    assert err.value.received == [b"m0", b"m1"]  # type: ignore[attr-defined]
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == TREE_MESSAGE


@pytest.mark.parametrize(
    ("method", "mode"),
    [(m, b"boom") for m in HANDLERS] + [(m, b"boom-mid") for m in STREAM_RESPONSE],
)
async def test_an_unexpected_exception_is_internal_with_one_logged_traceback(
    channel, method, mode, caplog
):
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(channel, method, mode)
    assert err.value.code() is grpc.StatusCode.INTERNAL
    assert err.value.details() == f"internal error; quote request id {RID} when reporting it"
    assert "a bug" not in (err.value.details() or "")  # the caller never sees the exception
    logged = tracebacks(caplog)
    assert len(logged) == 1, [r.getMessage() for r in logged]
    record = logged[0]
    assert record.name == "router.server.interceptors" and record.levelno == logging.ERROR
    assert record.getMessage() == f"unexpected error in /{SERVICE}/{method} (request id {RID})"
    assert record.exc_info is not None and record.exc_info[0] is KeyError


@pytest.mark.parametrize("method", list(HANDLERS))
async def test_a_handlers_own_abort_passes_through(channel, method, caplog):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(channel, method, b"abort")
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details() == "the handler's own status"
    assert not tracebacks(caplog)


async def test_other_services_are_not_wrapped() -> None:
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    other = grpc.method_handlers_generic_handler("other.v1.Svc", {"Call": HANDLERS["UnaryUnary"]})
    server.add_generic_rpc_handlers((other,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.unary_unary("/other.v1.Svc/Call")(b"tree")
            assert err.value.code() is grpc.StatusCode.UNKNOWN  # grpc's default, not ours
            assert await ch.unary_unary("/other.v1.Svc/Call")(b"ok") == b"-"
    finally:
        await server.stop(0)
