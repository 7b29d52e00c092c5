"""``hybrid-router check``: is this router.yaml ready to run? Without starting the server.

The config is loaded exactly as ``serve`` loads it (same loader, ``HYBRID_ROUTER__...``
overrides, same errors). Then the start-up checks run: the same component preflights
``serve`` runs before it binds (``router.preflight.COMPONENTS``; each component checks its
own part with its own code, see router/preflight.py), with ``--probe`` reaching the
backends too. This command only renders their findings:

=====================  ==============================================================
check                  the component that owns it
=====================  ==============================================================
event loop             ``router.server.app``: uvloop installed when asked
listen                 ``router.server.listen``: server.address is free to listen on (port
                       in use, not this machine's address, a privileged port)
exposure               ``router.security.exposure``: no keys only on loopback; TLS off
                       on a public address
server.tls             ``router.security.tls``: files parse, the key belongs to the
                       certificate; the certificate's validity dates
auth keys              ``router.security.keystore``: the keys file (``env:VAR`` path
                       included) and inline keys load; counts keys and tenants, never
                       prints a secret; keys naming undefined tenants
edge.*                 ``router.server.edge_link`` (device auth), ``router.server.relay``
                       (relay TLS), ``router.edge.hub`` (relay token),
                       ``router.stores.device_directory`` (Redis URL)
discovery              ``router.discovery``: the kubeconfig file
telemetry.tracing      ``router.telemetry.tracing``: the OTLP exporter is installed
backend NAME           ``router.backends.preflight`` + the kind's module: the adapter
                       builds (``api_key_env`` and ``env:VAR`` headers set; Bedrock's
                       region: its client is built, offline)
prices                 ``router.backends.preflight``: unpriced backends (the policy's
                       cost formula), prices without a source
tokenizer ID           ``router.backends.preflight``: exact (GGUF) vocabularies load
routable NAME          ``router.security.tenants`` over ``router.policy.reachability``:
                       some tenant may send some data class to it, and a one-word
                       prompt with ``policy.default_max_output_tokens`` fits its window
probe NAME             (``--probe``) the kind's ``probe`` proves what answers, not
                       only that something does; it never calls a model.
                       ``model_service``, ``ray_serve``: ``poll_load``, i.e.
                       ModelService ``Info`` (Ray Serve: on the load application);
                       UNIMPLEMENTED (another gRPC server, such as a router's own
                       port) fails; a smaller server window warns. ``openai``:
                       ``GET <endpoint>/models`` with the adapter's headers and key;
                       all but a 200 OpenAI model list fails (401/403: the key was
                       refused); a list without ``model`` warns. ``anthropic``: an
                       HTTP HEAD on the endpoint (any answer is ok). ``bedrock``: a
                       HEAD on a VPC ``endpoint``; without one, not probed (warn)
=====================  ==============================================================

Results: ``ok``; ``warn`` (``serve`` runs, but degraded or with something that can never
be used; it logs a warning); ``fail`` (``serve`` refuses to start with the same text).
Exit status: 0 without a fail, 1 with one, 2 when the config does not load (as ``serve``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from hybrid_router.env import ENV_CONFIG

from hybrid_router_cli import render
from hybrid_router_cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError
from hybrid_router_cli.options import positive_float
from hybrid_router_cli.registry import Command
from router.errors import ConfigError
from router.preflight import DEFAULT_PROBE_TIMEOUT_S, FAIL, OK, WARN

if TYPE_CHECKING:
    from router.config import RouterConfig
    from router.preflight import Finding

__all__ = ["COMMAND", "FAIL", "OK", "WARN", "Checker", "Row", "run"]

#: The config does not load (as ``serve``).
EXIT_CONFIG = EXIT_USAGE

_EXAMPLES = """\
examples:
  hybrid-router check --config router.yaml
  hybrid-router check --config router.yaml --probe          # also dial every backend
  HYBRID_ROUTER__SERVER__ADDRESS=0.0.0.0:50051 hybrid-router check --config router.yaml
  hybrid-router check --config router.yaml --json | jq '.checks[] | select(.result != "ok")'

exit status:
  0  no check failed (warnings allowed)
  1  at least one check failed: serve would refuse to start, or requests would fail
  2  the config does not load (the same error, and status, as `hybrid-router serve`)

The config is loaded as serve loads it (--config, else $HYBRID_ROUTER_CONFIG, plus
HYBRID_ROUTER__... overrides); no port is opened and no model is called. See
docs/configuration.md#checking-a-config.
"""


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the report: a finding as the table and the JSON show it."""

    check: str
    result: str
    detail: str
    #: The config key the finding is about ("" when it is about the whole file).
    key: str = ""

    @classmethod
    def of(cls, finding: Finding) -> Row:
        return cls(finding.component, finding.level, finding.text, finding.key)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class Checker:
    """Runs every component's preflight on a loaded config (router/preflight.py)."""

    def __init__(
        self,
        config: RouterConfig,
        *,
        environ: Mapping[str, str],
        probe: bool = False,
        probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.config = config
        self.environ = environ
        self.probe = probe
        self.probe_timeout_s = probe_timeout_s
        self._now = now

    async def run(self) -> list[Row]:
        from router import preflight
        from router.tokenizers import Tokenizers

        options = preflight.Options(
            probe=self.probe,
            probe_timeout_s=self.probe_timeout_s,
            now=self._now,
            # One counter for the tokenizer and routability checks, as serve's dispatcher.
            tokens=Tokenizers(self.config.policy.token_estimate),
        )
        findings = await preflight.run(
            preflight.COMPONENTS, self.config, self.environ, options=options
        )
        return [Row.of(f) for f in findings]


# --- command ------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH", help=f"router.yaml (default: ${ENV_CONFIG})")
    p.add_argument(
        "--probe",
        action="store_true",
        help="also ask each static backend what it is (ModelService Info, the OpenAI "
        "model list, or an HTTP HEAD); never calls a model",
    )
    p.add_argument(
        "--probe-timeout",
        type=positive_float,
        default=DEFAULT_PROBE_TIMEOUT_S,
        metavar="SECONDS",
        help=f"per backend (default: {DEFAULT_PROBE_TIMEOUT_S:g})",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    import os

    from router.config import load_config

    env = os.environ if environ is None else environ
    try:
        config = load_config(args.config, environ=env)
    except ConfigError as exc:
        raise CliError(exc.message, exit_code=EXIT_CONFIG) from None
    source = str(args.config or env.get(ENV_CONFIG, ""))
    checker = Checker(config, environ=env, probe=args.probe, probe_timeout_s=args.probe_timeout)
    findings = [
        Row(
            "config",
            OK,
            f"{source} loads: backends: {len(config.backends)}, tenants: "
            f"{len(config.auth.tenants)}, server.address {config.server.address}",
        ),
        *asyncio.run(checker.run()),
    ]
    failed = any(f.result == FAIL for f in findings)
    counts = _counts(findings)
    if args.json:
        report = {
            "config": source,
            "ok": not failed,
            "probed": args.probe,
            "counts": counts,
            "checks": [f.to_dict() for f in findings],
        }
        print(render.to_json(report))
    else:
        render.make_console().print(render.findings_view(findings, counts, source=source))
    return EXIT_FAILED if failed else EXIT_OK


def _counts(findings: Sequence[Row]) -> dict[str, int]:
    return {r: sum(1 for f in findings if f.result == r) for r in (OK, WARN, FAIL)}


COMMAND = Command(
    name="check",
    help="validate a router.yaml before it runs (exit 0 ok, 1 a check failed, 2 bad config)",
    description=(
        "Load a router.yaml as serve does, then check what serve would only find at "
        "start or at the first request: the auth/exposure rule, TLS files, the keys "
        "file, secrets named by env, prices, backends no request can reach and exact "
        "tokenizers. --probe also asks every static backend what it is (never calls a model)."
    ),
    epilog=_EXAMPLES,
    add_arguments=add_arguments,
    run=run,
)


def _print_table(findings: Sequence[Row], source: str) -> None:
    from rich.table import Table
    from rich.text import Text

    from hybrid_router_cli import render

    styles: dict[str, str] = {OK: "green", WARN: "yellow", FAIL: "bold red"}
    table = Table(title=f"check {source}", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", ratio=1)
    for f in findings:
        # Text, not markup: details hold config keys such as backends[gpu-a].
        table.add_row(Text(f.check), Text(f.result, style=styles[f.result]), Text(f.detail))
    console = render.make_console()
    console.print(table)
    counts = _counts(findings)
    summary = f"{counts[OK]} ok, {counts[WARN]} warn, {counts[FAIL]} fail"
    console.print(Text(summary, style="bold red" if counts[FAIL] else "green"))
