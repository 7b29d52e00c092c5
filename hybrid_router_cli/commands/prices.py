"""``hybrid-router prices``: the price table the router uses for cost, and where it comes from.

From a config file (``--config PATH``, or ``$HYBRID_ROUTER_CONFIG`` when no ``--address`` is
given; environment overrides apply, as for ``serve``) or from a running router
(``--address``, via ``ListBackends``). Every tier is shown on one scale, USD per million
input and output tokens, computed as the policy computes cost (docs/policy.md):

    hosted  the configured per-token prices
    gpu     gpu_hourly_usd / 3600 / (gpu_throughput_tokens_per_s * gpu_utilization) per
            output token; a prompt token costs gpu_prefill_ratio times that
    edge    edge_per_mtok_usd per output token; prompt tokens are free

The project ships no default prices (a price without a source and a date is a guess):
backends without figures cost 0, and the table says so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from hybrid_router.client import RouterCallError
from hybrid_router.env import ENV_CONFIG

from hybrid_router_cli import render
from hybrid_router_cli.connect import call_failed, client_setup, open_client
from hybrid_router_cli.errors import EXIT_USAGE, CliError
from hybrid_router_cli.options import add_connection_options
from hybrid_router_cli.registry import Command

if TYPE_CHECKING:
    from router.config import BackendConfig

_EXAMPLES = """\
examples:
  hybrid-router prices --config router.yaml
  hybrid-router prices --address 127.0.0.1:50051      # the table a running router uses
  hybrid-router prices --config router.yaml --json | jq '.backends[] | {name, source}'

Set each backend's cost.* keys and cost.source (the provider's price page and the
date the figures were taken) in router.yaml; see docs/configuration.md.
"""

ENV_CONFIG_PATH = ENV_CONFIG  # the config file's variable (hybrid_router.env)


@dataclass(frozen=True, slots=True)
class PriceRow:
    name: str
    tier: str
    kind: str
    model: str
    input_per_mtok_usd: float
    output_per_mtok_usd: float
    gpu_hourly_usd: float
    gpu_throughput_tokens_per_s: float
    gpu_utilization: float
    gpu_prefill_ratio: float
    edge_per_mtok_usd: float
    source: str

    @property
    def effective(self) -> tuple[float, float]:
        """(USD per 1M input tokens, USD per 1M output tokens) as the policy charges them."""
        if self.tier == "hosted":
            return self.input_per_mtok_usd, self.output_per_mtok_usd
        if self.tier == "gpu":
            rate = self.gpu_throughput_tokens_per_s * self.gpu_utilization
            if self.gpu_hourly_usd <= 0 or rate <= 0:
                return 0.0, 0.0
            out = self.gpu_hourly_usd / 3600.0 / rate * 1e6
            return out * self.gpu_prefill_ratio, out
        if self.tier == "edge":
            return 0.0, self.edge_per_mtok_usd
        return 0.0, 0.0

    @property
    def priced(self) -> bool:
        return any(v > 0 for v in self.effective)

    def basis(self) -> str:
        if self.tier == "gpu" and self.gpu_hourly_usd > 0:
            return (
                f"${self.gpu_hourly_usd:g}/h, {self.gpu_throughput_tokens_per_s:g} tok/s "
                f"x{self.gpu_utilization:g}, prefill x{self.gpu_prefill_ratio:g}"
            )
        return {"hosted": "per token", "edge": "marginal"}.get(self.tier, "")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["effective_input_per_mtok_usd"], data["effective_output_per_mtok_usd"] = self.effective
        data["priced"] = self.priced
        return data


def rows_from_config(path: str | None, environ: Mapping[str, str] | None = None) -> list[PriceRow]:
    from router.config import load_config
    from router.errors import ConfigError

    try:
        config = load_config(path, environ=environ)
    except ConfigError as exc:
        raise CliError(exc.message, exit_code=EXIT_USAGE) from None
    return rows_for(config.backends)


def rows_for(backends: Iterable[BackendConfig]) -> list[PriceRow]:
    """One row per configured backend (``hybrid-router check`` reuses it)."""
    rows = []
    for b in backends:
        c = b.cost
        rows.append(
            PriceRow(
                name=b.name,
                tier=b.tier.value,
                kind=b.kind,
                model=b.model,
                input_per_mtok_usd=c.input_per_mtok_usd,
                output_per_mtok_usd=c.output_per_mtok_usd,
                gpu_hourly_usd=c.gpu_hourly_usd,
                gpu_throughput_tokens_per_s=c.gpu_throughput_tokens_per_s,
                gpu_utilization=c.gpu_utilization,
                gpu_prefill_ratio=c.gpu_prefill_ratio,
                edge_per_mtok_usd=c.edge_per_mtok_usd,
                source=c.source,
            )
        )
    return rows


def rows_from_listing(resp: Any) -> list[PriceRow]:
    rows = []
    for b in resp.backends:
        p = b.prices
        rows.append(
            PriceRow(
                name=b.name,
                tier=render.tier_name(b.tier),
                kind=b.kind,
                model=b.model,
                input_per_mtok_usd=p.input_per_mtok_usd,
                output_per_mtok_usd=p.output_per_mtok_usd,
                gpu_hourly_usd=p.gpu_hourly_usd,
                gpu_throughput_tokens_per_s=p.gpu_throughput_tokens_per_s,
                gpu_utilization=p.gpu_utilization,
                gpu_prefill_ratio=p.gpu_prefill_ratio,
                edge_per_mtok_usd=p.edge_per_mtok_usd,
                source=p.source,
            )
        )
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="PATH",
        help=f"read router.yaml (default when no --address: ${ENV_CONFIG_PATH})",
    )
    add_connection_options(p)


def run(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """``environ`` (default ``os.environ``, read now) may name the config file."""
    env = os.environ if environ is None else environ
    if args.config or (not args.address and env.get(ENV_CONFIG_PATH)):
        where = f"config {args.config or env[ENV_CONFIG_PATH]}"
        rows = rows_from_config(args.config, env)
    else:
        address, metadata = client_setup(args)
        where = f"router {address}"
        rows = rows_from_listing(asyncio.run(_listing(address, metadata, args)))
    if args.json:
        print(render.to_json({"from": where, "backends": [r.to_dict() for r in rows]}))
        return 0
    render.make_console().print(render.prices_view(rows, where=where))
    return 0


async def _listing(address: str, metadata: tuple[tuple[str, str], ...], args: Any) -> Any:
    async with open_client(args, metadata) as client:
        try:
            return await client.list_backends()
        except RouterCallError as exc:
            raise call_failed(exc, address) from None


COMMAND = Command(
    name="prices",
    help="the price table used for cost, with sources",
    description=(
        "Show each backend's prices on one scale (USD per million input and output "
        "tokens, as the policy charges them) with their source, from a config file or a "
        "running router. No default prices are shipped: unpriced backends cost 0."
    ),
    epilog=_EXAMPLES,
    add_arguments=add_arguments,
    run=run,
)
