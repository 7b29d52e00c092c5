"""Start-up checks of the static ``backends[]`` (router/preflight.py).

:func:`preflight` builds each backend's adapter as ``serve`` does (:func:`create_backend`:
secrets named by ``api_key_env`` and ``env:VAR`` headers are read here), then runs the
kind's own check (``preflight(cfg, backend, opts)`` in the kind's module, when it has one:
Bedrock builds its client offline, which checks the region), then the prices and the
exact tokenizers' vocabularies. :func:`probe` (``check --probe`` only) sets each adapter
up and hands it to its kind's ``probe(cfg, backend, timeout_s)``, which checks what
answers there, not only that something does (a ModelService ``Info``, an OpenAI model
list), without calling a model. Every adapter built here is closed before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from hybrid_router.refs import env_ref

from router.backends import create_backend
from router.errors import ConfigError
from router.preflight import FAIL, OK, WARN, Finding, Options, captured_warnings

if TYPE_CHECKING:
    from router.backends.base import Backend
    from router.config import BackendConfig, RouterConfig

#: The module of each kind (its ``preflight`` and ``probe``).
KIND_MODULES = {
    "model_service": "router.backends.model_service",
    "ray_serve": "router.backends.ray_serve",
    "openai": "router.backends.openai_compat",
    "anthropic": "router.backends.anthropic",
    "bedrock": "router.backends.bedrock",
}


def kind_module(kind: str) -> ModuleType:
    return importlib.import_module(KIND_MODULES[kind])


async def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``backends`` (none at all), ``backend NAME`` (each adapter builds), ``prices`` and
    ``tokenizer ID`` (each exact vocabulary loads)."""
    findings = _any_backend(config)
    for cfg in config.backends:
        component = f"backend {cfg.name}"
        try:
            backend = create_backend(cfg, environ=env)
        except ConfigError as exc:
            findings.append(Finding.failed(component, exc))
            continue
        try:
            check = getattr(kind_module(cfg.kind), "preflight", None)
            if check is None:
                findings.append(built(cfg))
            else:
                findings.extend(await check(cfg, backend, opts))
        finally:
            with contextlib.suppress(Exception):
                await backend.close()
    findings += prices(config.backends)
    findings += await tokenizers(config, opts)
    return findings


def _any_backend(config: RouterConfig) -> list[Finding]:
    if config.backends or config.discovery.kubernetes.sources or config.edge.enabled:
        return []
    return [
        Finding(
            WARN,
            "backends",
            "backends",
            "no backends[], no discovery.kubernetes.sources and edge.enabled is off: the "
            "router starts, but every request fails (UNAVAILABLE)",
            "add a backend",
        )
    ]


def built(cfg: BackendConfig, *extra: str) -> Finding:
    """``backend NAME`` ok: the adapter, its endpoint and the secrets it was given (named,
    never shown), then ``extra`` (the kind's own details)."""
    parts = [f"{cfg.kind} adapter", cfg.endpoint or "the provider's endpoint"]
    secrets = [f"${cfg.api_key_env} set"] if cfg.api_key_env else []
    secrets += [
        f"headers.{name} from ${var}"
        for name, value in cfg.headers.items()
        if (var := env_ref(value)) is not None
    ]
    if cfg.api_key_secret:
        secrets.append(f"key from secret {cfg.api_key_secret} (read at start)")
    return Finding(
        OK, f"backend {cfg.name}", f"backends[{cfg.name}]", ", ".join(parts + secrets + list(extra))
    )


def prices(backends: Sequence[BackendConfig]) -> list[Finding]:
    """``prices``: backends the cost objective counts as free (the policy's own formula,
    ``router.policy.cost_usd``), prices without a source."""
    from router.policy import cost_usd

    if not backends:
        return []
    specs = [b.to_spec() for b in backends]
    unpriced = [s.name for s in specs if cost_usd(s, 1_000_000, 1_000_000) <= 0]
    unsourced = [s.name for s in specs if s.name not in unpriced and not s.prices.source]
    findings = []
    if unpriced:
        findings.append(
            Finding(
                WARN,
                "prices",
                "backends[].cost",
                f"no price for {', '.join(unpriced)}: cost counts as 0, so the cheapest "
                "objective favours it",
                "set backends[].cost.* and cost.source (`hybrid-router prices` shows the table)",
            )
        )
    if unsourced:
        findings.append(
            Finding(
                WARN,
                "prices",
                "backends[].cost.source",
                f"no cost.source for {', '.join(unsourced)}: note the provider's price page "
                "and the date the figures were taken",
            )
        )
    if not unpriced and not unsourced:
        findings.append(
            Finding(OK, "prices", "", f"{len(specs)} backends priced, each with a source")
        )
    return findings


async def tokenizers(config: RouterConfig, opts: Options) -> list[Finding]:
    """``tokenizer ID``: every exact (GGUF) vocabulary a backend names loads, in the
    counter ``serve`` counts with (``opts.tokens``), off the event loop."""
    from router.tokenizers import ESTIMATE, Tokenizers

    counter = opts.tokens if opts.tokens is not None else Tokenizers(config.policy.token_estimate)
    users: dict[str, list[str]] = {}
    for b in config.backends:
        users.setdefault(b.tokenizer.id, []).append(f"backends[{b.name}]")
    if config.edge.enabled:
        users.setdefault(config.edge.backend.tokenizer.id, []).append("edge.backend")
    findings = []
    for tid, where in sorted(users.items()):
        if tid == ESTIMATE:
            continue
        with captured_warnings("router.tokenizers", "llama_cpp") as warnings:
            exact = (await asyncio.to_thread(counter.warm, [tid])).get(tid, False)
        keys = ", ".join(f"{w}.tokenizer.path" for w in where)
        component = f"tokenizer {tid}"
        if exact:
            findings.append(
                Finding(OK, component, keys, "vocabulary loads: prompts counted exactly")
            )
        else:
            # serve runs on: it counts these prompts with the estimate instead.
            why = " ".join(warnings) or "the vocabulary did not load"
            findings.append(
                Finding(
                    WARN,
                    component,
                    keys,
                    f"{keys}: {why}; prompts are estimated (policy.token_estimate) instead. "
                    "Fix the path (a readable .gguf file) or use tokenizer.kind: estimate",
                )
            )
    return findings


# --- --probe ------------------------------------------------------------------------------------


async def probe(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``probe NAME`` (``opts.probe`` only): each adapter that builds is set up and
    reached by its kind's ``probe``; no model is called."""
    if not opts.probe:
        return []
    findings: list[Finding] = []
    for cfg in config.backends:
        try:
            backend = create_backend(cfg, environ=env)
        except ConfigError:
            continue  # ``backend NAME`` failed already
        try:
            findings += await _probe(cfg, backend, opts.probe_timeout_s)
        finally:
            with contextlib.suppress(Exception):
                await backend.close()
    return findings


async def _probe(cfg: BackendConfig, backend: Backend, timeout: float) -> list[Finding]:
    component = f"probe {cfg.name}"
    key = f"backends[{cfg.name}].endpoint"
    try:
        await asyncio.wait_for(backend.start(), timeout)
    except ConfigError as exc:
        if cfg.kind == "bedrock":
            return []  # its offline start is ``backend NAME``'s check, which failed
        return [Finding.failed(component, exc)]
    except TimeoutError:
        return [Finding(FAIL, component, key, f"setting up the adapter took over {timeout:g} s")]
    result: list[Finding] = await kind_module(cfg.kind).probe(cfg, backend, timeout)
    return result


async def http_probe(cfg: BackendConfig, url: str, timeout: float) -> list[Finding]:
    """An HTTP HEAD on ``url``: any answer means reachable (Anthropic's and a Bedrock VPC
    endpoint's probe; OpenAI-compatible backends read their model list instead)."""
    import httpx

    component = f"probe {cfg.name}"
    key = f"backends[{cfg.name}].endpoint"
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            resp = await client.head(url)
    except httpx.HTTPError as exc:
        return [
            Finding(
                FAIL,
                component,
                key,
                f"unreachable: HEAD {url}: {type(exc).__name__}: {exc or 'no detail'}",
                f"check {key}, DNS and network policy",
            )
        ]
    return [Finding(OK, component, key, f"reachable: HEAD {url} answered HTTP {resp.status_code}")]
