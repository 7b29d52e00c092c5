"""Edge device records: validation, names, conversions, and the model store's layout."""

from __future__ import annotations

import pytest
from hybrid_router.v1 import edge_link_pb2 as epb

from greengrass.manifest import desired_key
from router.config import EdgeConfig, parse_config
from router.edge.desired import pointer_key
from router.edge.devices import (
    InvalidRegistration,
    backend_name,
    from_json,
    from_register,
    to_json,
    with_heartbeat,
)
from router.errors import ConfigError


def test_register_names_the_bad_field():
    with pytest.raises(InvalidRegistration, match=r"register.device_id: must be 1-128"):
        from_register(epb.Register(device_id="bad id with spaces"))
    bad = epb.Register(device_id="d", models=[epb.EdgeModel(name="m", context_window=8)])
    with pytest.raises(InvalidRegistration, match=r"register.models\[0\].context_window"):
        from_register(bad)
    bad = epb.Register(device_id="d", models=[epb.EdgeModel(context_window=100)])
    with pytest.raises(InvalidRegistration, match=r"register.models\[0\].name"):
        from_register(bad)


def test_backend_names_are_valid_and_distinct_for_thing_names():
    assert backend_name("dev-1") == "edge-dev-1"
    a, b = backend_name("plant:7:line-2"), backend_name("plant-7-line-2")
    assert a != b and a.startswith("edge-plant-7-line-2-") and ":" not in a
    long = backend_name("x" * 128)
    assert len(long) <= 64 and long != backend_name("x" * 127)


def test_state_survives_the_directory_round_trip():
    reg = epb.Register(
        device_id="dev-1",
        site="north",
        models=[epb.EdgeModel(name="m", version="v2", context_window=512, sha256="ab")],
        hardware=epb.Hardware(arch="aarch64", cpu_cores=4, memory_bytes=8 << 30),
        agent_version="0.1.0",
    )
    state = with_heartbeat(
        from_register(reg),
        epb.Heartbeat(queue_depth=1, in_flight=1, decode_tokens_per_s=12.5,
                      desired_versions={"m": "v3"}, sync_status="downloading"),
        now_ms=123,
    )  # fmt: skip
    assert from_json(to_json(state)) == state
    with pytest.raises(ValueError, match="malformed directory entry"):
        from_json({"device_id": "dev-1", "models": [{"name": "m"}]})


def test_the_router_and_the_agent_agree_on_the_pointer_key():
    for prefix in ("models", "/a/b/", ""):
        assert pointer_key(prefix, "gemma3-270m") == desired_key(prefix, "gemma3-270m")


def test_edge_config_errors_name_the_fix():
    with pytest.raises(ConfigError, match="heartbeat_timeout_s must be longer"):
        parse_config({"edge": {"heartbeat_interval_ms": 5000, "heartbeat_timeout_s": 2}})
    with pytest.raises(ConfigError, match="needs relay.address"):
        parse_config({"edge": {"directory": {"redis_url": "redis://r:6379"}}})
    with pytest.raises(ConfigError, match="set relay.advertise_address"):
        parse_config({"edge": {"relay": {"address": "0.0.0.0:50061"}}})
    cfg = EdgeConfig.model_validate(
        {"relay": {"address": "0.0.0.0:50061", "advertise_address": "10.0.0.5:50061"}}
    )
    assert cfg.relay.advertise_address == "10.0.0.5:50061"
