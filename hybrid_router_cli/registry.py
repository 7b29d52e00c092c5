"""The one command registry: every ``hybrid-router`` command is a module under
``hybrid_router_cli/commands/`` that defines ``COMMAND = Command(...)``.

A command module imports only the standard library, ``hybrid_router`` (the contract and
the client library) and the light modules of this package (``registry``, ``options``,
``connect``, ``errors``, ``render``, ``render_backends``, ``render_sessions``,
``render_simulate``, ``aws``) at its top; what only running it needs (rich for tables,
boto3, pydantic and ``router.*``, ``serving``, ``greengrass``, matplotlib) it imports
inside ``run``. So ``hybrid-router --help`` and
``hybrid-router serve`` (the router image) load no command's heavy dependencies, and rich
is needed only to print tables.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The commands, in the order ``hybrid-router --help`` lists them: module names under
#: ``hybrid_router_cli.commands``.
NAMES = (
    "serve",
    "check",
    "route",
    "chat",
    "sessions",
    "backends",
    "prices",
    "usage",
    "simulate",
    "devices",
    "models",
    "keys",
    "templates",
    "demo",
)

FORMATTER = argparse.RawDescriptionHelpFormatter


@dataclass(frozen=True, slots=True)
class Command:
    """One ``hybrid-router`` command.

    ``add_arguments`` adds the command's options to its subparser (a command with
    actions, ``keys create``, ``models publish``, adds their subparsers there); ``run``
    gets the parsed arguments and returns the exit status, or raises ``CliError``.
    """

    name: str
    #: One line in ``hybrid-router --help``.
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    #: The paragraph under ``usage`` in ``hybrid-router NAME --help``.
    description: str = ""
    #: The examples (and notes) after the options.
    epilog: str = ""


def commands() -> list[Command]:
    """Every registered command, in :data:`NAMES` order."""
    out = []
    for name in NAMES:
        command = importlib.import_module(f"hybrid_router_cli.commands.{name}").COMMAND
        assert isinstance(command, Command) and command.name == name, name
        out.append(command)
    return out


def add_commands(subparsers: Any) -> None:
    """One subparser per command on ``subparsers`` (``add_subparsers()``'s result)."""
    for command in commands():
        p = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.description or command.help,
            epilog=command.epilog or None,
            formatter_class=FORMATTER,
        )
        command.add_arguments(p)
        # Also after the command (`hybrid-router check --debug`); main.py defines it first.
        p.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the traceback of an unexpected error",
        )
        p.set_defaults(run=command.run)
