"""``hybrid-router devices``: the edge fleet as a router replica sees it (EdgeFleet.ListDevices).

One row per device: online, site, model and version (and the desired one when it
differs), load (queued + running), decode rate, last seen, the replica holding its link,
and its sync status or why it is not a candidate. ``--json`` prints the response.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
from hybrid_router.client import call_error
from hybrid_router.v1 import edge_link_pb2 as epb
from hybrid_router.v1 import edge_link_pb2_grpc

from hybrid_router_cli import render
from hybrid_router_cli.connect import call_failed, client_setup, open_client
from hybrid_router_cli.errors import CliError
from hybrid_router_cli.options import add_connection_options
from hybrid_router_cli.registry import Command

_EXAMPLES = """\
examples:
  hybrid-router devices --address 127.0.0.1:50051
  hybrid-router devices --json | jq '.devices[] | {device_id, online, models}'

Any replica answers for the whole fleet when edge.directory.redis_url is set
(docs/edge.md).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_connection_options(p)


async def list_devices(
    address: str, metadata: tuple[tuple[str, str], ...], args: argparse.Namespace
) -> epb.ListDevicesResponse:
    """EdgeFleet.ListDevices (``models status`` uses it too)."""
    async with open_client(args) as client:
        stub = edge_link_pb2_grpc.EdgeFleetStub(client.channel)
        try:
            return await stub.ListDevices(
                epb.ListDevicesRequest(), timeout=args.timeout or 10.0, metadata=metadata or None
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                raise CliError(
                    f"the router at {address} does not take edge devices (set edge.enabled: "
                    "true in its router.yaml)"
                ) from None
            raise call_failed(call_error(exc), address) from None


def run(args: argparse.Namespace) -> int:
    address, metadata = client_setup(args)
    resp = asyncio.run(list_devices(address, metadata, args))
    if args.json:
        print(render.to_json(resp))
        return 0
    render.make_console().print(render.devices_view(resp, address=address))
    return 0


COMMAND = Command(
    name="devices",
    help="the edge fleet: online, site, versions, load, last seen",
    description=(
        "List the edge devices a router knows: online or not, site, model version "
        "(and the desired one), load, decode rate, last heartbeat, the replica that "
        "holds the link, and the device's sync status."
    ),
    epilog=_EXAMPLES,
    add_arguments=add_arguments,
    run=run,
)
