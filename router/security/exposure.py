"""Who may run without API keys: only a server bound to loopback.

:func:`check_auth_exposure` runs before the router binds. Without any key source
(``auth.keys``, ``auth.keys_file``, ``auth.secrets_manager.secret_id``):

- on a loopback address (127.0.0.0/8, ::1, localhost) the router starts and says, at
  start, that every caller is let in (the embedded demo and tests do this);
- on any other address it refuses to start, naming the keys to set.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from router.config import RouterConfig
from router.errors import ConfigError
from router.preflight import OK, WARN, Finding, Options


def host_of(address: str) -> str:
    host = address.rpartition(":")[0]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` binds only loopback interfaces (names other than localhost
    count as not loopback: they may resolve anywhere)."""
    host = host_of(address)
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_auth_exposure(config: RouterConfig) -> str | None:
    """None when auth is configured; a notice to show at start when the server may run
    without it (loopback); raises ConfigError otherwise. Edge links are held to the same
    rule: off loopback, devices must prove who they are with a client certificate."""
    address = config.server.address
    edge = config.edge
    if edge.enabled and edge.device_auth == "none" and not is_loopback(address):
        raise ConfigError(
            f"server.address {address} is not a loopback address and edge.device_auth is "
            "'none', so anyone who reaches the port could register as a device and receive "
            "requests: set edge.device_auth: mtls with server.tls.client_ca_file, or bind to "
            "127.0.0.1. See docs/edge.md.",
            key="edge.device_auth",
        )
    if config.auth.configured:
        return None
    if is_loopback(address):
        return (
            f"auth is OFF: no API keys are configured, and {address} is a loopback address, "
            "so every local caller is let in. Set auth.keys_file (docs/security.md) to "
            "require keys."
        )
    raise ConfigError(
        f"server.address {address} is not a loopback address and no API keys are "
        "configured: set auth.keys_file (or auth.keys, or auth.secrets_manager.secret_id) "
        "and auth.tenants, or bind to 127.0.0.1. See docs/security.md.",
        key="auth",
    )


def plaintext_notice(config: RouterConfig) -> str | None:
    """A warning for a non-loopback address without TLS (the router still starts: a proxy
    or mesh may encrypt the traffic), else None."""
    address = config.server.address
    if config.server.tls.enabled or is_loopback(address):
        return None
    return (
        f"TLS is off on {address}: API keys and prompts cross the network in clear unless a "
        "proxy or mesh encrypts them; set server.tls (docs/security.md)"
    )


def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """The loopback rule (``serve`` refuses to start, or says at start that anyone is let
    in) and the plaintext notice."""
    try:
        notice = check_auth_exposure(config)
    except ConfigError as exc:
        return [Finding.failed("exposure", exc)]
    address = config.server.address
    if notice is not None:
        findings = [Finding(WARN, "exposure", "auth", notice)]
    else:
        findings = [Finding(OK, "exposure", "auth", f"API keys are required on {address}")]
    plaintext = plaintext_notice(config)
    if plaintext is not None:
        findings.append(Finding(WARN, "exposure", "server.tls", plaintext))
    return findings
