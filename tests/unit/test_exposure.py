"""Only a loopback server may run without API keys; TLS config is checked at load."""

from __future__ import annotations

import pytest

from router.config import RouterConfig, parse_config
from router.errors import ConfigError
from router.security.exposure import check_auth_exposure, is_loopback


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.1.2.3:0", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("10.0.0.5:50051", False),
        ("router.internal:50051", False),
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_loopback_without_keys_runs_and_says_so() -> None:
    notice = check_auth_exposure(RouterConfig())

    assert notice is not None and "auth is OFF" in notice and "127.0.0.1:50051" in notice


def test_non_loopback_without_keys_refuses_naming_the_keys() -> None:
    cfg = parse_config({"server": {"address": "0.0.0.0:50051"}})

    with pytest.raises(ConfigError) as err:
        check_auth_exposure(cfg)

    msg = err.value.message
    assert "0.0.0.0:50051 is not a loopback address" in msg
    assert "auth.keys_file" in msg and "auth.tenants" in msg


def test_non_loopback_with_a_key_source_starts() -> None:
    cfg = parse_config(
        {"server": {"address": "0.0.0.0:50051"}, "auth": {"keys_file": "/etc/keys.yaml"}}
    )

    assert check_auth_exposure(cfg) is None


@pytest.mark.parametrize(
    ("tls", "needle"),
    [
        ({"cert_file": "c.pem"}, "cert_file and key_file go together"),
        ({"client_ca_file": "ca.pem"}, "client_ca_file (mTLS) needs TLS"),
    ],
)
def test_tls_config_is_checked_when_loaded(tls: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"server": {"tls": tls}})

    assert "server.tls" in err.value.message and needle in err.value.message


def test_duplicate_tenants_are_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"auth": {"tenants": [{"name": "a"}, {"name": "a"}]}})

    assert "tenant names must be unique" in err.value.message


def test_edge_links_without_device_certificates_are_refused_off_loopback() -> None:
    cfg = parse_config(
        {
            "server": {"address": "0.0.0.0:50051"},
            "auth": {"keys_file": "/etc/keys.yaml"},
            "edge": {"enabled": True, "device_auth": "none"},
        }
    )

    with pytest.raises(ConfigError) as err:
        check_auth_exposure(cfg)

    assert err.value.key == "edge.device_auth" and "device_auth: mtls" in err.value.message


def test_edge_links_without_device_certificates_run_on_loopback() -> None:
    cfg = parse_config({"edge": {"enabled": True, "device_auth": "none"}})

    notice = check_auth_exposure(cfg)

    assert notice is not None and "auth is OFF" in notice
