"""The commands the docs show run (issue 18, item 5).

Every ``hybrid-router ...`` and ``python -m serving.model_server ...`` command in
README.md, docs/*.md, the examples' comments and every command's own ``--help`` examples
is checked against the real argument parsers: the command exists, each ``--flag`` is one
it has (README once showed ``keys create --keys-file``: ``unrecognized arguments``), and
a line without placeholders (``PATH``, ``...``, ``<name>``, ``$VAR``) parses whole. Every
``make TARGET`` names a Makefile target, and every ``export NAME=...`` is a name a shell
accepts (docs once showed ``export HYBRID_ROUTER__BACKENDS__gpu-ray-serve__...``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from hybrid_router_cli.main import UsageError, build_parser, main
from serving.model_server import build_parser as model_server_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "examples").glob("*.yaml")),
]
#: A command in running text: up to the end of the line, a backtick, a comment, a pipe,
#: a redirection, a sub-shell's end or the next command.
_COMMAND = re.compile(r"(hybrid-router|python3? -m serving\.model_server)((?: [^\n`#|;&>()]*)?)")
_PLACEHOLDER = re.compile(r"\.\.\.|<|>|\$|\[|\]|\{|\}|^[A-Z][A-Z0-9_-]*$|\||^/$")
_EXPORT = re.compile(r"(?:^|\s)export ([^=\s]+)=", re.M)
_MAKE = re.compile(r"(?<![\w-])make ([a-z][a-z-]*)")


@cache
def _leaves() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every ``hybrid-router`` command path (``("keys", "create")``) with its parser."""
    out: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
        out[path] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk((*path, name), sub)

    walk((), build_parser())
    return out


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


@cache
def _help_examples() -> list[tuple[str, str]]:
    """(where, text) of each command's ``--help`` epilog."""
    out = []
    for path in _leaves():
        if not path:
            continue
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main([*path, "--help"]) == 0
        text = buf.getvalue()
        if "\nexamples:\n" in text:
            out.append((f"hybrid-router {' '.join(path)} --help", text.split("\nexamples:\n")[1]))
    return out


_FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```", re.M | re.S)
_SPAN = re.compile(r"`([^`\n]+)`")
SHELL_FENCES = {"", "sh", "bash", "console", "shell"}
_STARTS = re.compile(r"^(?:\w+=\S+\s+)*(?:env |hybrid-router|python3? -m|make |export )")


def _code(path: Path) -> str:
    """The shell a page shows: its sh/bash code blocks and inline code spans (a YAML
    example: its comments)."""
    text = path.read_text("utf-8")
    if path.suffix == ".yaml":
        return "\n".join(ln.split("#", 1)[1] for ln in text.splitlines() if "#" in ln)
    blocks = [body for lang, body in _FENCE.findall(text) if lang in SHELL_FENCES]
    prose = _FENCE.sub("", text)
    # A span is a command when it starts as one (not an error message quoting one).
    spans = [t for t in _SPAN.findall(prose) if _STARTS.match(t)]
    return "\n".join([*blocks, *spans])


def _sources() -> list[tuple[str, str]]:
    return [(p.name, _code(p)) for p in DOCS] + _help_examples()


def _commands() -> list[tuple[str, str, str]]:
    """(where, program, arguments) of every command shown."""
    out = []
    for where, text in _sources():
        text = text.replace("\\\n", " ")  # shell line continuations
        for program, rest in _COMMAND.findall(text):
            out.append((where, program, rest.strip()))
    return out


def _tokens(rest: str) -> list[str] | None:
    try:
        return shlex.split(rest, posix=True)
    except ValueError:  # prose with an apostrophe: not a command line
        return None


def _placeholder(token: str) -> bool:
    return bool(_PLACEHOLDER.search(token))


def _check(program: str, tokens: list[str]) -> str | None:
    """What is wrong with the command line (None: nothing)."""
    if program.startswith("python"):
        parser = model_server_parser()
        path: tuple[str, ...] = ()
    else:
        leaves = _leaves()
        path = ()
        for token in tokens:
            if token.startswith("-") or (*path, token) not in leaves:
                break
            path = (*path, token)
        nxt = tokens[len(path)] if len(tokens) > len(path) else ""
        if any(isinstance(a, argparse._SubParsersAction) for a in leaves[path]._actions):
            if nxt and not nxt.startswith("-") and not _placeholder(nxt) and nxt not in "|":
                return f"no command {' '.join((*path, nxt))!r}"
            return None  # `hybrid-router keys ...`: a command named, not a command line
        parser = leaves[path]
    known = _options(parser)
    for token in tokens:
        flag = token.split("=", 1)[0]
        if flag.startswith("--") and len(flag) > 2 and flag not in known:
            return f"{flag} is not an option of this command"
    argv = tokens[len(path) :]
    if not argv or any(_placeholder(t) for t in tokens):
        return None  # a command named in the text, or a line with placeholders
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            if program.startswith("python"):
                parser.parse_args(argv)
            else:
                build_parser().parse_args([*path, *argv])
    except UsageError as exc:
        return exc.message
    except SystemExit:
        return "argparse refused it"
    return None


CASES = [(w, p, r) for w, p, r in _commands() if _tokens(r) is not None]


def test_the_docs_show_many_commands() -> None:
    where = {w for w, _, _ in CASES}
    assert {"README.md", "configuration.md", "security.md", "local.yaml"} <= where
    assert len(CASES) > 80
    assert any(w.endswith("--help") for w in where)


@pytest.mark.parametrize(("where", "program", "rest"), CASES)
def test_a_documented_command_runs(where: str, program: str, rest: str) -> None:
    problem = _check(program, _tokens(rest) or [])
    assert problem is None, f"{where}: `{program} {rest}`: {problem}"


EXPORTS = [(p.name, name) for p in DOCS for name in _EXPORT.findall(_code(p))]


@pytest.mark.parametrize(("where", "name"), EXPORTS)
def test_an_exported_name_is_a_shell_name(where: str, name: str) -> None:
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), f"{where}: export {name}=..."


def _make_lines(path: Path) -> str:
    """The ``make ...`` lines of a page's code (not ``make git gcc ...``, a package list)."""
    return "\n".join(
        ln for ln in _code(path).splitlines() if not re.search(r"make [a-z-]+ [a-z+]+ ", ln)
    )


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text("utf-8")
    return set(re.findall(r"^([a-z][a-z-]*):", text, re.M))


MAKES = sorted({(p.name, t) for p in DOCS for t in _MAKE.findall(_make_lines(p))})


@pytest.mark.parametrize(("where", "target"), MAKES)
def test_a_documented_make_target_exists(where: str, target: str) -> None:
    assert target in _make_targets(), f"{where}: make {target}"


@pytest.mark.parametrize("path", [p for p in _leaves() if p], ids=" ".join)
def test_every_command_help_has_examples(path: tuple[str, ...]) -> None:
    assert f"hybrid-router {' '.join(path)} --help" in dict(_help_examples())
