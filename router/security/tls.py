"""TLS and mTLS credentials for the router's gRPC port and for clients of it.

Server: ``server.tls.cert_file`` + ``key_file`` turn TLS on; ``client_ca_file`` adds client
certificate verification (mTLS), required unless ``require_client_cert: false``. Files are
read once at start; rotate by restarting (a rolling restart behind a Service drops no
request: each replica drains on SIGTERM).

Client: :func:`channel_credentials` for the CLI and other clients: a CA bundle (else the
system roots) and, for mTLS, a client certificate and key.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from router.config import TlsConfig
from router.errors import ConfigError


def _read(path: str, key: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}", source="router.yaml", key=key
        ) from None
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{path} is not a PEM file", source="router.yaml", key=key)
    return data


def server_credentials(cfg: TlsConfig) -> grpc.ServerCredentials:
    """Credentials for ``add_secure_port``. Raises ConfigError naming the key of a bad file."""
    cert = _read(cfg.cert_file, "server.tls.cert_file")
    key = _read(cfg.key_file, "server.tls.key_file")
    ca = _read(cfg.client_ca_file, "server.tls.client_ca_file") if cfg.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=ca,
        require_client_auth=bool(ca) and cfg.require_client_cert,
    )


def _read_client(path: str, option: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{option}: cannot read {path}: {exc.strerror}") from None


def channel_credentials(
    ca_bundle: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> grpc.ChannelCredentials:
    """TLS channel credentials. Raises ValueError naming the option of a bad file."""
    if bool(client_cert) != bool(client_key):
        raise ValueError("--client-cert and --client-key go together: give both or neither")
    ca = _read_client(ca_bundle, "--ca-bundle") if ca_bundle else None
    cert = _read_client(client_cert, "--client-cert") if client_cert else None
    key = _read_client(client_key, "--client-key") if client_key else None
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
