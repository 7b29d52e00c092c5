"""``hybrid-router``: serve | check | route | chat | backends | demo | keys | prices | ...

Every command prints one clear ``error: ...`` line and exits non-zero on failure (2 for
usage and configuration errors, 1 for failed calls, 130 when interrupted); ``--json``
switches the output to JSON for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from hybrid_router.client import (
    DATA_CLASSES,
    ENV_ADDRESS,
    ENV_API_KEY,
    ENV_CA_BUNDLE,
    OBJECTIVES,
    TIERS,
    OptionError,
    RequestOptions,
    RouterCallError,
    build_request,
)
from rich.console import Group
from rich.live import Live

from router.cli import check as check_cli
from router.cli import devices as devices_cli
from router.cli import keys as keys_cli
from router.cli import models as models_cli
from router.cli import prices as prices_cli
from router.cli import render
from router.cli.connect import call_failed, client_setup, open_client, usage_error
from router.cli.errors import CliError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


# --- argument types ---------------------------------------------------------------------


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


# --- parser -----------------------------------------------------------------------------

_FMT = argparse.RawDescriptionHelpFormatter

_ROUTE_EXAMPLES = """\
examples:
  hybrid-router route "The capital of France is"
  hybrid-router route --data-class restricted --max-tokens 64 "Summarise our Q3 figures"
  hybrid-router route --total-budget-ms 2000 --objective fastest "Hello"
  hybrid-router route --tier gpu --tier hosted --json "Hello" | jq .backend
"""

_CHAT_EXAMPLES = """\
examples:
  hybrid-router chat "The capital of France is"
  hybrid-router chat --max-tokens 64 --ttft-budget-ms 500 "Once upon a time"
  hybrid-router chat --tier edge --explain "The tallest mountain is"
  echo "A haiku about routers:" | hybrid-router chat -
  hybrid-router chat --json "Hello" | jq -c 'keys[0]'   # decision, delta..., usage
"""

_BACKENDS_EXAMPLES = """\
examples:
  hybrid-router backends
  hybrid-router backends --watch 1
  hybrid-router backends --json | jq '.backends[] | {name, in_flight, queue_depth}'
"""

_SERVE_EXAMPLES = """\
examples:
  hybrid-router serve --config router.yaml
  hybrid-router serve --config router.yaml --address 0.0.0.0:50051
  HYBRID_ROUTER_CONFIG=router.yaml hybrid-router serve --json

SIGTERM or Ctrl-C drains: health turns NOT_SERVING, open streams get
server.grace_period_s to finish, then the server stops.
"""

_DEMO_EXAMPLES = """\
examples:
  hybrid-router demo                  # about a minute; tables and live tokens
  hybrid-router demo --keep-running   # then try chat/route/backends against it
  hybrid-router demo --json > demo.json

The demo starts three local model servers, all serving the real Gemma 3 270M
model through llama.cpp, each posing as one tier (edge, gpu, hosted), and a
router in this process. Prices are illustrative demo figures. See docs/demo.md.
"""


def _add_connection_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument(
        "--address",
        metavar="HOST:PORT",
        help=f"router address (default: ${ENV_ADDRESS}, else 127.0.0.1:50051)",
    )
    g.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="deadline for the call (default: none)",
    )
    g.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="gRPC metadata sent with the call, e.g. an auth header (repeatable)",
    )
    g.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"API key, sent as 'authorization: Bearer KEY' (default: ${ENV_API_KEY})",
    )
    g.add_argument(
        "--ca-bundle",
        metavar="PEM",
        help=f"CA bundle of a TLS router; turns TLS on (default: ${ENV_CA_BUNDLE})",
    )
    g.add_argument("--tls", action="store_true", help="TLS with the system's root certificates")
    g.add_argument("--client-cert", metavar="PEM", help="client certificate (mTLS router)")
    g.add_argument("--client-key", metavar="PEM", help="client private key (mTLS router)")
    g.add_argument(
        "--tls-server-name", metavar="NAME", help="name to check the server certificate against"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _add_request_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("request")
    g.add_argument(
        "--max-tokens",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="max output tokens (default: the router's)",
    )
    g.add_argument(
        "--ttft-budget-ms",
        type=_non_negative_int,
        default=0,
        metavar="MS",
        help="time-to-first-token budget (0: none)",
    )
    g.add_argument(
        "--total-budget-ms",
        type=_non_negative_int,
        default=0,
        metavar="MS",
        help="total latency budget (0: none)",
    )
    g.add_argument(
        "--max-cost-usd", type=_non_negative_float, metavar="USD", help="upper bound on cost"
    )
    g.add_argument(
        "--data-class",
        choices=sorted(DATA_CLASSES),
        help="data classification (default: internal)",
    )
    g.add_argument(
        "--tier", action="append", default=[], choices=sorted(TIERS), help="pin a tier (repeat)"
    )
    g.add_argument(
        "--backend", action="append", default=[], metavar="NAME", help="pin a backend (repeat)"
    )
    g.add_argument(
        "--exclude-tier", action="append", default=[], choices=sorted(TIERS), help="exclude a tier"
    )
    g.add_argument(
        "--exclude-backend", action="append", default=[], metavar="NAME", help="exclude a backend"
    )
    g.add_argument("--family", default="", help="required model family, e.g. gemma3")
    g.add_argument(
        "--capability",
        action="append",
        default=[],
        metavar="NAME",
        help="required capability, e.g. long-context (repeat)",
    )
    g.add_argument("--site", default="", help="edge site affinity")
    g.add_argument("--device", default="", help="edge device affinity")
    g.add_argument("--objective", choices=list(OBJECTIVES), help="override the router's objective")
    g.add_argument("--system", default="", metavar="TEXT", help="system message")
    g.add_argument("--temperature", type=_non_negative_float, help="sampling temperature")
    g.add_argument("--seed", type=_non_negative_int, help="sampling seed")
    g.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop string (repeat)"
    )
    g.add_argument("--request-id", default="", metavar="ID", help="request id (default: new)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybrid-router",
        description=(
            "Route each LLM request to a hosted API, a GPU model or an edge device by "
            "latency, size and cost, and stream the answer back."
        ),
        epilog="start here: hybrid-router demo   (details: hybrid-router COMMAND --help)",
        formatter_class=_FMT,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "serve",
        help="run the router from a router.yaml",
        description="Run the router gRPC service from a config file.",
        epilog=_SERVE_EXAMPLES,
        formatter_class=_FMT,
    )
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
    p.set_defaults(handler=_cmd_serve)

    p = sub.add_parser(
        "route",
        help="explain where a request would go (no model is called)",
        description=(
            "Ask the router where a request would go and why: every backend, accepted or "
            "rejected with the filter and reason, estimated TTFT/total/cost, plan rank and "
            "whether it meets the budget. Calls no model."
        ),
        epilog=_ROUTE_EXAMPLES,
        formatter_class=_FMT,
    )
    p.add_argument("prompt", help='the prompt text ("-" reads stdin)')
    _add_request_options(p)
    _add_connection_options(p)
    p.set_defaults(handler=_cmd_route)

    p = sub.add_parser(
        "chat",
        help="stream a prompt through the router",
        description=(
            "Stream a prompt through the router: the decision first, then tokens as they "
            "arrive (and failover notices), then usage. Ctrl-C cancels the stream."
        ),
        epilog=_CHAT_EXAMPLES,
        formatter_class=_FMT,
    )
    p.add_argument("prompt", help='the prompt text ("-" reads stdin)')
    p.add_argument("--explain", action="store_true", help="print the full decision table")
    _add_request_options(p)
    _add_connection_options(p)
    p.set_defaults(handler=_cmd_chat)

    p = sub.add_parser(
        "backends",
        help="list backends with their live state",
        description=(
            "List every backend: static facts (tier, kind, model, context window) and live "
            "state (health, circuit, in flight, queue, TTFT, decode rate, errors, and each "
            "backend's last error: how long ago in the table, the message under it; "
            "last_error and last_error_unix_ms in --json)."
        ),
        epilog=_BACKENDS_EXAMPLES,
        formatter_class=_FMT,
    )
    p.add_argument(
        "--watch",
        type=_positive_float,
        metavar="SECONDS",
        help="refresh every SECONDS until Ctrl-C",
    )
    _add_connection_options(p)
    p.set_defaults(handler=_cmd_backends)

    p = sub.add_parser(
        "demo",
        help="the embedded default: local model servers + router, real routing",
        description=(
            "Start local model servers posing as the edge, gpu and hosted tiers (all the real "
            "Gemma 3 270M model), start a router, and show requests of different sizes, "
            "budgets and data classes going to different tiers with live tokens."
        ),
        epilog=_DEMO_EXAMPLES,
        formatter_class=_FMT,
    )
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
    p.set_defaults(handler=_cmd_demo)

    keys_cli.add_parser(sub, _FMT)
    check_cli.add_parser(sub, _FMT)

    p = prices_cli.add_parser(sub, _FMT)
    _add_connection_options(p)
    p.set_defaults(handler=lambda a: prices_cli.run(a, client_setup))

    p = devices_cli.add_parser(sub, _FMT)
    _add_connection_options(p)
    p.set_defaults(handler=lambda a: devices_cli.run(a, client_setup))
    models_cli.add_parser(sub, _FMT, _add_connection_options, client_setup)
    return parser


# --- entry point --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return handler(args)
    except CliError as exc:
        _print_error(exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as other shell tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _print_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


# --- serve --------------------------------------------------------------------------------


def _setup_logging(level: str, *, json_lines: bool) -> None:
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


def _cmd_serve(args: argparse.Namespace) -> int:
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
        config = config.model_copy(update={"server": server})
    _setup_logging(args.log_level, json_lines=args.json)
    try:
        from router.server import app
    except ImportError as exc:
        raise CliError(f"the router server is not available in this install: {exc}") from None
    return app.run(config)


# --- route / chat / backends --------------------------------------------------------------


def _request_options(args: argparse.Namespace) -> RequestOptions:
    prompt = args.prompt
    if prompt == "-":
        prompt = sys.stdin.read()
    return RequestOptions(
        prompt=prompt,
        system=args.system,
        max_output_tokens=args.max_tokens,
        ttft_budget_ms=args.ttft_budget_ms,
        total_budget_ms=args.total_budget_ms,
        max_cost_usd=args.max_cost_usd,
        data_class=args.data_class or "",
        pin_tiers=tuple(args.tier),
        pin_backends=tuple(args.backend),
        exclude_tiers=tuple(args.exclude_tier),
        exclude_backends=tuple(args.exclude_backend),
        model_family=args.family,
        capabilities=tuple(args.capability),
        site=args.site,
        device_id=args.device,
        objective=args.objective or "",
        temperature=args.temperature,
        seed=args.seed,
        stop=tuple(args.stop),
        request_id=args.request_id,
    )


def _request(args: argparse.Namespace) -> Any:
    try:
        return build_request(_request_options(args))
    except OptionError as exc:
        raise usage_error(exc) from None


def _cmd_route(args: argparse.Namespace) -> int:
    address, metadata = client_setup(args)
    request = _request(args)
    return asyncio.run(_route(address, metadata, args, request))


async def _route(
    address: str, metadata: tuple[tuple[str, str], ...], args: argparse.Namespace, request: Any
) -> int:
    async with open_client(args, metadata) as client:
        try:
            decision = await client.route(request)
        except RouterCallError as exc:
            raise call_failed(exc, address) from None
    if args.json:
        print(render.to_json(decision))
        return EXIT_OK
    console = render.make_console()
    console.print(render.decision_table(decision, title=f"route {decision.request_id}"))
    console.print(render.decision_headline(decision))
    return EXIT_OK


def _cmd_chat(args: argparse.Namespace) -> int:
    address, metadata = client_setup(args)
    request = _request(args)
    return asyncio.run(_chat(address, metadata, args, request))


async def _chat(
    address: str, metadata: tuple[tuple[str, str], ...], args: argparse.Namespace, request: Any
) -> int:
    console = render.make_console()
    out = sys.stdout
    complete = True
    mid_text = False
    async with open_client(args, metadata) as client, client.generate(request) as stream:
        try:
            async for event in stream:
                kind = event.WhichOneof("event")
                if args.json:
                    print(json.dumps(render.message_to_dict(event), ensure_ascii=False), flush=True)
                    if kind == "usage":
                        complete = event.usage.complete
                    continue
                if kind == "decision":
                    if args.explain:
                        console.print(render.decision_table(event.decision))
                    console.print(render.decision_headline(event.decision))
                    console.rule(style="dim")
                elif kind == "delta":
                    out.write(event.delta.text)
                    out.flush()
                    mid_text = bool(event.delta.text) and not event.delta.text.endswith("\n")
                elif kind == "failover":
                    if mid_text:
                        out.write("\n")
                    console.print(render.failover_line(event.failover))
                    mid_text = False
                elif kind == "usage":
                    if mid_text:
                        out.write("\n")
                    mid_text = False
                    console.rule(style="dim")
                    console.print(render.usage_line(event.usage))
                    complete = event.usage.complete
        except RouterCallError as exc:
            if mid_text and not args.json:
                out.write("\n")
            raise call_failed(exc, address) from None
        except asyncio.CancelledError:
            # Ctrl-C: leaving the stream's block cancels the RPC; say so on a fresh line.
            if mid_text and not args.json:
                out.write("\n")
            out.flush()
            raise
    return EXIT_OK if complete else EXIT_FAILED


def _cmd_backends(args: argparse.Namespace) -> int:
    address, metadata = client_setup(args)
    try:
        return asyncio.run(_backends(address, metadata, args))
    except KeyboardInterrupt:
        if args.watch:
            return EXIT_OK  # Ctrl-C is how a watch ends
        raise


async def _backends(
    address: str, metadata: tuple[tuple[str, str], ...], args: argparse.Namespace
) -> int:
    async with open_client(args, metadata) as client:

        async def fetch() -> Any:
            try:
                return await client.list_backends()
            except RouterCallError as exc:
                raise call_failed(exc, address) from None

        resp = await fetch()
        if args.json:
            indent = None if args.watch else 2
            print(render.to_json(resp, indent=indent), flush=True)
            while args.watch:
                await asyncio.sleep(args.watch)
                print(render.to_json(await fetch(), indent=None), flush=True)
            return EXIT_OK
        console = render.make_console()
        if not args.watch:
            console.print(render.backends_table(resp, title=f"backends at {address}"))
            notes = render.backend_notes(resp)
            if notes is not None:
                console.print(notes)
            return EXIT_OK

        def table(r: Any) -> Any:
            stamp = time.strftime("%H:%M:%S")
            title = f"backends at {address} · {stamp} · every {args.watch:g}s · Ctrl-C stops"
            notes = render.backend_notes(r)
            t = render.backends_table(r, title=title)
            return t if notes is None else Group(t, notes)

        with Live(table(resp), console=console, auto_refresh=False) as live:
            while True:
                await asyncio.sleep(args.watch)
                live.update(table(await fetch()), refresh=True)


# --- demo ---------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from router.cli import demo
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


if __name__ == "__main__":
    sys.exit(main())
