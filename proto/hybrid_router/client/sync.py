"""The synchronous client: one channel, reused by every call, thread-safe.

For Lambda functions (ours, and users' own orchestrators with the layer) and any other
sync caller. A ``grpc.aio`` channel made at a Lambda's init is bound to the init phase's
event loop and breaks when each invocation runs its own ``asyncio.run``; a sync channel
has no such problem, so it is made once per container and reused.

    client = RouterClient.from_env()          # once per container, at init
    client.pre_connect()                      # start connecting now, without waiting
    with client.generate(make_request(prompt="Hi"), timeout_s=10) as stream:
        for ev in stream:                     # Decision, TextDelta..., Failover..., Usage
            ...

Every call takes ``timeout_s`` for the whole call, retries included (module
:mod:`hybrid_router.client.retry` says which); errors are :class:`RouterCallError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grpc

from hybrid_router.client.channel import (
    ApiKey,
    ChannelConfig,
    call_metadata,
    config_from_env,
    current_key,
    make_config,
)
from hybrid_router.client.completion import Completion, Gather
from hybrid_router.client.errors import OptionError, RouterCallError, call_error, request_id_from
from hybrid_router.client.retry import RetryPolicy
from hybrid_router.client.sessions import (
    create_request,
    delete_request,
    get_request,
    list_request,
)
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import router_pb2_grpc, sessions_pb2_grpc
from hybrid_router.v1 import sessions_pb2 as spb

__all__ = ["GenerateStream", "RouterClient"]


class GenerateStream(Iterator[rpb.GenerateEvent]):
    """Iterator over one Generate call's events; a context manager that cancels on exit.

    ``request_id`` is the router's id for the request (its initial metadata), known once
    the first event (or the error) has arrived.
    """

    def __init__(
        self,
        start: Callable[[float], Any],
        *,
        deadline: float,
        request_id: str,
        retry: RetryPolicy,
        clock: Callable[[], float],
        sleep: Callable[[float], object],
    ) -> None:
        self._start = start
        self._deadline = deadline
        self._retry = retry
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
            self.request_id = request_id_from(self._call.initial_metadata() or ())
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
                err = call_error(
                    exc, request_id=self.request_id, events=self.events, attempts=self.attempts
                )
                delay = self._retry.retry(
                    err,
                    attempt=self.attempts,
                    events=self.events,
                    time_left=self._deadline - self._clock(),
                )
                if delay is not None:
                    self._sleep(delay)
                    self._open()
                    continue
                self._done = True
                raise err from None
            if self.events == 0:
                self._learn_request_id()
            self.events += 1
            return event

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


class RouterClient:
    """The InferenceRouter and SessionService calls over one sync channel. Thread-safe.

    ``target`` is ``host:port`` or a :class:`ChannelConfig`; with an address, the
    channel keywords (``tls``, ``ca_bundle``, ``client_cert``, ``client_key``,
    ``server_name``, ``keepalive_time_s``, ``keepalive_timeout_s``,
    ``max_receive_message_bytes``) build one. ``api_key`` is a string or a callable read
    per call; ``metadata`` is sent with every call; ``timeout_s`` is the default deadline.
    """

    def __init__(
        self,
        target: str | ChannelConfig,
        *,
        api_key: ApiKey = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout_s: float = 30.0,
        max_attempts: int = 3,
        backoff_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        **channel: Any,
    ) -> None:
        config = make_config(target, channel)
        if timeout_s <= 0:
            raise OptionError("timeout_s", "must be > 0")
        self.config = config
        self.address = config.address
        self.tls = config.use_tls
        self._api_key = api_key
        self._metadata = tuple(metadata)
        self.timeout_s = timeout_s
        self.retry = RetryPolicy(max_attempts, backoff_s)
        self._clock = clock
        self._sleep = sleep
        self.channel = config.open_sync()
        self._stub = router_pb2_grpc.InferenceRouterStub(self.channel)
        self._sessions = sessions_pb2_grpc.SessionServiceStub(self.channel)
        self._watching = False
        self.connectivity: grpc.ChannelConnectivity | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> RouterClient:
        """Build from ``HYBRID_ROUTER_ADDRESS`` (required), ``HYBRID_ROUTER_API_KEY``,
        ``HYBRID_ROUTER_TLS``, ``HYBRID_ROUTER_CA_BUNDLE`` (a PEM file; implies TLS) and
        ``HYBRID_ROUTER_TLS_SERVER_NAME``. Keyword arguments win over the environment."""
        config, rest = config_from_env(env, overrides)
        return cls(config, **rest)

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

    def _md(
        self,
        request_id: str,
        traceparent: str | None,
        api_key: str | None,
        extra: Sequence[tuple[str, str]],
    ) -> list[tuple[str, str]]:
        return call_metadata(
            api_key=api_key if api_key is not None else current_key(self._api_key),
            request_id=request_id,
            traceparent=traceparent,
            extra=(*self._metadata, *extra),
        )

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
        md = self._md(rid, traceparent, api_key, metadata)
        deadline = self._clock() + (timeout_s if timeout_s is not None else self.timeout_s)

        def start(timeout: float) -> Any:
            return self._stub.Generate(request, timeout=timeout, metadata=md)

        return GenerateStream(
            start,
            deadline=deadline,
            request_id=rid,
            retry=self.retry,
            clock=self._clock,
            sleep=self._sleep,
        )

    def complete(self, request: rpb.GenerateRequest, **kwargs: Any) -> Completion:
        """Generate, buffered: the decision, the text, failovers and the usage.

        On failure, RouterCallError.partial holds what arrived (e.g. a decision and the
        text before a backend failed mid-stream)."""
        gather = Gather()
        with self.generate(request, **kwargs) as stream:
            try:
                for ev in stream:
                    gather.add(ev)
            except RouterCallError as err:
                err.partial = gather.result(stream.request_id)
                raise
        return gather.result(stream.request_id)

    def route(self, request: rpb.GenerateRequest, **kwargs: Any) -> rpb.Decision:
        """The decision alone (a dry run; calls no model). Retried on UNAVAILABLE."""
        return self._unary(self._stub.Route, request, **kwargs)

    def list_backends(self, **kwargs: Any) -> rpb.ListBackendsResponse:
        return self._unary(self._stub.ListBackends, rpb.ListBackendsRequest(), **kwargs)

    # --- sessions (SessionService) ------------------------------------------------------
    # The same keywords as route (timeout_s, request_id, traceparent, api_key, metadata);
    # a session belongs to the API key's tenant: another tenant's id is NOT_FOUND.

    def create_session(
        self,
        session_id: str = "",
        *,
        system: str = "",
        ttl_s: int = 0,
        strategy: str = "",
        **kwargs: Any,
    ) -> spb.Session:
        """Create a session: ``session_id`` "" lets the router choose one (``s_...``),
        ``system`` is sent before the history, ``ttl_s`` 0 and ``strategy`` "" (or
        ``sliding``, ``summarize``, ``strict``) leave the router's defaults. An id in use
        is ALREADY_EXISTS. Never retried: an attempt whose answer was lost may have made
        the session. (A Generate with an unknown ``session_id`` also starts one.)"""
        request = create_request(session_id, system=system, ttl_s=ttl_s, strategy=strategy)
        return self._unary(self._sessions.CreateSession, request, once=True, **kwargs)

    def get_session(self, session_id: str, **kwargs: Any) -> spb.Session:
        """The session with its history (each turn with its token count, the history's
        total, the turns the running summary covers); NOT_FOUND when there is none."""
        return self._unary(self._sessions.GetSession, get_request(session_id), **kwargs)

    def list_sessions(
        self, page_size: int = 0, page_token: str = "", **kwargs: Any
    ) -> spb.ListSessionsResponse:
        """One page of the tenant's sessions, by id, without their history
        (``page_size`` 0: the router's, 100); ``next_page_token`` is "" on the last."""
        request = list_request(page_size, page_token)
        return self._unary(self._sessions.ListSessions, request, **kwargs)

    def iter_sessions(self, page_size: int = 0, **kwargs: Any) -> Iterator[spb.Session]:
        """Every session of the tenant, page after page (each page its own call, with
        its own ``timeout_s``)."""
        token = ""
        while True:
            page = self.list_sessions(page_size, token, **kwargs)
            yield from page.sessions
            token = page.next_page_token
            if not token:
                return

    def delete_session(self, session_id: str, **kwargs: Any) -> bool:
        """Delete a session and its history; False when there was none. Retried on
        UNAVAILABLE like the reads (deleting twice leaves the same state), so a retry
        after a lost answer reports False for the session the first attempt deleted."""
        response = self._unary(self._sessions.DeleteSession, delete_request(session_id), **kwargs)
        return bool(response.deleted)

    def _unary(
        self,
        method: Any,
        request: Any,
        *,
        once: bool = False,
        timeout_s: float | None = None,
        request_id: str = "",
        traceparent: str | None = None,
        api_key: str | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> Any:
        rid = request_id or getattr(request, "request_id", "")
        md = self._md(rid, traceparent, api_key, metadata)
        deadline = self._clock() + (timeout_s if timeout_s is not None else self.timeout_s)
        attempt = 0
        while True:
            attempt += 1
            try:
                return method(request, timeout=max(deadline - self._clock(), 0.001), metadata=md)
            except grpc.RpcError as exc:
                err = call_error(exc, request_id=rid, attempts=attempt)
                delay = None
                if not once:
                    delay = self.retry.retry(
                        err, attempt=attempt, events=0, time_left=deadline - self._clock()
                    )
                if delay is None:
                    raise err from None
                self._sleep(delay)
