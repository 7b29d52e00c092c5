"""``hybrid-router devices``: the edge fleet as a router replica sees it (EdgeFleet.ListDevices).

One row per device: online, site, model and version (and the desired one when it
differs), load (queued + running), decode rate, last seen, the replica holding its link,
and its sync status or why it is not a candidate. ``--json`` prints the response.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

from router.cli.errors import CliError

_EXAMPLES = """\
examples:
  hybrid-router devices --address 127.0.0.1:50051
  hybrid-router devices --json | jq '.devices[] | {device_id, online, models}'

Any replica answers for the whole fleet when edge.directory.redis_url is set
(docs/edge.md).
"""

ClientSetup = Callable[[argparse.Namespace], tuple[str, tuple[tuple[str, str], ...]]]


def add_parser(sub: Any, formatter: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    """The ``devices`` subcommand; main.py adds the connection options and the handler."""
    p: argparse.ArgumentParser = sub.add_parser(
        "devices",
        help="the edge fleet: online, site, versions, load, last seen",
        description=(
            "List the edge devices a router knows: online or not, site, model version "
            "(and the desired one), load, decode rate, last heartbeat, the replica that "
            "holds the link, and the device's sync status."
        ),
        epilog=_EXAMPLES,
        formatter_class=formatter,
    )
    return p


async def list_devices(
    address: str, metadata: tuple[tuple[str, str], ...], args: argparse.Namespace
) -> Any:
    import grpc
    from hybrid_router.client import call_error
    from hybrid_router.v1 import edge_link_pb2 as epb
    from hybrid_router.v1 import edge_link_pb2_grpc

    from router.cli.connect import call_failed, open_client

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


def ago(unix_ms: int, now: float | None = None) -> str:
    if not unix_ms:
        return "never"
    seconds = max(0.0, (time.time() if now is None else now) - unix_ms / 1000.0)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def version_text(device: Any) -> str:
    parts = []
    for m in device.models:
        want = device.desired_versions.get(m.name, "")
        text = f"{m.name} {m.version}"
        if want and want != m.version:
            text += f" (want {want})"
        parts.append(text)
    return ", ".join(parts) or "no model"


def run(args: argparse.Namespace, client_setup: ClientSetup) -> int:
    address, metadata = client_setup(args)
    resp = asyncio.run(list_devices(address, metadata, args))
    if args.json:
        from router.cli import render

        print(render.to_json(resp))
        return 0
    from rich.table import Table

    from router.cli.render import make_console

    table = Table(title=f"edge devices at {address} (replica {resp.router_id})")
    for col in ("device", "online", "site", "model", "load", "tok/s", "last seen", "router"):
        table.add_column(col)
    table.add_column("status", overflow="fold")
    for d in resp.devices:
        online = "[green]yes[/]" if d.online else "[red]no[/]"
        if d.online and d.draining:
            online = "[yellow]draining[/]"
        table.add_row(
            d.device_id,
            online,
            d.site or "-",
            version_text(d),
            f"{d.queue_depth}+{d.in_flight}",
            f"{d.decode_tokens_per_s:.1f}" if d.decode_tokens_per_s else "-",
            ago(d.last_seen_unix_ms),
            d.router_id or "-",
            d.detail or d.sync_status,
        )
    console = make_console()
    console.print(table)
    if not resp.devices:
        console.print("no device has dialed in yet (see docs/edge.md to run an agent)")
    return 0
