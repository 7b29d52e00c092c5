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

BackendKind = Literal["model_service", "openai"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    #: host:port for model_service, base URL (http://host:port/v1) for openai.
    endpoint: str = Field(min_length=1)
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
    #: openai: extra HTTP headers; values may be "env:VAR" to read a secret from the env.
    headers: dict[str, str] = Field(default_factory=dict)
    #: openai: env var holding the API key (sent as a bearer token).
    api_key_env: str = ""
    #: Seconds to connect / between bytes.
    timeout_s: float = Field(30.0, gt=0)
    #: Free-form note shown by `hybrid-router backends` (e.g. "stand-in: llama.cpp").
    description: str = ""

    @model_validator(mode="after")
    def _tier_prices(self) -> BackendConfig:
        if self.kind == "openai" and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(
                f"endpoint must be an http(s) base URL for kind 'openai' (e.g. "
                f"http://127.0.0.1:8000/v1), got {self.endpoint!r}"
            )
        if self.kind == "model_service" and self.endpoint.startswith(("http://", "https://")):
            raise ValueError(
                f"endpoint must be host:port for kind 'model_service', got {self.endpoint!r}"
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
            ),
            site=self.site,
            device_id=self.device_id,
            tokenizer_id=self.tokenizer.id,
        )


class RouterConfig(_Model):
    server: ServerConfig = ServerConfig()
    policy: PolicyConfig = PolicyConfig()
    backends: tuple[BackendConfig, ...] = ()

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
