"""Mutual TLS on the edge relay port between router replicas (edge.relay.tls).

Two real router replicas share a real redis-server directory; the device (a real agent
process) dials replica A only, and a request sent to B is served through A's relay port,
over mTLS with throwaway certificates, with the relay token on top. A caller without the
right certificate is refused at the handshake. The certificate files live in a folder laid
out like a Kubernetes Secret volume and are rotated the way the kubelet does it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import edgeutil
import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from edgeutil import (
    assert_healthy_over_load_polls,
    edge_config,
    wait_for_device,
    wait_routed_to_device,
)
from hybrid_router.v1 import model_service_pb2 as mpb
from hybrid_router.v1 import model_service_pb2_grpc
from hybrid_router.v1 import router_pb2 as rpb
from rtutil import collect, kinds, stub_for, text_of, user_request
from secutil import _Ca, _issue, _make_ca, _pem_cert
from test_tls_rotation import SecretVolume

import router.server.relay
from router.backends.edge_relay import DEVICE_METADATA, TOKEN_METADATA, RelayBackend
from router.config import parse_config
from router.errors import ConfigError
from router.server.app import RouterServer

# Fixtures from edgeutil (pytest finds them in this module's namespace).
edge_router = edgeutil.edge_router
redis_server = edgeutil.redis_server
start_agent = edgeutil.start_agent

SERVER_NAME = "hybrid-router-relay"
TOKEN_ENV = "TEST_RELAY_TOKEN"
TOKEN = "relay-token-for-tests"
WAIT_S = 30.0


def issue_relay_cert(ca: _Ca, *, dns: str = SERVER_NAME) -> tuple[bytes, bytes]:
    """(key, cert) for a replica: serverAuth and clientAuth, the service name as DNS SAN
    (no IP address: replicas dial pod IPs and verify the name)."""
    return _issue(
        ca,
        dns,
        server=True,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        sans=[x509.DNSName(dns)],
    )


def secret_files(ca: _Ca) -> dict[str, bytes]:
    """What a kubernetes.io/tls Secret with ca.crt holds."""
    key, cert = issue_relay_cert(ca)
    return {"tls.crt": cert, "tls.key": key, "ca.crt": _pem_cert(ca.cert)}


def tls_section(volume: SecretVolume) -> dict[str, str]:
    return {
        "cert_file": volume.path("tls.crt"),
        "key_file": volume.path("tls.key"),
        "ca_file": volume.path("ca.crt"),
        "server_name": SERVER_NAME,
    }


async def tls_replicas(
    edge_router: Any, redis_url: str, volume: SecretVolume
) -> tuple[RouterServer, RouterServer]:
    edge = edge_config(
        directory={"redis_url": redis_url, "sync_interval_s": 0.2},
        relay={"address": "127.0.0.1:0", "token_env": TOKEN_ENV, "tls": tls_section(volume)},
    )
    a = await edge_router(edge={**edge, "replica_id": "replica-a"})
    b = await edge_router(edge={**edge, "replica_id": "replica-b"})
    return a, b


async def relay_info(
    port: int,
    *,
    creds: grpc.ChannelCredentials | None,
    server_name: str = SERVER_NAME,
    device: str = "dev-1",
) -> mpb.InfoResponse:
    """ModelService.Info straight at a relay port, on a channel of its own (so its own
    connection and handshake); ``creds`` None = plaintext."""
    meta = ((DEVICE_METADATA, device), (TOKEN_METADATA, TOKEN))
    options = [("grpc.use_local_subchannel_pool", 1)]
    target = f"127.0.0.1:{port}"
    if creds is None:
        channel = grpc.aio.insecure_channel(target, options=options)
    else:
        options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.aio.secure_channel(target, creds, options=options)
    async with channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        return await stub.Info(mpb.InfoRequest(), metadata=meta, timeout=WAIT_S)


def creds_of(files: dict[str, bytes], *, trust: bytes | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=trust or files["ca.crt"],
        private_key=files["tls.key"],
        certificate_chain=files["tls.crt"],
    )


async def refused(port: int, **kwargs: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await relay_info(port, **kwargs)
    return err.value


@pytest.fixture
def relay_token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN


async def test_request_to_b_is_served_through_a_over_mtls(
    edge_router, start_agent, redis_server, channel_to, relay_token, tmp_path: Path
):
    ca = _make_ca("relay CA")
    files = secret_files(ca)
    volume = SecretVolume(tmp_path / "relay-tls", files)
    a, b = await tls_replicas(edge_router, redis_server, volume)
    agent = start_agent(a, "dev-1", site="plant-7", scripted={"reply_tokens": 4})
    assert await agent.ready() == "replica-a"
    await wait_for_device(b, "dev-1")
    stub_b = stub_for(channel_to(b))
    await wait_routed_to_device(stub_b, timeout_s=WAIT_S)
    await assert_healthy_over_load_polls(b)

    events = await collect(
        stub_b.Generate(user_request("alpha beta", edge_affinity=rpb.EdgeAffinity(site="plant-7")))
    )
    assert kinds(events)[0] == "decision" and kinds(events)[-1] == "usage", events
    assert text_of(events) == "alpha beta alpha beta"
    assert events[-1].usage.complete and events[-1].usage.backend == "edge-dev-1"
    listing = await stub_b.ListBackends(rpb.ListBackendsRequest())
    relay = next(x for x in listing.backends if x.name == "edge-dev-1")
    assert relay.kind == "edge-relay" and relay.endpoint == a.edge.relay_address

    # Straight at A's relay port: the right certificate (and token) is served...
    port = a.edge.relay_port
    info = await relay_info(port, creds=creds_of(files))
    assert info.replica_id == "dev-1" and info.engine == "edge"
    # ...plaintext, no client certificate, a client certificate from another CA, and
    # a port certificate checked against another CA are refused at the handshake.
    assert (await refused(port, creds=None)).code() is grpc.StatusCode.UNAVAILABLE
    no_cert = grpc.ssl_channel_credentials(root_certificates=files["ca.crt"])
    assert (await refused(port, creds=no_cert)).code() is grpc.StatusCode.UNAVAILABLE
    intruder = secret_files(_make_ca("some other CA"))
    wrong_ca_client = creds_of(intruder, trust=files["ca.crt"])
    assert (await refused(port, creds=wrong_ca_client)).code() is grpc.StatusCode.UNAVAILABLE
    assert (await refused(port, creds=creds_of(intruder))).code() is grpc.StatusCode.UNAVAILABLE
    # The name dialing replicas verify is the one in the certificate.
    wrong_name = await refused(port, creds=creds_of(files), server_name="other-name")
    assert wrong_name.code() is grpc.StatusCode.UNAVAILABLE
    # The token still applies on top of mTLS.
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{port}",
        creds_of(files),
        options=[("grpc.ssl_target_name_override", SERVER_NAME)],
    )
    async with channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Info(mpb.InfoRequest(), metadata=((DEVICE_METADATA, "dev-1"),))
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_rotated_files_reach_the_port_and_the_dialing_replica(
    edge_router,
    start_agent,
    redis_server,
    channel_to,
    relay_token,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(router.server.relay, "RECHECK_S", 0.0)  # check before every request
    old = secret_files(_make_ca("relay CA 1"))
    volume = SecretVolume(tmp_path / "relay-tls", old)
    a, b = await tls_replicas(edge_router, redis_server, volume)
    agent = start_agent(a, "dev-1", scripted={"reply_tokens": 2})
    await agent.ready()
    await wait_for_device(b, "dev-1")
    stub_b = stub_for(channel_to(b))
    await wait_routed_to_device(stub_b, timeout_s=WAIT_S)
    assert text_of(await collect(stub_b.Generate(user_request("one")))) == "one one"
    reg = b.edge.registry.get("edge-dev-1")
    assert reg is not None and isinstance(reg.backend, RelayBackend)
    backend = reg.backend
    first_channel = backend._channel
    assert first_channel is not None

    new = secret_files(_make_ca("relay CA 2"))  # a new CA too: nothing of the old set is valid
    volume.publish(new)

    # B makes a new channel with the new files; A's port presents and checks the new set.
    assert text_of(await collect(stub_b.Generate(user_request("two")))) == "two two"
    assert backend._channel is not None and backend._channel is not first_channel
    info = await relay_info(a.edge.relay_port, creds=creds_of(new))
    assert info.replica_id == "dev-1"
    stale = await refused(a.edge.relay_port, creds=creds_of(old))
    assert stale.code() is grpc.StatusCode.UNAVAILABLE


def _edge_with_tls(tls: dict[str, str]) -> dict[str, Any]:
    return {"edge": edge_config(relay={"address": "127.0.0.1:0", "tls": tls})}


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        (("key_file",), "missing: key_file"),
        (("server_name",), "missing: server_name"),
        (("ca_file", "server_name"), "missing: ca_file, server_name"),
    ],
)
def test_partial_tls_is_a_config_error_naming_the_missing_keys(
    tmp_path: Path, drop: tuple[str, ...], named: str
) -> None:
    volume = SecretVolume(tmp_path / "relay-tls", secret_files(_make_ca("relay CA")))
    tls = {k: v for k, v in tls_section(volume).items() if k not in drop}
    with pytest.raises(ConfigError) as err:
        parse_config(_edge_with_tls(tls), source="router.yaml")
    message = str(err.value)
    assert "edge.relay.tls" in message and named in message, message


async def test_bad_files_fail_the_start_naming_the_key(edge_router, tmp_path: Path) -> None:
    ca = _make_ca("relay CA")
    files = secret_files(ca)
    other_key, _ = issue_relay_cert(ca)
    volume = SecretVolume(
        tmp_path / "relay-tls",
        {**files, "tls.key": other_key, "ca.crt": b"not a certificate"},
    )
    tls = tls_section(volume)
    with pytest.raises(ConfigError) as err:
        await edge_router(edge=edge_config(relay={"address": "127.0.0.1:0", "tls": tls}))
    assert err.value.key == "edge.relay.tls.ca_file", err.value

    volume.publish({**files, "tls.key": other_key})
    with pytest.raises(ConfigError) as err:
        await edge_router(edge=edge_config(relay={"address": "127.0.0.1:0", "tls": tls}))
    assert err.value.key == "edge.relay.tls.key_file"
    assert "does not belong to the certificate" in str(err.value)
