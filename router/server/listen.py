"""Can the router listen on ``server.address``? Asked by ``check`` (a preflight) and by
``serve`` when gRPC cannot bind, so both say why in one line naming the key."""

from __future__ import annotations

import errno
import socket

from router.errors import ConfigError

KEY = "server.address"


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as (host, port)."""
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def check_address(address: str, *, key: str = KEY) -> None:
    """ConfigError (naming ``key``) when a listener cannot bind ``address`` now: the port
    is in use, the host is not this machine's, or the port needs privileges. Port 0
    (any free port) always passes."""
    host, port = split_address(address)
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(
            f"cannot resolve {host!r} ({exc.strerror}); use an IP address such as "
            f"0.0.0.0:{port} or 127.0.0.1:{port}",
            key=key,
        ) from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        # As gRPC does: a port in TIME_WAIT is free; one with a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            raise ConfigError(_reason(exc, host, port), key=key) from None


def _reason(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} is in use (another process listens there): stop it, or choose "
            "another port"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{host} is not an address of this machine: use one of its addresses, "
            f"0.0.0.0:{port} (every interface) or 127.0.0.1:{port}"
        )
    if exc.errno == errno.EACCES:
        return (
            f"port {port} needs privileges (ports below 1024 need root or "
            "CAP_NET_BIND_SERVICE): use a port of 1024 or more"
        )
    return f"cannot listen on {host}:{port}: {exc.strerror}"


def bind_failed(address: str, *, key: str = KEY) -> ConfigError:
    """The error for a bind gRPC refused: the reason :func:`check_address` finds now, else
    a generic one naming ``key``."""
    try:
        check_address(address, key=key)
    except ConfigError as exc:
        return exc
    return ConfigError(
        f"cannot listen on {address}: the address is in use or not available; choose another",
        key=key,
    )
