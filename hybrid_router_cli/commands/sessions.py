"""``hybrid-router sessions create | show | list | delete``: the conversations a router keeps
for its callers (SessionService), the API key's tenant's only.

``create`` prints the new session's id alone on stdout (``SID=$(hybrid-router sessions
create)``); ``show ID`` the history, one row per turn (seq, role, tokens, backend, the
content cut to the terminal unless ``--full``), with the totals and what the running
summary covers; ``list`` every session, page after page; ``delete ID`` removes one and its
history. ``--json`` prints the ``Session`` messages. A chat turn in a session is
``hybrid-router chat --session ID``; ``route --session ID`` shows how the history would
be fitted to each backend's window.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from hybrid_router.client import (
    CONTEXT_STRATEGIES,
    SESSION_ID_RULE,
    AsyncRouterClient,
    OptionError,
    RouterCallError,
    valid_session_id,
)

from hybrid_router_cli import registry, render
from hybrid_router_cli.connect import call_failed, client_setup, open_client
from hybrid_router_cli.errors import EXIT_OK, EXIT_USAGE, CliError
from hybrid_router_cli.options import add_connection_options, non_negative_int
from hybrid_router_cli.registry import Command
from hybrid_router_cli.render_sessions import (
    content_chars_for,
    fmt_duration,
    session_view,
    sessions_table,
)

_CREATE_EXAMPLES = """\
  hybrid-router sessions create
  SID=$(hybrid-router sessions create --system "Answer briefly." --ttl 3600)
  hybrid-router sessions create --id support-42 --strategy summarize --json
"""
_SHOW_EXAMPLES = """\
  hybrid-router sessions show support-42
  hybrid-router sessions show support-42 --full
  hybrid-router sessions show support-42 --json | jq '.turns[] | {seq, role, tokens}'
"""
_LIST_EXAMPLES = """\
  hybrid-router sessions list --address 127.0.0.1:50051
  hybrid-router sessions list --json | jq -r '.sessions[].session_id'
"""
_DELETE_EXAMPLES = """\
  hybrid-router sessions delete support-42
"""
_NOTE = """
A turn in a session sends only the new message; the router adds the stored history,
fitted to each backend's window, and stores the turn and its answer:
  hybrid-router chat --session support-42 "And in French?"
  hybrid-router route --session support-42 --context-strategy strict "Next question"
"""
_EXAMPLES = "examples:\n" + _CREATE_EXAMPLES + _SHOW_EXAMPLES + _LIST_EXAMPLES + _DELETE_EXAMPLES
_EXAMPLES += _NOTE

#: The flag of each option the client library names in an OptionError.
_FLAGS = {"session_id": "--id", "ttl_s": "--ttl", "strategy": "--strategy", "system": "--system"}


def _session_id(value: str) -> str:
    """A session id given as ID; a bad one is a usage error (exit 2)."""
    if not valid_session_id(value):
        raise CliError(f"session id: {SESSION_ID_RULE}, got {value!r}", exit_code=EXIT_USAGE)
    return value


def _not_found(session_id: str) -> CliError:
    return CliError(
        f"NOT_FOUND: no session {session_id!r} for this API key's tenant (never created, "
        "deleted, or expired); see `hybrid-router sessions list`, or start it with "
        f"`hybrid-router sessions create --id {session_id}`"
    )


def _failed(err: RouterCallError, address: str, session_id: str = "") -> CliError:
    if err.code == "NOT_FOUND" and session_id:
        return _not_found(session_id)
    if err.code == "ALREADY_EXISTS" and session_id:
        return CliError(
            f"ALREADY_EXISTS: session {session_id!r} exists; pick another --id, leave --id "
            f"out for a new one, or see it with `hybrid-router sessions show {session_id}`"
        )
    return call_failed(err, address)


# --- actions ----------------------------------------------------------------------------------


async def _create(client: AsyncRouterClient, address: str, args: argparse.Namespace) -> int:
    sid = args.id or ""
    try:
        session = await client.create_session(
            sid, system=args.system, ttl_s=args.ttl, strategy=args.strategy or ""
        )
    except OptionError as exc:
        raise CliError(
            f"{_FLAGS.get(exc.option, exc.option)}: {exc.problem}", exit_code=EXIT_USAGE
        ) from None
    except RouterCallError as exc:
        raise _failed(exc, address, sid) from None
    if args.json:
        print(render.to_json(session, indent=None))
    else:
        print(session.session_id)
    print(
        f"created session {session.session_id} (strategy "
        f"{render.strategy_name(session.strategy)}, expires after "
        f"{fmt_duration(session.ttl_s)} without a turn); chat in it with: "
        f'hybrid-router chat --session {session.session_id} "..."',
        file=sys.stderr,
    )
    return EXIT_OK


async def _show(client: AsyncRouterClient, address: str, args: argparse.Namespace) -> int:
    sid = args.session_id
    try:
        session = await client.get_session(sid)
    except RouterCallError as exc:
        raise _failed(exc, address, sid) from None
    if args.json:
        print(render.to_json(session))
        return EXIT_OK
    console = render.make_console()
    chars = None if args.full else content_chars_for(console.width)
    console.print(session_view(session, content_chars=chars))
    return EXIT_OK


async def _list(client: AsyncRouterClient, address: str, args: argparse.Namespace) -> int:
    try:
        sessions = [s async for s in client.iter_sessions()]
    except RouterCallError as exc:
        raise _failed(exc, address) from None
    if args.json:
        print(render.to_json({"sessions": [render.message_to_dict(s) for s in sessions]}))
        return EXIT_OK
    if not sessions:
        print(f"no sessions at {address} for this API key's tenant", file=sys.stderr)
        return EXIT_OK
    render.make_console().print(sessions_table(sessions, address=address))
    return EXIT_OK


async def _delete(client: AsyncRouterClient, address: str, args: argparse.Namespace) -> int:
    sid = args.session_id
    try:
        deleted = await client.delete_session(sid)
    except RouterCallError as exc:
        raise _failed(exc, address, sid) from None
    if not deleted:
        raise _not_found(sid)
    if args.json:
        print(render.to_json({"session_id": sid, "deleted": True}, indent=None))
    print(f"deleted session {sid} and its history", file=sys.stderr)
    return EXIT_OK


_ACTIONS: dict[str, Callable[[AsyncRouterClient, str, argparse.Namespace], Awaitable[int]]] = {
    "create": _create,
    "show": _show,
    "list": _list,
    "delete": _delete,
}


def run(args: argparse.Namespace) -> int:
    # The ids first: a bad one is a usage error before any I/O.
    if getattr(args, "session_id", None) is not None:
        _session_id(args.session_id)
    if getattr(args, "id", None) is not None:
        try:
            _session_id(args.id)
        except CliError as exc:
            raise CliError("--id" + exc.message.removeprefix("session id"), EXIT_USAGE) from None
    address, metadata = client_setup(args)

    async def main() -> int:
        async with open_client(args, metadata) as client:
            return await _ACTIONS[args.sessions_command](client, address, args)

    return asyncio.run(main())


# --- parser -----------------------------------------------------------------------------------


def _action(ss: Any, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    return ss.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog="examples:\n" + examples + _NOTE,
        formatter_class=registry.FORMATTER,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    ss = p.add_subparsers(dest="sessions_command", metavar="ACTION", required=True)
    c = _action(ss, "create", "start a session (prints its id)", _CREATE_EXAMPLES)
    c.add_argument(
        "--id", metavar="ID", help=f"the session's id: {SESSION_ID_RULE} (default: a new one)"
    )
    c.add_argument("--system", default="", metavar="TEXT", help="system prompt of every turn")
    c.add_argument(
        "--ttl",
        type=non_negative_int,
        default=0,
        metavar="SECONDS",
        help="forget the session this long after its last turn (default: the router's "
        "sessions.ttl_s)",
    )
    c.add_argument(
        "--strategy",
        choices=list(CONTEXT_STRATEGIES),
        help="when the history does not fit a backend's window: keep the newest turns "
        "(sliding), a summary of older ones (summarize) or refuse (strict); default: the "
        "tenant's, else the router's",
    )
    add_connection_options(c)
    s = _action(ss, "show", "a session's history, turn by turn", _SHOW_EXAMPLES)
    s.add_argument("session_id", metavar="ID", help="the session's id")
    s.add_argument("--full", action="store_true", help="every turn whole (default: cut to fit)")
    add_connection_options(s)
    lst = _action(ss, "list", "every session of this API key's tenant", _LIST_EXAMPLES)
    add_connection_options(lst)
    d = _action(ss, "delete", "delete a session and its history", _DELETE_EXAMPLES)
    d.add_argument("session_id", metavar="ID", help="the session's id")
    add_connection_options(d)


COMMAND = Command(
    name="sessions",
    help="create, show, list and delete conversation sessions",
    description=(
        "Manage the conversations a router keeps for the API key's tenant: a turn sent "
        "with `chat --session ID` carries only the new message, and the router adds the "
        "stored history, fitted to each backend's window."
    ),
    epilog=_EXAMPLES,
    add_arguments=add_arguments,
    run=run,
)
