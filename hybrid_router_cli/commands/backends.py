"""``hybrid-router backends``: every backend with its live state (InferenceRouter.ListBackends)."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from hybrid_router.client import RouterCallError

from hybrid_router_cli import render
from hybrid_router_cli.connect import call_failed, client_setup, open_client
from hybrid_router_cli.errors import EXIT_OK
from hybrid_router_cli.options import add_connection_options, positive_float
from hybrid_router_cli.registry import Command
from hybrid_router_cli.render_backends import backends_view, redraws_in_place

_EXAMPLES = """\
output:
  The table fits the terminal. Below the full table's width: a compact table (name,
  tier, state, TTFT, tok/s, load = in flight / queue) and a line per backend with the
  other facts; narrower still, a few lines per backend. No value is cut short.
  TTFT and tok/s marked ᵖ are the backend's configured priors (router.yaml
  backends[].priors; "priors" in --json): it has completed fewer than
  policy.min_samples requests, and the policy uses the priors until it has.
  --watch into a file or a pipe prints a whole frame per interval, each under a
  "backends at ADDRESS · DATE TIME" line; with --json, one document per line.

examples:
  hybrid-router backends
  hybrid-router backends --watch 1                   # redrawn in place until Ctrl-C
  hybrid-router backends --watch 5 > backends.log    # a timestamped frame every 5 s
  hybrid-router backends --watch 1 --json >> backends.jsonl    # JSON Lines
  hybrid-router backends --json | jq '.backends[] | {name, in_flight, queue_depth}'
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--watch",
        type=positive_float,
        metavar="SECONDS",
        help=(
            "refresh every SECONDS until Ctrl-C: in place on a terminal, else one full "
            "frame per interval (one JSON document per line with --json)"
        ),
    )
    add_connection_options(p)


def run(args: argparse.Namespace) -> int:
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
        if args.json:  # JSON Lines while watching: one document per interval
            indent = None if args.watch else 2
            print(render.to_json(resp, indent=indent), flush=True)
            while args.watch:
                await asyncio.sleep(args.watch)
                print(render.to_json(await fetch(), indent=None), flush=True)
            return EXIT_OK
        console = render.make_console()
        if not args.watch:
            console.print(backends_view(resp, title=f"backends at {address}"))
            return EXIT_OK
        if not redraws_in_place(console):
            # A file or a pipe: a whole frame per interval, its title line timestamped.
            while True:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                title = f"backends at {address} · {stamp} · every {args.watch:g}s"
                console.print(backends_view(resp, title=title))
                console.print()
                console.file.flush()
                await asyncio.sleep(args.watch)
                resp = await fetch()

        def view(r: Any) -> Any:
            stamp = time.strftime("%H:%M:%S")
            title = f"backends at {address} · {stamp} · every {args.watch:g}s · Ctrl-C stops"
            return backends_view(r, title=title)

        with render.live(console, view(resp)) as live:
            while True:
                await asyncio.sleep(args.watch)
                live.update(view(await fetch()), refresh=True)


COMMAND = Command(
    name="backends",
    help="list backends with their live state",
    description=(
        "List every backend: static facts (tier, kind, model, context window) and live "
        "state (health, circuit, in flight, queue, TTFT, decode rate, errors, and each "
        "backend's last error: how long ago in the table, the message under it; "
        "last_error and last_error_unix_ms in --json)."
    ),
    epilog=_EXAMPLES,
    add_arguments=add_arguments,
    run=run,
)
