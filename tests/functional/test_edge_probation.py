"""The post-swap watchdog end to end: a version that passes its smoke test but fails real
requests is rolled back by a real agent process.

``hybrid-router models publish`` to S3 (moto server), a router that reads the desired
version and tells the device, a real agent that installs v2 (the scripted engine's
``fail_after_requests``: its smoke test passes, every later request fails), requests sent
through the router, and the device going back to v1 on its own.
"""

from __future__ import annotations

import json

import edgeutil
import grpc
import pytest
from awsenv import aws_env, moto_server  # noqa: F401 - fixtures
from edgeutil import edge_config, wait_for_device
from rtutil import collect, stub_for, user_request
from test_edge_sync import MODEL, agent_args, bucket, publish, store, version_of  # noqa: F401

edge_router = edgeutil.edge_router
start_agent = edgeutil.start_agent


async def test_a_version_that_fails_real_requests_after_its_swap_is_rolled_back(
    edge_router,
    start_agent,
    moto_server,  # noqa: F811
    bucket,  # noqa: F811
    tmp_path,
    channel_to,
):
    router = await edge_router(edge=edge_config(models=store(moto_server, bucket)))
    await publish(moto_server, bucket, tmp_path, "v1", {"reply_tokens": 3})
    # Judged after 3 requests: below the router's circuit breaker (5 consecutive failures),
    # so the device stays a candidate and the requests after the rollback reach it.
    agent = start_agent(
        router,
        "dev-1",
        args=(*agent_args(moto_server, bucket), "--probation-min-requests", "3"),
    )
    await agent.ready()
    await wait_for_device(router, "dev-1", lambda d: version_of(d) == "v1")

    await publish(moto_server, bucket, tmp_path, "v2", {"fail_after_requests": 1})
    status = await wait_for_device(router, "dev-1", lambda d: version_of(d) == "v2")
    assert status.sync_status == f"ok: {MODEL} v2"  # it passed its smoke test

    stub = stub_for(channel_to(router))
    for _ in range(3):  # one at a time: each reaches v2 and fails there
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(stub.Generate(user_request("alpha")))
        assert "only the first 1 request" in (caught.value.details() or "")

    status = await wait_for_device(
        router, "dev-1", lambda d: d.sync_status.startswith("rolled back")
    )
    assert status.sync_status == (
        f"rolled back {MODEL} from v2 to v1: 3 of 3 requests failed in probation"
    )
    assert version_of(status) == "v1" and status.desired_versions[MODEL] == "v2"
    log = agent.log()
    assert "WARNING" in log and "v2 failed its probation" in log and "rolling back to v1" in log

    for _ in range(3):  # served by v1 (3 tokens); v2, still desired, is not re-installed
        events = await collect(stub.Generate(user_request("alpha")))
        assert events[-1].usage.complete and events[-1].usage.output_tokens == 3
    status = await wait_for_device(router, "dev-1")
    assert version_of(status) == "v1" and status.sync_status.startswith("rolled back")

    state = json.loads((agent.work_dir / "models" / "state.json").read_text())[MODEL]
    assert state["current"] == "v1" and state["failed"]["v2"] == status.sync_status
