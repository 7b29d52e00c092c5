"""Helpers for the security and telemetry tests: throwaway certificates, API keys, and a
router started with auth (and optionally TLS) on 127.0.0.1.

Import as ``from secutil import ...``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from router.security.keys import KeyRecord, hash_key, new_key
from router.security.keystore import write_keys_file

# --- certificates -----------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class _Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _make_ca(cn: str) -> _Ca:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .sign(key, hashes.SHA256())
    )
    return _Ca(key, cert)


def _issue(
    ca: _Ca,
    cn: str,
    *,
    server: bool,
    usages: list[x509.ObjectIdentifier] | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[bytes, bytes]:
    """(key PEM, cert PEM) signed by ``ca``. Defaults: serverAuth with localhost and
    127.0.0.1 as names (``server``), else clientAuth; ``usages``/``sans`` override them."""
    key = _key()
    now = dt.datetime.now(dt.UTC)
    if usages is None:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
    if sans is None and server:
        sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    return _pem_key(key), _pem_cert(cert)


@dataclass(frozen=True)
class Pki:
    """Paths of PEM files: one CA with a server and a client certificate, and a second,
    unrelated CA with its own client certificate."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str
    other_client_cert: str
    other_client_key: str

    def read(self, name: str) -> bytes:
        return Path(getattr(self, name)).read_bytes()


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _make_ca("hybrid-router test CA")
    other = _make_ca("some other CA")
    files: dict[str, bytes] = {"ca": _pem_cert(ca.cert), "other_ca": _pem_cert(other.cert)}
    files["server_key"], files["server_cert"] = _issue(ca, "localhost", server=True)
    files["client_key"], files["client_cert"] = _issue(ca, "edge-device-1", server=False)
    files["other_client_key"], files["other_client_cert"] = _issue(other, "intruder", server=False)
    paths = {}
    for name, data in files.items():
        path = folder / f"{name}.pem"
        path.write_bytes(data)
        paths[name] = str(path)
    return Pki(**paths)


def tls_channel(port: int, pki: Pki, *, client: str | None = "client") -> grpc.aio.Channel:
    """A TLS channel trusting the test CA; ``client`` "client", "other_client" or None."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.read("ca"),
        private_key=pki.read(f"{client}_key") if client else None,
        certificate_chain=pki.read(f"{client}_cert") if client else None,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)


# --- keys -------------------------------------------------------------------------------------


def make_keys(path: Path, tenants: list[str], **extra: Any) -> dict[str, str]:
    """A keys file with one key per tenant; returns tenant -> key (the secret)."""
    keys: dict[str, str] = {}
    records = []
    for tenant in tenants:
        key_id, key = new_key()
        keys[tenant] = key
        records.append(KeyRecord(id=key_id, tenant=tenant, hash=hash_key(key), **extra))
    write_keys_file(path, records)
    return keys


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)
