"""``backends[]``: one static backend, its priors, prices and tokenizer."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BeforeValidator, Field, model_validator

from router.config._base import _Model
from router.tools.needs import HOSTED_DEFAULT
from router.types import BACKEND_TIERS, BackendSpec, DataClass, Prices, Priors, Tier

BackendKind = Literal["model_service", "ray_serve", "openai", "bedrock", "anthropic"]


class PriorsConfig(_Model):
    ttft_ms: float = Field(500.0, gt=0)
    decode_tokens_per_s: float = Field(30.0, gt=0)
    #: Judged by policy.ttft_estimate: p90 until the backend has samples; default (None):
    #: PRIOR_TTFT_P90_FACTOR (2) x ttft_ms.
    ttft_p90_ms: float | None = Field(None, gt=0)
    #: Prompt tokens read per second before the first token (prefill); None: not modelled
    #: (ttft_ms includes a typical prompt's). Set: TTFT grows with the prompt (docs/policy.md).
    prefill_tokens_per_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _p90_above_p50(self) -> Self:
        if self.ttft_p90_ms is not None and self.ttft_p90_ms < self.ttft_ms:
            raise ValueError(
                f"ttft_p90_ms ({self.ttft_p90_ms:g}) is below ttft_ms ({self.ttft_ms:g}): "
                "give the first-token time one request in ten exceeds, at least the median "
                "(or leave it out: twice ttft_ms)"
            )
        return self

    def to_priors(self) -> Priors:
        return Priors(
            self.ttft_ms,
            self.decode_tokens_per_s,
            self.ttft_p90_ms or 0.0,
            self.prefill_tokens_per_s or 0.0,
        )


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


def _backend_tier(value: object) -> object:
    """hosted, gpu or edge; named before the enum is parsed, so the error lists only these."""
    names = tuple(t.value for t in BACKEND_TIERS)
    if isinstance(value, str) and value not in names:
        hint = " ('cache' is the response cache's, controls.cache)" if value == "cache" else ""
        raise ValueError(f"must be one of 'hosted', 'gpu' or 'edge', got {value!r}{hint}")
    return value


#: hosted, gpu or edge (router.types.BACKEND_TIERS): never cache.
BackendTier = Annotated[Tier, BeforeValidator(_backend_tier)]


#: The adapters that speak a provider's API: tools and JSON answers are offered by default.
HOSTED_KINDS = frozenset({"openai", "anthropic", "bedrock"})


class BackendConfig(_Model):
    name: Annotated[
        str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    ]
    tier: BackendTier
    kind: BackendKind
    #: host:port for model_service, base URL (http://host:port/v1) for openai; optional
    #: for bedrock (endpoint_url override) and anthropic (default https://api.anthropic.com).
    endpoint: str = ""
    model: str = Field(min_length=1)
    model_family: str = ""
    #: What the backend offers ("chat", "tools", "json_schema", ...). Default: every
    #: hosted kind (openai, anthropic, bedrock) offers chat, tools and json_schema; a
    #: model_service / ray_serve backend offers chat plus what its Info reports.
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
        if "capabilities" not in self.model_fields_set and self.kind in HOSTED_KINDS:
            object.__setattr__(self, "capabilities", HOSTED_DEFAULT)
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
            priors=self.priors.to_priors(),
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
