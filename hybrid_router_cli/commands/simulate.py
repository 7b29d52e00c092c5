"""``hybrid-router simulate``: replay a request trace through a simulated fleet under the
router's own policy and under baseline strategies, and compare SLO attainment and cost
against a clairvoyant oracle (the simulator: :mod:`router.simulation`; docs/simulate.md).

Inputs, one of: a built-in scenario (``--scenario NAME``: a fleet and a generated trace,
``--requests``, ``--seed``), a JSONL trace with a fleet file (``--trace`` + ``--fleet``),
or a router request log (``serve --json``) with a fleet file (``--from-log`` + ``--fleet``).
Output: a table (one row per strategy) and a one-line verdict against the router's
targets, or ``--json``; ``--csv``, ``--plot`` and ``--write-trace`` write files besides.
Nothing is called: time is simulated and nothing sleeps.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_router_cli import render, render_simulate
from hybrid_router_cli.errors import EXIT_FAILED, EXIT_USAGE, CliError
from hybrid_router_cli.options import non_negative_int
from hybrid_router_cli.registry import Command

if TYPE_CHECKING:
    from router.errors import ConfigError
    from router.simulation import Fleet, TraceRequest

#: Requests of a scenario's trace unless ``--requests`` says otherwise.
DEFAULT_REQUESTS = 20_000

_EXAMPLES = """\
examples:
  hybrid-router simulate --list-scenarios
  hybrid-router simulate --scenario steady --requests 2000
  hybrid-router simulate --scenario edge-outage --strategies router,always-hosted,round-robin
  hybrid-router simulate --scenario throttling --seed 7 --json | jq '.targets'
  hybrid-router simulate --scenario diurnal --csv diurnal.csv --plot charts
  hybrid-router simulate --scenario steady --strategies router --misses
  hybrid-router simulate --scenario steady --strategies router --variant w:objective=weighted
  hybrid-router simulate --scenario steady --strategies router --sweep weights.latency=10,20,40
  hybrid-router simulate --scenario steady --requests 500 --write-trace steady.jsonl
  hybrid-router simulate --trace steady.jsonl --fleet fleet.yaml
  hybrid-router simulate --from-log requests.log --fleet fleet.yaml --write-trace replay.jsonl

Every run includes the bound (each request alone on the fleet) and the oracle (perfect
knowledge of the present); the other rows are the strategies (default: all of them). The
router's targets: >= 99% of the oracle's SLO attainment at <= 1.05x its cost; >= 30%
cheaper than always-hosted at equal or better attainment; better than every litellm-*
strategy on both. Trace and fleet formats: docs/simulate.md.
"""


#: The largest --requests: about 10 minutes a strategy on one core (a trace in memory
#: is ~200 bytes a request).
MAX_REQUESTS = 10_000_000


def _between(low: int, high: int) -> Callable[[str], int]:
    """argparse ``type=``: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        value = non_negative_int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high:,}, got {value:,}")
        return value

    return parse


_requests = _between(1, MAX_REQUESTS)


#: Groups the ``--misses`` table shows unless ``--misses-limit`` says otherwise.
MISSES_LIMIT = 12


def _positive(text: str) -> int:
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


#: The most --replicas: each replica polls every backend on simulated time.
MAX_REPLICAS = 256
_replicas = _between(1, MAX_REPLICAS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input (one of)")
    source = g.add_mutually_exclusive_group()
    source.add_argument(
        "--scenario",
        metavar="NAME",
        help="a built-in scenario: its fleet and a generated trace (--list-scenarios)",
    )
    source.add_argument(
        "--trace",
        metavar="FILE.jsonl",
        help="a trace, one JSON request per line (with --fleet)",
    )
    source.add_argument(
        "--from-log",
        metavar="FILE",
        help="a router request log (serve --json: one JSON line per request) as the trace "
        "(with --fleet)",
    )
    source.add_argument(
        "--list-scenarios",
        action="store_true",
        help="list the built-in scenarios and what each stresses",
    )
    g.add_argument(
        "--fleet",
        metavar="FILE.yaml",
        help="with --trace or --from-log: the router configuration and how each backend "
        "really behaves",
    )
    g.add_argument(
        "--requests",
        type=_requests,
        metavar="N",
        help=f"with --scenario: requests in the trace (default: {DEFAULT_REQUESTS:,})",
    )
    g.add_argument(
        "--seed",
        type=non_negative_int,
        default=1,
        metavar="N",
        help="seed of the scenario's trace and of the backends' simulated behaviour "
        "(default: 1; a seed gives the same figures every run)",
    )
    p.add_argument(
        "--replicas",
        type=_replicas,
        default=1,
        metavar="N",
        help="router replicas sharing the traffic (default: 1): each keeps its own live "
        "signals (streams, latency samples, circuit breakers, load polls) and learnt "
        "answer lengths, and a request goes to one at random, as a Kubernetes Service "
        f"spreads them (1 to {MAX_REPLICAS})",
    )
    p.add_argument(
        "--strategies",
        metavar="A,B,...",
        help="strategies to compare, comma-separated (default: all; the bound and the "
        "oracle always run)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="also run the router with these policy: settings changed, as strategy NAME "
        "(repeatable), e.g. weighted:objective=weighted or w16:objective=weighted,"
        "weights.latency=16; keys: what the router's plan reads (objective, weights, "
        "headroom, ttft_estimate, ttft_prior_weight, decode_estimate, spread, spread_tolerance, "
        "max_fallbacks, default_max_output_tokens, min_samples, output_estimate)",
    )
    p.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="also run the router once per value of one policy: setting, each as a variant "
        "named KEY=V (repeatable; the keys --variant takes), e.g. "
        "weights.latency=5,10,20,40 to pick the latency weight for your prices",
    )
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print one JSON document")
    out.add_argument("--csv", metavar="FILE", help="also write one CSV row per strategy")
    out.add_argument(
        "--plot",
        metavar="DIR",
        help=f"also write two PNG charts there ({', '.join(render_simulate.PLOT_FILES)}; "
        "needs matplotlib: pip install 'hybrid-router[sim]')",
    )
    out.add_argument(
        "--write-trace",
        metavar="FILE",
        help="also write the trace used (scenario or imported) as JSONL, to edit and replay "
        "with --trace",
    )
    out.add_argument(
        "--write-fleet",
        metavar="FILE",
        help="also write the fleet used (a scenario's, or --fleet with its router "
        "configuration) as a fleet file (YAML), to edit and replay with --fleet",
    )
    out.add_argument(
        "--misses",
        nargs="?",
        const="router",
        metavar="STRATEGY",
        help="also show where a strategy (default: router) misses what the oracle meets: "
        "the requests grouped by budgets, where each went, how it missed and where the "
        "oracle sent it, largest group first",
    )
    out.add_argument(
        "--misses-limit",
        type=_positive,
        default=MISSES_LIMIT,
        metavar="N",
        help=f"with --misses: groups in the table (default: {MISSES_LIMIT}; --json has all)",
    )
    out.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show each strategy's progress on stderr (default: when stderr is a terminal)",
    )


# --- checks -----------------------------------------------------------------------------


def _usage(message: str) -> CliError:
    return CliError(message, exit_code=EXIT_USAGE)


def _one_line(message: str) -> str:
    """A multi-line message (a fleet's validation problems) on one line."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else message
    return f"{lines[0]} {'; '.join(lines[1:])}"


def _config_error(exc: ConfigError, flag: str) -> CliError:
    """A bad input file as one line naming the flag (and the file, line and field)."""
    message = _one_line(exc.message)
    return _usage(message if message.startswith("--") else f"{flag}: {message}")


def _check_inputs(args: argparse.Namespace) -> None:
    if not (args.scenario or args.trace or args.from_log):
        raise _usage(
            "give the traffic to simulate: --scenario NAME (see --list-scenarios), "
            "--trace FILE.jsonl with --fleet FILE.yaml, or --from-log FILE with --fleet FILE.yaml"
        )
    flag = "--trace" if args.trace else "--from-log"
    if args.scenario:
        if args.fleet:
            raise _usage(
                "--fleet goes with --trace or --from-log; a scenario brings its own fleet "
                "(to replay a scenario's trace on your fleet: --write-trace FILE, then "
                "--trace FILE --fleet FILE.yaml)"
            )
    elif not args.fleet:
        raise _usage(
            f"{flag} needs --fleet FILE.yaml: the router configuration and how its backends "
            "behave (docs/simulate.md)"
        )
    if args.requests is not None and not args.scenario:
        raise _usage(f"--requests goes with --scenario; {flag} replays every request it holds")
    if args.misses_limit != MISSES_LIMIT and args.misses is None:
        raise _usage("--misses-limit goes with --misses")


def _check_outputs(args: argparse.Namespace) -> Path | None:
    """Before the run: matplotlib for ``--plot`` (its directory made), and the
    directories of ``--csv`` and ``--write-trace``."""
    plot_dir = None
    if args.plot:
        _matplotlib()
        plot_dir = _plot_dir(args.plot)
    for option, value in (
        ("--csv", args.csv),
        ("--write-trace", args.write_trace),
        ("--write-fleet", args.write_fleet),
    ):
        if value and not Path(value).parent.is_dir():
            raise _usage(f"{option}: {Path(value).parent} is not a directory")
    return plot_dir


def _strategy_names(text: str | None) -> list[str]:
    """The strategies ``--strategies`` names (default: all), checked before anything runs."""
    from router.simulation import BOUND, ORACLE, STRATEGIES

    known = list(STRATEGIES)
    if text is None:
        return known
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise _usage(f"--strategies: give a comma-separated list of {', '.join(known)}")
    for name in names:
        if name not in STRATEGIES and name not in (BOUND, ORACLE):
            raise _usage(
                f"--strategies: unknown strategy {name!r} (known: {', '.join(known)}; "
                "the bound and the oracle always run)"
            )
    out: list[str] = []
    for name in names:
        if name not in out and name not in (BOUND, ORACLE):
            out.append(name)
    return out


def parse_variants(texts: Sequence[str], names: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """``--variant NAME:KEY=VALUE,...`` as (name, {key: value}); a value is a number,
    true or false, or else the text as it is (``off``, ``weighted``). Checked before
    anything runs; the keys and values themselves are checked against ``policy:`` once
    the fleet is read."""
    from router.simulation import BOUND, ORACLE, STRATEGIES

    out: list[tuple[str, dict[str, Any]]] = []
    for text in texts:
        name, sep, rest = text.partition(":")
        name = name.strip()
        example = "e.g. --variant w16:objective=weighted,weights.latency=16"
        if not sep or not name or not rest.strip():
            raise _usage(f"--variant {text!r}: give NAME:KEY=VALUE[,KEY=VALUE...] ({example})")
        if name in STRATEGIES or name in (BOUND, ORACLE) or name in names:
            raise _usage(f"--variant {name}: the name of a strategy; give the variant another")
        if any(name == seen for seen, _ in out):
            raise _usage(f"--variant {name}: given twice; give each variant its own name")
        overrides: dict[str, Any] = {}
        for pair in rest.split(","):
            key, eq, value = pair.partition("=")
            key = key.strip()
            if not eq or not key:
                raise _usage(f"--variant {name}: {pair.strip()!r} is not KEY=VALUE ({example})")
            overrides[key.removeprefix("policy.")] = _scalar(value.strip())
        out.append((name, overrides))
    return out


def sweep_variants(texts: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """``--sweep KEY=V1,V2,...`` as ``--variant`` texts (``KEY=V:KEY=V``, one per value) and
    each variant's name -> the sweep that made it (to name ``--sweep`` in its errors)."""
    out: list[str] = []
    made: dict[str, str] = {}
    example = "e.g. --sweep weights.latency=5,10,20,40"
    for text in texts:
        key, eq, values = text.partition("=")
        key = key.strip().removeprefix("policy.")
        found = [v.strip() for v in values.split(",") if v.strip()]
        if not eq or not key or not found:
            raise _usage(f"--sweep {text!r}: give KEY=V1[,V2...] ({example})")
        if ":" in key or any(":" in v for v in found):
            raise _usage(f"--sweep {text!r}: a key or value with ':' ({example})")
        for value in found:
            name = f"{key}={value}"
            if name in made:
                raise _usage(f"--sweep {key}: {value} given twice")
            out.append(f"{name}:{key}={value}")
            made[name] = key
    return out, made


def _scalar(text: str) -> Any:
    """A ``--variant`` value: an int, a float, true/false, or the text itself."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _matplotlib() -> None:
    """Fail before the run when ``--plot`` cannot draw."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CliError(
            "--plot draws its charts with matplotlib, which this install lacks: "
            "pip install 'hybrid-router[sim]' (or leave out --plot)",
            exit_code=EXIT_FAILED,
        ) from None


def _plot_dir(text: str) -> Path:
    path = Path(text)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _usage(f"--plot: cannot make the directory {text} ({exc.strerror})") from None
    return path


# --- inputs -------------------------------------------------------------------------------


def _inputs(args: argparse.Namespace) -> tuple[Fleet, list[TraceRequest], dict[str, Any]]:
    """The fleet, the trace and what describes them (``--json``'s ``inputs``)."""
    from router.errors import ConfigError
    from router.simulation import from_request_log, load_fleet, read_trace
    from router.simulation.scenarios import build

    described: dict[str, Any] = {
        "scenario": args.scenario,
        "trace": args.trace,
        "from_log": args.from_log,
        "fleet": args.fleet,
    }
    if args.scenario:
        requests = args.requests or DEFAULT_REQUESTS
        try:
            fleet, trace = build(args.scenario, requests, args.seed)
        except ConfigError as exc:
            raise _config_error(exc, "--scenario") from None
        return fleet, trace, described
    try:
        fleet = load_fleet(Path(args.fleet))
    except ConfigError as exc:
        raise _config_error(exc, "--fleet") from None
    if args.trace:
        try:
            trace = read_trace(Path(args.trace))
        except ConfigError as exc:
            raise _config_error(exc, "--trace") from None
        if not trace:
            raise _usage(f"--trace: {args.trace} holds no request (one JSON object per line)")
        return fleet, trace, described
    try:
        with open(args.from_log, encoding="utf-8", errors="replace") as lines:
            trace, skipped = from_request_log(lines, args.from_log)
    except OSError as exc:
        raise _usage(f"--from-log: cannot read {args.from_log} ({exc.strerror})") from None
    except ConfigError as exc:
        raise _config_error(exc, "--from-log") from None
    described["skipped"] = skipped
    if skipped:
        said = ", ".join(
            f"{n:,} {why}" for why, n in sorted(skipped.items(), key=lambda kv: -kv[1])
        )
        print(
            f"--from-log {args.from_log}: {len(trace):,} requests; skipped "
            f"{sum(skipped.values()):,} lines ({said})",
            file=sys.stderr,
        )
    if not trace:
        raise _usage(
            f"--from-log: {args.from_log} holds no Generate request line (the router writes "
            "them with `hybrid-router serve --json`, logger router.requests)"
        )
    return fleet, trace, described


def _write_trace(path: str, trace: Sequence[TraceRequest]) -> None:
    from router.simulation import write_trace

    try:
        with open(path, "w", encoding="utf-8") as out:
            n = write_trace(trace, out)
    except OSError as exc:
        raise _usage(f"--write-trace: cannot write {path} ({exc.strerror})") from None
    print(f"wrote the trace ({n:,} requests) to {path}", file=sys.stderr)


def _write_fleet(path: str, fleet: Fleet) -> None:
    import yaml

    if fleet.document is None:
        raise _usage("--write-fleet: this fleet was not read from a file or a scenario")
    try:
        with open(path, "w", encoding="utf-8") as out:
            out.write("# A fleet for `hybrid-router simulate --fleet` (docs/simulate.md).\n")
            yaml.safe_dump(dict(fleet.document), out, sort_keys=False)
    except OSError as exc:
        raise _usage(f"--write-fleet: cannot write {path} ({exc.strerror})") from None
    print(f"wrote the fleet ({len(fleet.specs)} backends) to {path}", file=sys.stderr)


def _title(described: dict[str, Any], n: int, seed: int, replicas: int = 1) -> str:
    if described["scenario"]:
        where = f"scenario {described['scenario']}"
    else:
        where = f"{'trace' if described['trace'] else 'request log'} "
        where += f"{described['trace'] or described['from_log']} on fleet {described['fleet']}"
    routers = f", {replicas} router replicas" if replicas > 1 else ""
    return f"simulate: {where}, {n:,} requests, seed {seed}{routers}"


# --- progress -----------------------------------------------------------------------------


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """``compare()``'s progress callback on stderr: bars on a terminal, else a line per
    strategy at each quarter (``--progress`` when stderr is not a terminal)."""
    if not enabled:
        yield None
        return
    bars = None
    if sys.stderr.isatty():
        try:
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )
        except ImportError:  # the router image: lines instead
            pass
        else:
            bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=render.make_console(stderr=True),
                transient=True,
            )
    state: dict[str, Any] = {"name": None, "task": None, "quarter": -1, "n": 0}

    def finish() -> None:
        if state["name"] is None:
            return
        if bars is not None:
            bars.update(state["task"], completed=state["n"])
        else:
            print(f"simulate: {state['name']} done", file=sys.stderr, flush=True)

    def tick(name: str, i: int, n: int) -> None:
        if name != state["name"]:
            finish()
            state.update(name=name, quarter=-1, n=n)
            if bars is not None:
                state["task"] = bars.add_task(name, total=n)
        if bars is not None:
            bars.update(state["task"], completed=i)
            return
        quarter = 4 * i // max(1, n)
        if quarter > state["quarter"]:
            state["quarter"] = quarter
            if quarter:
                print(f"simulate: {name} {25 * quarter}%", file=sys.stderr, flush=True)

    if bars is None:
        yield tick
        finish()
        return
    with bars:
        yield tick
        finish()


# --- outputs ------------------------------------------------------------------------------


def _write_csv(path: str, summaries: Any) -> None:
    rows = render_simulate.csv_rows(summaries)
    try:
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=render_simulate.CSV_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise _usage(f"--csv: cannot write {path} ({exc.strerror})") from None
    print(f"wrote {len(rows)} rows to {path}", file=sys.stderr)


def _write_plots(directory: Path, summaries: Any, title: str) -> list[str]:
    figures = (
        render_simulate.cost_attainment_figure(summaries, title=title),
        render_simulate.latency_figure(summaries, title=title),
    )
    written = []
    for name, figure in zip(render_simulate.PLOT_FILES, figures, strict=True):
        path = directory / name
        try:
            figure.savefig(path, dpi=120)
        except OSError as exc:
            raise _usage(f"--plot: cannot write {path} ({exc.strerror})") from None
        written.append(str(path))
    print(f"wrote {' and '.join(written)}", file=sys.stderr)
    return written


def _list_scenarios(as_json: bool) -> int:
    from router.simulation.scenarios import SCENARIOS

    rows = [(s.name, s.about) for s in SCENARIOS.values()]
    if as_json:
        print(render.to_json({"scenarios": [{"name": n, "about": a} for n, a in rows]}))
        return 0
    render.make_console().print(render_simulate.scenarios_table(rows))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list_scenarios:
        return _list_scenarios(args.json)
    _check_inputs(args)
    plot_dir = _check_outputs(args)
    # The table's console now: without rich, say so before the run rather than after it.
    console = None if args.json else render.make_console()
    names = _strategy_names(args.strategies)
    swept, sweeps = sweep_variants(args.sweep)
    variants = parse_variants([*args.variant, *swept], names)
    run_names = [*names, *(name for name, _ in variants)]
    if args.misses in ("bound", "oracle"):
        raise _usage(
            f"--misses compares a strategy with the oracle: name one of {', '.join(run_names)}"
        )
    if args.misses is not None and args.misses not in run_names:
        raise _usage(
            f"--misses {args.misses}: not among the strategies run "
            f"({', '.join(run_names)}); add it to --strategies"
        )
    fleet, trace, described = _inputs(args)
    from router.errors import ConfigError
    from router.simulation.variants import router_variant

    strategies: list[Any] = list(names)
    for name, overrides in variants:
        try:
            strategies.append(router_variant(fleet, name, overrides))
        except ConfigError as exc:
            flag = f"--sweep {sweeps[name]}" if name in sweeps else f"--variant {name}"
            raise _usage(f"{flag}: {exc.message}") from None
    if args.write_trace:
        _write_trace(args.write_trace, trace)
    if args.write_fleet:
        _write_fleet(args.write_fleet, fleet)

    from router.simulation import compare

    show = sys.stderr.isatty() if args.progress is None else args.progress
    with _progress(show) as progress:
        try:
            result = compare(
                fleet,
                trace,
                strategies,
                seed=args.seed,
                replicas=args.replicas,
                keep_outcomes=args.misses is not None,
                progress=progress,
            )
        except ConfigError as exc:
            raise _config_error(exc, "--strategies") from None
    summaries = result.summaries
    misses = None
    if args.misses is not None:
        from router.simulation import ORACLE
        from router.simulation.misses import miss_report

        misses = miss_report(
            args.misses, trace, result.outcomes[args.misses], result.outcomes[ORACLE]
        )
    interfering = any(m.prefill_interference for m in fleet.models.values())
    found = render_simulate.targets(summaries, oracle_is_limit=not interfering)
    title = _title(described, len(trace), args.seed, args.replicas)
    files: list[str] = []
    if args.write_trace:
        files.append(args.write_trace)
    if args.csv:
        _write_csv(args.csv, summaries)
        files.append(args.csv)
    if plot_dir is not None:
        files += _write_plots(plot_dir, summaries, title)
    if args.json:
        inputs = {
            **described,
            "requests": len(trace),
            "seed": args.seed,
            "replicas": args.replicas,
            "strategies": names,
            "variants": {name: overrides for name, overrides in variants},
        }
        print(render.to_json(render_simulate.document(summaries, found, inputs, files, misses)))
        return 0
    assert console is not None
    console.print(render_simulate.comparison_table(summaries, title=title))
    console.print(render_simulate.verdict_text(found), soft_wrap=True)
    if misses is not None:
        console.print(
            render_simulate.misses_table(misses, total=len(trace), limit=args.misses_limit)
        )
    return 0


COMMAND = Command(
    name="simulate",
    help="compare the router's policy with baselines and an oracle on a simulated fleet",
    description=(
        "Replay a trace (a built-in scenario, a JSONL file or a router request log) through "
        "a simulated fleet, routed by the router's own policy (plan(), as serve runs it), by "
        "baseline strategies (always-hosted, round-robin, LiteLLM's...) and by a "
        "clairvoyant oracle, and compare SLO attainment, cost, tier shares and latency. "
        "Time is simulated: an hour of traffic replays in seconds per strategy, and "
        "nothing is called."
    ),
    epilog=_EXAMPLES,
    add_arguments=add_arguments,
    run=run,
)
