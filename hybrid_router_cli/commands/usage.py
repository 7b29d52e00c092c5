"""``hybrid-router usage``: what the cost ledger holds, summed by tenant, key, tier,
backend, day or month (docs/controls.md#cost-ledger).

It reads the ledger store a router writes: ``--config router.yaml`` (its
``controls.ledger`` store: SQLite, Redis or DynamoDB; env overrides and ``env:VAR``
references apply, as for ``serve``) or ``--file PATH`` (an SQLite ledger file). Times are
UTC; ``--since`` is inclusive, ``--until`` exclusive; the default is the current UTC month
so far. Output: a table, ``--json`` or ``--csv``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import os
import sys
from typing import TYPE_CHECKING, Any

from hybrid_router.env import ENV_CONFIG

from hybrid_router_cli import render
from hybrid_router_cli.errors import EXIT_FAILED, EXIT_USAGE, CliError
from hybrid_router_cli.registry import Command

if TYPE_CHECKING:
    from router.controls.ledger_records import Total

#: ``--by`` dimensions (router.controls.ledger_records.DIMENSIONS; kept here so that
#: ``--help`` imports nothing of the router).
DIMENSIONS = ("tenant", "key", "tier", "backend", "day", "month")
_METRICS = ("requests", "input_tokens", "output_tokens", "cost_usd", "incomplete", "cached")

_EXAMPLES = """\
examples:
  hybrid-router usage --config router.yaml                       # this month, by tenant
  hybrid-router usage --config router.yaml --by tenant,day --since 2025-05-01
  hybrid-router usage --file ledger.sqlite3 --by backend,tier --since 2025-05-01 --until 2025-06-01
  hybrid-router usage --config router.yaml --by key --tenant acme --json
  hybrid-router usage --config router.yaml --by tenant,month --since 2025-01-01 --csv > spend.csv

Times are UTC: --since DATE is inclusive, --until DATE exclusive (a date, or a time such as
2025-05-01T12:00:00Z); the default is the current UTC month so far. Costs are what each
request's Usage reported (the backends' configured prices, docs/policy.md).
"""


def _when(text: str) -> dt.datetime:
    """``YYYY-MM-DD`` (00:00 UTC) or an ISO 8601 time (UTC unless it names a zone)."""
    value = text.strip()
    try:
        if len(value) == 10:
            d = dt.date.fromisoformat(value)
            return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a date (2025-05-01) or a time (2025-05-01T12:00:00Z), got {text!r}"
        ) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def _dimensions(text: str) -> tuple[str, ...]:
    dims = tuple(d.strip() for d in text.split(",") if d.strip())
    bad = [d for d in dims if d not in DIMENSIONS]
    if bad or not dims:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(DIMENSIONS)}, got {text!r}"
        )
    if len(set(dims)) != len(dims):
        raise argparse.ArgumentTypeError(f"a dimension is named twice in {text!r}")
    return dims


def _store(args: argparse.Namespace) -> Any:
    from router.errors import ConfigError

    if args.file:
        from pathlib import Path

        from router.controls.ledger_sqlite import SqliteLedgerStore

        path = Path(args.file)
        if not path.is_file():
            raise CliError(f"{args.file}: no such file (an SQLite ledger)", exit_code=EXIT_USAGE)
        return SqliteLedgerStore(path, create=False)
    from router.config import load_config
    from router.controls.ledger import open_ledger_store

    try:
        config = load_config(args.config)
        if not config.controls.ledger.enabled:
            print(
                f"note: {config.source} has controls.ledger.enabled false; reading the store "
                "it names anyway",
                file=sys.stderr,
            )
        return open_ledger_store(config.controls.ledger, os.environ, create=False)
    except ConfigError as exc:
        raise CliError(
            f"{exc.message}; or give an SQLite ledger file with --file", exit_code=EXIT_USAGE
        ) from None


def _window(args: argparse.Namespace) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    since = args.since or dt.datetime(now.year, now.month, 1, tzinfo=dt.UTC)
    until = args.until or now
    if until <= since:
        raise CliError(
            f"--until ({until.isoformat()}) must be after --since ({since.isoformat()})",
            exit_code=EXIT_USAGE,
        )
    return since, until


def _row(t: Total, by: tuple[str, ...]) -> dict[str, Any]:
    row: dict[str, Any] = dict(zip(by, t.group, strict=True))
    row |= {m: getattr(t, m) for m in _METRICS}
    row["cost_usd"] = round(row["cost_usd"], 9)
    return row


def run(args: argparse.Namespace) -> int:
    from router.controls.ledger_records import totals
    from router.errors import RouterError

    since, until = _window(args)
    by = args.by

    async def go() -> tuple[str, list[Total], Total | None]:
        store = _store(args)
        try:
            records = store.read(int(since.timestamp() * 1000), int(until.timestamp() * 1000))
            picked = [
                r
                async for r in records
                if (args.tenant is None or r.tenant == args.tenant)
                and (args.key is None or r.key_id == args.key)
            ]
        except RouterError as exc:
            raise CliError(exc.message, exit_code=EXIT_FAILED) from None
        finally:
            await store.close()
        everything = totals(picked, ())
        return store.name, totals(picked, by), everything[0] if everything else None

    name, groups, total = asyncio.run(go())
    rows = [_row(t, by) for t in groups]
    if args.json:
        doc = {
            "store": name,
            "since": since.isoformat(),
            "until": until.isoformat(),
            "by": list(by),
            "rows": rows,
            "total": _row(total, ()) if total else {m: 0 for m in _METRICS},
        }
        print(render.to_json(doc))
        return 0
    if args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=[*by, *_METRICS], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return 0
    where = f"{name}, {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"
    if not rows:
        print(f"no usage recorded in {where}", file=sys.stderr)
        return 0
    from rich.table import Table

    table = Table(title=where, title_justify="left")
    for d in by:
        table.add_column(d)
    for m in _METRICS:
        table.add_column(m.replace("_", " "), justify="right")
    for r in rows:
        table.add_row(*[str(r[d]) for d in by], *_cells(r))
    if total is not None and len(rows) > 1:
        table.add_section()
        table.add_row(*(["total"] + [""] * (len(by) - 1)), *_cells(_row(total, ())))
    render.make_console().print(table)
    return 0


def _cells(row: dict[str, Any]) -> list[str]:
    return [
        f"{row['requests']:,}",
        f"{row['input_tokens']:,}",
        f"{row['output_tokens']:,}",
        f"${row['cost_usd']:,.4f}",
        f"{row['incomplete']:,}",
        f"{row['cached']:,}",
    ]


def add_arguments(p: argparse.ArgumentParser) -> None:
    store = p.add_argument_group("store").add_mutually_exclusive_group()
    store.add_argument(
        "--config",
        metavar="PATH",
        help=f"router.yaml whose controls.ledger store to read (default: ${ENV_CONFIG})",
    )
    store.add_argument("--file", metavar="PATH", help="an SQLite ledger file")
    p.add_argument(
        "--by",
        type=_dimensions,
        default=("tenant",),
        metavar="DIMS",
        help=f"group by, comma-separated: {', '.join(DIMENSIONS)} (default: tenant)",
    )
    p.add_argument("--since", type=_when, metavar="DATE", help="from (UTC, inclusive)")
    p.add_argument("--until", type=_when, metavar="DATE", help="to (UTC, exclusive; default: now)")
    p.add_argument("--tenant", metavar="NAME", help="only this tenant's requests")
    p.add_argument("--key", metavar="KEY_ID", help="only this API key's requests")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON")
    out.add_argument("--csv", action="store_true", help="print CSV")


COMMAND = Command(
    name="usage",
    help="spend and tokens from the cost ledger, by tenant, key, tier, backend, day",
    description=(
        "Sum the cost ledger (controls.ledger: every request's tokens and cost) by tenant, "
        "API key, tier, backend, day or month, over a UTC time window."
    ),
    epilog=_EXAMPLES,
    add_arguments=add_arguments,
    run=run,
)
