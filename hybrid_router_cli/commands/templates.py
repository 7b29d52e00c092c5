"""``hybrid-router templates``: list, show, publish and pin prompt templates.

It works on the store a router reads (docs/templates.md): ``--file PATH`` (a templates
file), or ``--config router.yaml`` (the store that config names: its ``templates.file``,
or, with ``templates.store: sessions``, the sessions store: SQLite, Redis or DynamoDB). Versions
never change once published; ``pin`` chooses the version requests get when they name
none (every replica within ``templates.pin_ttl_s``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from hybrid_router.env import ENV_CONFIG

from hybrid_router_cli import registry, render
from hybrid_router_cli.errors import EXIT_FAILED, EXIT_USAGE, CliError
from hybrid_router_cli.registry import Command

if TYPE_CHECKING:
    from router.templates.store import TemplateStore

_STORE = """
The store: --file PATH, or --config router.yaml (its templates store), else
$HYBRID_ROUTER_CONFIG. docs/templates.md has the file format.
"""
_LIST_EXAMPLES = """\
  hybrid-router templates list --file templates.yaml
  hybrid-router templates list --config router.yaml --json
"""
_SHOW_EXAMPLES = """\
  hybrid-router templates show support-answer --file templates.yaml            # the pinned one
  hybrid-router templates show support-answer --version 2 --file templates.yaml --json
"""
_PUBLISH_EXAMPLES = """\
  hybrid-router templates publish support-answer-v3.yaml --file templates.yaml
  hybrid-router templates publish support-answer-v3.yaml --file templates.yaml --pin
"""
_PIN_EXAMPLES = """\
  hybrid-router templates pin support-answer 3 --file templates.yaml
"""
_EXAMPLES = "examples:\n" + _LIST_EXAMPLES + _SHOW_EXAMPLES + _PUBLISH_EXAMPLES + _PIN_EXAMPLES


def _store(args: argparse.Namespace) -> TemplateStore:
    from router.config import load_config
    from router.errors import ConfigError
    from router.templates.store import FileTemplateStore

    if args.file:
        return FileTemplateStore(args.file)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise CliError(
            f"{exc.message}; or give the templates file with --file", exit_code=EXIT_USAGE
        ) from None
    cfg = config.templates
    if cfg.store == "file":
        if not cfg.file:
            raise CliError(
                f"{config.source} sets no templates.file; set it, or pass --file",
                exit_code=EXIT_USAGE,
            )
        return FileTemplateStore(cfg.file)
    from router.templates.backends import open_template_store

    return open_template_store(config.sessions, os.environ)


def _run(
    args: argparse.Namespace, action: Callable[[TemplateStore], Coroutine[Any, Any, int]]
) -> int:
    from router.errors import RouterError

    async def go() -> int:
        store = _store(args)
        try:
            return await action(store)
        except RouterError as exc:
            code = EXIT_USAGE if type(exc).__name__ in ("InvalidRequest",) else EXIT_FAILED
            raise CliError(exc.message, exit_code=code) from None
        finally:
            await store.close()

    return asyncio.run(go())


def _list(args: argparse.Namespace) -> int:
    async def action(store: TemplateStore) -> int:
        rows: list[dict[str, Any]] = []
        for name in await store.names():
            versions = await store.versions(name)
            pinned = await store.pinned(name)
            rows.append({"name": name, "versions": versions, "pinned": pinned})
        if args.json:
            print(render.to_json({"templates": rows}))
            return 0
        if not rows:
            print(f"no templates in {store.name}", file=sys.stderr)
            return 0
        from rich.table import Table

        table = Table(title=store.name, title_justify="left")
        for col in ("template", "versions", "pinned (default)"):
            table.add_column(col)
        for r in rows:
            table.add_row(
                r["name"], ", ".join(r["versions"]), r["pinned"] or f"{r['versions'][-1]} (newest)"
            )
        render.make_console().print(table)
        return 0

    return _run(args, action)


def _show(args: argparse.Namespace) -> int:
    from router.templates.store import TemplateRegistry

    async def action(store: TemplateStore) -> int:
        template = await TemplateRegistry(store).resolve(args.name, args.version or "")
        doc = template.to_dict()
        if args.json:
            print(render.to_json(doc))
            return 0
        import yaml

        print(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), end="")
        return 0

    return _run(args, action)


def _publish(args: argparse.Namespace) -> int:
    import yaml

    from router.templates.model import TemplateError, parse

    try:
        with open(args.template_file, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except FileNotFoundError:
        raise CliError(f"{args.template_file}: file not found", exit_code=EXIT_USAGE) from None
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"{args.template_file}: cannot read: {exc}", exit_code=EXIT_USAGE) from None
    try:
        template = parse(doc, args.template_file)
    except TemplateError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from None

    async def action(store: TemplateStore) -> int:
        added = await store.publish(template)
        if args.pin:
            await store.pin(template.name, template.version)
        what = "published" if added else "already published (same content)"
        pinned = "; pinned" if args.pin else ""
        print(f"{template.name}@{template.version} {what}{pinned} in {store.name}", file=sys.stderr)
        if args.json:
            print(render.to_json({"name": template.name, "version": template.version,
                                  "published": added, "pinned": args.pin}))  # fmt: skip
        return 0

    return _run(args, action)


def _pin(args: argparse.Namespace) -> int:
    async def action(store: TemplateStore) -> int:
        await store.pin(args.name, args.version)
        print(f"{args.name} pinned to {args.version} in {store.name}", file=sys.stderr)
        if args.json:
            print(render.to_json({"name": args.name, "pinned": args.version}))
        return 0

    return _run(args, action)


_ACTIONS = {"list": _list, "show": _show, "publish": _publish, "pin": _pin}


def run(args: argparse.Namespace) -> int:
    return _ACTIONS[args.templates_command](args)


def _store_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("store")
    g.add_argument("--file", metavar="PATH", help="a templates file (created by publish)")
    g.add_argument(
        "--config", metavar="PATH", help=f"router.yaml whose store to use (default: ${ENV_CONFIG})"
    )
    p.add_argument("--json", action="store_true", help="print JSON")


def _action(sub: Any, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog="examples:\n" + examples + _STORE,
        formatter_class=registry.FORMATTER,
    )
    _store_options(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="templates_command", metavar="ACTION", required=True)
    _action(sub, "list", "the templates, their versions and pins", _LIST_EXAMPLES)
    show = _action(sub, "show", "one version (default: the pinned one)", _SHOW_EXAMPLES)
    show.add_argument("name", metavar="NAME")
    show.add_argument("--version", default="", help="a version (default: the pinned one)")
    pub = _action(sub, "publish", "publish a new version from a YAML file", _PUBLISH_EXAMPLES)
    pub.add_argument("template_file", metavar="FILE", help="one template version (YAML)")
    pub.add_argument("--pin", action="store_true", help="also pin it")
    pin = _action(sub, "pin", "the version requests get when they name none", _PIN_EXAMPLES)
    pin.add_argument("name", metavar="NAME")
    pin.add_argument("version", metavar="VERSION")


COMMAND = Command(
    name="templates",
    help="prompt templates: list, show, publish, pin",
    description=(
        "Manage prompt templates: named, versioned (a version never changes), rendered "
        "with typed variables; a request names a template and gets the pinned version."
    ),
    epilog=_EXAMPLES + _STORE,
    add_arguments=add_arguments,
    run=run,
)
