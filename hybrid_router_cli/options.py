"""Options several commands share: argument types, the connection options of every
command that calls a router (read by :func:`hybrid_router_cli.connect.client_setup`) and
the request options of ``route`` and ``chat`` (-> :class:`hybrid_router.client.RequestOptions`)."""

from __future__ import annotations

import argparse
import json
import math
import sys

from hybrid_router.client import (
    BACKEND_TIERS,
    CONTEXT_STRATEGIES,
    DATA_CLASSES,
    ENV_ADDRESS,
    ENV_API_KEY,
    ENV_CA_BUNDLE,
    OBJECTIVES,
    RESPONSE_FORMATS,
    TIERS,
    OptionError,
    RequestOptions,
    build_request,
)
from hybrid_router.v1 import router_pb2

from hybrid_router_cli.connect import usage_error

# --- argument types ---------------------------------------------------------------------


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a timeout, an interval)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


# --- connection options -------------------------------------------------------------------


def add_connection_options(p: argparse.ArgumentParser) -> None:
    """--address, --timeout, --metadata, --api-key, TLS, and --json."""
    g = p.add_argument_group("connection")
    g.add_argument(
        "--address",
        metavar="HOST:PORT",
        help=f"router address (default: ${ENV_ADDRESS}, else 127.0.0.1:50051)",
    )
    g.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="deadline for the call (default: none)",
    )
    g.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="gRPC metadata sent with the call, e.g. an auth header (repeatable)",
    )
    g.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"API key, sent as 'authorization: Bearer KEY' (default: ${ENV_API_KEY})",
    )
    g.add_argument(
        "--ca-bundle",
        metavar="PEM",
        help=f"CA bundle of a TLS router; turns TLS on (default: ${ENV_CA_BUNDLE})",
    )
    g.add_argument("--tls", action="store_true", help="TLS with the system's root certificates")
    g.add_argument("--client-cert", metavar="PEM", help="client certificate (mTLS router)")
    g.add_argument("--client-key", metavar="PEM", help="client private key (mTLS router)")
    g.add_argument(
        "--tls-server-name", metavar="NAME", help="name to check the server certificate against"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


# --- request options (route, chat) --------------------------------------------------------


def add_request_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help='the prompt text ("-" reads stdin)')
    g = p.add_argument_group("request")
    g.add_argument(
        "--max-tokens",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="max output tokens (default: the router's)",
    )
    g.add_argument(
        "--ttft-budget-ms",
        type=non_negative_int,
        default=0,
        metavar="MS",
        help="time-to-first-token budget (0: none)",
    )
    g.add_argument(
        "--total-budget-ms",
        type=non_negative_int,
        default=0,
        metavar="MS",
        help="total latency budget (0: none)",
    )
    g.add_argument(
        "--max-cost-usd", type=non_negative_float, metavar="USD", help="upper bound on cost"
    )
    g.add_argument(
        "--data-class",
        choices=sorted(DATA_CLASSES),
        help="data classification (default: internal)",
    )
    g.add_argument(
        "--tier",
        action="append",
        default=[],
        choices=sorted(BACKEND_TIERS),
        help="pin a tier (repeat)",
    )
    g.add_argument(
        "--backend", action="append", default=[], metavar="NAME", help="pin a backend (repeat)"
    )
    g.add_argument(
        "--exclude-tier",
        action="append",
        default=[],
        choices=sorted(TIERS),
        help="exclude a tier (repeat; cache: skip the router's response cache)",
    )
    g.add_argument(
        "--exclude-backend", action="append", default=[], metavar="NAME", help="exclude a backend"
    )
    g.add_argument("--family", default="", help="required model family, e.g. gemma3")
    g.add_argument(
        "--capability",
        action="append",
        default=[],
        metavar="NAME",
        help="required capability, e.g. long-context (repeat)",
    )
    g.add_argument("--site", default="", help="edge site affinity")
    g.add_argument("--device", default="", help="edge device affinity")
    g.add_argument("--objective", choices=list(OBJECTIVES), help="override the router's objective")
    g.add_argument("--system", default="", metavar="TEXT", help="system message")
    g.add_argument("--temperature", type=non_negative_float, help="sampling temperature")
    g.add_argument("--seed", type=non_negative_int, help="sampling seed")
    g.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop string (repeat)"
    )
    g.add_argument("--request-id", default="", metavar="ID", help="request id (default: new)")
    g.add_argument(
        "--session",
        default="",
        metavar="ID",
        help="a conversation the router keeps: send only the new turn, the router adds the "
        "history (an unknown id starts one; the sessions command manages them)",
    )
    g.add_argument(
        "--context-strategy",
        choices=list(CONTEXT_STRATEGIES),
        help="with --session: when the history does not fit a backend's window, keep the "
        "newest turns (sliding), use a summary of older ones (summarize) or refuse (strict); "
        "default: the session's",
    )

    g.add_argument(
        "--continue-on-failure",
        action="store_true",
        help="when the backend fails mid-answer, continue the answer on the next candidate "
        "(docs/reliability.md)",
    )
    t = p.add_argument_group("tools and JSON answers (docs/tools.md)")
    t.add_argument(
        "--tools",
        metavar="FILE",
        help="JSON file with a list of tools the model may call (OpenAI's "
        '{"type": "function", "function": {...}} or {"name", "description", "parameters"})',
    )
    t.add_argument(
        "--tool-choice",
        default="",
        metavar="CHOICE",
        help="auto (default with --tools), none, required, or a tool's name",
    )
    t.add_argument(
        "--response-format",
        choices=list(RESPONSE_FORMATS),
        help="text, json_object (one JSON object) or json_schema (with --json-schema)",
    )
    t.add_argument(
        "--json-schema",
        metavar="FILE",
        help="JSON Schema file the answer must match (implies --response-format json_schema)",
    )
    t.add_argument(
        "--validate",
        action="store_true",
        help="with a JSON format: hold each backend's answer until it is checked; an invalid "
        "one fails over to the next backend",
    )


def _json_file(path: str | None, option: str) -> object:
    """The JSON in ``path`` (None when not given); a usage error names the option."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as exc:
        raise usage_error(OptionError(option, f"cannot read {path}: {exc.strerror}")) from None
    except ValueError as exc:
        raise usage_error(OptionError(option, f"{path} is not JSON: {exc}")) from None


def request_options(args: argparse.Namespace) -> RequestOptions:
    """The parsed request options (``-`` as the prompt reads stdin)."""
    prompt = args.prompt
    if prompt == "-":
        prompt = sys.stdin.read()
    tools = _json_file(args.tools, "--tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(t, dict) for t in tools)
    ):
        raise usage_error(OptionError("--tools", f"{args.tools} must hold a JSON list of tools"))
    schema = _json_file(args.json_schema, "--json-schema")
    if schema is not None and not isinstance(schema, dict):
        raise usage_error(
            OptionError("--json-schema", f"{args.json_schema} must hold a JSON Schema object")
        )
    return RequestOptions(
        prompt=prompt,
        system=args.system,
        max_output_tokens=args.max_tokens,
        ttft_budget_ms=args.ttft_budget_ms,
        total_budget_ms=args.total_budget_ms,
        max_cost_usd=args.max_cost_usd,
        data_class=args.data_class or "",
        pin_tiers=tuple(args.tier),
        pin_backends=tuple(args.backend),
        exclude_tiers=tuple(args.exclude_tier),
        exclude_backends=tuple(args.exclude_backend),
        model_family=args.family,
        capabilities=tuple(args.capability),
        site=args.site,
        device_id=args.device,
        objective=args.objective or "",
        temperature=args.temperature,
        seed=args.seed,
        stop=tuple(args.stop),
        request_id=args.request_id,
        session_id=args.session,
        context_strategy=args.context_strategy or "",
        tools=tuple(tools or ()),
        tool_choice=args.tool_choice,
        response_format=args.response_format or "",
        json_schema=schema,
        validate_before_streaming=args.validate,
        continue_on_failure=args.continue_on_failure,
    )


def request(args: argparse.Namespace) -> router_pb2.GenerateRequest:
    """The request the options describe; an invalid one is a usage error (exit 2)."""
    try:
        return build_request(request_options(args))
    except OptionError as exc:
        raise usage_error(exc) from None
