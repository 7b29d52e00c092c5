"""Auth, tenants, TLS/mTLS and request limits on a real router (127.0.0.1) over real backends."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from rtutil import collect, kinds, ms_backend, stub_for, text_of, user_request
from secutil import Pki, bearer, make_keys, make_pki, tls_channel

from router.config import parse_config
from router.errors import ConfigError
from router.server.app import RouterServer, create_server
from serving.engines.scripted import ScriptedEngine

Launch = Callable[..., Awaitable[RouterServer]]

TENANTS = [
    # acme: edge and gpu only, restricted data allowed, at most 1 open stream.
    {"name": "acme", "tiers": ["edge", "gpu"], "data_classes": ["public", "internal", "restricted"],
     "max_streams": 1},
    # beta: only the hosted backend, public data only.
    {"name": "beta", "backends": ["hosted-a"], "data_classes": ["public"]},
    # open: the defaults (every tier, public and internal).
    {"name": "open"},
]  # fmt: skip


@pytest.fixture
async def launch() -> AsyncIterator[Launch]:
    routers: list[RouterServer] = []

    async def start(config: dict[str, Any], **kw: Any) -> RouterServer:
        cfg = parse_config(config, source="test")
        router = await create_server(cfg, **kw)
        routers.append(router)
        return router

    yield start
    for router in routers:
        await router.stop(0)


@pytest.fixture
async def backends(model_server) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    slow = ScriptedEngine(tokens_per_s=40.0)  # 20 tokens: half a second
    return [
        ms_backend("edge-a", "edge", await model_server(slow), context_window=256),
        ms_backend("gpu-a", "gpu", await model_server(ScriptedEngine()), context_window=4096),
        ms_backend(
            "hosted-a",
            "hosted",
            await model_server(ScriptedEngine()),
            context_window=100_000,
            data_classes=["public", "internal"],
            cost={"input_per_mtok_usd": 1.0, "output_per_mtok_usd": 2.0},
        ),
    ]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    return make_keys(tmp_path / "keys.yaml", ["acme", "beta", "open", "ghost"])


def secured(
    tmp_path: Path, backends: list[dict[str, Any]], *, server: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "server": {"address": "127.0.0.1:0", "grace_period_s": 1, **(server or {})},
        "policy": {"load_poll_interval_s": 0.05},
        "backends": backends,
        "auth": {"keys_file": str(tmp_path / "keys.yaml"), "tenants": TENANTS, "refresh_s": 0.1},
    }


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    raise AssertionError("the call succeeded")


# --- authentication ---------------------------------------------------------------------------


async def test_a_good_key_gets_a_stream_and_bad_ones_get_unauthenticated(
    launch, backends, keys, tmp_path, channel_to
):
    router = await launch(secured(tmp_path, backends))
    stub = stub_for(channel_to(router))
    req = user_request("alpha beta", max_output_tokens=4)

    events = await collect(stub.Generate(req, metadata=bearer(keys["open"])))
    assert kinds(events)[0] == "decision" and kinds(events)[-1] == "usage"
    assert events[-1].usage.complete

    good = keys["open"]
    key_id = good.split("_")[1]
    wrong = good[:-3] + ("xyz" if not good.endswith("xyz") else "abc")
    cases = [
        ((), "missing API key"),
        ((("authorization", good),), "must be 'Bearer <key>'"),
        (bearer("sk-" + good), "API key is malformed"),
        (bearer(wrong), f"API key {key_id} is not valid"),
    ]
    for metadata, needle in cases:
        for call in (stub.Generate(req, metadata=metadata), stub.Route(req, metadata=metadata)):
            code, details = await _code(collect(call) if hasattr(call, "read") else call)
            assert code is grpc.StatusCode.UNAUTHENTICATED, details
            assert needle in details
            assert good not in details and wrong not in details
            assert good[16:] not in details  # the secret part
    code, _ = await _code(stub.ListBackends(rpb.ListBackendsRequest()))
    assert code is grpc.StatusCode.UNAUTHENTICATED


async def test_health_answers_without_a_key(launch, backends, keys, tmp_path, channel_to):
    router = await launch(secured(tmp_path, backends))
    health = health_pb2_grpc.HealthStub(channel_to(router))

    resp = await health.Check(health_pb2.HealthCheckRequest(service=""))

    assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_key_revoked_in_the_file_stops_working_at_the_next_refresh(
    launch, backends, tmp_path, channel_to
):
    from hybrid_router_cli.main import main

    path = tmp_path / "keys.yaml"
    keys = make_keys(path, ["open"])
    router = await launch(secured(tmp_path, backends))
    stub = stub_for(channel_to(router))
    req = user_request("hi", max_output_tokens=2)
    assert (await stub.Route(req, metadata=bearer(keys["open"]))).backend

    key_id = keys["open"].split("_")[1]
    assert await asyncio.to_thread(main, ["keys", "revoke", "--file", str(path), key_id]) == 0

    deadline = asyncio.get_running_loop().time() + 10
    while True:
        try:
            await stub.Route(req, metadata=bearer(keys["open"]))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() is grpc.StatusCode.UNAUTHENTICATED
            assert f"API key {key_id} was revoked" in (exc.details() or "")
            break
        assert asyncio.get_running_loop().time() < deadline, "revocation never took effect"
        await asyncio.sleep(0.05)


# --- tenants ------------------------------------------------------------------------------------


async def test_the_decision_only_considers_the_tenants_backends(
    launch, backends, keys, tmp_path, channel_to
):
    router = await launch(secured(tmp_path, backends))
    stub = stub_for(channel_to(router))
    req = user_request("alpha beta", max_output_tokens=4)

    acme = await stub.Route(req, metadata=bearer(keys["acme"]))
    beta = await stub.Route(
        user_request("x", max_output_tokens=4, data_class=tpb.DATA_CLASS_PUBLIC),
        metadata=bearer(keys["beta"]),
    )
    listed = await stub.ListBackends(rpb.ListBackendsRequest(), metadata=bearer(keys["acme"]))

    assert {c.backend for c in acme.candidates} == {"edge-a", "gpu-a"}
    assert [c.backend for c in beta.candidates] == ["hosted-a"]
    assert sorted(b.name for b in listed.backends) == ["edge-a", "gpu-a"]


@pytest.mark.parametrize(
    ("tenant", "fields", "needle"),
    [
        ("beta", {"data_class": tpb.DATA_CLASS_INTERNAL}, "data class 'internal'"),
        ("open", {"data_class": tpb.DATA_CLASS_RESTRICTED}, "data class 'restricted'"),
        ("acme", {"pin_tiers": [tpb.TIER_HOSTED]}, "tier hosted named in pin_tiers"),
        ("acme", {"pin_backends": ["hosted-a"]}, "backend 'hosted-a' (hosted)"),
        ("beta", {"pin_backends": ["gpu-a"], "data_class": tpb.DATA_CLASS_PUBLIC},
         "backend gpu-a named in pin_backends"),
        ("ghost", {}, "tenant 'ghost', which auth.tenants does not define"),
    ],
)  # fmt: skip
async def test_asking_for_what_the_tenant_may_not_use_is_permission_denied(
    launch, backends, keys, tmp_path, channel_to, tenant, fields, needle
):
    router = await launch(secured(tmp_path, backends))
    stub = stub_for(channel_to(router))
    req = user_request("alpha", max_output_tokens=4, **fields)

    for call in (
        stub.Route(req, metadata=bearer(keys[tenant])),
        collect(stub.Generate(req, metadata=bearer(keys[tenant]))),
    ):
        code, details = await _code(call)
        assert code is grpc.StatusCode.PERMISSION_DENIED, details
        assert needle in details
        assert keys[tenant] not in details


async def test_a_request_only_a_forbidden_tier_can_serve_is_permission_denied(
    launch, backends, keys, tmp_path, channel_to
):
    router = await launch(secured(tmp_path, backends))
    stub = stub_for(channel_to(router))
    long_prompt = user_request("word " * 6000, max_output_tokens=4)  # > gpu-a's 4096 window

    code, details = await _code(stub.Route(long_prompt, metadata=bearer(keys["acme"])))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "hosted backend 'hosted-a', which this request needs" in details
    # The same request from a tenant that may use hosted is served there.
    ok = await stub.Route(long_prompt, metadata=bearer(keys["open"]))
    assert ok.backend == "hosted-a"


# --- exposure -------------------------------------------------------------------------------------


async def test_a_non_loopback_router_without_keys_refuses_to_start(backends):
    cfg = parse_config({"server": {"address": "0.0.0.0:0"}, "backends": backends})

    with pytest.raises(ConfigError) as err:
        await create_server(cfg)

    assert "not a loopback address and no API keys are configured" in err.value.message
    assert "auth.keys_file" in err.value.message


async def test_a_loopback_router_without_keys_runs_open_and_says_so(
    start_router, backends, channel_to, caplog
):
    with caplog.at_level(logging.WARNING, logger="router"):
        router = await start_router(backends)

    assert "auth is OFF" in caplog.text and "loopback" in caplog.text
    events = await collect(stub_for(channel_to(router)).Generate(user_request("hi")))
    assert events[-1].usage.complete


async def test_serve_refuses_a_public_address_without_keys(tmp_path, backends):
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"server": {"address": "0.0.0.0:0"}, "backends": backends}))

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hybrid_router_cli.main", "serve", "--config", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)

    assert proc.returncode == 2 and out == b""
    assert err.decode().startswith(
        f"error: {path}: auth: server.address 0.0.0.0:0 is not a loopback address"
    )


# --- TLS and mTLS -------------------------------------------------------------------------------


async def test_tls_serves_a_client_that_trusts_the_ca_and_fails_plaintext_cleanly(
    launch, backends, keys, tmp_path, pki
):
    tls = {"cert_file": pki.server_cert, "key_file": pki.server_key}
    router = await launch(secured(tmp_path, backends, server={"tls": tls}))
    req = user_request("alpha", max_output_tokens=3)

    async with tls_channel(router.port, pki, client=None) as ch:
        events = await collect(stub_for(ch).Generate(req, metadata=bearer(keys["open"])))
    assert events[-1].usage.complete

    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as plain:
        code, details = await _code(
            stub_for(plain).Route(req, metadata=bearer(keys["open"]), timeout=10)
        )
    assert code is grpc.StatusCode.UNAVAILABLE, details

    # A client that does not trust the server's CA fails the handshake.
    creds = grpc.ssl_channel_credentials(root_certificates=pki.read("other_ca"))
    async with grpc.aio.secure_channel(f"127.0.0.1:{router.port}", creds) as wrong:
        code, _ = await _code(stub_for(wrong).Route(req, metadata=bearer(keys["open"]), timeout=10))
    assert code is grpc.StatusCode.UNAVAILABLE

    # The router is unharmed by the failed connections.
    async with tls_channel(router.port, pki, client=None) as ch:
        assert (await stub_for(ch).Route(req, metadata=bearer(keys["open"]))).backend


async def test_mtls_rejects_clients_without_a_certificate_or_from_another_ca(
    launch, backends, keys, tmp_path, pki
):
    tls = {
        "cert_file": pki.server_cert,
        "key_file": pki.server_key,
        "client_ca_file": pki.ca,
    }
    router = await launch(secured(tmp_path, backends, server={"tls": tls}))
    req = user_request("alpha", max_output_tokens=3)

    async with tls_channel(router.port, pki, client="client") as ch:
        events = await collect(stub_for(ch).Generate(req, metadata=bearer(keys["open"])))
    assert events[-1].usage.complete

    for client in (None, "other_client"):
        async with tls_channel(router.port, pki, client=client) as ch:
            code, details = await _code(
                stub_for(ch).Route(req, metadata=bearer(keys["open"]), timeout=10)
            )
        assert code is grpc.StatusCode.UNAVAILABLE, (client, details)


async def test_a_missing_certificate_file_is_a_config_error_naming_the_key(
    backends, keys, tmp_path, pki
):
    tls = {"cert_file": str(tmp_path / "nope.pem"), "key_file": pki.server_key}
    cfg = parse_config(secured(tmp_path, backends, server={"tls": tls}))

    with pytest.raises(ConfigError) as err:
        await create_server(cfg)

    assert "server.tls.cert_file" in err.value.message and "nope.pem" in err.value.message


# --- request limits -------------------------------------------------------------------------------


async def _first_event(call: Any) -> Any:
    return await call.read()


async def _rest(call: Any) -> list[Any]:
    """The remaining events of a call read with ``read()`` (iterating it is not allowed)."""
    out = []
    while (ev := await call.read()) is not grpc.aio.EOF:
        out.append(ev)
    return out


async def test_the_tenant_stream_limit_refuses_the_extra_stream_only(
    launch, backends, keys, tmp_path, channel_to
):
    router = await launch(secured(tmp_path, backends))
    stub = stub_for(channel_to(router))
    slow = user_request("one two three four", max_output_tokens=20, pin_tiers=[tpb.TIER_EDGE])

    first = stub.Generate(slow, metadata=bearer(keys["acme"]))
    assert (await _first_event(first)).WhichOneof("event") == "decision"

    code, details = await _code(collect(stub.Generate(slow, metadata=bearer(keys["acme"]))))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "tenant 'acme' already has 1 open streams" in details
    assert "auth.tenants[acme].max_streams = 1" in details
    # Another tenant is not limited by acme's streams.
    other = await collect(stub.Generate(slow, metadata=bearer(keys["open"])))
    assert other[-1].usage.complete

    rest = await _rest(first)
    assert rest[-1].WhichOneof("event") == "usage" and rest[-1].usage.complete
    assert rest[-1].usage.output_tokens == 20
    # The slot is free again.
    again = await collect(stub.Generate(slow, metadata=bearer(keys["acme"])))
    assert again[-1].usage.complete


async def test_request_size_limits_are_invalid_argument_and_spare_other_streams(
    launch, backends, keys, tmp_path, channel_to
):
    server = {
        "limits": {"max_messages": 3, "max_prompt_bytes": 100, "max_streams_per_connection": 2}
    }
    router = await launch(secured(tmp_path, backends, server=server))
    stub = stub_for(channel_to(router))
    md = bearer(keys["open"])
    # 60 tokens at 40 tokens/s: open for 1.5 s, far longer than the checks below take.
    slow = user_request("one two three", max_output_tokens=60, pin_tiers=[tpb.TIER_EDGE])
    running = stub.Generate(slow, metadata=md)
    assert (await _first_event(running)).WhichOneof("event") == "decision"

    many = rpb.GenerateRequest(
        messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content="x")] * 4, max_output_tokens=2
    )
    code, details = await _code(stub.Route(many, metadata=md))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("messages: 4 messages") and "server.limits.max_messages" in details

    code, details = await _code(collect(stub.Generate(user_request("é" * 60), metadata=md)))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "120 bytes of message text" in details and "server.limits.max_prompt_bytes" in details

    # Two streams on this connection: the second is allowed, a third is refused.
    second = stub.Generate(slow, metadata=md)
    assert (await _first_event(second)).WhichOneof("event") == "decision"
    code, details = await _code(collect(stub.Generate(slow, metadata=md)))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server.limits.max_streams_per_connection = 2" in details

    for call in (running, second):
        rest = await _rest(call)
        assert rest[-1].usage.complete and rest[-1].usage.output_tokens == 60
        assert text_of(rest).split()[:3] == ["one", "two", "three"]
