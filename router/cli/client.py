"""Small gRPC client helpers for the CLI: address, channel, request building, error text.

Nothing here knows about the terminal; ``router.cli.main`` and ``router.cli.demo`` print.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from grpc import aio

# Read at call time: ENV_ADDRESS when --address is not given, ENV_API_KEY (sent as
# ``authorization: Bearer ...``) when --api-key is not given, ENV_CA_BUNDLE (a PEM file that
# turns TLS on) when --ca-bundle is not given. Re-exported for the CLI.
from hybrid_router.env import ENV_ADDRESS as ENV_ADDRESS
from hybrid_router.env import ENV_API_KEY as ENV_API_KEY
from hybrid_router.env import ENV_CA_BUNDLE as ENV_CA_BUNDLE
from hybrid_router.v1 import router_pb2, router_pb2_grpc, types_pb2

#: Default router address when neither --address nor the environment gives one.
DEFAULT_ADDRESS = "127.0.0.1:50051"

TIERS: dict[str, types_pb2.Tier.ValueType] = {
    "hosted": types_pb2.TIER_HOSTED,
    "gpu": types_pb2.TIER_GPU,
    "edge": types_pb2.TIER_EDGE,
}
DATA_CLASSES: dict[str, types_pb2.DataClass.ValueType] = {
    "public": types_pb2.DATA_CLASS_PUBLIC,
    "internal": types_pb2.DATA_CLASS_INTERNAL,
    "restricted": types_pb2.DATA_CLASS_RESTRICTED,
}
OBJECTIVES: dict[str, router_pb2.Objective.ValueType] = {
    "cheapest": router_pb2.OBJECTIVE_CHEAPEST,
    "fastest": router_pb2.OBJECTIVE_FASTEST,
    "weighted": router_pb2.OBJECTIVE_WEIGHTED,
}


class CliError(Exception):
    """An error the CLI reports as one line (``error: ...``) and an exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def resolve_address(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    """--address, else $HYBRID_ROUTER_ADDRESS, else 127.0.0.1:50051; checked for host:port."""
    env = os.environ if environ is None else environ
    address = explicit or env.get(ENV_ADDRESS) or DEFAULT_ADDRESS
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise CliError(
            f"--address must be HOST:PORT (e.g. 127.0.0.1:50051), got {address!r}", exit_code=2
        )
    return address


def parse_metadata(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` strings -> gRPC metadata (keys lower-cased, as gRPC requires)."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--metadata must be KEY=VALUE, got {item!r}", exit_code=2)
        out.append((key.strip().lower(), value))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Everything `route` and `chat` (and the demo) put into a GenerateRequest."""

    prompt: str
    system: str = ""
    max_tokens: int = 0
    ttft_budget_ms: int = 0
    total_budget_ms: int = 0
    max_cost_usd: float | None = None
    data_class: str = ""
    tiers: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    exclude_tiers: tuple[str, ...] = ()
    exclude_backends: tuple[str, ...] = ()
    family: str = ""
    capabilities: tuple[str, ...] = ()
    site: str = ""
    device: str = ""
    objective: str = ""
    temperature: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    request_id: str = ""


def build_request(opts: RequestOptions) -> router_pb2.GenerateRequest:
    """Translate CLI options into the contract's GenerateRequest (no validation beyond
    the enum names: the router validates and names the field when something is wrong)."""
    messages = []
    if opts.system:
        messages.append(types_pb2.ChatMessage(role=types_pb2.ROLE_SYSTEM, content=opts.system))
    messages.append(types_pb2.ChatMessage(role=types_pb2.ROLE_USER, content=opts.prompt))
    sampling = types_pb2.SamplingParams(stop=list(opts.stop))
    if opts.temperature is not None:
        sampling.temperature = opts.temperature
    if opts.seed is not None:
        sampling.seed = opts.seed
    req = router_pb2.GenerateRequest(
        messages=messages,
        max_output_tokens=opts.max_tokens,
        sampling=sampling,
        latency_budget=router_pb2.LatencyBudget(
            ttft_ms=opts.ttft_budget_ms, total_ms=opts.total_budget_ms
        ),
        data_class=DATA_CLASSES[opts.data_class] if opts.data_class else 0,
        pin_tiers=[TIERS[t] for t in opts.tiers],
        pin_backends=list(opts.backends),
        exclude_tiers=[TIERS[t] for t in opts.exclude_tiers],
        exclude_backends=list(opts.exclude_backends),
        model_family=opts.family,
        capabilities=list(opts.capabilities),
        edge_affinity=router_pb2.EdgeAffinity(site=opts.site, device_id=opts.device),
        request_id=opts.request_id,
        objective=OBJECTIVES[opts.objective] if opts.objective else 0,
    )
    if opts.max_cost_usd is not None:
        req.max_cost_usd = opts.max_cost_usd
    return req


@dataclass(frozen=True, slots=True)
class ChannelSecurity:
    """TLS for a channel to the router (see :func:`channel_security`)."""

    credentials: grpc.ChannelCredentials
    server_name: str = ""


def channel_security(
    *,
    tls: bool = False,
    ca_bundle: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    server_name: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ChannelSecurity | None:
    """TLS settings from CLI options (CA bundle falls back to $HYBRID_ROUTER_CA_BUNDLE);
    None for a plaintext channel. ``tls`` alone uses the system's root certificates."""
    from router.security.tls import channel_credentials

    env = os.environ if environ is None else environ
    ca = ca_bundle or env.get(ENV_CA_BUNDLE) or None
    if not (tls or ca or client_cert or client_key or server_name):
        return None
    try:
        creds = channel_credentials(ca, client_cert, client_key)
    except ValueError as exc:
        raise CliError(str(exc), exit_code=2) from None
    return ChannelSecurity(creds, server_name or "")


def auth_metadata(
    api_key: str | None, environ: Mapping[str, str] | None = None
) -> tuple[tuple[str, str], ...]:
    """``authorization: Bearer <key>`` from --api-key, else $HYBRID_ROUTER_API_KEY."""
    env = os.environ if environ is None else environ
    key = (api_key or env.get(ENV_API_KEY) or "").strip()
    return (("authorization", f"Bearer {key}"),) if key else ()


def open_channel(address: str, security: ChannelSecurity | None = None) -> aio.Channel:
    """A channel to the router: TLS with ``security``, else plaintext."""
    if security is None:
        return aio.insecure_channel(address)
    options = []
    if security.server_name:
        options.append(("grpc.ssl_target_name_override", security.server_name))
    return aio.secure_channel(address, security.credentials, options=options or None)


def rpc_error_message(exc: grpc.aio.AioRpcError, address: str) -> str:
    """One line: ``STATUS: details`` plus the fix when the router is unreachable."""
    code = exc.code()
    details = exc.details() or ""
    line = f"{code.name}: {details}" if details else code.name
    d = details.lower()
    if code is grpc.StatusCode.UNAVAILABLE and any(
        s in d for s in ("ssl", "handshake", "tls", "certificate", "socket closed")
    ):
        line += (
            " (TLS mismatch? a TLS router needs --ca-bundle or --tls, a plaintext one neither; "
            "an mTLS router also needs --client-cert and --client-key)"
        )
    elif code is grpc.StatusCode.UNAUTHENTICATED:
        line += f" (give a key with --api-key or ${ENV_API_KEY})"
    elif code is grpc.StatusCode.UNAVAILABLE and _looks_like_connect_failure(details):
        line += (
            f" (is a router listening on {address}? start one with "
            "`hybrid-router serve --config router.yaml` or `hybrid-router demo --keep-running`, "
            f"or point --address / ${ENV_ADDRESS} at it)"
        )
    return line


def _looks_like_connect_failure(details: str) -> bool:
    d = details.lower()
    return any(s in d for s in ("failed to connect", "connection refused", "dns resolution"))


class RouterClient:
    """The three InferenceRouter calls, with the CLI's deadline and metadata."""

    def __init__(
        self,
        channel: aio.Channel,
        *,
        metadata: tuple[tuple[str, str], ...] = (),
        timeout_s: float | None = None,
    ) -> None:
        self._stub = router_pb2_grpc.InferenceRouterStub(channel)
        self._metadata = metadata or None
        self._timeout = timeout_s

    async def route(self, request: router_pb2.GenerateRequest) -> router_pb2.Decision:
        return await self._stub.Route(request, timeout=self._timeout, metadata=self._metadata)

    def generate(self, request: router_pb2.GenerateRequest) -> aio.UnaryStreamCall:
        """The Generate call; iterate it for events, ``cancel()`` it to stop."""
        return self._stub.Generate(request, timeout=self._timeout, metadata=self._metadata)

    async def list_backends(self) -> router_pb2.ListBackendsResponse:
        return await self._stub.ListBackends(
            router_pb2.ListBackendsRequest(), timeout=self._timeout, metadata=self._metadata
        )


async def iterate_events(call: aio.UnaryStreamCall) -> AsyncIterator[router_pb2.GenerateEvent]:
    """Events of a Generate call; cancels the RPC if the consumer stops early."""
    try:
        async for event in call:
            yield event
    finally:
        if not call.done():
            call.cancel()
