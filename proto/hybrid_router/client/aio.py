"""The asyncio client (``grpc.aio``): the CLI, the demo, tests and any async caller.

    async with AsyncRouterClient("127.0.0.1:50051", api_key=key) as client:
        async with client.generate(make_request(prompt="Hi")) as stream:
            async for ev in stream:               # Decision, TextDelta..., Usage
                ...
        decision = await client.route(make_request(prompt="Hi"))

The same calls, deadlines, metadata, retries and errors as the sync
:class:`~hybrid_router.client.sync.RouterClient`; make it inside the event loop that
uses it (a ``grpc.aio`` channel belongs to one loop). ``timeout_s`` (per client or per
call) bounds a whole call, retries included; None (the default here) sets no deadline.
Leaving ``async with client.generate(...)`` early, or cancelling the task that reads it,
cancels the RPC: the router stops the backend.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from grpc import aio

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

__all__ = ["AsyncGenerateStream", "AsyncRouterClient"]


class AsyncGenerateStream(AsyncIterator[rpb.GenerateEvent]):
    """Async iterator over one Generate call's events; an async context manager that
    cancels the call on exit. ``request_id`` is known once the first event (or the
    error) has arrived."""

    def __init__(
        self,
        start: Callable[[float | None], aio.UnaryStreamCall],
        *,
        deadline: float | None,
        request_id: str,
        retry: RetryPolicy,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[object]],
    ) -> None:
        self._start = start
        self._deadline = deadline
        self._retry = retry
        self._clock = clock
        self._sleep = sleep
        self.request_id = request_id
        self.events = 0
        self.attempts = 0
        self._call: aio.UnaryStreamCall | None = None
        self._done = False
        self._open()

    def _time_left(self) -> float | None:
        return None if self._deadline is None else self._deadline - self._clock()

    def _open(self) -> None:
        self.attempts += 1
        left = self._time_left()
        self._call = self._start(None if left is None else max(left, 0.001))

    async def _learn_request_id(self) -> None:
        if self.request_id or self._call is None:
            return
        try:
            self.request_id = request_id_from(await self._call.initial_metadata() or ())
        except grpc.RpcError:
            pass

    def __aiter__(self) -> AsyncGenerateStream:
        return self

    async def __anext__(self) -> rpb.GenerateEvent:
        if self._done:
            raise StopAsyncIteration
        while True:
            assert self._call is not None
            try:
                event = await self._call.read()
            except grpc.RpcError as exc:
                err = call_error(
                    exc, request_id=self.request_id, events=self.events, attempts=self.attempts
                )
                self.request_id = err.request_id
                delay = self._retry.retry(
                    err, attempt=self.attempts, events=self.events, time_left=self._time_left()
                )
                if delay is not None:
                    await self._sleep(delay)
                    self._open()
                    continue
                self._done = True
                raise err from None
            if event is aio.EOF:
                self._done = True
                raise StopAsyncIteration
            if self.events == 0:
                await self._learn_request_id()
            self.events += 1
            return event

    def cancel(self) -> None:
        """Cancel the call: the router stops the backend and frees its slot."""
        self._done = True
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> AsyncGenerateStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._done:
            self.cancel()


class AsyncRouterClient:
    """The InferenceRouter and SessionService calls over one ``grpc.aio`` channel.

    ``target`` is ``host:port`` or a :class:`ChannelConfig`, with the same channel
    keywords as the sync client; ``channel`` wraps a channel made elsewhere (it is not
    closed by :meth:`close`). ``api_key``: a string or a callable read per call;
    ``metadata``: sent with every call; ``timeout_s``: the default deadline (None: none).
    """

    def __init__(
        self,
        target: str | ChannelConfig,
        *,
        channel: aio.Channel | None = None,
        api_key: ApiKey = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout_s: float | None = None,
        max_attempts: int = 3,
        backoff_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        **channel_options: Any,
    ) -> None:
        config = make_config(target, channel_options)
        if timeout_s is not None and timeout_s <= 0:
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
        self._owns_channel = channel is None
        self.channel = channel if channel is not None else config.open_aio()
        self._stub = router_pb2_grpc.InferenceRouterStub(self.channel)
        self._sessions = sessions_pb2_grpc.SessionServiceStub(self.channel)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> AsyncRouterClient:
        """As :meth:`RouterClient.from_env <hybrid_router.client.sync.RouterClient.from_env>`."""
        config, rest = config_from_env(env, overrides)
        return cls(config, **rest)

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until the channel is connected; RouterCallError UNAVAILABLE if it is not."""
        try:
            await asyncio.wait_for(self.channel.channel_ready(), timeout_s)
        except TimeoutError:
            raise RouterCallError(
                "UNAVAILABLE", f"router at {self.address} not reachable within {timeout_s:g} s"
            ) from None

    async def close(self) -> None:
        if self._owns_channel:
            await self.channel.close()

    async def __aenter__(self) -> AsyncRouterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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

    def _deadline(self, timeout_s: float | None) -> float | None:
        t = timeout_s if timeout_s is not None else self.timeout_s
        return None if t is None else self._clock() + t

    def generate(
        self,
        request: rpb.GenerateRequest,
        *,
        timeout_s: float | None = None,
        request_id: str = "",
        traceparent: str | None = None,
        api_key: str | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> AsyncGenerateStream:
        """Open a Generate stream (``async with ... as stream: async for ev in stream``);
        errors raise RouterCallError. ``api_key`` overrides the client's for this call."""
        rid = request_id or request.request_id
        md = self._md(rid, traceparent, api_key, metadata)

        def start(timeout: float | None) -> aio.UnaryStreamCall:
            return self._stub.Generate(request, timeout=timeout, metadata=md)

        return AsyncGenerateStream(
            start,
            deadline=self._deadline(timeout_s),
            request_id=rid,
            retry=self.retry,
            clock=self._clock,
            sleep=self._sleep,
        )

    async def complete(self, request: rpb.GenerateRequest, **kwargs: Any) -> Completion:
        """Generate, buffered; on failure RouterCallError.partial holds what arrived."""
        gather = Gather()
        async with self.generate(request, **kwargs) as stream:
            try:
                async for ev in stream:
                    gather.add(ev)
            except RouterCallError as err:
                err.partial = gather.result(stream.request_id)
                raise
        return gather.result(stream.request_id)

    async def route(self, request: rpb.GenerateRequest, **kwargs: Any) -> rpb.Decision:
        """The decision alone (a dry run; calls no model). Retried on UNAVAILABLE."""
        return await self._unary(self._stub.Route, request, **kwargs)

    async def list_backends(self, **kwargs: Any) -> rpb.ListBackendsResponse:
        return await self._unary(self._stub.ListBackends, rpb.ListBackendsRequest(), **kwargs)

    # --- sessions (SessionService) ------------------------------------------------------
    # The same keywords as route (timeout_s, request_id, traceparent, api_key, metadata);
    # a session belongs to the API key's tenant: another tenant's id is NOT_FOUND.

    async def create_session(
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
        return await self._unary(self._sessions.CreateSession, request, once=True, **kwargs)

    async def get_session(self, session_id: str, **kwargs: Any) -> spb.Session:
        """The session with its history (each turn with its token count, the history's
        total, the turns the running summary covers); NOT_FOUND when there is none."""
        return await self._unary(self._sessions.GetSession, get_request(session_id), **kwargs)

    async def list_sessions(
        self, page_size: int = 0, page_token: str = "", **kwargs: Any
    ) -> spb.ListSessionsResponse:
        """One page of the tenant's sessions, by id, without their history
        (``page_size`` 0: the router's, 100); ``next_page_token`` is "" on the last."""
        request = list_request(page_size, page_token)
        return await self._unary(self._sessions.ListSessions, request, **kwargs)

    async def iter_sessions(self, page_size: int = 0, **kwargs: Any) -> AsyncIterator[spb.Session]:
        """Every session of the tenant, page after page (each page its own call, with
        its own ``timeout_s``)."""
        token = ""
        while True:
            page = await self.list_sessions(page_size, token, **kwargs)
            for session in page.sessions:
                yield session
            token = page.next_page_token
            if not token:
                return

    async def delete_session(self, session_id: str, **kwargs: Any) -> bool:
        """Delete a session and its history; False when there was none. Retried on
        UNAVAILABLE like the reads (deleting twice leaves the same state), so a retry
        after a lost answer reports False for the session the first attempt deleted."""
        response = await self._unary(
            self._sessions.DeleteSession, delete_request(session_id), **kwargs
        )
        return bool(response.deleted)

    async def _unary(
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
        deadline = self._deadline(timeout_s)
        attempt = 0
        while True:
            attempt += 1
            left = None if deadline is None else deadline - self._clock()
            try:
                return await method(
                    request, timeout=None if left is None else max(left, 0.001), metadata=md
                )
            except grpc.RpcError as exc:
                err = call_error(exc, request_id=rid, attempts=attempt)
                left = None if deadline is None else deadline - self._clock()
                delay = None
                if not once:
                    delay = self.retry.retry(err, attempt=attempt, events=0, time_left=left)
                if delay is None:
                    raise err from None
                await self._sleep(delay)
