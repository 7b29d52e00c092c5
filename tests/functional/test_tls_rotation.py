"""Certificate rotation on a running router: real grpc.aio router on 127.0.0.1, real TLS.

The certificate files live in a folder laid out like a Kubernetes Secret volume
(``tls.crt -> ..data/tls.crt``, ``..data -> ..<version>``); a rotation writes a new
version folder and swaps ``..data`` with one rename, as the kubelet does.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import edgeutil
import grpc
import pytest
from edgeutil import edge_config
from hybrid_router.v1 import edge_link_pb2 as epb
from hybrid_router.v1 import edge_link_pb2_grpc
from rtutil import delta_tokens, ms_backend, stub_for, user_request
from secutil import Pki, make_pki
from testkit import wait_until

from router.errors import ConfigError
from router.server.app import RouterServer
from serving.engines.scripted import ScriptedEngine

TLS_LOGGER = "router.security.tls"

# Fixtures from edgeutil (pytest finds them in this module's namespace).
edge_router = edgeutil.edge_router
start_agent = edgeutil.start_agent


class SecretVolume:
    """A folder of PEM files updated the way the kubelet updates a mounted Secret."""

    def __init__(self, root: Path, files: dict[str, bytes]) -> None:
        self.root = root
        root.mkdir(parents=True)
        self._version = 0
        self.publish(files)
        for name in files:
            (root / name).symlink_to(Path("..data") / name)

    def path(self, name: str) -> str:
        return str(self.root / name)

    def publish(self, files: dict[str, bytes]) -> None:
        """Write a new version folder, then point ``..data`` at it with one atomic rename."""
        self._version += 1
        version = self.root / f"..v{self._version}"
        version.mkdir()
        for name, data in files.items():
            (version / name).write_bytes(data)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(version.name)
        os.replace(tmp, self.root / "..data")


def server_files(pki: Pki, *, client_ca: Pki | None = None) -> dict[str, bytes]:
    files = {"tls.crt": pki.read("server_cert"), "tls.key": pki.read("server_key")}
    if client_ca is not None:
        files["ca.crt"] = client_ca.read("ca")
    return files


def channel(port: int, trust: Pki, client: Pki | None = None) -> grpc.aio.Channel:
    """A new channel (so a new connection) trusting only ``trust``'s CA; mTLS with
    ``client``'s client certificate."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=trust.read("ca"),
        private_key=client.read("client_key") if client else None,
        certificate_chain=client.read("client_cert") if client else None,
    )
    # Its own subchannel pool: never a connection shared with another channel.
    options = [("grpc.use_local_subchannel_pool", 1)]
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=options)


async def connects(port: int, trust: Pki, client: Pki | None = None) -> bool:
    """Whether a new connection trusting ``trust`` gets an answer from the router."""
    async with channel(port, trust, client) as ch:
        try:
            await stub_for(ch).Route(user_request("hello"), timeout=15)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() is grpc.StatusCode.UNAVAILABLE, exc
            return False
    return True


def tls_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == TLS_LOGGER and r.levelno == logging.WARNING
    ]


@pytest.fixture
def ca1(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "ca1")


@pytest.fixture
def ca2(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "ca2")


class Gate:
    """An engine ``sleep`` that holds every token after the first until opened."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        await self.opened.wait()


@pytest.fixture
async def gated(model_server) -> AsyncIterator[tuple[list[dict[str, Any]], Gate]]:  # type: ignore[no-untyped-def]
    gate = Gate()
    engine = ScriptedEngine(tokens_per_s=1000.0, sleep=gate)
    backends = [ms_backend("gpu-a", "gpu", await model_server(engine))]
    yield backends, gate
    gate.opened.set()


async def tls_router(start_router, backends, volume: SecretVolume, *, mtls: bool) -> RouterServer:  # type: ignore[no-untyped-def]
    tls = {"cert_file": volume.path("tls.crt"), "key_file": volume.path("tls.key")}
    if mtls:
        tls["client_ca_file"] = volume.path("ca.crt")
    return await start_router(backends, server={"tls": tls})  # type: ignore[no-any-return]


async def test_a_rotated_certificate_serves_new_connections_and_open_streams_go_on(
    start_router, gated, ca1, ca2, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger=TLS_LOGGER)
    backends, gate = gated
    volume = SecretVolume(tmp_path / "secret", server_files(ca1))
    router = await tls_router(start_router, backends, volume, mtls=False)
    assert await connects(router.port, ca1)
    assert not await connects(router.port, ca2)

    async with channel(router.port, ca1) as old:
        stream = stub_for(old).Generate(user_request("a b c", max_output_tokens=6))
        first = [await stream.read(), await stream.read()]
        assert [ev.WhichOneof("event") for ev in first] == ["decision", "delta"]

        volume.publish(server_files(ca2))

        # New connections get the CA2 certificate; a client trusting only CA1 fails.
        assert await connects(router.port, ca2)
        assert not await connects(router.port, ca1)
        # The connection opened before the swap keeps working, for new calls too.
        assert (await stub_for(old).Route(user_request("x"), timeout=15)).backend == "gpu-a"

        gate.opened.set()
        events = first
        while (ev := await stream.read()) is not grpc.aio.EOF:
            events.append(ev)
    assert events[-1].WhichOneof("event") == "usage" and events[-1].usage.complete
    assert delta_tokens(events) == 6
    assert any("new certificate from" in r.getMessage() for r in caplog.records)
    assert tls_warnings(caplog) == []


async def test_a_bad_new_file_keeps_the_last_good_certificate_and_warns_once(
    start_router, gated, ca1, ca2, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger=TLS_LOGGER)
    backends, _ = gated
    volume = SecretVolume(tmp_path / "secret", server_files(ca1))
    router = await tls_router(start_router, backends, volume, mtls=False)
    assert await connects(router.port, ca1)

    # A half-written certificate, written in place (not the kubelet's way).
    cert = Path(volume.path("tls.crt"))
    cert.write_bytes(ca2.read("server_cert")[:200])
    for _ in range(3):
        assert await connects(router.port, ca1)
    (warning,) = tls_warnings(caplog)
    assert "server.tls.cert_file" in warning and volume.path("tls.crt") in warning
    assert "not a complete PEM certificate chain" in warning

    # Garbage with a PEM header: the same complaint, not logged again.
    cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n")
    assert await connects(router.port, ca1)
    assert len(tls_warnings(caplog)) == 1
    # A new certificate whose key has not arrived yet.
    volume.publish({"tls.crt": ca2.read("server_cert"), "tls.key": ca1.read("server_key")})
    assert await connects(router.port, ca1)
    assert not await connects(router.port, ca2)
    warnings = tls_warnings(caplog)
    assert len(warnings) == 2, warnings
    assert "server.tls.key_file" in warnings[1]
    assert "does not belong to the certificate" in warnings[1]

    # Once the set is whole again it is used.
    volume.publish(server_files(ca2))
    assert await connects(router.port, ca2)
    assert not await connects(router.port, ca1)
    assert len(tls_warnings(caplog)) == 2


async def test_a_rotated_client_ca_is_used_for_new_connections(
    start_router, gated, ca1, ca2, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger=TLS_LOGGER)
    backends, _ = gated
    volume = SecretVolume(tmp_path / "secret", server_files(ca1, client_ca=ca1))
    router = await tls_router(start_router, backends, volume, mtls=True)
    assert await connects(router.port, ca1, client=ca1)
    assert not await connects(router.port, ca1, client=ca2)
    assert not await connects(router.port, ca1)  # no client certificate

    volume.publish(server_files(ca1, client_ca=ca2))
    assert await connects(router.port, ca1, client=ca2)
    assert not await connects(router.port, ca1, client=ca1)

    # A broken CA bundle keeps the last good one.
    Path(volume.path("ca.crt")).write_bytes(b"-----BEGIN CERTIFICATE-----\ntruncated")
    assert await connects(router.port, ca1, client=ca2)
    (warning,) = tls_warnings(caplog)
    assert "server.tls.client_ca_file" in warning and volume.path("ca.crt") in warning


async def test_a_key_that_does_not_match_the_certificate_stops_the_start(
    start_router, gated, ca1, ca2, tmp_path
):
    backends, _ = gated
    volume = SecretVolume(
        tmp_path / "secret", {"tls.crt": ca1.read("server_cert"), "tls.key": ca2.read("server_key")}
    )
    with pytest.raises(ConfigError) as err:
        await tls_router(start_router, backends, volume, mtls=False)
    assert err.value.key == "server.tls.key_file"
    assert volume.path("tls.key") in err.value.message
    assert "does not belong to the certificate" in err.value.message


# --- the edge agent's device certificate -------------------------------------------------------


async def device_online(port: int, trust: Pki, client: Pki, device_id: str) -> bool:
    """Whether the router on ``port`` lists ``device_id`` online (waits up to 30 s)."""
    async with channel(port, trust, client) as ch:
        stub = edge_link_pb2_grpc.EdgeFleetStub(ch)

        async def online() -> bool:
            fleet = await stub.ListDevices(epb.ListDevicesRequest(), timeout=15)
            return any(d.device_id == device_id and d.online for d in fleet.devices)

        try:
            await wait_until(online, f"{device_id} online", timeout_s=30.0, every_s=0.1)
        except AssertionError:
            return False
    return True


async def test_the_edge_agent_dials_again_with_a_rotated_device_certificate(
    edge_router, start_agent, ca1, ca2, tmp_path
):
    """Each dial re-reads the device's files: a half-written file is skipped (the last good
    certificate is used), a rotated certificate is used on the next reconnect."""
    port = edgeutil.free_port()

    async def router_trusting(client_ca: Pki) -> RouterServer:
        tls = {
            "cert_file": ca1.server_cert,
            "key_file": ca1.server_key,
            "client_ca_file": client_ca.ca,
        }
        return await edge_router(  # type: ignore[no-any-return]
            server={"address": f"127.0.0.1:{port}", "tls": tls},
            edge=edge_config(device_auth="mtls"),
        )

    def device_files(client: Pki) -> dict[str, bytes]:
        return {
            "ca.crt": ca1.read("ca"),
            "device.crt": client.read("client_cert"),  # CN edge-device-1 from either CA
            "device.key": client.read("client_key"),
        }

    device = SecretVolume(tmp_path / "device", device_files(ca1))
    router = await router_trusting(ca1)
    files = ("--ca-file", "ca.crt", "--cert-file", "device.crt", "--key-file", "device.key")
    args = tuple(a if a.startswith("--") else device.path(a) for a in files)
    agent = start_agent(router, "edge-device-1", args=args)
    await agent.ready()

    # A half-written certificate: the next dial uses the certificate read before.
    Path(device.path("device.crt")).write_bytes(ca2.read("client_cert")[:100])
    await router.stop(0)
    router = await router_trusting(ca1)
    assert await device_online(port, ca1, ca1, "edge-device-1"), agent.log()[-3000:]
    assert f"tls.certFile: {device.path('device.crt')} is not a complete PEM file" in agent.log()

    # The device's certificate is rotated to CA2, and the router now trusts only CA2.
    device.publish(device_files(ca2))
    await router.stop(0)
    router = await router_trusting(ca2)
    assert await device_online(port, ca1, ca2, "edge-device-1"), agent.log()[-3000:]
    assert "tls.certFile, tls.keyFile changed" in agent.log()
