"""The CLI's connection options -> ``hybrid_router.client``, and a failed call -> one line
with the fix. Nothing here prints; the commands and the demo do (the options themselves:
``hybrid_router_cli.options.add_connection_options``).

``client_setup(args)`` checks the options before any I/O (a bad address or an unreadable
PEM file is a usage error, exit 2) and returns the address and the call metadata (the
API key as ``authorization: Bearer``, then ``--metadata``); the channel settings go to
``args.channel_config``. ``open_client(args, metadata)`` then makes the
:class:`~hybrid_router.client.AsyncRouterClient`, inside the command's event loop.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

from hybrid_router.client import (
    ENV_ADDRESS,
    ENV_API_KEY,
    ENV_CA_BUNDLE,
    AsyncRouterClient,
    ChannelConfig,
    OptionError,
    RouterCallError,
    parse_target,
)
from hybrid_router.client.channel import AUTH_METADATA, call_metadata, check_metadata

from hybrid_router_cli.errors import EXIT_USAGE, CliError

#: Default router address when neither --address nor the environment gives one.
DEFAULT_ADDRESS = "127.0.0.1:50051"

#: The CLI flag of each client option (in OptionError messages).
_FLAGS = {
    "server_name": "--tls-server-name",
    "max_output_tokens": "--max-tokens",
    "session_id": "--session",
}


def flag(option: str) -> str:
    """``ca_bundle`` -> ``--ca-bundle`` (the flag a user typed)."""
    return _FLAGS.get(option, "--" + option.replace("_", "-"))


def usage_error(exc: OptionError) -> CliError:
    return CliError(f"{flag(exc.option)}: {exc.problem}", exit_code=EXIT_USAGE)


def resolve_address(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    """--address, else $HYBRID_ROUTER_ADDRESS, else 127.0.0.1:50051; checked for host:port."""
    env = os.environ if environ is None else environ
    address = explicit or env.get(ENV_ADDRESS) or DEFAULT_ADDRESS
    try:
        return parse_target(address)
    except OptionError:
        raise CliError(
            f"--address must be HOST:PORT (e.g. 127.0.0.1:50051), got {address!r}",
            exit_code=EXIT_USAGE,
        ) from None


def parse_metadata(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` strings -> gRPC metadata (keys lower-cased, as gRPC requires)."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--metadata must be KEY=VALUE, got {item!r}", exit_code=EXIT_USAGE)
        out.append((key.strip().lower(), value))
    try:
        return tuple(check_metadata(out))
    except OptionError as exc:
        raise CliError(f"--metadata: {exc.problem}", exit_code=EXIT_USAGE) from None


def channel_config(
    address: str,
    *,
    tls: bool = False,
    ca_bundle: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    server_name: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ChannelConfig:
    """The channel's settings, PEM files read now (the CA bundle falls back to
    $HYBRID_ROUTER_CA_BUNDLE). TLS is on with any TLS option; ``tls`` alone uses the
    system's root certificates."""
    env = os.environ if environ is None else environ
    try:
        return ChannelConfig(
            address,
            tls=tls,
            ca_bundle=ca_bundle or env.get(ENV_CA_BUNDLE) or None,
            client_cert=client_cert or None,
            client_key=client_key or None,
            server_name=server_name or None,
        ).with_files_read()
    except OptionError as exc:
        raise usage_error(exc) from None


def client_setup(args: argparse.Namespace) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Address and metadata (the API key first, unless --metadata has an authorization);
    the channel settings go to ``args.channel_config``."""
    address = resolve_address(args.address)
    args.channel_config = channel_config(
        address,
        tls=args.tls,
        ca_bundle=args.ca_bundle,
        client_cert=args.client_cert,
        client_key=args.client_key,
        server_name=args.tls_server_name,
    )
    metadata = parse_metadata(args.metadata)
    if not any(k == AUTH_METADATA for k, _ in metadata):
        key = (args.api_key or os.environ.get(ENV_API_KEY) or "").strip()
        try:
            metadata = tuple(call_metadata(api_key=key or None)) + metadata
        except OptionError as exc:
            given = "--api-key" if args.api_key else f"${ENV_API_KEY}"
            raise CliError(f"{given}: {exc.problem}", exit_code=EXIT_USAGE) from None
    return address, metadata


def open_client(
    args: argparse.Namespace, metadata: Sequence[tuple[str, str]] = ()
) -> AsyncRouterClient:
    """The client for a command, after :func:`client_setup`; ``--timeout`` bounds each
    call (none by default)."""
    return AsyncRouterClient(
        args.channel_config, metadata=metadata, timeout_s=getattr(args, "timeout", None)
    )


def error_line(err: RouterCallError, address: str) -> str:
    """One line: ``STATUS: message`` plus the fix when the cause is clear."""
    message = err.message if err.message != err.code.lower() else ""
    line = f"{err.code}: {message}" if message else err.code
    d = message.lower()
    if err.code == "UNAVAILABLE" and any(
        s in d for s in ("ssl", "handshake", "tls", "certificate", "socket closed")
    ):
        line += (
            " (TLS mismatch? a TLS router needs --ca-bundle or --tls, a plaintext one neither; "
            "an mTLS router also needs --client-cert and --client-key)"
        )
    elif err.code == "UNAUTHENTICATED":
        line += f" (give a key with --api-key or ${ENV_API_KEY})"
    elif err.code == "UNAVAILABLE" and any(
        s in d for s in ("failed to connect", "connection refused", "dns resolution")
    ):
        line += (
            f" (is a router listening on {address}? start one with "
            "`hybrid-router serve --config router.yaml` or `hybrid-router demo --keep-running`, "
            f"or point --address / ${ENV_ADDRESS} at it)"
        )
    return line


def call_failed(err: RouterCallError, address: str) -> CliError:
    return CliError(error_line(err, address))
