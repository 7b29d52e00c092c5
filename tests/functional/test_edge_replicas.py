"""Two router replicas, one device: every replica routes to every device.

The device dials replica A only. Replica B learns of it from the shared directory (a real
redis-server) and reaches it through A's relay port; a request sent to B is served by the
device. When the device goes away, B sees it offline without being told by A.
"""

from __future__ import annotations

import edgeutil
import grpc
from edgeutil import (
    assert_healthy_over_load_polls,
    edge_config,
    wait_for_device,
    wait_routed_to_device,
)
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import types_pb2 as tpb
from rtutil import collect, kinds, stub_for, text_of, user_request
from testkit import wait_until

# Fixtures from edgeutil (pytest finds them in this module's namespace).
edge_router = edgeutil.edge_router
redis_server = edgeutil.redis_server
start_agent = edgeutil.start_agent


async def replicas(edge_router, redis_url: str):  # type: ignore[no-untyped-def]
    edge = edge_config(
        directory={"redis_url": redis_url, "sync_interval_s": 0.2},
        relay={"address": "127.0.0.1:0"},
    )
    a = await edge_router(edge={**edge, "replica_id": "replica-a"})
    b = await edge_router(edge={**edge, "replica_id": "replica-b"})
    return a, b


async def test_a_request_through_the_replica_the_device_did_not_dial(
    edge_router, start_agent, redis_server, channel_to
):
    a, b = await replicas(edge_router, redis_server)
    scripted = {"reply_tokens": 4, "prefill_tokens_per_s": 800}
    agent = start_agent(a, "dev-1", site="plant-7", scripted=scripted)
    assert await agent.ready() == "replica-a"

    status = await wait_for_device(b, "dev-1")  # B's view, from the directory
    assert status.router_id == "replica-a" and status.site == "plant-7"
    stub_b = stub_for(channel_to(b))
    await wait_routed_to_device(stub_b, timeout_s=10.0)
    await assert_healthy_over_load_polls(b)  # its load is the directory's, no relay call

    events = await collect(
        stub_b.Generate(user_request("alpha beta", edge_affinity=rpb.EdgeAffinity(site="plant-7")))
    )
    assert kinds(events)[0] == "decision" and kinds(events)[-1] == "usage"
    assert text_of(events) == "alpha beta alpha beta"
    usage = events[-1].usage
    assert usage.complete and usage.backend == "edge-dev-1" and usage.tier == tpb.TIER_EDGE

    async def edge_backend(stub) -> rpb.BackendStatus:  # type: ignore[no-untyped-def]
        listing = await stub.ListBackends(rpb.ListBackendsRequest())
        return next(x for x in listing.backends if x.name == "edge-dev-1")

    relay = await edge_backend(stub_b)
    assert relay.kind == "edge-relay" and relay.endpoint == a.edge.relay_address
    stub_a = stub_for(channel_to(a))
    local = await edge_backend(stub_a)
    assert local.kind == "edge" and local.endpoint == "link:replica-a"
    # The device's prompt reading rate comes with its heartbeats: to the replica it dialed,
    # and through the directory to the other one.
    for stub in (stub_a, stub_b):
        await wait_until(
            lambda s=stub: _reports_prefill(s, 800), "the device's prefill rate", timeout_s=10
        )

    # The device goes away: B learns it from the directory alone.
    agent.proc.kill()
    status = await wait_for_device(b, "dev-1", lambda d: not d.online, timeout_s=15)
    assert status.detail.startswith("offline")
    decision_call = stub_b.Route(user_request("hi"))
    try:
        decision = await decision_call
    except grpc.aio.AioRpcError as exc:  # no other backend: nothing to choose
        assert exc.code() is grpc.StatusCode.UNAVAILABLE
        assert "edge-dev-1" in (exc.details() or "")
    else:
        raise AssertionError(f"an offline device was chosen: {decision}")


async def test_cancel_through_the_relay_stops_the_device(
    edge_router, start_agent, redis_server, channel_to
):
    a, b = await replicas(edge_router, redis_server)
    agent = start_agent(a, "dev-1", scripted={"tokens_per_s": 5})
    await agent.ready()
    await wait_for_device(b, "dev-1")
    stub_b = stub_for(channel_to(b))
    await wait_routed_to_device(stub_b, timeout_s=10.0)
    call = stub_b.Generate(user_request("alpha", max_output_tokens=200))
    assert kinds([await call.read(), await call.read()]) == ["decision", "delta"]
    await wait_for_device(a, "dev-1", lambda d: d.in_flight == 1)
    call.cancel()
    await wait_for_device(a, "dev-1", lambda d: d.in_flight == 0, timeout_s=5)


async def _reports_prefill(stub, rate: float) -> bool:  # type: ignore[no-untyped-def]
    listing = await stub.ListBackends(rpb.ListBackendsRequest())
    return any(x.name == "edge-dev-1" and x.prefill_tokens_per_s == rate for x in listing.backends)
