"""EndpointSlices -> backends (router/discovery/slices.py), and the discovery config."""

from __future__ import annotations

from typing import Any

import pytest

from router.config import KubernetesSourceConfig, parse_config
from router.discovery.slices import backend_name, desired_backends, unusable_slices
from router.errors import ConfigError

TEMPLATE = {"model": "llama", "context_window": 8192, "priors": {"ttft_ms": 200}}


def source(**kw: Any) -> KubernetesSourceConfig:
    return KubernetesSourceConfig.model_validate(
        {"name": "gpu", "label_selector": "app=llama", "port_name": "grpc", "backend": TEMPLATE}
        | kw
    )


def eps(
    *endpoints: dict[str, Any],
    name: str = "llama-abc",
    ports: list[dict[str, Any]] | None = None,
    address_type: str = "IPv4",
    service: str = "llama",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": address_type,
        "ports": ports if ports is not None else [{"name": "grpc", "port": 9000}],
        "endpoints": list(endpoints),
    }


def ep(address: str, pod: str | None = None, **conditions: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"addresses": [address], "conditions": conditions}
    if pod:
        out["targetRef"] = {"kind": "Pod", "name": pod}
    return out


def test_ready_endpoints_become_backends_from_the_template() -> None:
    found = desired_backends(source(), [eps(ep("10.0.0.1", "pod-a", ready=True))], "ml")

    (b,) = found.values()
    assert b.name == "gpu-pod-a" and b.endpoint == "10.0.0.1:9000"
    assert b.tier.value == "gpu" and b.kind == "model_service"
    assert b.model == "llama" and b.priors.ttft_ms == 200


def test_not_ready_and_terminating_endpoints_take_no_traffic() -> None:
    slices = [
        eps(
            ep("10.0.0.1", "a", ready=True),
            ep("10.0.0.2", "b", ready=False),
            ep("10.0.0.3", "c", ready=True, terminating=True),
            ep("10.0.0.4", "d"),  # no conditions: the API says nil means ready
        )
    ]

    assert sorted(desired_backends(source(), slices, "ml")) == ["gpu-a", "gpu-d"]


def test_port_chosen_by_name_or_the_only_port() -> None:
    two = [{"name": "http", "port": 8000}, {"name": "grpc", "port": 9000}]
    one = [{"port": 7000}]

    named = desired_backends(source(), [eps(ep("10.0.0.1", "a"), ports=two)], "ml")
    only = desired_backends(source(port_name=""), [eps(ep("10.0.0.1", "a"), ports=one)], "ml")
    ambiguous = [eps(ep("10.0.0.1", "a"), ports=two)]

    assert named["gpu-a"].endpoint == "10.0.0.1:9000"
    assert only["gpu-a"].endpoint == "10.0.0.1:7000"
    assert desired_backends(source(port_name=""), ambiguous, "ml") == {}
    assert unusable_slices(source(port_name=""), ambiguous) == ["llama-abc"]
    assert unusable_slices(source(port_name="metrics"), ambiguous) == ["llama-abc"]


def test_ipv6_openai_and_address_named_backends() -> None:
    v6 = desired_backends(source(), [eps(ep("fd00::1"), address_type="IPv6")], "ml")
    openai = desired_backends(
        source(backend={**TEMPLATE, "kind": "openai"}, openai_base_path="/v1"),
        [eps(ep("10.0.0.7", "vllm-0"))],
        "ml",
    )

    assert v6 == {"gpu-fd00-1": v6["gpu-fd00-1"]}
    assert v6["gpu-fd00-1"].endpoint == "[fd00::1]:9000"
    assert openai["gpu-vllm-0"].endpoint == "http://10.0.0.7:9000/v1"


def test_service_mode_one_backend_per_service_while_any_endpoint_is_ready() -> None:
    src = source(backend_per="service")
    slices = [
        eps(ep("10.0.0.1", "a", ready=True), ep("10.0.0.2", "b", ready=True), name="s1"),
        eps(ep("10.0.0.3", "c", ready=False), name="s2", service="other"),
    ]

    found = desired_backends(src, slices, "default-ns")

    assert list(found) == ["gpu-llama"]
    assert found["gpu-llama"].endpoint == "llama.ml.svc:9000"


def test_long_names_are_hashed_to_64_characters() -> None:
    long_pod = "a" * 80

    name = backend_name("gpu-llama", long_pod)

    assert len(name) == 64 and name.startswith("gpu-llama-aaaa")
    assert name != backend_name("gpu-llama", long_pod + "b")
    assert backend_name("gpu", "weird/name:1") == "gpu-weird-name-1"


def test_template_errors_name_the_key_and_the_fix() -> None:
    def load(backend: dict[str, Any]) -> None:
        parse_config(
            {
                "discovery": {
                    "kubernetes": {
                        "sources": [{"name": "gpu", "label_selector": "a=b", "backend": backend}]
                    }
                }
            },
            source="router.yaml",
        )

    with pytest.raises(ConfigError) as missing:
        load({"model": "m"})
    with pytest.raises(ConfigError) as endpoint:
        load({**TEMPLATE, "endpoint": "x:1"})
    with pytest.raises(ConfigError) as tier:
        load({**TEMPLATE, "tier": "cloud"})

    assert "discovery.kubernetes.sources[0](gpu)" in str(missing.value)
    assert "backend.context_window: required" in str(missing.value)
    assert "backend.endpoint is set by discovery" in str(endpoint.value)
    assert "backend.tier: must be one of 'hosted', 'gpu' or 'edge'" in str(tier.value)


def test_source_names_must_be_unique() -> None:
    src = {"name": "gpu", "label_selector": "a=b", "backend": TEMPLATE}

    with pytest.raises(ConfigError, match="source names must be unique; used twice: gpu"):
        parse_config({"discovery": {"kubernetes": {"sources": [src, src]}}})
