"""router.yaml: pydantic models, loading, environment overrides, readable errors.

Precedence: explicit argument > environment override > file > default.
Environment overrides use ``HYBRID_ROUTER__`` + a ``__``-separated key path, values
parsed as YAML scalars; backends are addressed by name, e.g.::

    HYBRID_ROUTER__SERVER__ADDRESS=0.0.0.0:50051
    HYBRID_ROUTER__POLICY__OBJECTIVE=fastest
    HYBRID_ROUTER__BACKENDS__gpu-a__ENDPOINT=ray-serve.gpu.svc:9000

Environment is read only when ``load_config`` is called, never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from router.errors import ConfigError
from router.types import (
    BackendSpec,
    DataClass,
    Objective,
    Prices,
    Priors,
    Tier,
)

ENV_PREFIX = "HYBRID_ROUTER__"
ENV_CONFIG_PATH = "HYBRID_ROUTER_CONFIG"

BackendKind = Literal["model_service", "ray_serve", "openai", "bedrock", "anthropic"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Model):
    """TLS on the router's gRPC port (docs/security.md). Off while cert_file is empty."""

    #: PEM certificate chain of the server; with key_file, turns TLS on.
    cert_file: str = ""
    #: PEM private key of cert_file.
    key_file: str = ""
    #: PEM CA bundle that client certificates must chain to; set = mTLS.
    client_ca_file: str = ""
    #: With client_ca_file: refuse clients without a certificate (false: verify only
    #: the certificates that clients present).
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


class CircuitConfig(_Model):
    #: Consecutive failures that open the circuit.
    consecutive_failures: int = Field(5, ge=1)
    #: Error rate over the window that opens the circuit (with at least min_requests).
    error_rate: float = Field(0.5, gt=0, le=1)
    window: int = Field(20, ge=1)
    min_requests: int = Field(10, ge=1)
    #: Seconds the circuit stays open before one half-open probe.
    cooldown_s: float = Field(30.0, gt=0)


class WeightsConfig(_Model):
    """Weights of the ``weighted`` objective: score = cost * cost/min_cost + latency * t/min_t."""

    cost: float = Field(1.0, ge=0)
    latency: float = Field(1.0, ge=0)


class TokenEstimateConfig(_Model):
    """Token estimate for backends without an offline tokenizer: ceil(chars / chars_per_token
    * margin) + per_message_overhead per message."""

    chars_per_token: float = Field(3.0, gt=0)
    margin: float = Field(1.15, ge=1.0)
    per_message_overhead: int = Field(4, ge=0)


class PolicyConfig(_Model):
    objective: Objective = Objective.CHEAPEST
    weights: WeightsConfig = WeightsConfig()
    #: Fallbacks kept in a plan after the primary.
    max_fallbacks: int = Field(2, ge=0, le=16)
    #: Time to first token before the router moves to the next candidate, ms.
    ttft_timeout_ms: float = Field(10_000, gt=0)
    #: max_output_tokens used when a request gives 0.
    default_max_output_tokens: int = Field(256, ge=1)
    #: Largest max_output_tokens accepted.
    max_output_tokens_limit: int = Field(32_768, ge=1)
    #: Observations needed before live stats replace config priors.
    min_samples: int = Field(3, ge=1)
    circuit: CircuitConfig = CircuitConfig()
    token_estimate: TokenEstimateConfig = TokenEstimateConfig()
    #: Seconds between polls of backends' own load signals.
    load_poll_interval_s: float = Field(0.5, gt=0)

    @model_validator(mode="after")
    def _limits(self) -> PolicyConfig:
        if self.default_max_output_tokens > self.max_output_tokens_limit:
            raise ValueError(
                "default_max_output_tokens must not exceed max_output_tokens_limit "
                f"({self.default_max_output_tokens} > {self.max_output_tokens_limit})"
            )
        return self


class PriorsConfig(_Model):
    ttft_ms: float = Field(500.0, gt=0)
    decode_tokens_per_s: float = Field(30.0, gt=0)


class CostConfig(_Model):
    """Prices: per-token (hosted), amortised GPU (gpu) or marginal (edge).

    See docs/policy.md for the formulas.
    """

    input_per_mtok_usd: float = Field(0.0, ge=0)
    output_per_mtok_usd: float = Field(0.0, ge=0)
    gpu_hourly_usd: float = Field(0.0, ge=0)
    gpu_throughput_tokens_per_s: float = Field(0.0, ge=0)
    gpu_utilization: float = Field(0.6, gt=0, le=1)
    gpu_prefill_ratio: float = Field(0.1, ge=0)
    edge_per_mtok_usd: float = Field(0.0, ge=0)
    #: Where the figures come from (provider page and date); shown by the CLI.
    source: str = ""


class TokenizerConfig(_Model):
    #: "estimate" (chars-based, see policy.token_estimate) or "gguf" (exact, offline,
    #: loads only the vocabulary of a GGUF file).
    kind: Literal["estimate", "gguf"] = "estimate"
    #: GGUF file path, or "gemma3-270m" for the packaged demo model.
    path: str = ""

    @model_validator(mode="after")
    def _path(self) -> TokenizerConfig:
        if self.kind == "gguf" and not self.path:
            raise ValueError("tokenizer.kind 'gguf' needs tokenizer.path (a .gguf file)")
        return self

    @property
    def id(self) -> str:
        return "estimate" if self.kind == "estimate" else f"gguf:{self.path}"


class BackendConfig(_Model):
    name: Annotated[
        str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    ]
    tier: Tier
    kind: BackendKind
    #: host:port for model_service, base URL (http://host:port/v1) for openai; optional
    #: for bedrock (endpoint_url override) and anthropic (default https://api.anthropic.com).
    endpoint: str = ""
    model: str = Field(min_length=1)
    model_family: str = ""
    capabilities: tuple[str, ...] = ("chat",)
    context_window: int = Field(ge=16)
    max_payload_bytes: int = Field(1_048_576, ge=1)
    max_concurrency: int = Field(8, ge=1)
    #: Requests allowed to wait beyond max_concurrency (per router replica) before the
    #: capacity filter rejects the backend. Default: 4 x max_concurrency.
    max_queue: int | None = Field(None, ge=0)
    data_classes: tuple[DataClass, ...] = (DataClass.PUBLIC, DataClass.INTERNAL)
    priors: PriorsConfig = PriorsConfig()
    cost: CostConfig = CostConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    site: str = ""
    device_id: str = ""
    #: openai, anthropic: extra HTTP headers; values may be "env:VAR" (read from the env).
    headers: dict[str, str] = Field(default_factory=dict)
    #: openai, anthropic: env var holding the API key.
    api_key_env: str = ""
    #: anthropic, openai: Secrets Manager secret (name or ARN) holding the API key.
    api_key_secret: str = ""
    #: Key inside the secret when its SecretString is a JSON object ("" = the whole string).
    api_key_secret_field: str = ""
    #: Seconds a secret fetched from Secrets Manager is used before it is fetched again.
    secret_ttl_s: float = Field(300.0, gt=0)
    #: bedrock: AWS region ("" = the standard chain: AWS_REGION, the profile...); also the
    #: region of api_key_secret.
    region: str = ""
    #: bedrock: ConverseStream (true) or Converse (false: the answer arrives in one piece).
    streaming: bool = True
    #: anthropic: the anthropic-version header.
    anthropic_version: str = Field("2023-06-01", min_length=1)
    #: model_service, ray_serve: Ray Serve application to call (gRPC metadata
    #: ``application``); "" = none sent (a plain ModelService server).
    serve_application: str = ""
    #: ray_serve: application whose Info reports the deployment-wide load;
    #: "" = "<serve_application>-load".
    serve_load_application: str = ""
    #: Seconds to connect / between bytes.
    timeout_s: float = Field(30.0, gt=0)
    #: Free-form note shown by `hybrid-router backends` (e.g. "stand-in: llama.cpp").
    description: str = ""

    @model_validator(mode="after")
    def _tier_prices(self) -> BackendConfig:
        if self.kind == "ray_serve" and not self.serve_application:
            raise ValueError(
                "kind 'ray_serve' needs serve_application (the Serve application's name, e.g. gpu)"
            )
        if self.kind not in ("model_service", "ray_serve") and (
            self.serve_application or self.serve_load_application
        ):
            raise ValueError(
                f"serve_application applies to kinds 'model_service' and 'ray_serve', not "
                f"{self.kind!r}"
            )
        if self.serve_load_application and self.kind != "ray_serve":
            raise ValueError("serve_load_application applies to kind 'ray_serve' only")
        if self.kind in ("model_service", "ray_serve", "openai") and not self.endpoint:
            raise ValueError(f"endpoint is required for kind {self.kind!r}")
        if (
            self.kind in ("bedrock", "anthropic")
            and self.endpoint
            and not self.endpoint.startswith(("http://", "https://"))
        ):
            raise ValueError(
                f"endpoint must be an http(s) URL or empty (the provider's default) for kind "
                f"{self.kind!r}, got {self.endpoint!r}"
            )
        if self.api_key_secret and self.api_key_env:
            raise ValueError("set api_key_env or api_key_secret, not both")
        if self.kind == "anthropic" and not (self.api_key_env or self.api_key_secret):
            raise ValueError(
                "kind 'anthropic' needs api_key_env (an environment variable holding the key) "
                "or api_key_secret (a Secrets Manager secret)"
            )
        if self.api_key_secret and self.kind not in ("anthropic", "openai"):
            raise ValueError(
                f"api_key_secret applies to kinds 'anthropic' and 'openai', not {self.kind!r}"
            )
        if self.kind == "openai" and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(
                f"endpoint must be an http(s) base URL for kind 'openai' (e.g. "
                f"http://127.0.0.1:8000/v1), got {self.endpoint!r}"
            )
        if self.kind in ("model_service", "ray_serve") and self.endpoint.startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                f"endpoint must be host:port for kind {self.kind!r}, got {self.endpoint!r}"
            )
        if self.tier is Tier.GPU and self.cost.gpu_hourly_usd > 0:
            if self.cost.gpu_throughput_tokens_per_s <= 0:
                raise ValueError(
                    "cost.gpu_throughput_tokens_per_s must be > 0 when cost.gpu_hourly_usd is set"
                )
        return self

    def to_spec(self) -> BackendSpec:
        c = self.cost
        return BackendSpec(
            name=self.name,
            tier=self.tier,
            kind=self.kind,
            endpoint=self.endpoint,
            model=self.model,
            model_family=self.model_family,
            capabilities=frozenset(self.capabilities),
            context_window=self.context_window,
            max_payload_bytes=self.max_payload_bytes,
            max_concurrency=self.max_concurrency,
            max_queue=self.max_queue if self.max_queue is not None else 4 * self.max_concurrency,
            data_classes=frozenset(self.data_classes),
            priors=Priors(self.priors.ttft_ms, self.priors.decode_tokens_per_s),
            prices=Prices(
                input_per_mtok_usd=c.input_per_mtok_usd,
                output_per_mtok_usd=c.output_per_mtok_usd,
                gpu_hourly_usd=c.gpu_hourly_usd,
                gpu_throughput_tokens_per_s=c.gpu_throughput_tokens_per_s,
                gpu_utilization=c.gpu_utilization,
                gpu_prefill_ratio=c.gpu_prefill_ratio,
                edge_per_mtok_usd=c.edge_per_mtok_usd,
                source=c.source,
            ),
            site=self.site,
            device_id=self.device_id,
            tokenizer_id=self.tokenizer.id,
        )


_TEMPLATE_DEFAULTS = {"tier": "gpu", "kind": "model_service"}
_TEMPLATE_PLACEHOLDER = {"model_service": "discovered:1", "openai": "http://discovered:1/v1"}


class KubernetesSourceConfig(_Model):
    """One EndpointSlice watch (router/discovery/): its endpoints become backends."""

    #: Prefix of the discovered backends' names (``<name>-<pod or service>``).
    name: Annotated[
        str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    ]
    #: Namespace to watch; "" = discovery.kubernetes.namespace.
    namespace: str = ""
    #: EndpointSlice label selector, e.g. "kubernetes.io/service-name=llama-serve-svc".
    label_selector: str = Field(min_length=1)
    #: EndpointSlice port name to call; "" = the slice's only port.
    port_name: str = ""
    #: "endpoint": one backend per ready pod; "service": one per Service (DNS name).
    backend_per: Literal["endpoint", "service"] = "endpoint"
    #: openai kind: path appended to http://host:port.
    openai_base_path: str = "/v1"
    #: Every backends[] key except name and endpoint (tier defaults to gpu).
    backend: dict[str, Any]

    @model_validator(mode="after")
    def _template(self) -> KubernetesSourceConfig:
        for key in ("name", "endpoint"):
            if key in self.backend:
                raise ValueError(
                    f"backend.{key} is set by discovery for each endpoint; remove it from the "
                    "template"
                )
        kind = str(self.backend.get("kind", "model_service"))
        self.backend_config(f"{self.name}-x", _TEMPLATE_PLACEHOLDER.get(kind, "discovered:1"))
        return self

    def backend_config(self, name: str, endpoint: str) -> BackendConfig:
        """The template filled in for one discovered endpoint."""
        data = {**_TEMPLATE_DEFAULTS, **self.backend, "name": name, "endpoint": endpoint}
        try:
            return BackendConfig.model_validate(data)
        except ValidationError as exc:
            lines = _format_validation_error(exc, data).replace("\n", ";").split(";")
            raise ValueError(
                "in the backend template: " + "; ".join("backend." + ln.strip() for ln in lines)
            ) from None


class KubernetesDiscoveryConfig(_Model):
    #: kubeconfig file; "" = in-cluster service account inside a pod, else ~/.kube/config.
    kubeconfig: str = ""
    #: Default namespace of the sources; "" = the router pod's own namespace.
    namespace: str = ""
    #: Server-side timeout of one watch request, s (the watch is then resumed).
    watch_timeout_s: int = Field(300, ge=1, le=3600)
    #: Timeout of list requests and connects, s.
    request_timeout_s: float = Field(10.0, gt=0)
    #: Retry delay after an error: doubles from backoff_initial_s up to backoff_max_s.
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    #: At start, wait this long for the first list before serving.
    initial_sync_timeout_s: float = Field(5.0, ge=0)
    sources: tuple[KubernetesSourceConfig, ...] = ()

    @model_validator(mode="after")
    def _unique_sources(self) -> KubernetesDiscoveryConfig:
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"source names must be unique; used twice: {', '.join(dup)}")
        return self


class DiscoveryConfig(_Model):
    """Backends found at run time (router/discovery/); static backends[] still apply."""

    kubernetes: KubernetesDiscoveryConfig = KubernetesDiscoveryConfig()


_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class ApiKeyConfig(_Model):
    """One API key as stored: its id, tenant and hash; never the secret (docs/security.md)."""

    id: Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")]
    tenant: Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME_PATTERN)]
    #: "sha256:<64 hex digits>" of the whole key (router/security/keys.py).
    hash: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
    created: str = ""
    name: str = ""
    revoked: bool = False


class TenantConfig(_Model):
    """What the holders of a tenant's keys may use."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME_PATTERN)]
    tiers: tuple[Tier, ...] = (Tier.HOSTED, Tier.GPU, Tier.EDGE)
    #: Backend names allowed (empty: any backend of the allowed tiers).
    backends: tuple[str, ...] = ()
    data_classes: tuple[DataClass, ...] = (DataClass.PUBLIC, DataClass.INTERNAL)
    #: Open Generate streams for this tenant (None: server.limits.max_streams_per_tenant).
    max_streams: int | None = Field(None, ge=0)


class SecretsManagerConfig(_Model):
    """An AWS Secrets Manager secret holding a keys file (YAML or JSON)."""

    secret_id: str = ""
    region: str = ""
    #: Override the service endpoint (VPC endpoint, or a local test server).
    endpoint_url: str = ""


class AuthConfig(_Model):
    """API keys and tenants. Keys come from every source that is set (docs/security.md)."""

    keys: tuple[ApiKeyConfig, ...] = ()
    #: YAML keys file written by `hybrid-router keys`; "env:VAR" reads the path from VAR.
    keys_file: str = ""
    secrets_manager: SecretsManagerConfig = SecretsManagerConfig()
    #: Seconds between re-reads of keys_file and the secret (revocations take effect).
    refresh_s: float = Field(60.0, gt=0)
    tenants: tuple[TenantConfig, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> AuthConfig:
        names = [t.name for t in self.tenants]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"tenant names must be unique; used twice: {', '.join(dup)}")
        ids = [k.id for k in self.keys]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"key ids must be unique; used twice: {', '.join(dup)}")
        return self

    @property
    def configured(self) -> bool:
        return bool(self.keys or self.keys_file or self.secrets_manager.secret_id)


class MetricsConfig(_Model):
    #: host:port of the Prometheus /metrics HTTP endpoint ("" = off; port 0 = any free port).
    address: str = ""

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if v:
            host, sep, port = v.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"must be host:port (e.g. 0.0.0.0:9464) or empty, got {v!r}")
        return v


class TracingConfig(_Model):
    #: "none" (no spans leave the process) or "otlp" (OTLP over gRPC).
    exporter: Literal["none", "otlp"] = "none"
    #: OTLP endpoint, e.g. http://otel-collector:4317 ("" = the exporter's default).
    endpoint: str = ""
    #: Fraction of new traces sampled (a caller's sampled flag is honoured).
    sample_ratio: float = Field(1.0, ge=0, le=1)
    service_name: str = "hybrid-router"


class LogsConfig(_Model):
    #: One structured line per request on the router.requests logger.
    requests: bool = True
    #: DEBUG ONLY: add prompt and completion text to the request line.
    content: bool = False


class TelemetryConfig(_Model):
    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig = TracingConfig()
    logs: LogsConfig = LogsConfig()


class EdgePriorsConfig(_Model):
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


class EdgeRelayConfig(_Model):
    """The replica-to-replica port: other replicas stream requests to the devices this
    replica holds through it (ModelService protocol)."""

    #: host:port to listen on ("" = off; needed with directory.redis_url).
    address: str = ""
    #: host:port other replicas dial ("" = address; required when address binds 0.0.0.0).
    advertise_address: str = ""
    #: Env var holding a shared token that relay calls must carry ("" = none).
    token_env: str = ""


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


class RouterConfig(_Model):
    server: ServerConfig = ServerConfig()
    policy: PolicyConfig = PolicyConfig()
    backends: tuple[BackendConfig, ...] = ()
    discovery: DiscoveryConfig = DiscoveryConfig()
    auth: AuthConfig = AuthConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    edge: EdgeConfig = EdgeConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> RouterConfig:
        seen: set[str] = set()
        for b in self.backends:
            if b.name in seen:
                raise ValueError(f"backend name {b.name!r} is used twice; names must be unique")
            seen.add(b.name)
        return self


def _format_validation_error(exc: ValidationError, data: Mapping[str, Any]) -> str:
    lines = []
    for err in exc.errors():
        parts: list[str] = []
        node: Any = data
        for loc in err["loc"]:
            # Name backends by their name rather than their index.
            if isinstance(loc, int) and isinstance(node, list) and loc < len(node):
                item = node[loc]
                label = item.get("name") if isinstance(item, dict) else None
                parts.append(f"[{loc}]" + (f"({label})" if label else ""))
                node = item
                continue
            parts.append(("." if parts else "") + str(loc))
            node = node.get(loc) if isinstance(node, dict) else None
        key = "".join(parts) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check the spelling (see docs/configuration.md for allowed keys)"
        elif err["type"] == "enum" and "ctx" in err:
            msg = f"must be one of {err['ctx'].get('expected')}"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def _apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    applied = []
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        path = var[len(ENV_PREFIX) :].split("__")
        if not path or any(not p for p in path):
            raise ConfigError(
                "malformed override: use HYBRID_ROUTER__SECTION__KEY=value", source="env", key=var
            )
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"value is not valid YAML: {exc}", source="env", key=var) from exc
        node: Any = data
        head = path[0].lower()
        if head == "backends":
            if len(path) < 3:
                raise ConfigError(
                    "use HYBRID_ROUTER__BACKENDS__<name>__<key>=value", source="env", key=var
                )
            name = path[1]
            backends = data.get("backends") or []
            match = [b for b in backends if isinstance(b, dict) and b.get("name") == name]
            if not match:
                known = ", ".join(str(b.get("name")) for b in backends if isinstance(b, dict))
                raise ConfigError(
                    f"no backend named {name!r} (known: {known or 'none'})", source="env", key=var
                )
            node = match[0]
            keys = [p.lower() for p in path[2:]]
        else:
            keys = [p.lower() for p in path]
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{k!r} is not a section", source="env", key=var)
            node = child
        node[keys[-1]] = value
        applied.append(var)
    return applied


def parse_config(
    data: Mapping[str, Any] | None,
    *,
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
) -> RouterConfig:
    """Validate a config mapping (after env overrides) into a RouterConfig."""
    raw: dict[str, Any] = dict(data or {})
    if not isinstance(data, Mapping | None):
        raise ConfigError("top level must be a mapping with server/policy/backends", source=source)
    # deep-ish copy of the parts env overrides may touch
    raw = yaml.safe_load(yaml.safe_dump(raw)) or {}
    if environ:
        _apply_env_overrides(raw, environ)
    try:
        return RouterConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            "invalid configuration:\n" + _format_validation_error(exc, raw), source=source
        ) from None


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> RouterConfig:
    """Load router.yaml. ``path`` falls back to $HYBRID_ROUTER_CONFIG; env overrides apply."""
    env = os.environ if environ is None else environ
    if path is None:
        path = env.get(ENV_CONFIG_PATH)
    if path is None:
        raise ConfigError(
            f"no config file given: pass --config PATH or set {ENV_CONFIG_PATH}",
            source="router.yaml",
        )
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found; check the path", source=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=str(p)) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            "top level must be a mapping with server/policy/backends keys", source=str(p)
        )
    return parse_config(data, source=str(p), environ=env)
