"""The simulated fleet: the router's own configuration plus how each backend really behaves.

A fleet file (YAML, docs/simulate.md) names a router configuration (``config:``, a path
relative to the fleet file, or ``router:``, the same mapping inline) and, per backend,
what the router cannot know in advance:

    config: router.yaml
    backends:
      gpu-a:
        ttft_ms: 180            # median time to first token when a slot is free
        ttft_p90_ms: 400        # its spread (log-normal)
        decode_tokens_per_s: 45 # median decode rate of one request
        decode_spread: 0.15     # log-normal sigma of the decode rate
        slots: 8                # requests decoded at once; more wait in its queue
        batch_slowdown: 0.3     # decode rate lost when every slot is busy
        error_rate: 0.01        # share of calls that fail before the first token
        outages: [[600, 900]]   # seconds: calls fail, open streams are cut
        throttle: [{from_s: 100, to_s: 160, retry_after_s: 20}]   # 429 + Retry-After
        prefill_tokens_per_s: 5000   # prompt tokens read a second before the first token
        prefill_interference: 0.5    # pace the others lose while a prompt is read

Every field defaults from the backend's configuration (``priors``, ``max_concurrency``;
hosted backends: unlimited slots), so ``backends:`` may be empty. The router's policy and
prices are the configuration's; a backend the fleet names but the configuration does not
is an error naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from router.config import RouterConfig, parse_config
from router.config._base import _Model, validation_problems
from router.config.loading import yaml_problem
from router.errors import ConfigError
from router.policy.records import PolicyParams
from router.records import policy_params
from router.security.tenants import TenantAccess
from router.types import BackendSpec, Tier

#: Kinds whose servers report their own load (queued + running) and the time a request
#: waited in their queue (the router subtracts it from its TTFT samples).
REPORTING_KINDS = frozenset({"model_service", "ray_serve", "edge"})


class ThrottleWindow(_Model):
    from_s: float = Field(ge=0)
    to_s: float = Field(gt=0)
    #: The Retry-After the backend sends (seconds); 0: none (a plain 429).
    retry_after_s: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _order(self) -> ThrottleWindow:
        if self.to_s <= self.from_s:
            raise ValueError(f"to_s must be after from_s ({self.to_s:g} <= {self.from_s:g})")
        return self


class BackendBehaviour(_Model):
    """How one backend really behaves (every field optional; defaults from its config)."""

    ttft_ms: float | None = Field(None, gt=0)
    ttft_p90_ms: float | None = Field(None, gt=0)
    decode_tokens_per_s: float | None = Field(None, gt=0)
    decode_spread: float = Field(0.1, ge=0, le=2)
    #: Requests served at once (0: unlimited). Default: max_concurrency; hosted: 0.
    slots: int | None = Field(None, ge=0)
    batch_slowdown: float = Field(0.0, ge=0, lt=1)
    error_rate: float = Field(0.0, ge=0, le=1)
    #: How long a failed call takes to fail, ms.
    fail_after_ms: float = Field(5.0, ge=0)
    outages: list[tuple[float, float]] = []
    throttle: list[ThrottleWindow] = []
    #: A load poll's round trip, ms (backends that report their load): the figure as the
    #: poll went out reaches the router this much later. 0: at once.
    poll_ms: float = Field(0.0, ge=0, le=60_000)
    #: Prompt tokens read per second before the first token: a request's TTFT is its
    #: draw plus its prompt at this rate. Default: the backend's
    #: ``priors.prefill_tokens_per_s`` (unset there too: the prompt adds nothing).
    prefill_tokens_per_s: float | None = Field(None, gt=0)
    #: The share of their pace the requests a backend already serves lose while it reads
    #: another request's prompt (0: none; 1: they stall). Needs a prompt reading rate; a
    #: hosted backend's (unlimited slots) is the provider's and is not modelled.
    prefill_interference: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> BackendBehaviour:
        for start, end in self.outages:
            if not (0 <= start < end):
                raise ValueError(
                    "outages: each is [start_s, end_s] with 0 <= start < end "
                    f"(got [{start:g}, {end:g}])"
                )
        if (
            self.ttft_ms is not None
            and self.ttft_p90_ms is not None
            and self.ttft_p90_ms < self.ttft_ms
        ):
            raise ValueError("ttft_p90_ms must be at least ttft_ms")
        return self


class FleetFile(_Model):
    config: str | None = None
    router: dict[str, Any] | None = None
    backends: dict[str, BackendBehaviour] = {}

    @model_validator(mode="after")
    def _one_config(self) -> FleetFile:
        if (self.config is None) == (self.router is None):
            raise ValueError("give exactly one of config (a router.yaml path) or router (inline)")
        return self


@dataclass(frozen=True, slots=True)
class BackendModel:
    """One backend's true behaviour, every default applied."""

    ttft_ms: float
    ttft_p90_ms: float
    decode_tokens_per_s: float
    decode_spread: float
    #: 0: unlimited.
    slots: int
    batch_slowdown: float
    error_rate: float
    fail_after_ms: float
    outages: tuple[tuple[float, float], ...] = ()
    #: (from_s, to_s, retry_after_s)
    throttle: tuple[tuple[float, float, float], ...] = ()
    reports_load: bool = False
    poll_ms: float = 0.0
    #: 0: the prompt's length adds nothing to the TTFT.
    prefill_tokens_per_s: float = 0.0
    #: Share of their pace the backend's other requests lose while it reads a prompt.
    prefill_interference: float = 0.0

    def down_at(self, t: float) -> tuple[float, float] | None:
        for w in self.outages:
            if w[0] <= t < w[1]:
                return w
        return None

    def throttled_at(self, t: float) -> tuple[float, float, float] | None:
        for w in self.throttle:
            if w[0] <= t < w[1]:
                return w
        return None


@dataclass(frozen=True, slots=True)
class Fleet:
    """What a simulation runs against: specs, true behaviour, the policy's settings."""

    specs: tuple[BackendSpec, ...]
    models: Mapping[str, BackendModel]
    params: PolicyParams
    config: RouterConfig
    #: tenant -> backend names it may use (absent: every backend).
    tenant_backends: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: The fleet as a fleet file's mapping (``simulate --write-fleet``), when known.
    document: Mapping[str, Any] | None = None


def model_for(spec: BackendSpec, b: BackendBehaviour | None) -> BackendModel:
    b = b or BackendBehaviour()
    ttft = b.ttft_ms if b.ttft_ms is not None else spec.priors.ttft_ms
    slots = b.slots
    if slots is None:
        slots = 0 if spec.tier is Tier.HOSTED else spec.max_concurrency
    prefill = (
        b.prefill_tokens_per_s
        if b.prefill_tokens_per_s is not None
        else spec.priors.prefill_tokens_per_s
    )
    if b.prefill_interference and not prefill:
        raise ConfigError(
            "needs a prompt reading rate: set prefill_tokens_per_s beside it, or "
            "priors.prefill_tokens_per_s in the router configuration",
            key=f"backends.{spec.name}.prefill_interference",
        )
    if b.prefill_interference and not slots:
        raise ConfigError(
            "needs a backend with slots (the requests a prompt's reading slows share them); "
            "set slots, or leave it 0 for a hosted API",
            key=f"backends.{spec.name}.prefill_interference",
        )
    return BackendModel(
        ttft_ms=ttft,
        ttft_p90_ms=b.ttft_p90_ms if b.ttft_p90_ms is not None else 2.0 * ttft,
        decode_tokens_per_s=(
            b.decode_tokens_per_s
            if b.decode_tokens_per_s is not None
            else spec.priors.decode_tokens_per_s
        ),
        decode_spread=b.decode_spread,
        slots=slots,
        batch_slowdown=b.batch_slowdown,
        error_rate=b.error_rate,
        fail_after_ms=b.fail_after_ms,
        outages=tuple(sorted((float(s), float(e)) for s, e in b.outages)),
        throttle=tuple(sorted((w.from_s, w.to_s, w.retry_after_s) for w in b.throttle)),
        reports_load=spec.kind in REPORTING_KINDS or spec.tier is Tier.EDGE,
        poll_ms=b.poll_ms,
        prefill_tokens_per_s=prefill,
        prefill_interference=b.prefill_interference,
    )


def build_fleet(
    config: RouterConfig,
    behaviour: Mapping[str, BackendBehaviour],
    source: str = "fleet",
    document: Mapping[str, Any] | None = None,
) -> Fleet:
    """The fleet of ``config``'s backends with ``behaviour`` (by backend name)."""
    specs = tuple(b.to_spec() for b in config.backends)
    names = {s.name for s in specs}
    unknown = sorted(set(behaviour) - names)
    if unknown:
        raise ConfigError(
            "not a backend of the router configuration "
            f"(its backends: {', '.join(sorted(names)) or 'none'})",
            source=source,
            key=f"backends.{unknown[0]}",
        )
    if not specs:
        raise ConfigError(
            "the router configuration has no backends to simulate", source=source, key="backends"
        )
    tenants: dict[str, frozenset[str]] = {}
    for t in config.auth.tenants:
        access = TenantAccess.from_config(t)  # the router's own rule of who may use what
        tenants[t.name] = frozenset(s.name for s in specs if access.allows(s))
    try:
        models = {s.name: model_for(s, behaviour.get(s.name)) for s in specs}
    except ConfigError as exc:
        raise exc.located(source) from None
    return Fleet(
        specs=specs,
        models=models,
        params=policy_params(config.policy),
        config=config,
        tenant_backends=tenants,
        document=document,
    )


def parse_fleet(data: Any, *, source: str, base: Path | None = None) -> Fleet:
    """A fleet file's mapping as a Fleet (``base``: the directory ``config:`` is relative to)."""
    if not isinstance(data, dict):
        raise ConfigError(
            "a fleet file is a mapping with config (or router) and backends", source=source
        )
    try:
        fleet = FleetFile.model_validate(data)
    except ValidationError as exc:
        lines = "\n".join(p.line() for p in validation_problems(exc, data))
        raise ConfigError("invalid fleet:\n" + lines, source=source) from None
    document = dict(data)
    if fleet.config is not None:
        path = Path(fleet.config)
        if not path.is_absolute() and base is not None:
            path = base / path
        from router.config import load_config

        config = load_config(path, environ={})
        document["config"] = str(path.resolve())  # still found from another directory
    else:
        config = parse_config(fleet.router, source=f"{source} (router)")
    return build_fleet(config, fleet.backends, source, document=document)


def load_fleet(path: Path) -> Fleet:
    """Read a fleet file (YAML)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the fleet file ({exc.strerror})", source=str(path)
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {yaml_problem(exc)}", source=str(path)) from None
    return parse_fleet(data, source=str(path), base=path.parent)
