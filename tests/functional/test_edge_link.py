"""The edge tier end to end: real agent processes (scripted engine) dial a real router.

Sites and devices, heartbeat timeout, a device killed before or after its first token,
cancellation reaching the device, drain on SIGTERM, and mTLS device identity.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import edgeutil
import grpc
import pytest
from edgeutil import REPO, edge_config, wait_for_device
from hybrid_router.v1 import edge_link_pb2 as epb
from hybrid_router.v1 import edge_link_pb2_grpc
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from rtutil import collect, kinds, ms_backend, stub_for, text_of, user_request
from secutil import make_pki, tls_channel

from serving.engines.scripted import ScriptedEngine

# Fixtures from edgeutil (pytest finds them in this module's namespace).
edge_router = edgeutil.edge_router
start_agent = edgeutil.start_agent

GPU_COST = {"gpu_hourly_usd": 2.0, "gpu_throughput_tokens_per_s": 100}


async def gpu_backend(model_server, **engine: object) -> dict[str, object]:  # type: ignore[no-untyped-def]
    addr = await model_server(ScriptedEngine(**engine))  # type: ignore[arg-type]
    return ms_backend("gpu-a", "gpu", addr, cost=GPU_COST)


async def read_rest(call) -> list[rpb.GenerateEvent]:  # type: ignore[no-untyped-def]
    """The remaining events of a call already read with ``read()``."""
    out = []
    while (ev := await call.read()) is not grpc.aio.EOF:
        out.append(ev)
    return out


def report(decision: rpb.Decision, backend: str) -> rpb.CandidateReport:
    return next(c for c in decision.candidates if c.backend == backend)


async def test_two_devices_at_two_sites_with_site_and_device_affinity(
    edge_router, start_agent, model_server, channel_to
):
    router = await edge_router([await gpu_backend(model_server)])
    north = start_agent(router, "dev-north", site="north", scripted={"reply_tokens": 3})
    south = start_agent(router, "dev-south", site="south", scripted={"reply_tokens": 3})
    await north.ready()
    await south.ready()
    await wait_for_device(router, "dev-north")
    await wait_for_device(router, "dev-south")
    stub = stub_for(channel_to(router))

    for site, device in (("north", "edge-dev-north"), ("south", "edge-dev-south")):
        decision = await stub.Route(
            user_request("hi there", edge_affinity=rpb.EdgeAffinity(site=site))
        )
        assert decision.backend == device, decision
        other = "edge-dev-south" if site == "north" else "edge-dev-north"
        assert report(decision, other).rejected_by == "edge_affinity"
    decision = await stub.Route(
        user_request("hi", edge_affinity=rpb.EdgeAffinity(device_id="dev-south"))
    )
    assert decision.backend == "edge-dev-south"
    decision = await stub.Route(user_request("hi", edge_affinity=rpb.EdgeAffinity(site="west")))
    assert decision.backend == "gpu-a"
    assert "site 'west' requested" in report(decision, "edge-dev-north").reason

    events = await collect(
        stub.Generate(user_request("alpha beta", edge_affinity=rpb.EdgeAffinity(site="south")))
    )
    assert kinds(events)[0] == "decision" and kinds(events)[-1] == "usage"
    assert text_of(events) == "alpha beta alpha"
    usage = events[-1].usage
    assert usage.backend == "edge-dev-south" and usage.tier == tpb.TIER_EDGE and usage.complete
    assert usage.output_tokens == 3

    listing = await stub.ListBackends(rpb.ListBackendsRequest())
    edge = {b.name: b for b in listing.backends if b.tier == tpb.TIER_EDGE}
    assert set(edge) == {"edge-dev-north", "edge-dev-south"}
    assert (
        edge["edge-dev-north"].site == "north" and edge["edge-dev-south"].device_id == "dev-south"
    )
    assert all(b.healthy and b.kind == "edge" and b.model == "gemma3-270m" for b in edge.values())

    # The fleet table, as an operator gets it.
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "hybrid_router_cli.main", "devices", "--address",
         f"127.0.0.1:{router.port}", "--json"],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    fleet = {d["device_id"]: d for d in json.loads(out.stdout)["devices"]}
    assert set(fleet) == {"dev-north", "dev-south"}
    assert fleet["dev-north"]["online"] and fleet["dev-north"]["site"] == "north"
    assert fleet["dev-south"]["models"][0]["version"] == "builtin"
    assert fleet["dev-south"]["last_seen_unix_ms"] and fleet["dev-south"]["agent_version"]
    table = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "hybrid_router_cli.main", "devices", "--address",
         f"127.0.0.1:{router.port}"],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert table.returncode == 0 and "dev-north" in table.stdout and "north" in table.stdout


async def test_heartbeat_timeout_takes_a_device_offline_and_the_router_stops_choosing_it(
    edge_router, start_agent, model_server, channel_to
):
    router = await edge_router([await gpu_backend(model_server)])
    agent = start_agent(router, "dev-1", site="s1")
    await agent.ready()
    await wait_for_device(router, "dev-1")
    stub = stub_for(channel_to(router))
    assert (await stub.Route(user_request("hi"))).backend == "edge-dev-1"

    agent.signal(signal.SIGSTOP)  # alive, link open, but silent
    status = await wait_for_device(router, "dev-1", lambda d: not d.online, timeout_s=15)
    assert "no heartbeat for" in status.detail
    decision = await stub.Route(user_request("hi"))
    assert decision.backend == "gpu-a"
    edge = report(decision, "edge-dev-1")
    assert edge.rejected_by == "health" and "no heartbeat" in edge.reason
    events = await collect(stub.Generate(user_request("alpha", max_output_tokens=2)))
    assert events[-1].usage.backend == "gpu-a" and events[-1].usage.complete

    agent.signal(signal.SIGCONT)  # the device finds its link closed and dials again
    await wait_for_device(router, "dev-1", timeout_s=20)
    for _ in range(100):
        if (await stub.Route(user_request("hi"))).backend == "edge-dev-1":
            break
        await asyncio.sleep(0.1)
    assert (await stub.Route(user_request("hi"))).backend == "edge-dev-1"


async def test_a_device_killed_before_its_first_token_fails_over(
    edge_router, start_agent, model_server, channel_to
):
    router = await edge_router([await gpu_backend(model_server, reply_tokens=4)])
    agent = start_agent(router, "dev-1", scripted={"ttft_ms": 8000})
    await agent.ready()
    await wait_for_device(router, "dev-1")
    call = stub_for(channel_to(router)).Generate(user_request("alpha beta"))
    first = await call.read()
    assert first.decision.backend == "edge-dev-1"
    await wait_for_device(router, "dev-1", lambda d: d.in_flight + d.queue_depth == 1)
    agent.proc.kill()
    events = [first, *await read_rest(call)]
    assert kinds(events)[:2] == ["decision", "failover"]
    failover = events[1].failover
    assert failover.from_backend == "edge-dev-1" and failover.to_backend == "gpu-a"
    assert "link to the device closed" in failover.reason
    usage = events[-1].usage
    assert (
        usage.complete and usage.backend == "gpu-a" and text_of(events) == "alpha beta alpha beta"
    )


async def test_a_device_killed_after_its_first_token_ends_the_stream_with_a_clear_status(
    edge_router, start_agent, model_server, channel_to
):
    router = await edge_router([await gpu_backend(model_server)])
    agent = start_agent(router, "dev-1", scripted={"tokens_per_s": 4})
    await agent.ready()
    await wait_for_device(router, "dev-1")
    call = stub_for(channel_to(router)).Generate(user_request("alpha", max_output_tokens=40))
    events = [await call.read(), await call.read()]
    assert kinds(events) == ["decision", "delta"]
    agent.proc.kill()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        while True:
            events.append(await call.read())
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "edge-dev-1 failed after the first token" in (err.value.details() or "")
    usage = events[-1].usage
    assert kinds(events)[-1] == "usage" and not usage.complete and usage.backend == "edge-dev-1"
    assert "link to the device closed" in usage.error


async def test_a_cancelled_request_stops_on_the_device(edge_router, start_agent, channel_to):
    router = await edge_router()
    agent = start_agent(router, "dev-1", scripted={"tokens_per_s": 5})
    await agent.ready()
    await wait_for_device(router, "dev-1")
    call = stub_for(channel_to(router)).Generate(user_request("alpha", max_output_tokens=200))
    assert kinds([await call.read(), await call.read()]) == ["decision", "delta"]
    await wait_for_device(router, "dev-1", lambda d: d.in_flight == 1)
    call.cancel()
    # 200 tokens at 5/s would hold the device for 40 s: it stops as soon as it is told.
    await wait_for_device(router, "dev-1", lambda d: d.in_flight == 0, timeout_s=5)


async def test_sigterm_drains_the_request_in_flight_then_the_device_leaves(
    edge_router, start_agent, model_server, channel_to
):
    router = await edge_router([await gpu_backend(model_server)])
    agent = start_agent(router, "dev-1", scripted={"tokens_per_s": 10})
    await agent.ready()
    await wait_for_device(router, "dev-1")
    stub = stub_for(channel_to(router))
    call = stub.Generate(user_request("alpha", max_output_tokens=15))
    events = [await call.read(), await call.read()]
    assert events[0].decision.backend == "edge-dev-1"
    agent.signal(signal.SIGTERM)
    status = await wait_for_device(router, "dev-1", lambda d: d.draining, timeout_s=5)
    assert "draining" in status.detail
    decision = await stub.Route(user_request("hi"))
    assert decision.backend == "gpu-a" and report(decision, "edge-dev-1").rejected_by == "health"
    events += await read_rest(call)
    usage = events[-1].usage
    assert usage.complete and usage.backend == "edge-dev-1" and usage.output_tokens == 15
    assert await agent.wait() == 0
    status = await wait_for_device(router, "dev-1", lambda d: not d.online, timeout_s=5)
    assert "device closed the link" in status.detail


async def test_mtls_the_certificate_is_the_device_credential(edge_router, start_agent, tmp_path):
    pki = make_pki(tmp_path / "pki")
    tls = {"cert_file": pki.server_cert, "key_file": pki.server_key, "client_ca_file": pki.ca}
    router = await edge_router(server={"tls": tls}, edge=edge_config(device_auth="mtls"))
    creds = ("--ca-file", pki.ca, "--cert-file", pki.client_cert, "--key-file", pki.client_key)
    good = start_agent(router, "edge-device-1", args=creds)  # the certificate's common name
    await good.ready()
    liar = start_agent(router, "edge-device-2", args=creds)  # someone else's certificate
    async with tls_channel(router.port, pki) as channel:
        stub = edge_link_pb2_grpc.EdgeFleetStub(channel)
        for _ in range(100):
            if "PERMISSION_DENIED" in liar.log():
                break
            await asyncio.sleep(0.1)
        fleet = await stub.ListDevices(epb.ListDevicesRequest())
    assert [d.device_id for d in fleet.devices] == ["edge-device-1"]
    assert fleet.devices[0].online
    assert "does not match the client certificate" in liar.log()
    assert "READY" not in liar.stdout()


async def test_mtls_needs_a_client_ca(edge_router):
    from router.errors import ConfigError

    with pytest.raises(ConfigError, match="edge.device_auth.*client_ca_file"):
        await edge_router(edge=edge_config(device_auth="mtls"))


async def test_list_devices_without_edge_is_unimplemented(start_router, channel_to):
    router = await start_router([])
    stub = edge_link_pb2_grpc.EdgeFleetStub(channel_to(router))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListDevices(epb.ListDevicesRequest())
    assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
