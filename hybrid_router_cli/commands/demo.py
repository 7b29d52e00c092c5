"""``hybrid-router demo``: the embedded default (the harness: :mod:`hybrid_router_cli.demo`)."""

from __future__ import annotations

import argparse

from hybrid_router_cli.errors import EXIT_USAGE, CliError
from hybrid_router_cli.registry import Command

_EXAMPLES = """\
examples:
  hybrid-router demo                  # about a minute; tables and live tokens
  hybrid-router demo --keep-running   # then try chat/route/backends against it
  hybrid-router demo --json > demo.json

The demo starts three local model servers, all serving the real Gemma 3 270M
model through llama.cpp, each posing as one tier (edge, gpu, hosted), and a
router in this process. Prices are illustrative demo figures. See docs/demo.md.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the router and model servers up until Ctrl-C",
    )
    p.add_argument(
        "--address",
        metavar="HOST:PORT",
        default="127.0.0.1:0",
        help="router listen address (default: 127.0.0.1:0, a free port)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON report at the end")
    p.add_argument(
        "--ray",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=(
            "run the GPU tier as the real Ray Serve app (serving/ray_app) in a local Ray "
            "instance, on CPU (default; needs the ray extra). --no-ray uses a plain "
            "ModelService server instead and starts about 30 s faster"
        ),
    )


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from hybrid_router_cli.demo import run as demo
    from router.config import ServerConfig

    try:
        ServerConfig(address=args.address)
    except ValidationError:
        raise CliError(
            f"--address must be HOST:PORT (port 0 picks a free one), got {args.address!r}",
            exit_code=EXIT_USAGE,
        ) from None
    return demo.run(
        keep_running=args.keep_running, as_json=args.json, address=args.address, ray=args.ray
    )


COMMAND = Command(
    name="demo",
    help="the embedded default: local model servers + router, real routing",
    description=(
        "Start local model servers posing as the edge, gpu and hosted tiers (all the real "
        "Gemma 3 270M model), start a router, and show requests of different sizes, "
        "budgets and data classes going to different tiers with live tokens."
    ),
    epilog=_EXAMPLES,
    add_arguments=add_arguments,
    run=run,
)
