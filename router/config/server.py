"""``server:``: the gRPC listener, TLS and per-request limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from router.config._base import _Model


class TlsConfig(_Model):
    """TLS on the router's gRPC port (docs/security.md). Off while cert_file is empty."""

    #: PEM certificate chain of the server; with key_file, turns TLS on.
    cert_file: str = ""
    #: PEM private key of cert_file.
    key_file: str = ""
    #: PEM CA bundle that client certificates must chain to; set = mTLS.
    client_ca_file: str = ""
    #: With client_ca_file: refuse clients without a certificate (false: no client
    #: certificate is asked for or checked; gRPC Python cannot verify only those presented).
    require_client_cert: bool = True

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together: set both (TLS on) or neither")
        if self.client_ca_file and not self.cert_file:
            raise ValueError("client_ca_file (mTLS) needs TLS: set cert_file and key_file too")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


class LimitsConfig(_Model):
    """Per-request and per-stream limits (docs/security.md#request-limits)."""

    #: Messages in one request; more is INVALID_ARGUMENT.
    max_messages: int = Field(1024, ge=1, le=1024)
    #: UTF-8 bytes of all message contents of one request; more is INVALID_ARGUMENT.
    max_prompt_bytes: int = Field(1_048_576, ge=1)
    #: Open Generate streams per client connection (0: only the HTTP/2 limit,
    #: server.max_concurrent_streams, which makes clients wait instead).
    max_streams_per_connection: int = Field(0, ge=0)
    #: Open Generate streams per tenant on this replica (0: unlimited); a tenant's
    #: auth.tenants[].max_streams overrides it.
    max_streams_per_tenant: int = Field(0, ge=0)


class ServerConfig(_Model):
    #: host:port to listen on. Port 0 picks a free port.
    address: str = "127.0.0.1:50051"
    #: Seconds in-flight streams get to finish after SIGTERM.
    grace_period_s: float = Field(20.0, ge=0)
    #: Largest gRPC message accepted, bytes.
    max_receive_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    #: Merge deltas while the client reads slower than the backend produces.
    coalesce_deltas: bool = True
    #: With coalesce_deltas, under load (coalesce_busy_lag_ms): hold a fast stream's delta
    #: write up to this long so that more tokens go out in one message (0: never hold).
    #: Never the first delta, the decision or the usage.
    coalesce_linger_ms: float = Field(2.0, ge=0, le=50)
    #: A held delta goes out as soon as it carries this many tokens.
    coalesce_linger_tokens: int = Field(16, ge=1)
    #: Hold only while the event loop runs this late (a 20 ms timer's lag; 0: always).
    coalesce_busy_lag_ms: float = Field(0.5, ge=0)
    #: Event loop of `hybrid-router serve`: auto (uvloop when installed), asyncio, uvloop.
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    #: Upper bound on concurrent streams per HTTP/2 connection.
    max_concurrent_streams: int = Field(1024, ge=1)
    #: Expose grpc reflection (grpcurl, grpcui).
    reflection: bool = True
    tls: TlsConfig = TlsConfig()
    limits: LimitsConfig = LimitsConfig()

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"must be host:port (e.g. 127.0.0.1:50051), got {v!r}")
        return v
