"""hybrid_router.client's sync RouterClient (the Lambda layer's client) against a real
router on loopback: streaming, buffered calls, safe retries, deadlines, TLS; its metadata
(auth, traceparent, request id) seen by a recording InferenceRouter server."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hybrid_router.client import RouterCallError, RouterClient, make_request
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import router_pb2_grpc
from lambda_events import free_port
from rtutil import ms_backend

from serving.engines.scripted import ScriptedEngine


@pytest.fixture
async def gpu_router(model_server, start_router):  # type: ignore[no-untyped-def]
    engine = ScriptedEngine(reply_tokens=4)
    router = await start_router([ms_backend("gpu-a", "gpu", await model_server(engine))])
    return engine, router


def collect(client: RouterClient, **kw: Any) -> tuple[list[rpb.GenerateEvent], str]:
    with client.generate(make_request(prompt="one two", max_output_tokens=8), **kw) as stream:
        events = list(stream)
    return events, stream.request_id


async def test_stream_events_in_order_and_request_id(gpu_router):
    engine, router = gpu_router
    with RouterClient(f"127.0.0.1:{router.port}") as client:
        events, rid = await asyncio.to_thread(collect, client, timeout_s=20)
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds[0] == "decision" and kinds[-1] == "usage"
        assert set(kinds[1:-1]) == {"delta"}
        assert "".join(e.delta.text for e in events[1:-1]) == "one two one two"
        # The router made the id and sent it as initial metadata.
        assert rid and rid == events[0].decision.request_id == engine.started[0]

        done = await asyncio.to_thread(
            client.complete, make_request(prompt="red", request_id="c-1"), timeout_s=20
        )
        assert done.text == "red red red red" and done.request_id == "c-1"
        assert done.decision is not None and done.decision.backend == "gpu-a"
        assert done.usage is not None and done.usage.output_tokens == 4

        decision = await asyncio.to_thread(client.route, make_request(prompt="x"))
        assert decision.backend == "gpu-a"
        listed = await asyncio.to_thread(client.list_backends)
        assert [b.name for b in listed.backends] == ["gpu-a"]


async def test_unreachable_router_fails_fast_after_bounded_retries():
    slept: list[float] = []
    client = RouterClient(f"127.0.0.1:{free_port()}", max_attempts=3, sleep=slept.append)
    try:
        with pytest.raises(RouterCallError) as err:
            await asyncio.to_thread(collect, client, timeout_s=10)
        assert err.value.code == "UNAVAILABLE" and err.value.attempts == 3
        assert err.value.events == 0
        assert slept == [0.05, 0.1]
        with pytest.raises(RouterCallError) as err2:
            await asyncio.to_thread(client.route, make_request(prompt="x"), timeout_s=10)
        assert err2.value.code == "UNAVAILABLE" and err2.value.attempts == 3
    finally:
        client.close()


async def test_retry_reaches_a_router_that_comes_up(model_server, start_router):
    """The first attempt finds nothing listening; the router starts during the backoff;
    the retry gets the stream."""
    port = free_port()
    engine = ScriptedEngine(reply_tokens=2)
    addr = await model_server(engine)
    loop = asyncio.get_running_loop()
    calls: list[float] = []

    def sleep(s: float) -> None:
        calls.append(s)
        if len(calls) == 1:
            asyncio.run_coroutine_threadsafe(
                start_router(
                    [ms_backend("gpu-a", "gpu", addr)], server={"address": f"127.0.0.1:{port}"}
                ),
                loop,
            ).result(30)
        time.sleep(0.3)  # past the channel's reconnect backoff

    client = RouterClient(f"127.0.0.1:{port}", max_attempts=4, sleep=sleep)
    try:
        events, _ = await asyncio.to_thread(collect, client, timeout_s=20)
        assert events[-1].usage.output_tokens == 2
        assert 1 <= len(calls) <= 3
        assert engine.started and len(engine.started) == 1
    finally:
        client.close()


async def test_no_retry_once_events_have_arrived(model_server, start_router):
    """A backend that fails after its first token: the error reaches the caller with the
    partial output; nothing is tried again (the model already ran)."""
    engine = ScriptedEngine(reply_tokens=10, fail_after_tokens=2)
    router = await start_router([ms_backend("gpu-a", "gpu", await model_server(engine))])
    slept: list[float] = []
    with RouterClient(f"127.0.0.1:{router.port}", sleep=slept.append) as client:
        with pytest.raises(RouterCallError) as err:
            await asyncio.to_thread(client.complete, make_request(prompt="a b"), timeout_s=20)
    assert err.value.code == "UNAVAILABLE" and err.value.attempts == 1
    assert err.value.events >= 2 and slept == []
    partial = err.value.partial
    assert partial is not None and partial.text == "a b"
    assert partial.usage is not None and not partial.usage.complete
    assert len(engine.started) == 1


async def test_deadline_bounds_the_whole_call(model_server, start_router):
    engine = ScriptedEngine(ttft_ms=30_000)
    router = await start_router(
        [ms_backend("slow", "gpu", await model_server(engine))], policy={"ttft_timeout_ms": 60_000}
    )
    with RouterClient(f"127.0.0.1:{router.port}") as client:
        started = time.monotonic()
        with pytest.raises(RouterCallError) as err:
            await asyncio.to_thread(collect, client, timeout_s=1.0)
        # DEADLINE_EXCEEDED, or the router's first-token timeout (cut to the time left)
        # firing first: UNAVAILABLE "no first token within ... ms".
        e = err.value
        assert e.code == "DEADLINE_EXCEEDED" or (
            e.code == "UNAVAILABLE" and "no first token within" in e.message
        ), e
        assert time.monotonic() - started < 15  # generous: 2 shared cores


async def test_cancel_stops_the_backend(model_server, start_router):
    engine = ScriptedEngine(tokens_per_s=20, reply_tokens=400)
    router = await start_router([ms_backend("gpu-a", "gpu", await model_server(engine))])

    def read_two() -> None:
        with RouterClient(f"127.0.0.1:{router.port}") as client:
            with client.generate(make_request(prompt="z", request_id="cx-1"), timeout_s=30) as s:
                next(s)
                next(s)
                s.cancel()

    await asyncio.to_thread(read_two)
    end = asyncio.get_running_loop().time() + 15
    while "cx-1" not in engine.cancelled:
        assert asyncio.get_running_loop().time() < end
        await asyncio.sleep(0.05)


# --- TLS ----------------------------------------------------------------------------------


def _tls_files(tmp: Path, dns: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``dns`` (and no IP), as PEM files."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hybrid-router test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_pem, cert_pem, key_pem


async def test_tls_with_a_ca_bundle_and_server_name(tmp_path, model_server, start_router):
    ca, cert, key = _tls_files(tmp_path, "router.internal.test")
    engine = ScriptedEngine(reply_tokens=2)
    router = await start_router(
        [ms_backend("gpu-a", "gpu", await model_server(engine))],
        server={"tls": {"cert_file": str(cert), "key_file": str(key)}},
    )
    address = f"127.0.0.1:{router.port}"
    with RouterClient(address, ca_bundle=str(ca), server_name="router.internal.test") as client:
        events, _ = await asyncio.to_thread(collect, client, timeout_s=20)
        assert client.tls and events[-1].usage.output_tokens == 2
    # Without the CA the handshake fails: UNAVAILABLE, never a plaintext fallback.
    with RouterClient(address, tls=True, server_name="router.internal.test", max_attempts=1) as c:
        with pytest.raises(RouterCallError) as err:
            await asyncio.to_thread(collect, c, timeout_s=5)
        assert err.value.code == "UNAVAILABLE"
    with pytest.raises(ValueError, match="cannot be read"):
        RouterClient(address, ca_bundle=str(tmp_path / "missing.pem"))


# --- metadata -----------------------------------------------------------------------------


class Recorder(router_pb2_grpc.InferenceRouterServicer):
    """Records each call's metadata; answers Route with an empty decision."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self.lock = threading.Lock()

    async def Route(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        with self.lock:
            self.metadata.append({k: v for k, v in context.invocation_metadata()})
        return rpb.Decision(request_id=request.request_id)


async def test_metadata_carries_key_traceparent_and_request_id():
    server = grpc.aio.server()
    recorder = Recorder()
    router_pb2_grpc.add_InferenceRouterServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    keys = iter(["hr_first", "hr_second"])
    try:
        with RouterClient(f"127.0.0.1:{port}", api_key=lambda: next(keys)) as client:
            tp = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
            await asyncio.to_thread(
                client.route, make_request(prompt="x", request_id="m-1"), traceparent=tp
            )
            # A malformed traceparent is dropped, not forwarded; the key is read per call.
            await asyncio.to_thread(client.route, make_request(prompt="x"), traceparent="junk")
            await asyncio.to_thread(client.route, make_request(prompt="x"), api_key="hr_caller")
        first, second, third = recorder.metadata
        assert first["authorization"] == "Bearer hr_first"
        assert first["traceparent"] == tp and first["x-request-id"] == "m-1"
        assert first["user-agent"].startswith("hybrid-router-client/1")
        assert second["authorization"] == "Bearer hr_second"
        assert "traceparent" not in second and "x-request-id" not in second
        assert third["authorization"] == "Bearer hr_caller"
    finally:
        await server.stop(0)


def test_bad_addresses_and_settings_are_named() -> None:
    with pytest.raises(ValueError, match="host:port"):
        RouterClient("router-without-port")
    with pytest.raises(ValueError, match="HYBRID_ROUTER_ADDRESS is not set"):
        RouterClient.from_env({})
    with pytest.raises(ValueError, match="HYBRID_ROUTER_TLS='maybe'"):
        RouterClient.from_env({"HYBRID_ROUTER_ADDRESS": "r:1", "HYBRID_ROUTER_TLS": "maybe"})
    c = RouterClient.from_env({"HYBRID_ROUTER_ADDRESS": "r:1", "HYBRID_ROUTER_API_KEY": "k"})
    try:
        assert not c.tls and c.address == "r:1"
    finally:
        c.close()
    ipaddress.ip_address("127.0.0.1")  # loopback only in these tests
