"""greengrass/ipc.py through the real AWS IoT Device SDK (awsiotsdk / awscrt) against a
local nucleus speaking Greengrass IPC's wire format (``greengrass_ipc_wire``: eventstream
RPC over a Unix socket, both CRCs checked both ways).

The component's accessControl is the recipe's own (greengrass/recipe.yaml), so a status
topic the recipe does not allow fails here as it would on a device.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import edgeutil
import pytest
import yaml
from awsenv import aws_env, moto_server  # noqa: F401 - fixtures
from awsiot.greengrasscoreipc.client import GreengrassCoreIPCClient
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import ResourceNotFoundError, UnauthorizedError
from edgeutil import wait_for_device
from eventstream_codec import Header, corrupt, encode_message, read_message
from greengrass_ipc_wire import (
    CONNECT,
    CONNECT_ACK,
    PROTOCOL_ERROR,
    VERSION,
    FakeNucleus,
)
from testkit import wait_until

from greengrass.backoff import Backoff
from greengrass.ipc import SOCKET_ENV, TOKEN_ENV, GreengrassIpc, NoIpc, connect
from hybrid_router_cli.main import main as cli

edge_router = edgeutil.edge_router
start_agent = edgeutil.start_agent

REPO = Path(__file__).resolve().parents[2]
COMPONENT = "com.hybridrouter.EdgeAgent"
TOKEN = "svcuid-of-the-edge-agent"
THING = "dev-1"
MODEL = "gemma3-270m"
REGION = "us-east-1"
#: How long the IPC client and the nucleus get to see each other's side of a change.
WAIT_S = 30.0


def recipe_access(thing: str) -> dict[str, Any]:
    """The recipe's accessControl, as the nucleus resolves it for this device."""
    text = (REPO / "greengrass" / "recipe.yaml").read_text()
    text = text.replace("{COMPONENT_NAME}", COMPONENT).replace("{iot:thingName}", thing)
    access: dict[str, Any] = yaml.safe_load(text)["ComponentConfiguration"]["DefaultConfiguration"][
        "accessControl"
    ]
    return access


def component_config(version: str = "v1") -> dict[str, Any]:
    return {
        "routerEndpoint": "router.example.com:443",
        "site": "plant-7",
        "model": {"name": MODEL, "family": "gemma3", "version": version},
        "llamacpp": {"threads": 2, "contextWindow": 2048},
    }


@pytest.fixture
async def nucleus() -> AsyncIterator[FakeNucleus]:
    # A short directory: a Unix socket path must fit in 108 bytes.
    folder = tempfile.mkdtemp(prefix="ggipc-")
    n = FakeNucleus(os.path.join(folder, "ipc.socket"))
    n.add_component(COMPONENT, TOKEN, component_config(), recipe_access(THING))
    await n.start()
    yield n
    await n.close()
    shutil.rmtree(folder, ignore_errors=True)


def environ_for(socket_path: str, token: str = TOKEN) -> dict[str, str]:
    return {SOCKET_ENV: socket_path, TOKEN_ENV: token}


def environ(n: FakeNucleus, token: str = TOKEN) -> dict[str, str]:
    return environ_for(n.socket_path, token)


async def open_ipc(
    n: FakeNucleus, thing: str = THING, *, backoff: Backoff | None = None, timeout_s: float = 20
) -> GreengrassIpc:
    # Connecting blocks until CONNECT_ACK; the nucleus answers on this loop.
    ipc = await asyncio.to_thread(
        connect, True, thing, environ(n), timeout_s=timeout_s, backoff=backoff
    )
    assert isinstance(ipc, GreengrassIpc), "the SDK did not connect to the local nucleus"
    return ipc


# --- greengrass/ipc.py ---------------------------------------------------------------------


async def test_configuration_updates_arrive_on_the_loop_and_status_reaches_iot_core(
    nucleus, caplog
):
    caplog.set_level(logging.INFO)
    ipc = await open_ipc(nucleus)
    updates: list[dict[str, Any]] = []
    threads: set[int] = set()

    def on_update(conf: Any) -> None:
        threads.add(threading.get_ident())
        updates.append(dict(conf))

    ipc.subscribe_config(on_update)  # on the loop, as the agent calls it: does not block
    # After subscribing, the current configuration is read once (catches up on a change
    # made between the process start and the subscription).
    await wait_until(
        lambda: len(updates) == 1, "the configuration read after subscribing", timeout_s=WAIT_S
    )
    assert updates[0]["model"]["version"] == "v1" and updates[0]["site"] == "plant-7"
    [sub] = nucleus.subscriptions
    assert (sub.component, sub.key_path) == (COMPONENT, ())

    # A deployment changes two keys: one event per key, one configuration handed over.
    new = component_config("v2")
    new["site"] = "plant-8"
    assert await nucleus.set_configuration(COMPONENT, new) == 2
    await wait_until(lambda: len(updates) == 2, "the updated configuration", timeout_s=WAIT_S)
    assert updates[1] == new
    assert threads == {threading.get_ident()}, "on_update must run on the agent's loop"

    def reads() -> int:
        return [op for _, op, _ in nucleus.calls].count("aws.greengrass#GetConfiguration")

    await wait_until(lambda: reads() == 3, "a read for each of the two events", timeout_s=WAIT_S)
    await asyncio.sleep(0.3)
    assert len(updates) == 2  # the second read found nothing new: not handed over again
    assert all(
        req == {"keyPath": []} for _, op, req in nucleus.calls if op.endswith("GetConfiguration")
    )

    ipc.publish_status({"device_id": THING, "version": "v2", "sync_status": "ok"})
    await nucleus.wait_for(lambda: bool(nucleus.published), "a status publish")
    [pub] = nucleus.published
    assert (pub.component, pub.topic, pub.qos) == (
        COMPONENT,
        f"hybrid-router/edge/{THING}/status",
        "0",
    )
    assert nucleus.published_json(pub.topic) == [
        {"device_id": THING, "sync_status": "ok", "version": "v2"}
    ]

    ipc.close()  # on the loop, as the agent does; the subscription stream is terminated
    await nucleus.wait_for(lambda: not nucleus.subscriptions, "the subscription closed")
    ipc.publish_status({"after": "close"})  # a no-op, never raises
    assert len(nucleus.published) == 1
    assert [c.accepted for c in nucleus.connects] == [True]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_topic_outside_the_recipe_policy_is_refused_and_logged(nucleus, caplog):
    caplog.set_level(logging.WARNING, logger="greengrass.ipc")
    # The recipe allows hybrid-router/edge/<this thing>/status only; this client publishes
    # under another thing name, as a misconfigured device would.
    ipc = await open_ipc(nucleus, thing="someone-else")
    try:
        ipc.publish_status({"version": "v1"})
        await wait_until(
            lambda: any("UnauthorizedError" in r.getMessage() for r in caplog.records),
            "the refusal logged",
            timeout_s=WAIT_S,
        )
        [record] = [r for r in caplog.records if "UnauthorizedError" in r.getMessage()]
        assert "hybrid-router/edge/someone-else/status" in record.getMessage()
        assert "not authorized" in record.getMessage()
        assert nucleus.published == []
    finally:
        ipc.close()


async def test_a_wrong_token_is_refused_and_ipc_stays_off(nucleus, caplog):
    caplog.set_level(logging.WARNING, logger="greengrass.ipc")
    ipc = await asyncio.to_thread(connect, True, THING, environ(nucleus, "stolen"), timeout_s=20)
    assert isinstance(ipc, NoIpc)
    [attempt] = nucleus.connects
    assert (attempt.token, attempt.version, attempt.accepted) == ("stolen", VERSION, False)
    assert any(
        "cannot connect to the nucleus" in r.getMessage() and nucleus.socket_path in r.getMessage()
        for r in caplog.records
    ), caplog.text


async def test_without_the_nucleus_variables_nothing_is_attempted(nucleus, caplog):
    caplog.set_level(logging.WARNING, logger="greengrass.ipc")
    assert isinstance(connect(False, THING, environ(nucleus)), NoIpc)
    assert isinstance(connect(True, THING, {TOKEN_ENV: TOKEN}), NoIpc)
    assert isinstance(connect(True, THING, {SOCKET_ENV: nucleus.socket_path}), NoIpc)
    assert nucleus.connects == []
    messages = [r.getMessage() for r in caplog.records]
    assert any(SOCKET_ENV in m and "unset" in m for m in messages), messages
    assert any(TOKEN_ENV in m and "unset" in m for m in messages), messages


async def test_a_nucleus_that_never_answers_times_out_and_the_socket_is_closed(caplog):
    caplog.set_level(logging.WARNING, logger="greengrass.ipc")
    folder = tempfile.mkdtemp(prefix="ggipc-")
    path = os.path.join(folder, "ipc.socket")
    received: list[bytes] = []
    hung_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))  # the CONNECT, never answered
        await reader.read()  # until the client gives up and closes the socket
        hung_up.set()
        writer.close()

    server = await asyncio.start_unix_server(silent, path=path)
    try:
        ipc = await asyncio.to_thread(connect, True, THING, environ_for(path), timeout_s=1)
        assert isinstance(ipc, NoIpc)
        assert any("TimeoutError" in r.getMessage() for r in caplog.records), caplog.text
        await asyncio.wait_for(hung_up.wait(), 30)  # not left connecting in the background
        assert received and b"authToken" in received[0]
    finally:
        server.close()
        shutil.rmtree(folder, ignore_errors=True)


async def test_a_corrupt_frame_from_the_nucleus_drops_the_connection_not_the_agent(nucleus, caplog):
    caplog.set_level(logging.INFO, logger="greengrass.ipc")
    ipc = await open_ipc(nucleus, backoff=Backoff(0.05, 0.5))
    try:
        nucleus.corrupt_next = True  # the PublishToIoTCore response's message CRC is wrong
        ipc.publish_status({"version": "v1"})
        # awscrt rejects the frame and closes the connection; IPC makes it again and
        # publishes the last status once more.
        await wait_until(
            lambda: any("back after" in r.getMessage() for r in caplog.records),
            "the connection made again",
            timeout_s=WAIT_S,
        )
        await nucleus.wait_for(lambda: len(nucleus.published) == 2, "the status published again")
        assert [c.accepted for c in nucleus.connects] == [True, True]
        ipc.publish_status({"version": "v2"})
        await nucleus.wait_for(lambda: len(nucleus.published) == 3, "a publish after")
        assert [p.payload for p in nucleus.published] == [b'{"version": "v1"}'] * 2 + [
            b'{"version": "v2"}'
        ]
        assert nucleus.frame_errors == []  # every frame the client sent was valid
        [lost] = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert "lost the IPC connection" in lost.getMessage()
    finally:
        ipc.close()


# --- reconnecting ---------------------------------------------------------------------------


def ipc_log(caplog: Any, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "greengrass.ipc" and r.levelno == level
    ]


async def test_a_nucleus_restart_is_reconnected_and_a_change_made_meanwhile_is_seen(
    nucleus, caplog
):
    caplog.set_level(logging.DEBUG, logger="greengrass.ipc")
    ipc = await open_ipc(nucleus, backoff=Backoff(0.05, 0.5))
    updates: list[dict[str, Any]] = []
    ipc.subscribe_config(lambda conf: updates.append(dict(conf)))
    await wait_until(
        lambda: len(updates) == 1, "the configuration read after subscribing", timeout_s=WAIT_S
    )
    await nucleus.wait_for(lambda: len(nucleus.subscriptions) == 1, "the subscription")
    ipc.publish_status({"version": "v1"})
    await nucleus.wait_for(lambda: len(nucleus.published) == 1, "a status publish")

    # The nucleus goes away: the socket file too, so attempts fail until it is back.
    await nucleus.stop()
    await wait_until(lambda: not ipc.connected, "the drop noticed", timeout_s=WAIT_S)
    # A deployment while the component is disconnected: nobody to notify.
    assert await nucleus.set_configuration(COMPONENT, component_config("v2")) == 0
    ipc.publish_status({"version": "v1", "sync_status": "pending"})  # not sent while down
    ipc.publish_status({"version": "v1", "sync_status": "ok"})  # the latest: sent when back
    await wait_until(
        lambda: len(ipc_log(caplog, logging.DEBUG)) >= 2, "two failed attempts", timeout_s=60
    )
    assert all("reconnecting to the nucleus" in m for m in ipc_log(caplog, logging.DEBUG))
    await nucleus.start()

    await wait_until(lambda: ipc.connected, "reconnected", timeout_s=60)
    await wait_until(lambda: len(updates) == 2, "the change made while down", timeout_s=60)
    assert updates[1] == component_config("v2")
    await nucleus.wait_for(lambda: len(nucleus.subscriptions) == 1, "subscribed again", 60)
    await nucleus.wait_for(lambda: len(nucleus.published) == 2, "the latest status", 60)
    assert nucleus.published_json(f"hybrid-router/edge/{THING}/status")[1] == {
        "version": "v1",
        "sync_status": "ok",
    }
    # Subscribed for real: a later deployment arrives as before.
    assert await nucleus.set_configuration(COMPONENT, component_config("v3")) == 1
    await wait_until(lambda: len(updates) == 3, "a change after the reconnect", timeout_s=WAIT_S)
    assert updates[2]["model"]["version"] == "v3"
    ipc.publish_status({"version": "v3"})
    await nucleus.wait_for(lambda: len(nucleus.published) == 3, "a publish after")

    assert [c.accepted for c in nucleus.connects] == [True, True]
    # One warning for the outage and one line when back, however many attempts failed.
    [lost] = ipc_log(caplog, logging.WARNING)
    assert "lost the IPC connection to the nucleus" in lost and nucleus.socket_path in lost
    [back] = [m for m in ipc_log(caplog, logging.INFO) if "back after" in m]
    assert "IPC connection to the nucleus back after" in back
    assert " attempts; the last one that failed: " in back  # why it took more than one
    # The SDK's own ERROR line for each failed attempt is not let through either.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    ipc.close()
    await nucleus.wait_for(lambda: not nucleus.subscriptions, "the subscription closed")
    await nucleus.wait_for(lambda: nucleus.connections == 0, "the connection closed")


async def test_an_unchanged_configuration_is_not_handed_over_again_after_a_drop(nucleus, caplog):
    caplog.set_level(logging.INFO, logger="greengrass.ipc")
    ipc = await open_ipc(nucleus, backoff=Backoff(0.05, 0.5))
    try:
        updates: list[dict[str, Any]] = []
        ipc.subscribe_config(lambda conf: updates.append(dict(conf)))
        await wait_until(lambda: len(updates) == 1, "the first read", timeout_s=WAIT_S)
        assert nucleus.drop_connections() == 1  # the server stays up: only the socket dies

        def reads() -> int:
            return [op for _, op, _ in nucleus.calls].count("aws.greengrass#GetConfiguration")

        await nucleus.wait_for(lambda: reads() == 2, "the configuration read again", 60)
        await nucleus.wait_for(lambda: len(nucleus.subscriptions) == 1, "subscribed again", 60)
        await asyncio.sleep(0.3)
        assert len(updates) == 1  # the same configuration: not handed over again
        assert await nucleus.set_configuration(COMPONENT, component_config("v2")) == 1
        await wait_until(lambda: len(updates) == 2, "a change after the drop", timeout_s=WAIT_S)
        assert len(ipc_log(caplog, logging.WARNING)) == 1
    finally:
        ipc.close()


async def test_the_nucleus_ending_the_subscription_stream_is_recovered(nucleus, caplog):
    caplog.set_level(logging.INFO, logger="greengrass.ipc")
    ipc = await open_ipc(nucleus, backoff=Backoff(0.05, 0.5))
    try:
        updates: list[dict[str, Any]] = []
        ipc.subscribe_config(lambda conf: updates.append(dict(conf)))
        await wait_until(lambda: len(updates) == 1, "the first read", timeout_s=WAIT_S)
        await nucleus.wait_for(lambda: len(nucleus.subscriptions) == 1, "the subscription")
        # The stream ends while the connection stays up: a change made now would be missed.
        assert await nucleus.end_subscriptions() == 1
        assert await nucleus.set_configuration(COMPONENT, component_config("v2")) == 0
        # The connection is made again, subscribed again, and the configuration re-read.
        await wait_until(lambda: len(updates) == 2, "the change caught up", timeout_s=60)
        assert updates[1]["model"]["version"] == "v2"
        await nucleus.wait_for(lambda: len(nucleus.subscriptions) == 1, "subscribed again", 60)
        assert [c.accepted for c in nucleus.connects] == [True, True]
        warnings = ipc_log(caplog, logging.WARNING)
        assert any("closed the configuration update stream" in m for m in warnings), warnings
    finally:
        ipc.close()


async def test_refused_reconnect_attempts_are_retried_and_logged_once(nucleus, caplog):
    caplog.set_level(logging.INFO)
    ipc = await open_ipc(nucleus, backoff=Backoff(0.05, 0.2))
    try:
        # The nucleus comes back but refuses the token for a while: each attempt gets a
        # CONNECT_ACK without CONNECTION_ACCEPTED and is closed.
        nucleus.components[COMPONENT].token = "not-yet"
        nucleus.drop_connections()
        await nucleus.wait_for(
            lambda: sum(not c.accepted for c in nucleus.connects) >= 3, "refused attempts", 60
        )
        nucleus.components[COMPONENT].token = TOKEN
        await wait_until(lambda: ipc.connected, "reconnected", timeout_s=60)
        assert nucleus.connects[-1].accepted
        # One warning for the outage; the SDK's ERROR line for each refused attempt
        # ("connect failed: AccessDeniedError") is not let through.
        assert len(ipc_log(caplog, logging.WARNING)) == 1
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    finally:
        ipc.close()


async def test_close_during_a_reconnect_wait_returns_promptly(nucleus):
    # The backoff's full jitter drawn at its ceiling: the next attempt would be in 10 min.
    ipc = await open_ipc(nucleus, backoff=Backoff(600, 600, rand=lambda lo, hi: hi))
    nucleus.drop_connections()
    await wait_until(lambda: not ipc.connected, "the drop noticed", timeout_s=WAIT_S)
    # close() runs on a worker thread here so that a hang fails the test instead of it.
    await asyncio.wait_for(asyncio.to_thread(ipc.close), 60)
    assert not ipc._thread.is_alive(), "the reconnect thread is still running"
    assert len(nucleus.connects) == 1  # no attempt was made
    ipc.publish_status({"after": "close"})  # a no-op, never raises
    assert nucleus.published == []


async def test_close_during_a_reconnect_attempt_ends_the_attempt(nucleus):
    # A reconnect attempt to a nucleus that never answers the CONNECT would wait out
    # timeout_s (10 min here); close() ends it instead.
    ipc = await open_ipc(nucleus, backoff=Backoff(0.05, 0.05), timeout_s=600)
    nucleus.hold_connects = True
    nucleus.drop_connections()
    await nucleus.wait_for(lambda: len(nucleus.connects) == 2, "the reconnect attempt", 60)
    assert not ipc.connected
    await asyncio.wait_for(asyncio.to_thread(ipc.close), 60)
    assert not ipc._thread.is_alive(), "the reconnect thread is still running"
    # The attempt's socket is closed, not left connecting in the background.
    await nucleus.wait_for(lambda: nucleus.connections == 0, "the attempt's socket closed")
    assert len(nucleus.connects) == 2


# --- the local nucleus, checked by the SDK and by raw frames ----------------------------------


async def test_modelled_errors_reach_the_sdk_as_its_exceptions(nucleus):
    def calls() -> list[Any]:
        from awscrt.io import (
            ClientBootstrap,
            DefaultHostResolver,
            EventLoopGroup,
            SocketDomain,
            SocketOptions,
        )
        from awsiot.eventstreamrpc import Connection, LifecycleHandler, MessageAmendment

        elg = EventLoopGroup(1)
        opts = SocketOptions()
        opts.domain = SocketDomain.Local
        conn = Connection(
            host_name=nucleus.socket_path,
            port=0,
            bootstrap=ClientBootstrap(elg, DefaultHostResolver(elg)),
            socket_options=opts,
            connect_message_amender=MessageAmendment.create_static_authtoken_amender(TOKEN),
        )
        conn.connect(LifecycleHandler()).result(20)
        client = GreengrassCoreIPCClientV2(client=GreengrassCoreIPCClient(conn))
        out: list[Any] = []
        try:
            out.append(client.get_configuration(key_path=["model", "version"]))
            for call in (
                lambda: client.get_configuration(key_path=["model", "nope"]),
                lambda: client.get_configuration(component_name="com.example.Other"),
                lambda: client.subscribe_to_configuration_update(key_path=["nope"]),
                lambda: client.publish_to_iot_core(topic_name="elsewhere", qos="0", payload=b"x"),
            ):
                try:
                    call()
                    out.append(None)
                except Exception as exc:
                    out.append(exc)
        finally:
            client.close()
        return out

    leaf, *errors = await asyncio.to_thread(calls)
    assert (leaf.component_name, leaf.value) == (COMPONENT, {"version": "v1"})
    assert [type(e) for e in errors] == [
        ResourceNotFoundError,
        ResourceNotFoundError,
        ResourceNotFoundError,
        UnauthorizedError,
    ]
    assert errors[0].message == "Key not found"
    assert "elsewhere" in errors[3].message
    assert nucleus.subscriptions == [] and nucleus.published == []


async def test_the_nucleus_checks_the_client_frames(nucleus):
    async def exchange(frames: list[bytes]) -> list[Any]:
        reader, writer = await asyncio.open_unix_connection(nucleus.socket_path)
        for f in frames:
            writer.write(f)
        await writer.drain()
        got: list[Any] = []
        try:
            while True:
                got.append(await asyncio.wait_for(read_message(reader), 10))
        except asyncio.IncompleteReadError:
            pass  # the nucleus closed the connection
        writer.close()
        return got

    def connect_frame(token: str, flags: int = 0) -> bytes:
        return encode_message(
            [
                Header.string(":version", VERSION),
                Header.int32(":message-type", CONNECT),
                Header.int32(":message-flags", flags),
                Header.int32(":stream-id", 0),
            ],
            b'{"authToken": "%s"}' % token.encode(),
        )

    # A bad message CRC: the connection is dropped without an answer.
    assert await exchange([corrupt(connect_frame(TOKEN))]) == []
    assert nucleus.frame_errors == ["message CRC32 mismatch"]
    # A bad prelude CRC is caught before the body is waited for.
    bad_prelude = bytearray(connect_frame(TOKEN))
    bad_prelude[8] ^= 0xFF
    assert await exchange([bytes(bad_prelude)]) == []
    assert nucleus.frame_errors[-1] == "prelude CRC32 mismatch"
    # Anything before CONNECT: PROTOCOL_ERROR, then closed.
    ping = encode_message(
        [
            Header.int32(":message-type", 2),
            Header.int32(":message-flags", 0),
            Header.int32(":stream-id", 0),
        ]
    )
    [err] = await exchange([ping])
    assert err.get(":message-type") == PROTOCOL_ERROR and b"CONNECT" in err.payload
    # A refused token: CONNECT_ACK without CONNECTION_ACCEPTED, then closed.
    [ack] = await exchange([connect_frame("nope")])
    assert (ack.get(":message-type"), ack.get(":message-flags")) == (CONNECT_ACK, 0)
    assert [c.accepted for c in nucleus.connects] == [False]


# --- the agent under the nucleus ----------------------------------------------------------------


@pytest.fixture
def bucket(moto_server: str, aws_env: None) -> str:  # noqa: F811
    boto3.client("s3", endpoint_url=moto_server, region_name=REGION).create_bucket(
        Bucket="models-ipc"
    )
    return "models-ipc"


async def publish(moto_server: str, bucket: str, tmp_path: Path, version: str, tokens: int) -> None:  # noqa: F811
    artifact = tmp_path / f"scripted-{version}.json"
    artifact.write_text(f'{{"reply_tokens": {tokens}}}')
    rc = await asyncio.to_thread(
        cli,
        [
            "models", "publish", str(artifact), "--name", MODEL, "--version", version,
            "--context-window", "4096", "--format", "scripted", "--bucket", bucket,
            "--endpoint-url", moto_server, "--region", REGION, "--no-desired",
        ],
    )  # fmt: skip
    assert rc == 0


def version_of(d: Any) -> str:
    return d.models[0].version if d.models else ""


async def test_the_agent_follows_a_model_version_deployment_without_a_restart(
    nucleus,
    edge_router,
    start_agent,
    moto_server,  # noqa: F811
    bucket,
    tmp_path,
):
    await publish(moto_server, bucket, tmp_path, "v1", 3)
    await publish(moto_server, bucket, tmp_path, "v2", 5)
    router = await edge_router()  # no model store: the desired version is the component's
    # As the recipe runs it: no --desired-version (model.version is not interpolated into
    # the Run script, which would make the nucleus restart the component on each change);
    # the agent reads v1 over IPC at start.
    args = (
        "--ipc", "--model-bucket", bucket,
        "--s3-endpoint-url", moto_server, "--s3-region", REGION, "--min-free-disk-mb", "1",
    )  # fmt: skip
    agent = start_agent(router, THING, args=args, env=environ(nucleus))
    await agent.ready()
    await wait_for_device(router, THING, lambda d: version_of(d) == "v1")
    topic = f"hybrid-router/edge/{THING}/status"
    await nucleus.wait_for(
        lambda: any(s["version"] == "v1" for s in nucleus.published_json(topic)),
        f"a v1 status on {topic}",
    )
    await nucleus.wait_for(lambda: len(nucleus.subscriptions) == 1, "the agent's subscription")

    # A deployment changes model.version: the running agent switches.
    assert await nucleus.set_configuration(COMPONENT, component_config("v2")) == 1
    status = await wait_for_device(router, THING, lambda d: version_of(d) == "v2")
    assert status.sync_status == f"ok: {MODEL} v2"
    await nucleus.wait_for(
        lambda: any(s["version"] == "v2" for s in nucleus.published_json(topic)),
        f"a v2 status on {topic}",
    )
    last = nucleus.published_json(topic)[-1]
    assert last["device_id"] == THING and last["desired"] == {MODEL: "v2"}
    assert agent.proc.poll() is None, "the agent restarted"
    assert agent.stdout().count("READY ") == 1
    assert [c.accepted for c in nucleus.connects] == [True]

    agent.signal(signal.SIGTERM)
    assert await agent.wait() == 0
    await nucleus.wait_for(lambda: not nucleus.subscriptions, "the subscription closed")
    assert nucleus.frame_errors == [] and nucleus.protocol_errors == []
    assert "Traceback" not in agent.log() and " ERROR " not in agent.log(), agent.log()


async def test_the_agent_reconnects_after_a_nucleus_restart_and_sees_a_change_made_meanwhile(
    nucleus,
    edge_router,
    start_agent,
    moto_server,  # noqa: F811
    aws_env,  # noqa: F811
    tmp_path,
):
    bucket = "models-ipc-reconnect"  # moto_server lives for the session: its own bucket
    boto3.client("s3", endpoint_url=moto_server, region_name=REGION).create_bucket(Bucket=bucket)
    await publish(moto_server, bucket, tmp_path, "v1", 3)
    await publish(moto_server, bucket, tmp_path, "v2", 5)
    router = await edge_router()
    args = (
        "--ipc", "--model-bucket", bucket,
        "--s3-endpoint-url", moto_server, "--s3-region", REGION, "--min-free-disk-mb", "1",
    )  # fmt: skip
    agent = start_agent(router, THING, args=args, env=environ(nucleus))
    await agent.ready()
    await wait_for_device(router, THING, lambda d: version_of(d) == "v1")
    topic = f"hybrid-router/edge/{THING}/status"
    await nucleus.wait_for(
        lambda: any(s["version"] == "v1" for s in nucleus.published_json(topic)), "a v1 status"
    )
    await nucleus.wait_for(lambda: len(nucleus.subscriptions) == 1, "the agent's subscription")

    # The nucleus stops (its socket gone); a deployment changes model.version meanwhile.
    await nucleus.stop()

    def lost() -> bool:
        return "lost the IPC connection to the nucleus" in agent.log()

    await wait_until(lost, "the agent noticed the drop", timeout_s=WAIT_S)
    assert await nucleus.set_configuration(COMPONENT, component_config("v2")) == 0
    await nucleus.start()

    # The agent connects again, re-reads its configuration, switches, and publishes.
    status = await wait_for_device(router, THING, lambda d: version_of(d) == "v2", 90)
    assert status.sync_status == f"ok: {MODEL} v2"
    await nucleus.wait_for(
        lambda: any(s["version"] == "v2" for s in nucleus.published_json(topic)),
        f"a v2 status on {topic}",
        60,
    )
    await nucleus.wait_for(lambda: len(nucleus.subscriptions) == 1, "subscribed again", 60)
    assert agent.proc.poll() is None, "the agent restarted"
    assert agent.stdout().count("READY ") == 1
    assert [c.accepted for c in nucleus.connects] == [True, True]
    log_text = agent.log()
    assert log_text.count("lost the IPC connection") == 1, log_text
    assert log_text.count("IPC connection to the nucleus back after") == 1, log_text

    agent.signal(signal.SIGTERM)
    assert await agent.wait() == 0
    await nucleus.wait_for(lambda: not nucleus.subscriptions, "the subscription closed")
    assert nucleus.frame_errors == [] and nucleus.protocol_errors == []
    assert "Traceback" not in agent.log() and " ERROR " not in agent.log(), agent.log()
