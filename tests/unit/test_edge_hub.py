"""The router's edge hub with a fake clock: links, heartbeats, timeouts, backends, policy."""

from __future__ import annotations

import asyncio

import pytest
from hybrid_router.v1 import edge_link_pb2 as epb
from hybrid_router.v1 import model_service_pb2 as mpb
from testkit import FakeClock

from router.backends.base import Backend
from router.backends.device_link import DeviceLink, LinkClosed
from router.config import EdgeConfig, PolicyConfig
from router.edge.devices import from_register
from router.edge.hub import EdgeHub, LinkRefused
from router.errors import BackendNameTaken, ReplicaDraining
from router.policy.filters import RequestFilter
from router.registry import BackendRegistry
from router.types import (
    BackendCall,
    BackendSpec,
    Chunk,
    DataClass,
    Features,
    InferenceRequest,
    Message,
    Priors,
    Role,
    Tier,
    TokenCount,
)


def register(device: str = "dev-1", *, site: str = "s1", model: str = "gemma3-270m",
             version: str = "v1", window: int = 2048) -> epb.Register:  # fmt: skip
    return epb.Register(
        device_id=device,
        site=site,
        models=[epb.EdgeModel(name=model, version=version, context_window=window,
                              model_family="gemma3")],
        agent_version="0.1.0",
        max_concurrency=1,
    )  # fmt: skip


def make_hub(**cfg: object) -> tuple[EdgeHub, BackendRegistry, FakeClock, FakeClock]:
    clock, wall = FakeClock(1000.0), FakeClock(1000.0)  # monotonic, wall-clock seconds
    registry = BackendRegistry(PolicyConfig(), clock=clock)
    edge = EdgeConfig.model_validate(
        {"enabled": True, "device_auth": "none", "heartbeat_timeout_s": 6.0, **cfg}
    )
    return EdgeHub(edge, registry, router_id="r-1", clock=clock, wall=wall), registry, clock, wall


def health_rejection(registry: BackendRegistry, name: str) -> tuple[str, str] | None:
    request = InferenceRequest(
        messages=(Message(Role.USER, "hi"),), max_output_tokens=8, request_id="r",
        data_class=DataClass.PUBLIC,
    )  # fmt: skip
    features = Features(request, 2, {"estimate": TokenCount(5, False)})
    entry = registry.get(name)
    assert entry is not None
    rf = RequestFilter(features, 8, now=0.0)
    return rf.check(entry.spec, entry.stats.snapshot(), rf.prompt_tokens(entry.spec))


async def test_a_linked_device_becomes_a_healthy_edge_backend():
    hub, registry, _, _ = make_hub()
    await hub.attach(from_register(register()), DeviceLink("dev-1"))
    entry = registry.get("edge-dev-1")
    assert entry is not None
    spec = entry.spec
    assert (spec.tier, spec.kind, spec.endpoint) == (Tier.EDGE, "edge", "link:r-1")
    assert (spec.site, spec.device_id, spec.model, spec.context_window) == (
        "s1", "dev-1", "gemma3-270m", 2048,
    )  # fmt: skip
    assert spec.max_concurrency == 1 and spec.model_family == "gemma3"
    assert entry.stats.snapshot().healthy
    assert health_rejection(registry, "edge-dev-1") is None
    assert await entry.backend.poll_load() == 0


async def test_no_heartbeat_within_the_timeout_takes_the_device_offline():
    hub, registry, clock, _ = make_hub()
    link = DeviceLink("dev-1")
    entry = await hub.attach(from_register(register()), link)
    _, queue = link.open(mpb.ModelGenerateRequest(request_id="q-1"))
    clock.advance(5.0)
    await hub.heartbeat(entry, link, epb.Heartbeat(in_flight=1))
    clock.advance(5.0)
    hub.sweep()
    assert not link.closed  # 5 s since the last heartbeat: still fresh
    clock.advance(1.5)
    hub.sweep()
    assert link.closed and "no heartbeat for 6.5 s" in (link.closed_reason or "")
    item = queue.get_nowait()
    assert isinstance(item, LinkClosed)  # the request in flight fails (failover / status)
    rejected = health_rejection(registry, "edge-dev-1")
    assert rejected is not None and rejected[0] == "health"
    assert "offline: no heartbeat for 6.5 s" in rejected[1]
    backend = registry.get("edge-dev-1").backend  # type: ignore[union-attr]
    with pytest.raises(Exception, match="offline"):
        await backend.poll_load()
    [status] = hub.fleet()
    assert not status.online and status.detail.startswith("offline: no heartbeat")


async def test_a_draining_device_is_not_a_candidate_until_it_stops_draining():
    hub, registry, _, _ = make_hub()
    link = DeviceLink("dev-1")
    entry = await hub.attach(from_register(register()), link)
    await hub.heartbeat(entry, link, epb.Heartbeat(draining=True))
    rejected = health_rejection(registry, "edge-dev-1")
    assert rejected is not None and "draining" in rejected[1]
    await hub.heartbeat(entry, link, epb.Heartbeat(queue_depth=1, in_flight=1))
    assert health_rejection(registry, "edge-dev-1") is None
    assert registry.get("edge-dev-1").stats.snapshot().reported_load == 2  # type: ignore[union-attr]


async def test_a_stream_that_ended_since_the_last_heartbeat_is_not_put_back_by_each_poll():
    hub, registry, _, wall = make_hub()
    link = DeviceLink("dev-1")
    entry = await hub.attach(from_register(register()), link)
    reg = registry.get("edge-dev-1")
    assert reg is not None
    reg.stats.begin()  # the router's stream to the device
    wall.advance(2.0)
    await hub.heartbeat(entry, link, epb.Heartbeat(in_flight=1))
    await registry.poll_once()
    assert reg.stats.snapshot().reported_load == 1
    reg.stats.end()  # it ends; the device's next heartbeat is up to 2 s away
    for _ in range(3):  # the registry polls far more often than the device beats
        await registry.poll_once()
        assert reg.stats.snapshot().reported_load == 0
    reg.stats.begin()  # a new stream, not in the last heartbeat either
    await registry.poll_once()
    assert reg.stats.snapshot().reported_load == 1
    wall.advance(2.0)
    await hub.heartbeat(entry, link, epb.Heartbeat(in_flight=1, queue_depth=1))
    assert reg.stats.snapshot().reported_load == 2  # a new heartbeat is taken as it says
    await registry.poll_once()
    assert reg.stats.snapshot().reported_load == 2


async def test_a_device_without_the_required_model_is_listed_but_not_a_backend():
    hub, registry, _, _ = make_hub(model="llama-3.2-1b")
    await hub.attach(from_register(register(model="gemma3-270m")), DeviceLink("dev-1"))
    assert registry.get("edge-dev-1") is None
    [status] = hub.fleet()
    assert status.online and status.backend == ""
    assert status.detail == "does not hold model 'llama-3.2-1b'"


async def test_a_new_model_version_with_a_new_window_replaces_the_backend():
    hub, registry, _, _ = make_hub()
    link = DeviceLink("dev-1")
    entry = await hub.attach(from_register(register()), link)
    first = registry.get("edge-dev-1").backend  # type: ignore[union-attr]
    model = epb.EdgeModel(name="gemma3-270m", version="v1", context_window=2048,
                          model_family="gemma3")  # fmt: skip
    await hub.heartbeat(entry, link, epb.Heartbeat(models=[model]))
    assert registry.get("edge-dev-1").backend is first  # type: ignore[union-attr]
    model = epb.EdgeModel(name="gemma3-270m", version="v2", context_window=4096,
                          model_family="gemma3")  # fmt: skip
    await hub.heartbeat(entry, link, epb.Heartbeat(models=[model]))
    replaced = registry.get("edge-dev-1")
    assert replaced is not None and replaced.backend is not first
    assert replaced.spec.context_window == 4096
    assert hub.fleet()[0].models[0].version == "v2"


async def test_a_second_link_from_the_same_device_replaces_the_first():
    hub, registry, _, _ = make_hub()
    old = DeviceLink("dev-1")
    await hub.attach(from_register(register()), old)
    new = DeviceLink("dev-1")
    entry = await hub.attach(from_register(register()), new)
    assert old.closed and "newer link" in (old.closed_reason or "")
    hub.detach(entry, old, "stream ended")  # the old stream's end changes nothing
    assert entry.link is new and registry.get("edge-dev-1").stats.snapshot().healthy  # type: ignore[union-attr]


class _Static(Backend):
    async def stream(self, call: BackendCall):  # type: ignore[no-untyped-def, override]
        yield Chunk(done=True)


async def test_a_device_whose_backend_name_is_taken_is_refused():
    hub, registry, _, _ = make_hub()
    spec = BackendSpec(
        name="edge-dev-1", tier=Tier.GPU, kind="model_service", endpoint="x:1", model="m",
        context_window=100, max_payload_bytes=10, max_concurrency=1, max_queue=0,
        data_classes=frozenset({DataClass.PUBLIC}), priors=Priors(1, 1),
    )  # fmt: skip
    await registry.add(_Static(spec))
    with pytest.raises(LinkRefused) as err:
        await hub.attach(from_register(register()), DeviceLink("dev-1"))
    assert isinstance(err.value, BackendNameTaken) and err.value.grpc_code == "FAILED_PRECONDITION"
    assert "taken" in err.value.message


async def test_offline_devices_are_forgotten_after_forget_after_s():
    hub, registry, _, wall = make_hub(forget_after_s=60)
    link = DeviceLink("dev-1")
    entry = await hub.attach(from_register(register()), link)
    hub.detach(entry, link, "device closed the link")
    wall.advance(30)
    hub.sweep()
    await asyncio.sleep(0)
    assert "dev-1" in hub.entries and registry.get("edge-dev-1") is not None
    wall.advance(31)
    hub.sweep()
    for _ in range(5):
        await asyncio.sleep(0)
    assert "dev-1" not in hub.entries and registry.get("edge-dev-1") is None


async def test_desired_versions_go_out_in_registered():
    hub, _, _, _ = make_hub(desired_versions={"gemma3-270m": "v7"})
    msg = hub.registered_message().registered
    assert msg.router_id == "r-1" and msg.desired_versions["gemma3-270m"] == "v7"
    assert msg.heartbeat_interval_ms == 2000


async def test_a_draining_hub_refuses_new_links_and_closes_idle_ones():
    hub, _, _, _ = make_hub()
    link = DeviceLink("dev-1")
    await hub.attach(from_register(register()), link)
    await hub.drain(1.0)
    assert link.closed and "shutting down" in (link.closed_reason or "")
    with pytest.raises(LinkRefused) as err:
        await hub.attach(from_register(register("dev-2")), DeviceLink("dev-2"))
    assert isinstance(err.value, ReplicaDraining) and err.value.grpc_code == "UNAVAILABLE"
