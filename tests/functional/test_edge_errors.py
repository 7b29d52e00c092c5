"""Edge statuses at a real client: the EdgeLink bidirectional stream on a real router, and
the relay port (a real grpc.aio server on 127.0.0.1, port 0) in front of a link the test
plays the device on. Both raise the tree's errors; ErrorMappingInterceptor sends them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import edgeutil
import grpc
import pytest
from edgeutil import edge_config
from hybrid_router.v1 import edge_link_pb2 as epb
from hybrid_router.v1 import edge_link_pb2_grpc, model_service_pb2_grpc
from hybrid_router.v1 import model_service_pb2 as mpb
from hybrid_router.v1 import types_pb2 as tpb
from rtutil import ms_backend

from router.backends.device_link import DeviceLink
from router.backends.edge_relay import DEVICE_METADATA, TOKEN_METADATA
from router.edge.devices import DeviceEntry, DeviceState
from router.server.relay import RelayServicer, start_relay_server

edge_router = edgeutil.edge_router

INTERNAL_PREFIX = "internal error; quote request id"


def register(device_id: str = "dev-1") -> epb.DeviceMessage:
    return epb.DeviceMessage(
        register=epb.Register(
            device_id=device_id,
            models=[epb.EdgeModel(name="gemma3-270m", version="v1", context_window=4096)],
        )
    )


async def connect_status(router, *messages: epb.DeviceMessage) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    """Open EdgeLink.Connect, send ``messages``, read until the status; the error."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as ch:
        call = edge_link_pb2_grpc.EdgeLinkStub(ch).Connect()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            for msg in messages:  # a write may already meet the status
                await call.write(msg)
            while await call.read() is not grpc.aio.EOF:
                pass
        return err.value


# --- EdgeLink.Connect (stream-stream) ------------------------------------------------------


async def test_a_first_message_that_is_not_register_is_invalid_argument(edge_router):
    router = await edge_router()
    heartbeat = epb.DeviceMessage(heartbeat=epb.Heartbeat(queue_depth=1))
    err = await connect_status(router, heartbeat)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "the first message on a link must be register"


async def test_a_bad_register_names_the_field(edge_router):
    router = await edge_router()
    err = await connect_status(router, register("not a thing name!"))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith("register.device_id: must be 1-128 letters")


async def test_no_register_in_time_is_deadline_exceeded(edge_router):
    router = await edge_router(edge=edge_config(register_timeout_s=0.3))
    err = await connect_status(router)
    assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.details() == "send register as the first message within 0.3 s"


async def test_a_device_whose_backend_name_is_taken_is_refused(edge_router):
    taken = ms_backend("edge-dev-1", "gpu", "127.0.0.1:9")
    router = await edge_router([taken])
    err = await connect_status(router, register("dev-1"))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == (
        "backend name 'edge-dev-1' is taken by a configured backend; rename the device or "
        "that backend"
    )


async def test_a_draining_replica_refuses_links(edge_router):
    router = await edge_router()
    await router.edge.drain(0)
    err = await connect_status(router, register("dev-1"))
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert err.details() == "this router replica is shutting down; dial again"


async def test_an_unexpected_exception_in_the_link_is_internal(edge_router, monkeypatch, caplog):
    router = await edge_router()

    async def broken(*args: object) -> None:
        raise RuntimeError("hub bug")

    monkeypatch.setattr(router.edge, "attach", broken)
    err = await connect_status(router, register("dev-1"))
    assert err.code() is grpc.StatusCode.INTERNAL
    assert (err.details() or "").startswith(INTERNAL_PREFIX)
    assert "hub bug" not in (err.details() or "")
    logged = [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in logged] == [
        "unexpected error in /hybrid_router.v1.EdgeLink/Connect (request id -)"
    ]


# --- the relay port (ModelService: Generate unary-stream, Info unary-unary) ----------------


class Relay:
    """A relay port over one linked device ``dev-1``; the test answers for the device."""

    def __init__(self) -> None:
        self.link = DeviceLink("dev-1")
        self.entries = {"dev-1": DeviceEntry(DeviceState("dev-1", online=True), link=self.link)}
        #: local_entry raises this (a bug on the relay side).
        self.broken: Exception | None = None
        self.stub: model_service_pb2_grpc.ModelServiceStub

    def local(self, device_id: str) -> DeviceEntry | None:
        if self.broken is not None:
            raise self.broken
        return self.entries.get(device_id)

    async def next_sent(self) -> epb.RouterMessage:
        """The next message the relay sent down the link."""
        async with asyncio.timeout(5):
            async for msg in self.link.outgoing():
                return msg
        raise AssertionError("the link closed")

    def event(self, rid: str, text: str) -> None:
        ev = mpb.ModelGenerateEvent(delta=tpb.TextDelta(text=text, tokens=1))
        self.link.deliver(epb.DeviceMessage(event=epb.RequestEvent(request_id=rid, event=ev)))

    def error(self, rid: str, error_class: str, message: str) -> None:
        err = epb.RequestError(request_id=rid, error_class=error_class, message=message)
        self.link.deliver(epb.DeviceMessage(error=err))


META = ((DEVICE_METADATA, "dev-1"), (TOKEN_METADATA, "s3cret"))


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    r = Relay()
    servicer = RelayServicer(r.local, router_id="r-1", token="s3cret", silence_s=0.5)
    server, port = await start_relay_server(servicer, "127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        r.stub = model_service_pb2_grpc.ModelServiceStub(ch)
        yield r
    await server.stop(0)


def request() -> mpb.ModelGenerateRequest:
    return mpb.ModelGenerateRequest(
        request_id="req-1", messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content="hi")]
    )


async def info_error(relay: Relay, metadata: tuple[tuple[str, str], ...]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await relay.stub.Info(mpb.InfoRequest(), metadata=metadata)
    return err.value


async def generate_error(
    relay: Relay, metadata: tuple[tuple[str, str], ...]
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in relay.stub.Generate(request(), metadata=metadata):
            pass
    return err.value


@pytest.mark.parametrize("rpc", [info_error, generate_error])
@pytest.mark.parametrize(
    ("metadata", "code", "details"),
    [
        (
            ((DEVICE_METADATA, "dev-1"),),
            grpc.StatusCode.UNAUTHENTICATED,
            "relay calls need the shared token in 'x-edge-relay-token' metadata",
        ),
        (
            ((TOKEN_METADATA, "s3cret"),),
            grpc.StatusCode.INVALID_ARGUMENT,
            "name the device in 'x-edge-device'",
        ),
        (
            ((DEVICE_METADATA, "dev-9"), (TOKEN_METADATA, "s3cret")),
            grpc.StatusCode.UNAVAILABLE,
            "device 'dev-9' is not linked to replica r-1",
        ),
    ],
)
async def test_relay_refusals_carry_their_status(relay, rpc, metadata, code, details):
    err = await rpc(relay, metadata)
    assert err.code() is code and err.details() == details


async def test_a_draining_device_is_unavailable_through_the_relay(relay):
    entry = relay.entries["dev-1"]
    entry.state = DeviceState("dev-1", online=True, draining=True)
    err = await info_error(relay, META)
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert err.details() == "device 'dev-1': draining: finishing its requests, takes no new one"


@pytest.mark.parametrize(
    ("error_class", "code"),
    [
        ("too_large", grpc.StatusCode.OUT_OF_RANGE),
        ("fatal", grpc.StatusCode.INVALID_ARGUMENT),
        ("retryable", grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_a_device_error_mid_stream_ends_the_relay_stream_with_its_status(
    relay, error_class, code
):
    call = relay.stub.Generate(request(), metadata=META)
    sent = await relay.next_sent()
    rid = sent.generate.request_id
    relay.event(rid, "alpha")
    first = await call.read()
    assert first.delta.text == "alpha"
    relay.error(rid, error_class, "the device says no")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() is code and err.value.details() == "the device says no"


async def test_a_link_closed_mid_stream_is_unavailable_through_the_relay(relay):
    call = relay.stub.Generate(request(), metadata=META)
    rid = (await relay.next_sent()).generate.request_id
    relay.event(rid, "alpha")
    assert (await call.read()).delta.text == "alpha"
    relay.link.close("device went away")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert err.value.details() == "link to the device closed: device went away"


async def test_a_silent_device_is_unavailable_and_told_to_cancel(relay):
    call = relay.stub.Generate(request(), metadata=META)
    rid = (await relay.next_sent()).generate.request_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert err.value.details() == "no event from the device for 0.5 s"
    assert (await relay.next_sent()).cancel.request_id == rid


async def test_a_caller_that_cancels_mid_stream_cancels_on_the_device(relay):
    call = relay.stub.Generate(request(), metadata=META)
    rid = (await relay.next_sent()).generate.request_id
    relay.event(rid, "alpha")
    assert (await call.read()).delta.text == "alpha"
    call.cancel()
    assert (await relay.next_sent()).cancel.request_id == rid


@pytest.mark.parametrize("rpc", [info_error, generate_error])
async def test_an_unexpected_exception_in_the_relay_is_internal(relay, rpc, caplog):
    relay.broken = RuntimeError("directory bug")
    err = await rpc(relay, META)
    assert err.code() is grpc.StatusCode.INTERNAL
    assert (err.details() or "").startswith(INTERNAL_PREFIX)
    assert "directory bug" not in (err.details() or "")
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR
    assert logged[0].getMessage().startswith("unexpected error in /hybrid_router.v1.ModelService/")
