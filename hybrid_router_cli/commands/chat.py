"""``hybrid-router chat``: stream a prompt through the router (InferenceRouter.Generate)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from hybrid_router.client import RouterCallError
from hybrid_router.v1 import router_pb2

from hybrid_router_cli import render
from hybrid_router_cli.connect import call_failed, client_setup, open_client
from hybrid_router_cli.errors import EXIT_FAILED, EXIT_OK
from hybrid_router_cli.options import add_connection_options, add_request_options, request
from hybrid_router_cli.registry import Command

_EXAMPLES = """\
examples:
  hybrid-router chat "The capital of France is"
  hybrid-router chat --max-tokens 64 --ttft-budget-ms 500 "Once upon a time"
  hybrid-router chat --tier edge --explain "The tallest mountain is"
  echo "A haiku about routers:" | hybrid-router chat -
  hybrid-router chat --json "Hello" | jq -c 'keys[0]'   # decision, delta..., usage
  hybrid-router chat --tools tools.json --tool-choice required "Weather in Oslo?"
  hybrid-router chat --json-schema answer.schema.json "Name three rivers"
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--explain", action="store_true", help="print the full decision table")
    add_request_options(p)
    add_connection_options(p)


def run(args: argparse.Namespace) -> int:
    address, metadata = client_setup(args)
    req = request(args)
    return asyncio.run(_chat(address, metadata, args, req))


async def _chat(
    address: str,
    metadata: tuple[tuple[str, str], ...],
    args: argparse.Namespace,
    req: router_pb2.GenerateRequest,
) -> int:
    console = None if args.json else render.make_console()
    out = sys.stdout
    complete = True
    mid_text = False
    calls: dict[int, list[str]] = {}
    async with open_client(args, metadata) as client, client.generate(req) as stream:
        try:
            async for event in stream:
                kind = event.WhichOneof("event")
                if console is None:
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
                elif kind == "continuation":
                    if mid_text:
                        out.write("\n")
                    console.print(render.continuation_line(event.continuation))
                    mid_text = False
                elif kind == "tool_call":
                    tc = event.tool_call
                    call = calls.setdefault(tc.index, [tc.id, tc.name])
                    call.append(tc.arguments)
                elif kind == "usage":
                    if mid_text:
                        out.write("\n")
                    mid_text = False
                    for index, (call_id, name, *parts) in sorted(calls.items()):
                        console.print(render.tool_call_line(index, call_id, name, "".join(parts)))
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


COMMAND = Command(
    name="chat",
    help="stream a prompt through the router",
    description=(
        "Stream a prompt through the router: the decision first, then tokens as they "
        "arrive (and failover notices), then usage. Ctrl-C cancels the stream."
    ),
    epilog=_EXAMPLES,
    add_arguments=add_arguments,
    run=run,
)
