"""Request size limits and open-stream limits per connection and per tenant."""

from __future__ import annotations

import pytest

from router.security.limits import (
    RequestLimitExceeded,
    StreamLimitExceeded,
    StreamLimits,
    check_request_size,
)


def test_request_within_limits_passes() -> None:
    check_request_size(["a" * 10, "b" * 10], max_messages=2, max_prompt_bytes=20)
    check_request_size(["é" * 5], max_messages=1, max_prompt_bytes=10)  # 10 bytes


def test_too_many_messages_names_the_field_and_the_limit() -> None:
    with pytest.raises(RequestLimitExceeded) as err:
        check_request_size(["x"] * 3, max_messages=2, max_prompt_bytes=100)

    e = err.value
    assert e.limit == "max_messages" and e.field == "messages" and e.grpc_code == "INVALID_ARGUMENT"
    assert "3 messages" in e.message and "server.limits.max_messages" in e.message


@pytest.mark.parametrize(("contents", "size"), [(["é" * 6], "12 bytes"), (["a" * 30], "30")])
def test_too_many_bytes_counts_utf8_bytes(contents: list[str], size: str) -> None:
    with pytest.raises(RequestLimitExceeded) as err:
        check_request_size(contents, max_messages=5, max_prompt_bytes=11)

    assert err.value.limit == "max_prompt_bytes"
    assert size in err.value.message and "server.limits.max_prompt_bytes" in err.value.message


def test_tenant_limit_refuses_only_the_extra_stream_and_frees_on_release() -> None:
    limits = StreamLimits()
    a = limits.acquire("ipv4:1", "acme", 2, limit_key="auth.tenants[acme].max_streams")
    b = limits.acquire("ipv4:2", "acme", 2, limit_key="auth.tenants[acme].max_streams")
    other = limits.acquire("ipv4:3", "beta", 2, limit_key="k")

    with pytest.raises(StreamLimitExceeded) as err:
        limits.acquire("ipv4:4", "acme", 2, limit_key="auth.tenants[acme].max_streams")
    assert err.value.limit == "max_streams_per_tenant"
    assert err.value.grpc_code == "RESOURCE_EXHAUSTED"
    assert "'acme' already has 2 open streams" in err.value.message
    assert "auth.tenants[acme].max_streams = 2" in err.value.message
    assert limits.open_streams("acme") == 2 and limits.open_streams("beta") == 1

    a.release()
    a.release()  # idempotent
    assert limits.open_streams("acme") == 1
    limits.acquire("ipv4:4", "acme", 2, limit_key="k").release()
    for slot in (b, other):
        slot.release()
    assert limits.open_streams("acme") == 0 and limits.open_streams("beta") == 0


def test_connection_limit_counts_per_peer() -> None:
    limits = StreamLimits(per_connection=1)
    slot = limits.acquire("ipv4:127.0.0.1:5000", "", 0, limit_key="k")
    limits.acquire("ipv4:127.0.0.1:5001", "", 0, limit_key="k")

    with pytest.raises(StreamLimitExceeded) as err:
        limits.acquire("ipv4:127.0.0.1:5000", "", 0, limit_key="k")
    assert err.value.limit == "max_streams_per_connection"
    assert "server.limits.max_streams_per_connection = 1" in err.value.message

    slot.release()
    limits.acquire("ipv4:127.0.0.1:5000", "", 0, limit_key="k")


def test_zero_means_unlimited() -> None:
    limits = StreamLimits()
    slots = [limits.acquire("p", "t", 0, limit_key="k") for _ in range(100)]
    assert limits.open_streams("t") == 100
    for s in slots:
        s.release()
