"""``hybrid-router``: serve | check | route | chat | sessions | backends | prices | usage |
devices | models | keys | templates | simulate | demo (the commands:
:mod:`hybrid_router_cli.registry`).

Every command prints one clear ``error: ...`` line and exits non-zero on failure (2 for
usage and configuration errors, 1 for failed calls, 130 when interrupted); ``--json``
switches the output to JSON for scripts, errors included (``{"error": {"message": ...,
"exit_code": N}}`` on stdout, besides the line on stderr). An error nobody foresaw is
one line too (its type and message, and how to see more); ``--debug`` (or
``HYBRID_ROUTER_DEBUG=1``) shows its traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from hybrid_router.env import ENV_DEBUG

from hybrid_router_cli import registry
from hybrid_router_cli.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
)

#: Modules only the ``cli`` extra installs; the router image (router + fast) lacks them.
CLI_EXTRA = ("rich",)


class UsageError(Exception):
    """A bad command line: argparse's ``error``, raised instead of exiting, so that
    :func:`main` reports it like every other error (and as JSON under ``--json``)."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """Every parser of the CLI (subparsers inherit the class)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hybrid-router",
        description=(
            "Route each LLM request to a hosted API, a GPU model or an edge device by "
            "latency, size and cost, and stream the answer back."
        ),
        epilog="start here: hybrid-router demo   (details: hybrid-router COMMAND --help)",
        formatter_class=registry.FORMATTER,
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback of an unexpected error (also: {ENV_DEBUG}=1)",
    )
    registry.add_commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:  # as argparse prints it: usage, then "PROG: error: ..."
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr)
        if "--json" in argv:
            _print_json_error(f"{exc.parser.prog}: {exc.message}", EXIT_USAGE)
        return EXIT_USAGE
    except SystemExit as exc:  # --help (0), already printed
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return run(args)
    except CliError as exc:
        _print_error(exc.message, exc.exit_code, args)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in CLI_EXTRA:
            raise
        json_works = getattr(args, "json", None) is False
        _print_error(
            f"`hybrid-router {args.command}` prints its tables with {missing}, which this "
            "install lacks (the router image installs the service only): "
            "pip install 'hybrid-router[cli]'" + (", or pass --json" if json_works else ""),
            EXIT_FAILED,
            args,
        )
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as other shell tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # the one place nothing escapes as a traceback
        if args.debug or os.environ.get(ENV_DEBUG, "0") not in ("", "0"):
            raise
        _print_error(
            f"`hybrid-router {args.command}` failed unexpectedly: {type(exc).__name__}: "
            f"{exc}; rerun with --debug (or {ENV_DEBUG}=1) for the traceback, and report it",
            EXIT_FAILED,
            args,
        )
        return EXIT_FAILED


def _print_error(message: str, exit_code: int, args: argparse.Namespace) -> None:
    """``error: ...`` on stderr; under ``--json`` also the error as JSON on stdout."""
    print(f"error: {message}", file=sys.stderr)
    if getattr(args, "json", False) is True:
        _print_json_error(message, exit_code)


def _print_json_error(message: str, exit_code: int) -> None:
    """``{"error": {"message": ..., "exit_code": N}}``, one line (a JSON Lines stream of
    ``chat --json`` ends with it too)."""
    error = {"error": {"message": message, "exit_code": exit_code}}
    print(json.dumps(error, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    sys.exit(main())
