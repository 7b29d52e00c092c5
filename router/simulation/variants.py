"""Router variants: the router's own policy with some ``policy:`` settings changed
(``hybrid-router simulate --variant NAME:KEY=VALUE,...``), to compare settings side by
side on one trace and seed.

Only the settings ``plan()`` reads (and the learnt answer lengths) can differ between
variants of one run: the rest of ``policy:`` (timeouts, the circuit breaker, load polls)
shapes the simulated fleet every strategy shares, so it belongs in the fleet file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from router.config import PolicyConfig
from router.config._base import validation_problems
from router.errors import ConfigError
from router.records import policy_params
from router.simulation.fleet import Fleet
from router.simulation.strategies import RouterStrategy

#: The ``policy:`` keys a variant may set (top-level names; nested ones by dots).
VARIANT_KEYS = (
    "objective",
    "weights",
    "headroom",
    "ttft_estimate",
    "ttft_prior_weight",
    "decode_estimate",
    "spread",
    "spread_tolerance",
    "max_fallbacks",
    "default_max_output_tokens",
    "min_samples",
    "output_estimate",
)


def router_variant(fleet: Fleet, name: str, overrides: Mapping[str, Any]) -> RouterStrategy:
    """A :class:`RouterStrategy` named ``name`` whose policy is the fleet's with
    ``overrides`` (``{"weights.latency": 16, "objective": "weighted"}``) applied.

    Raises ConfigError naming the key: one a variant may not set, or a value
    ``policy:`` refuses.
    """
    data = fleet.config.policy.model_dump()
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] not in VARIANT_KEYS:
            raise ConfigError(
                "a variant may set only what the router's plan reads "
                f"({', '.join(VARIANT_KEYS)}); set the others in the fleet file",
                key=f"policy.{key}",
            )
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                raise ConfigError(f"policy has no {part!r} section", key=f"policy.{key}")
            node = child
        if parts[-1] not in node:
            section = "policy." + ".".join(parts[:-1]) if len(parts) > 1 else "policy"
            raise ConfigError(
                f"no such setting (in {section}: {', '.join(sorted(node))})",
                key=f"policy.{key}",
            )
        node[parts[-1]] = value
    try:
        policy = PolicyConfig.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, data)
        first, *more = problems
        raise ConfigError(
            "; ".join([first.message, *(f"policy.{p.key}: {p.message}" for p in more)]),
            key=f"policy.{first.key}",
        ) from None
    return RouterStrategy(
        params=policy_params(policy), name=name, output_estimate=policy.output_estimate
    )
