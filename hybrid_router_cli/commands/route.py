"""``hybrid-router route``: where a request would go, and why (InferenceRouter.Route; no model
is called)."""

from __future__ import annotations

import argparse
import asyncio

from hybrid_router.client import RouterCallError
from hybrid_router.v1 import router_pb2

from hybrid_router_cli import render
from hybrid_router_cli.connect import call_failed, client_setup, open_client
from hybrid_router_cli.errors import EXIT_OK
from hybrid_router_cli.options import add_connection_options, add_request_options, request
from hybrid_router_cli.registry import Command

_EXAMPLES = """\
examples:
  hybrid-router route "The capital of France is"
  hybrid-router route --data-class restricted --max-tokens 64 "Summarise our Q3 figures"
  hybrid-router route --total-budget-ms 2000 --objective fastest "Hello"
  hybrid-router route --tier gpu --tier hosted --json "Hello" | jq .backend
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_request_options(p)
    add_connection_options(p)


def run(args: argparse.Namespace) -> int:
    address, metadata = client_setup(args)
    req = request(args)
    return asyncio.run(_route(address, metadata, args, req))


async def _route(
    address: str,
    metadata: tuple[tuple[str, str], ...],
    args: argparse.Namespace,
    req: router_pb2.GenerateRequest,
) -> int:
    async with open_client(args, metadata) as client:
        try:
            decision = await client.route(req)
        except RouterCallError as exc:
            raise call_failed(exc, address) from None
    if args.json:
        print(render.to_json(decision))
        return EXIT_OK
    console = render.make_console()
    console.print(render.decision_table(decision, title=f"route {decision.request_id}"))
    console.print(render.decision_headline(decision))
    return EXIT_OK


COMMAND = Command(
    name="route",
    help="explain where a request would go (no model is called)",
    description=(
        "Ask the router where a request would go and why: every backend, accepted or "
        "rejected with the filter and reason, estimated TTFT/total/cost, plan rank and "
        "whether it meets the budget. Calls no model."
    ),
    epilog=_EXAMPLES,
    add_arguments=add_arguments,
    run=run,
)
