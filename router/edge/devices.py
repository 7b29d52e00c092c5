"""Edge device records: what a device told the router (Register, Heartbeat) and how it is
seen (online, holder replica, last seen), plus the conversions to the backend spec, the
fleet view (``DeviceStatus``) and the shared directory's JSON; and :class:`DeviceEntry`,
the hub's record of a device (its state, its link when this replica holds it, its backend).

Pure data and validation: no I/O, no clock reads (callers pass times in).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from hybrid_router.v1 import edge_link_pb2 as epb

from router.config import EdgeConfig
from router.errors import InvalidRegistration  # the tree's class; importable from here
from router.types import BackendSpec, Prices, Tier

if TYPE_CHECKING:
    from router.backends.base import Backend
    from router.backends.device_link import DeviceLink

#: Greengrass thing names: letters, digits, ``:_-`` (we also allow ``.``), at most 128.
DEVICE_ID = re.compile(r"^[A-Za-z0-9:_.-]{1,128}$")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_BACKEND_NAME = 64
#: Kinds of edge backends: the link is held by this replica, or by another one (relay).
KIND_LINK = "edge"
KIND_RELAY = "edge-relay"


@dataclass(frozen=True, slots=True)
class DeviceModel:
    name: str
    version: str
    context_window: int
    sha256: str = ""
    model_family: str = ""
    #: What the device's engine reports for this model ("tools", "json_schema"...).
    capabilities: tuple[str, ...] = ()

    def to_proto(self) -> epb.EdgeModel:
        return epb.EdgeModel(
            name=self.name,
            version=self.version,
            context_window=self.context_window,
            sha256=self.sha256,
            model_family=self.model_family,
            capabilities=list(self.capabilities),
        )


@dataclass(frozen=True, slots=True)
class DeviceState:
    """One device as the fleet sees it. Replaced (never mutated) on every change."""

    device_id: str
    site: str = ""
    models: tuple[DeviceModel, ...] = ()
    agent_version: str = ""
    max_concurrency: int = 0
    arch: str = ""
    cpu_cores: int = 0
    memory_bytes: int = 0
    accelerator: str = ""
    queue_depth: int = 0
    in_flight: int = 0
    decode_tokens_per_s: float = 0.0
    #: The device's recent prompt reading rate (its heartbeat; 0.0: not reported).
    prefill_tokens_per_s: float = 0.0
    desired_versions: dict[str, str] = field(default_factory=dict)
    sync_status: str = ""
    draining: bool = False
    online: bool = False
    #: Replica holding the link and the address other replicas relay through.
    router_id: str = ""
    relay_address: str = ""
    #: Last heartbeat or registration, Unix ms (wall clock: shown to people, shared).
    last_seen_ms: int = 0

    @property
    def load(self) -> int:
        return self.queue_depth + self.in_flight


@dataclass(slots=True, eq=False)
class DeviceEntry:
    """A device known to this replica: its state, and its link when this replica holds it
    (what the edge adapters read: ``router.backends.edge_device.DeviceView``)."""

    state: DeviceState
    link: DeviceLink | None = None
    #: Monotonic time of the last heartbeat on ``link``.
    last_heartbeat: float = 0.0
    #: Why the device is not a candidate ("" when it is).
    detail: str = ""
    backend: Backend | None = None

    def availability(self) -> str:
        """ "" when the device can take a request now, else why not."""
        if not self.state.online:
            return self.detail or "offline"
        if self.state.draining:
            return "draining: finishing its requests, takes no new one"
        return ""


def _models(items: Any, where: str) -> tuple[DeviceModel, ...]:
    out = []
    for i, m in enumerate(items):
        if not m.name:
            raise InvalidRegistration(f"{where}.models[{i}].name", "must not be empty")
        if m.context_window < 16:
            raise InvalidRegistration(
                f"{where}.models[{i}].context_window", f"must be >= 16, got {m.context_window}"
            )
        out.append(
            DeviceModel(
                name=m.name,
                version=m.version,
                context_window=m.context_window,
                sha256=m.sha256,
                model_family=m.model_family,
                capabilities=tuple(c for c in m.capabilities if c)[:16],
            )
        )
    return tuple(out)


def from_register(reg: epb.Register) -> DeviceState:
    """The device's first message as a state (offline until the hub says otherwise)."""
    if not DEVICE_ID.match(reg.device_id):
        raise InvalidRegistration(
            "register.device_id",
            "must be 1-128 letters, digits or ':_.-' (a Greengrass thing name), got "
            f"{reg.device_id!r}",
        )
    if len(reg.site) > 128:
        raise InvalidRegistration("register.site", "at most 128 characters")
    hw = reg.hardware
    return DeviceState(
        device_id=reg.device_id,
        site=reg.site,
        models=_models(reg.models, "register"),
        agent_version=reg.agent_version,
        max_concurrency=reg.max_concurrency,
        arch=hw.arch,
        cpu_cores=hw.cpu_cores,
        memory_bytes=hw.memory_bytes,
        accelerator=hw.accelerator,
    )


def with_heartbeat(state: DeviceState, hb: epb.Heartbeat, now_ms: int) -> DeviceState:
    """``state`` updated by a heartbeat (its models replace the registered ones when given)."""
    models = _models(hb.models, "heartbeat") if len(hb.models) else state.models
    return replace(
        state,
        models=models,
        queue_depth=hb.queue_depth,
        in_flight=hb.in_flight,
        decode_tokens_per_s=hb.decode_tokens_per_s,
        prefill_tokens_per_s=hb.prefill_tokens_per_s,
        desired_versions=dict(hb.desired_versions),
        sync_status=hb.sync_status,
        draining=hb.draining,
        last_seen_ms=now_ms,
    )


def backend_name(device_id: str) -> str:
    """``edge-<device id>``, made a valid backend name (``:`` becomes ``-``; long ids are
    cut and suffixed with a hash so that two devices never share a name)."""
    clean = _NAME_CHARS.sub("-", device_id)
    name = f"edge-{clean}"
    if clean != device_id or len(name) > _MAX_BACKEND_NAME:
        digest = hashlib.sha256(device_id.encode()).hexdigest()[:8]
        name = f"{name[: _MAX_BACKEND_NAME - 9]}-{digest}"
    return name


def serving_model(state: DeviceState, required: str) -> DeviceModel | None:
    """The model the device serves for the router: ``required`` by name, else its first."""
    for m in state.models:
        if not required or m.name == required:
            return m
    return None


def backend_spec(
    state: DeviceState, model: DeviceModel, cfg: EdgeConfig, *, kind: str, endpoint: str
) -> BackendSpec:
    t = cfg.backend
    c = t.cost
    return BackendSpec(
        name=backend_name(state.device_id),
        tier=Tier.EDGE,
        kind=kind,
        endpoint=endpoint,
        model=model.name,
        model_family=model.model_family,
        # The configured ones, plus what the device's engine reports for its model.
        capabilities=frozenset(t.capabilities) | frozenset(model.capabilities),
        context_window=model.context_window,
        max_payload_bytes=t.max_payload_bytes,
        max_concurrency=state.max_concurrency or t.max_concurrency,
        max_queue=t.max_queue,
        data_classes=frozenset(t.data_classes),
        priors=t.priors.to_priors(),
        prices=Prices(edge_per_mtok_usd=c.edge_per_mtok_usd, source=c.source),
        site=state.site,
        device_id=state.device_id,
        tokenizer_id=t.tokenizer.id,
    )


def to_status(state: DeviceState, *, backend: str, detail: str) -> epb.DeviceStatus:
    return epb.DeviceStatus(
        device_id=state.device_id,
        site=state.site,
        online=state.online,
        backend=backend,
        models=[m.to_proto() for m in state.models],
        desired_versions=state.desired_versions,
        queue_depth=state.queue_depth,
        in_flight=state.in_flight,
        decode_tokens_per_s=state.decode_tokens_per_s,
        prefill_tokens_per_s=state.prefill_tokens_per_s,
        last_seen_unix_ms=state.last_seen_ms,
        router_id=state.router_id,
        sync_status=state.sync_status,
        agent_version=state.agent_version,
        hardware=epb.Hardware(
            arch=state.arch,
            cpu_cores=state.cpu_cores,
            memory_bytes=state.memory_bytes,
            accelerator=state.accelerator,
        ),
        draining=state.draining,
        detail=detail,
    )


# --- the shared directory's JSON ------------------------------------------------------------

_SCALARS = (
    "device_id",
    "site",
    "agent_version",
    "max_concurrency",
    "arch",
    "cpu_cores",
    "memory_bytes",
    "accelerator",
    "queue_depth",
    "in_flight",
    "decode_tokens_per_s",
    "prefill_tokens_per_s",
    "sync_status",
    "draining",
    "online",
    "router_id",
    "relay_address",
    "last_seen_ms",
)


def to_json(state: DeviceState) -> dict[str, Any]:
    data: dict[str, Any] = {k: getattr(state, k) for k in _SCALARS}
    data["models"] = [
        {
            "name": m.name,
            "version": m.version,
            "context_window": m.context_window,
            "sha256": m.sha256,
            "model_family": m.model_family,
            "capabilities": list(m.capabilities),
        }
        for m in state.models
    ]
    data["desired_versions"] = dict(state.desired_versions)
    return data


def from_json(data: dict[str, Any]) -> DeviceState:
    """A directory entry back to a state. Raises ValueError on a malformed entry."""
    try:
        kwargs = {k: data[k] for k in _SCALARS if k in data}
        models = tuple(
            DeviceModel(
                name=str(m["name"]),
                version=str(m.get("version", "")),
                context_window=int(m["context_window"]),
                sha256=str(m.get("sha256", "")),
                model_family=str(m.get("model_family", "")),
                capabilities=tuple(str(c) for c in m.get("capabilities", ())),
            )
            for m in data.get("models", ())
        )
        desired = {str(k): str(v) for k, v in dict(data.get("desired_versions", {})).items()}
        state = DeviceState(models=models, desired_versions=desired, **kwargs)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed directory entry: {exc}") from None
    if not DEVICE_ID.match(state.device_id):
        raise ValueError(f"malformed directory entry: bad device_id {state.device_id!r}")
    return state
