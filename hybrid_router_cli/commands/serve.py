"""``hybrid-router serve``: run the router from a router.yaml (the router image's entry point;
needs the router extra only)."""

from __future__ import annotations

import argparse
import logging
import sys

from hybrid_router_cli.errors import EXIT_USAGE, CliError
from hybrid_router_cli.registry import Command

_EXAMPLES = """\
examples:
  hybrid-router serve --config router.yaml
  hybrid-router serve --config router.yaml --address 0.0.0.0:50051
  HYBRID_ROUTER_CONFIG=router.yaml hybrid-router serve --json

SIGTERM or Ctrl-C drains: health turns NOT_SERVING, open streams get
server.grace_period_s to finish, then the server stops.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="PATH",
        help="router.yaml (default: $HYBRID_ROUTER_CONFIG)",
    )
    p.add_argument("--address", metavar="HOST:PORT", help="override server.address")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default: info)",
    )
    p.add_argument("--json", action="store_true", help="log JSON lines")


def setup_logging(level: str, *, json_lines: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        # One JSON object per line; request lines carry their fields at the top level.
        from router.telemetry.logs import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from router.config import ServerConfig, load_config
    from router.errors import ConfigError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise CliError(exc.message, exit_code=EXIT_USAGE) from None
    if args.address:
        try:
            server = ServerConfig.model_validate(
                {**config.server.model_dump(), "address": args.address}
            )
        except ValidationError:
            raise CliError(
                f"--address must be HOST:PORT (e.g. 0.0.0.0:50051), got {args.address!r}",
                exit_code=EXIT_USAGE,
            ) from None
        config = config.model_copy(update={"server": server}).located_at(
            config.source, {"server.address": "--address"}
        )
    setup_logging(args.log_level, json_lines=args.json)
    try:
        from router.server import app
    except ImportError as exc:
        raise CliError(f"the router server is not available in this install: {exc}") from None
    return app.run(config)


COMMAND = Command(
    name="serve",
    help="run the router from a router.yaml",
    description="Run the router gRPC service from a config file.",
    epilog=_EXAMPLES,
    add_arguments=add_arguments,
    run=run,
)
