"""A small synchronous client for the router's ``InferenceRouter`` API.

For Lambda orchestrators (and any other Python caller) that want the router's stream
without our Lambda handlers. It needs only ``grpcio``, ``protobuf`` and the generated
``hybrid_router.v1`` stubs; ``make lambda-layer`` packages the three with this module.

    from lambda_edge.client import RouterClient, make_request, lambda_timeout_s

    client = RouterClient.from_env()            # once per container, at init
    def handler(event, context):
        req = make_request(prompt=event["prompt"], max_output_tokens=128, data_class="public")
        with client.generate(req, timeout_s=lambda_timeout_s(context)) as stream:
            for ev in stream:                   # Decision, TextDelta..., Failover..., Usage
                ...

Design:

- The sync gRPC API on purpose: one channel per container, made at init and reused by
  every invocation. (A ``grpc.aio`` channel made at init is bound to the event loop of
  the init phase and breaks when each invocation runs its own ``asyncio.run``.)
- Keepalive pings while a call is open detect a dead connection (a frozen container's
  NAT mapping may have expired); ``pre_connect()`` starts connecting in the background.
- Deadline: every call takes ``timeout_s`` for the whole call, retries included.
- Retries only where they cannot run a model twice: ``Route`` and ``ListBackends``
  (no model is called) and ``Generate`` when the router answered UNAVAILABLE before
  sending any event (the Decision comes before any backend is called, so no event means
  no model ran). Never after the first event.
- Errors: ``grpc.RpcError`` never leaves this module; callers get :class:`RouterCallError`
  with the status name, the router's message and the request id.
- Auth: ``authorization: Bearer <key>`` metadata (a string, or a callable that returns
  the current key, e.g. from a cached secret). TLS: system roots or a CA bundle.
- Tracing: a W3C ``traceparent`` is sent as metadata; :func:`traceparent_from_xray`
  derives one from Lambda's X-Ray trace header.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from hybrid_router.env import (
    ENV_ADDRESS,
    ENV_API_KEY,
    ENV_CA_BUNDLE,
    ENV_TLS,
    ENV_TLS_SERVER_NAME,
)
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import router_pb2_grpc
from hybrid_router.v1 import types_pb2 as tpb

__all__ = [
    "ENV_ADDRESS",
    "ENV_API_KEY",
    "ENV_CA_BUNDLE",
    "ENV_TLS",
    "ENV_TLS_SERVER_NAME",
    "Completion",
    "GenerateStream",
    "RouterCallError",
    "RouterClient",
    "lambda_timeout_s",
    "make_request",
    "traceparent_from_xray",
]

# ENV_ADDRESS, ENV_API_KEY, ENV_TLS, ENV_CA_BUNDLE, ENV_TLS_SERVER_NAME (hybrid_router.env,
# re-exported here): read by :meth:`RouterClient.from_env`, never at import.
#: Lambda's X-Ray trace header for the current invocation.
ENV_XRAY_TRACE = "_X_AMZN_TRACE_ID"

REQUEST_ID_METADATA = "x-request-id"
AUTH_METADATA = "authorization"
TRACEPARENT_METADATA = "traceparent"
USER_AGENT = "hybrid-router-lambda-client/1"

#: Statuses worth another attempt when nothing was received yet.
_RETRYABLE = frozenset({"UNAVAILABLE"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})

TIERS = {"hosted": tpb.TIER_HOSTED, "gpu": tpb.TIER_GPU, "edge": tpb.TIER_EDGE}
DATA_CLASSES = {
    "public": tpb.DATA_CLASS_PUBLIC,
    "internal": tpb.DATA_CLASS_INTERNAL,
    "restricted": tpb.DATA_CLASS_RESTRICTED,
}
ROLES = {"system": tpb.ROLE_SYSTEM, "user": tpb.ROLE_USER, "assistant": tpb.ROLE_ASSISTANT}
OBJECTIVES = {
    "cheapest": rpb.OBJECTIVE_CHEAPEST,
    "fastest": rpb.OBJECTIVE_FASTEST,
    "weighted": rpb.OBJECTIVE_WEIGHTED,
}


class RouterCallError(Exception):
    """A router call failed. ``code`` is the gRPC status name (e.g. ``"UNAVAILABLE"``).

    ``events`` counts the stream events received before the failure (0 for unary calls);
    ``partial`` holds what a buffered :meth:`RouterClient.complete` had gathered.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        request_id: str = "",
        events: int = 0,
        attempts: int = 1,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.events = events
        self.attempts = attempts
        self.partial: Completion | None = None


@dataclass(slots=True)
class Completion:
    """A buffered Generate: the decision, the whole text, failovers and usage."""

    request_id: str = ""
    decision: rpb.Decision | None = None
    text: str = ""
    usage: rpb.Usage | None = None
    failovers: list[rpb.Failover] = field(default_factory=list)


def _error(exc: grpc.RpcError, *, request_id: str, events: int, attempts: int) -> RouterCallError:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else None
    name = code.name if code is not None else "UNKNOWN"
    return RouterCallError(
        name, details or name.lower(), request_id=request_id, events=events, attempts=attempts
    )


class GenerateStream(Iterator[rpb.GenerateEvent]):
    """Iterator over one Generate call's events; a context manager that cancels on exit.

    ``request_id`` is the router's id for the request (its initial metadata), available
    once the first event (or the error) has arrived.
    """

    def __init__(
        self,
        start: Callable[[float], Any],
        *,
        deadline: float,
        request_id: str,
        max_attempts: int,
        backoff_s: float,
        clock: Callable[[], float],
        sleep: Callable[[float], object],
    ) -> None:
        self._start = start
        self._deadline = deadline
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._clock = clock
        self._sleep = sleep
        self.request_id = request_id
        self.events = 0
        self.attempts = 0
        self._call: Any = None
        self._done = False
        self._open()

    def _open(self) -> None:
        self.attempts += 1
        self._call = self._start(max(self._deadline - self._clock(), 0.001))

    def _learn_request_id(self) -> None:
        if self.request_id or self._call is None:
            return
        try:
            for key, value in self._call.initial_metadata() or ():
                if key == REQUEST_ID_METADATA and isinstance(value, str):
                    self.request_id = value
        except grpc.RpcError:  # no metadata on a call that failed before the headers
            pass

    def __iter__(self) -> GenerateStream:
        return self

    def __next__(self) -> rpb.GenerateEvent:
        if self._done:
            raise StopIteration
        while True:
            try:
                event = next(self._call)
            except StopIteration:
                self._done = True
                raise
            except grpc.RpcError as exc:
                self._learn_request_id()
                err = _error(
                    exc, request_id=self.request_id, events=self.events, attempts=self.attempts
                )
                if self._may_retry(err):
                    self._sleep(self._backoff(self.attempts))
                    self._open()
                    continue
                self._done = True
                raise err from None
            if self.events == 0:
                self._learn_request_id()
            self.events += 1
            return event

    def _backoff(self, attempt: int) -> float:
        return float(min(self._backoff_s * (2 ** (attempt - 1)), 1.0))

    def _may_retry(self, err: RouterCallError) -> bool:
        if self.events or err.code not in _RETRYABLE or self.attempts >= self._max_attempts:
            return False
        # Retry only when the backoff leaves time for a real attempt.
        return self._deadline - self._clock() > self._backoff(self.attempts) + 0.05

    def cancel(self) -> None:
        """Cancel the call: the router stops the backend and frees its slot."""
        self._done = True
        if self._call is not None:
            self._call.cancel()

    def __enter__(self) -> GenerateStream:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self.cancel()


def make_request(
    prompt: str | None = None,
    *,
    messages: Iterable[tuple[str, str]] | None = None,
    max_output_tokens: int = 0,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    seed: int | None = None,
    stop: Sequence[str] = (),
    ttft_budget_ms: int = 0,
    total_budget_ms: int = 0,
    max_cost_usd: float | None = None,
    data_class: str = "",
    pin_tiers: Sequence[str] = (),
    pin_backends: Sequence[str] = (),
    exclude_tiers: Sequence[str] = (),
    exclude_backends: Sequence[str] = (),
    model_family: str = "",
    capabilities: Sequence[str] = (),
    site: str = "",
    device_id: str = "",
    request_id: str = "",
    objective: str = "",
) -> rpb.GenerateRequest:
    """Build a ``GenerateRequest`` from plain values (enum names as lower-case strings).

    ``prompt`` is one user message; ``messages`` is ``[(role, content), ...]`` with roles
    ``system``, ``user``, ``assistant``. The router validates the rest (limits, names).
    """
    if (prompt is None) == (messages is None):
        raise ValueError("give either prompt or messages")
    pairs = [("user", prompt)] if prompt is not None else list(messages or ())
    chat = []
    for i, (role, content) in enumerate(pairs):
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role: must be one of {', '.join(ROLES)}")
        chat.append(tpb.ChatMessage(role=ROLES[role], content=content))
    sampling = tpb.SamplingParams(stop=list(stop))
    if temperature is not None:
        sampling.temperature = temperature
    if top_p is not None:
        sampling.top_p = top_p
    if top_k is not None:
        sampling.top_k = top_k
    if seed is not None:
        sampling.seed = seed
    req = rpb.GenerateRequest(
        messages=chat,
        max_output_tokens=max_output_tokens,
        sampling=sampling,
        latency_budget=rpb.LatencyBudget(ttft_ms=ttft_budget_ms, total_ms=total_budget_ms),
        data_class=_enum(DATA_CLASSES, data_class, "data_class") if data_class else 0,
        pin_tiers=[_enum(TIERS, t, "pin_tiers") for t in pin_tiers],
        pin_backends=list(pin_backends),
        exclude_tiers=[_enum(TIERS, t, "exclude_tiers") for t in exclude_tiers],
        exclude_backends=list(exclude_backends),
        model_family=model_family,
        capabilities=list(capabilities),
        edge_affinity=rpb.EdgeAffinity(site=site, device_id=device_id),
        request_id=request_id,
        objective=_enum(OBJECTIVES, objective, "objective") if objective else 0,
    )
    if max_cost_usd is not None:
        req.max_cost_usd = max_cost_usd
    return req


def _enum(table: Mapping[str, int], value: str, name: str) -> int:
    try:
        return table[value]
    except KeyError:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(table)}") from None


_XRAY_ROOT = re.compile(r"Root=1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})")
_XRAY_PARENT = re.compile(r"Parent=([0-9a-fA-F]{16})")
_XRAY_SAMPLED = re.compile(r"Sampled=([01?])")
_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def traceparent_from_xray(header: str | None, *, parent_id: str | None = None) -> str | None:
    """W3C ``traceparent`` for an X-Ray trace header (``Root=1-...;Parent=...;Sampled=1``).

    The X-Ray trace id ``1-<8 hex>-<24 hex>`` is the W3C trace id ``<8 hex><24 hex>``
    (the mapping X-Ray and OpenTelemetry use); ``parent_id`` (e.g. a subsegment id)
    replaces the header's parent. None when the header has no usable root or parent.
    """
    if not header:
        return None
    root = _XRAY_ROOT.search(header)
    parent = parent_id or (m.group(1) if (m := _XRAY_PARENT.search(header)) else None)
    if root is None or parent is None or not re.fullmatch(r"[0-9a-fA-F]{16}", parent):
        return None
    sampled = _XRAY_SAMPLED.search(header)
    flags = "01" if sampled is not None and sampled.group(1) == "1" else "00"
    trace_id = (root.group(1) + root.group(2)).lower()
    return f"00-{trace_id}-{parent.lower()}-{flags}"


def valid_traceparent(value: str | None) -> str | None:
    """``value`` when it is a well-formed version-00 traceparent (lower case), else None."""
    if value and _TRACEPARENT.match(value.strip()):
        value = value.strip()
        if value[3:35] != "0" * 32 and value[36:52] != "0" * 16:
            return value
    return None


def lambda_timeout_s(
    context: Any, *, margin_s: float = 1.0, cap_s: float | None = None, floor_s: float = 0.05
) -> float:
    """The call timeout for a Lambda invocation: its remaining time minus ``margin_s``,
    at most ``cap_s`` (e.g. API Gateway's integration limit), at least ``floor_s``."""
    remaining = context.get_remaining_time_in_millis() / 1000.0 - margin_s
    if cap_s is not None:
        remaining = min(remaining, cap_s)
    return max(remaining, floor_s)


def _truthy(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{name}={value!r}: use true or false")


class RouterClient:
    """One channel to the router, reused by every call. Thread-safe (gRPC channels are)."""

    def __init__(
        self,
        address: str,
        *,
        api_key: str | Callable[[], str | None] | None = None,
        tls: bool | None = None,
        ca_bundle: bytes | str | None = None,
        server_name: str | None = None,
        timeout_s: float = 30.0,
        max_attempts: int = 3,
        backoff_s: float = 0.05,
        keepalive_time_s: float = 30.0,
        keepalive_timeout_s: float = 5.0,
        max_receive_message_bytes: int = 16 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(
                f"router address must be host:port (e.g. router.internal:50051), got {address!r}"
            )
        if max_attempts < 1:
            raise ValueError("max_attempts: must be >= 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s: must be > 0")
        self.address = address
        self._api_key = api_key
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._clock = clock
        self._sleep = sleep
        options: list[tuple[str, Any]] = [
            ("grpc.keepalive_time_ms", int(keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_receive_message_length", max_receive_message_bytes),
            ("grpc.primary_user_agent", USER_AGENT),
            # Reconnect soon after a failed connect (gRPC's default waits 1 s, then up to
            # 120 s): a Lambda invocation has seconds, and our retries need a live channel.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
            options.append(("grpc.default_authority", server_name))
        use_tls = bool(tls) or ca_bundle is not None
        if use_tls:
            roots = _read_pem(ca_bundle) if ca_bundle is not None else None
            creds = grpc.ssl_channel_credentials(root_certificates=roots)
            self.channel = grpc.secure_channel(address, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self.tls = use_tls
        self._stub = router_pb2_grpc.InferenceRouterStub(self.channel)
        self._watching = False
        self.connectivity: grpc.ChannelConnectivity | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> RouterClient:
        """Build from ``HYBRID_ROUTER_ADDRESS`` (required), ``HYBRID_ROUTER_API_KEY``,
        ``HYBRID_ROUTER_TLS``, ``HYBRID_ROUTER_CA_BUNDLE`` (path to a PEM file; implies
        TLS) and ``HYBRID_ROUTER_TLS_SERVER_NAME``. Keyword arguments win over the env."""
        env = os.environ if env is None else env
        address = overrides.pop("address", None) or env.get(ENV_ADDRESS, "")
        if not address:
            raise ValueError(f"{ENV_ADDRESS} is not set: set it to the router's host:port")
        kwargs: dict[str, Any] = {}
        if env.get(ENV_API_KEY):
            kwargs["api_key"] = env[ENV_API_KEY]
        if env.get(ENV_TLS) is not None:
            kwargs["tls"] = _truthy(env[ENV_TLS], ENV_TLS)
        if env.get(ENV_CA_BUNDLE):
            kwargs["ca_bundle"] = env[ENV_CA_BUNDLE]
        if env.get(ENV_TLS_SERVER_NAME):
            kwargs["server_name"] = env[ENV_TLS_SERVER_NAME]
        kwargs.update(overrides)
        return cls(address, **kwargs)

    # --- connection ---------------------------------------------------------------------

    def pre_connect(self) -> None:
        """Start connecting in the background (call at init; does not wait)."""
        if not self._watching:
            self._watching = True
            self.channel.subscribe(self._on_state, try_to_connect=True)

    def _on_state(self, state: grpc.ChannelConnectivity) -> None:
        self.connectivity = state

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the channel is connected; RouterCallError UNAVAILABLE if it is not."""
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise RouterCallError(
                "UNAVAILABLE", f"router at {self.address} not reachable within {timeout_s:g} s"
            ) from None

    def close(self) -> None:
        if self._watching:
            self.channel.unsubscribe(self._on_state)
            self._watching = False
        self.channel.close()

    def __enter__(self) -> RouterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- calls --------------------------------------------------------------------------

    def _metadata(
        self,
        request_id: str,
        traceparent: str | None,
        api_key: str | None,
        extra: Sequence[tuple[str, str]],
    ) -> list[tuple[str, str]]:
        md: list[tuple[str, str]] = []
        key = api_key
        if key is None:
            key = self._api_key() if callable(self._api_key) else self._api_key
        if key:
            md.append((AUTH_METADATA, f"Bearer {key}"))
        if request_id:
            md.append((REQUEST_ID_METADATA, request_id))
        if traceparent := valid_traceparent(traceparent):
            md.append((TRACEPARENT_METADATA, traceparent))
        md.extend(extra)
        return md

    def generate(
        self,
        request: rpb.GenerateRequest,
        *,
        timeout_s: float | None = None,
        request_id: str = "",
        traceparent: str | None = None,
        api_key: str | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> GenerateStream:
        """Open a Generate stream. Iterate it for events; errors raise RouterCallError.

        ``api_key`` overrides the client's key for this call (e.g. a caller's own key).
        """
        rid = request_id or request.request_id
        md = self._metadata(rid, traceparent, api_key, metadata)
        deadline = self._clock() + (timeout_s if timeout_s is not None else self.timeout_s)

        def start(timeout: float) -> Any:
            return self._stub.Generate(request, timeout=timeout, metadata=md)

        return GenerateStream(
            start,
            deadline=deadline,
            request_id=rid,
            max_attempts=self.max_attempts,
            backoff_s=self.backoff_s,
            clock=self._clock,
            sleep=self._sleep,
        )

    def complete(self, request: rpb.GenerateRequest, **kwargs: Any) -> Completion:
        """Generate, buffered: the decision, the text, failovers and the usage.

        On failure, RouterCallError.partial holds what arrived (e.g. a decision and the
        text before a backend failed mid-stream)."""
        out = Completion()
        parts: list[str] = []
        with self.generate(request, **kwargs) as stream:
            try:
                for ev in stream:
                    kind = ev.WhichOneof("event")
                    if kind == "delta":
                        parts.append(ev.delta.text)
                    elif kind == "decision":
                        out.decision = ev.decision
                    elif kind == "failover":
                        out.failovers.append(ev.failover)
                    elif kind == "usage":
                        out.usage = ev.usage
            except RouterCallError as err:
                out.text = "".join(parts)
                out.request_id = stream.request_id
                err.partial = out
                raise
            out.request_id = stream.request_id
        out.text = "".join(parts)
        return out

    def route(self, request: rpb.GenerateRequest, **kwargs: Any) -> rpb.Decision:
        """The decision alone (a dry run; calls no model). Retried on UNAVAILABLE."""
        return self._unary(self._stub.Route, request, **kwargs)  # type: ignore[no-any-return]

    def list_backends(self, **kwargs: Any) -> rpb.ListBackendsResponse:
        return self._unary(  # type: ignore[no-any-return]
            self._stub.ListBackends, rpb.ListBackendsRequest(), **kwargs
        )

    def _unary(
        self,
        method: Any,
        request: Any,
        *,
        timeout_s: float | None = None,
        request_id: str = "",
        traceparent: str | None = None,
        api_key: str | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> Any:
        rid = request_id or getattr(request, "request_id", "")
        md = self._metadata(rid, traceparent, api_key, metadata)
        deadline = self._clock() + (timeout_s if timeout_s is not None else self.timeout_s)
        attempt = 0
        while True:
            attempt += 1
            try:
                return method(request, timeout=max(deadline - self._clock(), 0.001), metadata=md)
            except grpc.RpcError as exc:
                err = _error(exc, request_id=rid, events=0, attempts=attempt)
                pause = min(self.backoff_s * (2 ** (attempt - 1)), 1.0)
                if (
                    err.code in _RETRYABLE
                    and attempt < self.max_attempts
                    and deadline - self._clock() > pause + 0.05
                ):
                    self._sleep(pause)
                    continue
                raise err from None


def _read_pem(ca_bundle: bytes | str) -> bytes:
    """A CA bundle given as PEM bytes/text, or as the path of a PEM file."""
    if isinstance(ca_bundle, bytes):
        return ca_bundle
    if "-----BEGIN" in ca_bundle:
        return ca_bundle.encode()
    try:
        with open(ca_bundle, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ValueError(
            f"CA bundle {ca_bundle!r} cannot be read ({exc.strerror}); give the path of a "
            f"PEM file (e.g. shipped in the layer under /opt) or the PEM text itself"
        ) from None
