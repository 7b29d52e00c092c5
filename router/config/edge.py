"""``edge:``: edge devices that dial in over EdgeLink."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from router.config._base import _Model
from router.config.backends import PriorsConfig, TokenizerConfig
from router.types import DataClass


class EdgePriorsConfig(PriorsConfig):
    """Latency priors of edge devices until live data exists (small CPU models)."""

    ttft_ms: float = Field(800.0, gt=0)
    decode_tokens_per_s: float = Field(15.0, gt=0)


class EdgeCostConfig(_Model):
    """The marginal cost of a token on a device (docs/policy.md)."""

    edge_per_mtok_usd: float = Field(0.0, ge=0)
    #: Where the figure comes from (power, amortised hardware; and the date).
    source: str = ""


class EdgeBackendTemplate(_Model):
    """What the router assumes about every edge device's backend; the device itself reports
    its model, version, context window, site and concurrency (docs/edge.md)."""

    data_classes: tuple[DataClass, ...] = (DataClass.PUBLIC, DataClass.INTERNAL)
    capabilities: tuple[str, ...] = ("chat",)
    #: Requests sent to a device at once when its registration does not say.
    max_concurrency: int = Field(1, ge=1)
    #: Requests allowed to wait per device beyond max_concurrency.
    max_queue: int = Field(2, ge=0)
    max_payload_bytes: int = Field(262_144, ge=1)
    priors: EdgePriorsConfig = EdgePriorsConfig()
    cost: EdgeCostConfig = EdgeCostConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    #: Longest silence on a request's stream before it fails over (RETRYABLE).
    timeout_s: float = Field(30.0, gt=0)


class EdgeModelStoreConfig(_Model):
    """The S3 model store written by `hybrid-router models publish`; the router reads the
    fleet's desired versions from it (``<prefix>/<model>/desired.json``)."""

    bucket: str = ""
    prefix: str = "models"
    region: str = ""
    #: Override the S3 endpoint (a VPC endpoint, or a local test server).
    endpoint_url: str = ""
    #: Seconds between reads of the desired versions.
    poll_interval_s: float = Field(30.0, gt=0)


class EdgeDirectoryConfig(_Model):
    """Shared device directory (Redis) through which every replica reaches every device."""

    #: redis://host:port/db ("" = this replica sees only its own links); "env:VAR" reads
    #: the URL (with its password) from VAR.
    redis_url: str = ""
    key_prefix: str = "hybrid-router:edge:"
    #: Seconds between reads of the directory.
    sync_interval_s: float = Field(1.0, gt=0)


class EdgeRelayTlsConfig(_Model):
    """Mutual TLS on the relay port (docs/edge.md#relay-mtls): every replica serves and
    dials with the same kind of certificate. All four keys set = on; none = plaintext."""

    #: PEM certificate chain this replica presents, as server and as client (the same
    #: Secret on every replica is fine; it needs the serverAuth and clientAuth usages).
    cert_file: str = ""
    #: PEM private key of cert_file.
    key_file: str = ""
    #: PEM CA bundle the peer replicas' certificates must chain to (both directions).
    ca_file: str = ""
    #: The DNS name in the certificate that dialing replicas verify (pod IPs are not in it).
    server_name: str = ""

    @model_validator(mode="after")
    def _all_or_none(self) -> EdgeRelayTlsConfig:
        keys = ("cert_file", "key_file", "ca_file", "server_name")
        missing = [k for k in keys if not getattr(self, k)]
        if missing and len(missing) < len(keys):
            raise ValueError(
                f"relay mTLS needs all of {', '.join(keys)}; missing: {', '.join(missing)} "
                "(set them, or remove the tls section for a plaintext relay port)"
            )
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


class EdgeRelayConfig(_Model):
    """The replica-to-replica port: other replicas stream requests to the devices this
    replica holds through it (ModelService protocol)."""

    #: host:port to listen on ("" = off; needed with directory.redis_url).
    address: str = ""
    #: host:port other replicas dial ("" = address; required when address binds 0.0.0.0).
    advertise_address: str = ""
    #: Env var holding a shared token that relay calls must carry ("" = none).
    token_env: str = ""
    #: Mutual TLS between replicas on this port (off while empty).
    tls: EdgeRelayTlsConfig = EdgeRelayTlsConfig()


class EdgeConfig(_Model):
    """Edge devices that dial in over EdgeLink (router/edge/, docs/edge.md)."""

    enabled: bool = False
    #: "mtls": a device must present a client certificate (server.tls.client_ca_file) whose
    #: common name or a DNS name equals its device id. "none": trust the device id (tests).
    device_auth: Literal["mtls", "none"] = "mtls"
    #: Model a device must hold to be a candidate ("" = any model it reports).
    model: str = ""
    heartbeat_interval_ms: int = Field(2000, ge=100, le=60_000)
    #: No heartbeat for this long: the device is offline and its link is closed.
    heartbeat_timeout_s: float = Field(6.0, gt=0)
    #: Seconds a new link gets to send its Register message.
    register_timeout_s: float = Field(10.0, gt=0)
    #: Offline devices are listed (fleet table) for this long, then forgotten.
    forget_after_s: float = Field(3600.0, gt=0)
    #: This replica's id in Registered and the directory ("" = <hostname>-<pid>).
    replica_id: str = ""
    #: Model versions devices should run, by model name; wins over the model store.
    desired_versions: dict[str, str] = Field(default_factory=dict)
    backend: EdgeBackendTemplate = EdgeBackendTemplate()
    models: EdgeModelStoreConfig = EdgeModelStoreConfig()
    directory: EdgeDirectoryConfig = EdgeDirectoryConfig()
    relay: EdgeRelayConfig = EdgeRelayConfig()

    @model_validator(mode="after")
    def _consistent(self) -> EdgeConfig:
        if self.heartbeat_timeout_s * 1000 <= self.heartbeat_interval_ms:
            raise ValueError(
                "heartbeat_timeout_s must be longer than heartbeat_interval_ms (use about 3 "
                "intervals)"
            )
        if self.directory.redis_url and not self.relay.address:
            raise ValueError(
                "directory.redis_url needs relay.address (the port other replicas dial to "
                "reach this replica's devices)"
            )
        for key in ("address", "advertise_address"):
            value = getattr(self.relay, key)
            if value:
                host, sep, port = value.rpartition(":")
                if not sep or not host or not port.isdigit() or int(port) > 65535:
                    raise ValueError(f"relay.{key} must be host:port, got {value!r}")
        wildcard = self.relay.address.rpartition(":")[0] in ("0.0.0.0", "[::]")
        if wildcard and not self.relay.advertise_address:
            raise ValueError(
                f"relay.address {self.relay.address} binds every interface: set "
                "relay.advertise_address to the host:port other replicas dial (the pod IP)"
            )
        return self
