"""TLS and mTLS credentials for the router's gRPC port and for clients of it.

Server: ``server.tls.cert_file`` + ``key_file`` turn TLS on; ``client_ca_file`` adds client
certificate verification (mTLS). ``require_client_cert: false`` turns client certificates
off altogether: gRPC Python has no "verify if presented" mode, so none is asked for.

Rotation without a restart: the port's credentials are gRPC's dynamic SSL server
credentials. gRPC asks :class:`CertificateFiles` before the TLS handshake of every new
connection; it reads the three files again and hands gRPC a new certificate configuration
when their content changed (nothing otherwise). So a cert-manager renewal or a Kubernetes
Secret update (the kubelet swaps the volume's ``..data`` symlink atomically) takes effect
for the next connection; connections and streams already open keep the certificate they
were set up with. A new set that does not check out (unreadable, not PEM, a half-written
file, a key that does not match the certificate) is not used: the router keeps serving
the last good set and logs one warning naming the key and the file, until the files are
good again. At start a bad file is a ConfigError naming the key.

Client: :func:`channel_credentials` for the CLI and other clients: a CA bundle (else the
system roots) and, for mTLS, a client certificate and key.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from router.config import TlsConfig
from router.errors import ConfigError
from router.preflight import FAIL, OK, WARN, Finding, Options

if TYPE_CHECKING:
    from router.config import RouterConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsKeys:
    """The config keys that errors and warnings name for the three files."""

    cert: str = "server.tls.cert_file"
    key: str = "server.tls.key_file"
    ca: str = "server.tls.client_ca_file"


SERVER_KEYS = TlsKeys()

#: Reads of the three files before a mismatch counts as real rather than a rotation
#: caught between two file swaps.
_READS = 3


@dataclass(frozen=True)
class _Material:
    cert: bytes
    key: bytes
    ca: bytes | None


class _Bad(ConfigError):
    """One file of a set is wrong: the ``key`` (server.tls.*) and a ``reason`` naming the
    file. Raised to ConfigError at start; a rotated bad set is only logged."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason, key=key)
        self.reason = reason


class CertificateFiles:
    """The server's certificate, key and client CA files, re-read for each new connection.

    :meth:`fetch` is gRPC's ``certificate_configuration_fetcher``: it runs on gRPC's own
    threads, never raises, and returns a new configuration only for a new, valid set.
    """

    def __init__(self, cfg: TlsConfig, *, keys: TlsKeys = SERVER_KEYS) -> None:
        """``keys``: the config keys to name in errors, for a port other than server.tls
        (the edge relay port)."""
        self._cfg = cfg
        self._keys = keys
        self._lock = threading.Lock()
        try:
            material = self._read()
            _check(material, cfg, keys)
        except _Bad as bad:
            raise ConfigError(bad.reason, key=bad.key) from None
        self._current = material
        #: What was wrong with the last rejected set, so one bad state logs once.
        self._rejected: tuple[str, str] | None = None

    @property
    def require_client_auth(self) -> bool:
        return bool(self._cfg.client_ca_file) and self._cfg.require_client_cert

    def pem(self) -> tuple[bytes, bytes, bytes | None]:
        """The last good (certificate chain, private key, CA bundle); for a client that
        presents the same files (call :meth:`fetch` first to pick up new ones)."""
        m = self._current
        return m.cert, m.key, m.ca

    def initial(self) -> grpc.ServerCertificateConfiguration:
        return _configuration(self._current)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.initial(), self.fetch, require_client_authentication=self.require_client_auth
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A configuration for a changed, valid set of files; None to keep the current one."""
        try:
            with self._lock:
                material = self._load()
                if material is None:
                    return None
                self._current = material
                self._rejected = None
            log.info(
                "TLS: new certificate from %s%s; used for new connections",
                self._cfg.cert_file,
                f" and client CA from {self._cfg.client_ca_file}" if material.ca else "",
            )
            return _configuration(material)
        except Exception:  # never let a reload break a handshake
            log.exception("TLS: checking %s for a new certificate failed", self._cfg.cert_file)
            return None

    def _load(self) -> _Material | None:
        """The new valid set, else None (unchanged, or bad: warned once per bad set)."""
        problem: _Bad | None = None
        for _ in range(_READS):
            try:
                material = self._read()
            except _Bad as bad:
                problem = bad
                continue
            if material == self._current:
                self._rejected = None
                return None
            try:
                _check(material, self._cfg, self._keys)
            except _Bad as bad:
                problem = bad
                continue
            return material
        assert problem is not None
        if self._rejected != (problem.key, problem.reason):
            self._rejected = (problem.key, problem.reason)
            log.warning(
                "TLS: %s: %s; new connections still get the last good certificate until "
                "the files are fixed",
                problem.key,
                problem.reason,
            )
        return None

    def _read(self) -> _Material:
        cfg, keys = self._cfg, self._keys
        cert = _read(cfg.cert_file, keys.cert)
        key = _read(cfg.key_file, keys.key)
        ca = _read(cfg.client_ca_file, keys.ca) if cfg.client_ca_file else None
        return _Material(cert, key, ca)


def _read(path: str, key: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise _Bad(key, f"cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        raise _Bad(key, f"{path} is not a PEM file")
    return data


def _check(m: _Material, cfg: TlsConfig, keys: TlsKeys) -> None:
    """Raise _Bad unless the certificate chain, the key and the CA bundle parse and the key
    belongs to the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        chain = x509.load_pem_x509_certificates(m.cert)
    except ValueError:
        raise _Bad(keys.cert, f"{cfg.cert_file} is not a complete PEM certificate chain") from None
    try:
        key = serialization.load_pem_private_key(m.key, password=None)
    except (ValueError, TypeError) as exc:
        what = (
            "an encrypted private key; give it unencrypted"
            if isinstance(exc, TypeError)
            else "not a complete PEM private key"
        )
        raise _Bad(keys.key, f"{cfg.key_file} is {what}") from None
    if m.ca is not None:
        try:
            x509.load_pem_x509_certificates(m.ca)
        except ValueError:
            raise _Bad(keys.ca, f"{cfg.client_ca_file} is not a complete PEM CA bundle") from None
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if chain[0].public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise _Bad(
            keys.key,
            f"{cfg.key_file} does not belong to the certificate in {cfg.cert_file} "
            "(replace both files together)",
        )


def _configuration(m: _Material) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(m.key, m.cert)], root_certificates=m.ca)


def server_credentials(cfg: TlsConfig) -> grpc.ServerCredentials:
    """Credentials for ``add_secure_port`` that pick up rotated files (module doc).
    Raises ConfigError naming the key of a bad file."""
    return CertificateFiles(cfg).credentials()


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


# --- start-up check (router/preflight.py) -----------------------------------------------------

#: A certificate that expires sooner than this is a warning.
EXPIRY_WARNING = dt.timedelta(days=14)


def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``server.tls``: the files load as ``serve`` loads them (:class:`CertificateFiles`),
    and the certificate is valid now."""
    tls = config.server.tls
    if not tls.enabled:
        return [Finding(OK, "server.tls", "server.tls", "off (plaintext gRPC port)")]
    try:
        CertificateFiles(tls)
    except ConfigError as exc:
        return [Finding.failed("server.tls", exc)]
    mtls = ""
    if tls.client_ca_file:
        mtls = (
            "; client certificates required (mTLS)"
            if tls.require_client_cert
            else "; client_ca_file set but require_client_cert is false: none are asked for"
        )
    return [
        certificate_validity(
            "server.tls", tls.cert_file, "server.tls.cert_file", f"key matches{mtls}", opts.now()
        )
    ]


def certificate_validity(
    component: str, cert_file: str, key: str, detail: str, now: dt.datetime
) -> Finding:
    """The dates of the (already checked) certificate in ``cert_file``: expired or not
    yet valid fails (clients refuse it), due within :data:`EXPIRY_WARNING` warns."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())[0]
    end, start = cert.not_valid_after_utc, cert.not_valid_before_utc
    subject = cert.subject.rfc4514_string()
    if now >= end:
        return Finding(
            FAIL,
            component,
            key,
            f"{key}: {cert_file} ({subject}) expired on {end:%Y-%m-%d %H:%M} UTC",
            "clients refuse it: renew the certificate",
        )
    if now < start:
        return Finding(
            FAIL,
            component,
            key,
            f"{key}: {cert_file} ({subject}) is not valid before {start:%Y-%m-%d %H:%M} UTC",
            "check the issuer's clock or reissue it",
        )
    if end - now < EXPIRY_WARNING:
        return Finding(
            WARN,
            component,
            key,
            f"{detail}; {cert_file} ({subject}) expires on {end:%Y-%m-%d %H:%M} UTC, in "
            f"{_days(end - now)}: renew it (rotated files are picked up without a restart)",
        )
    return Finding(OK, component, key, f"{detail}; {subject}, valid until {end:%Y-%m-%d} UTC")


def _days(delta: dt.timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} hours" if hours < 48 else f"{hours / 24:.0f} days"
