"""Amazon Bedrock through boto3 ``bedrock-runtime``: ``converse_stream`` (or ``converse``).

boto3 is imported when the first Bedrock backend starts, never at router import time.
boto3 is synchronous: each call runs in a worker thread of this backend's own pool and hands
the parsed events to the event loop through a queue. The binary
``application/vnd.amazon.eventstream`` framing is botocore's to parse.

Choices made here (the router relies on them):

* **Request.** System messages become ``system`` blocks; the rest become ``messages`` with
  one text block each, consecutive messages of the same role merged into one message (the
  Converse API wants roles to alternate). ``inferenceConfig`` carries ``maxTokens``,
  ``temperature``, ``topP`` and ``stopSequences``; ``top_k`` and ``seed`` are model-specific
  and not sent.
* **Tools** (docs/tools.md). ``toolConfig``: ``tools`` as ``toolSpec`` (``name``,
  ``description``, ``inputSchema.json``) and ``toolChoice`` ``{"auto": {}}``, ``{"any": {}}``
  (REQUIRED) or ``{"tool": {"name"}}`` (NAMED). Converse has no "none" choice: with
  TOOL_CHOICE_MODE_NONE the tools are sent (without a choice) only when the history holds
  tool calls or results, which Bedrock refuses without a ``toolConfig``; otherwise no
  tools are sent at all. An assistant turn's tool calls are ``toolUse`` blocks (``input``
  the parsed arguments) after its text; tool results are ``toolResult`` blocks
  (``toolUseId``, ``content: [{"text"}]``) in a user turn, merged like any consecutive
  turns of one role. In the stream a ``contentBlockStart`` with ``start.toolUse`` opens a
  call (a ``ToolCallEvent`` with its id and name, calls counted from 0), its
  ``contentBlockDelta`` ``delta.toolUse.input`` strings are the arguments, and
  ``stopReason: tool_use`` is FINISH_REASON_TOOL_CALLS. ``converse`` (``streaming:
  false``) replays its ``toolUse`` blocks the same way, the input as one fragment.
* **JSON answers.** Converse has no JSON mode: a JSON ``response_format`` is a forced tool
  whose input schema is the answer's (``toolChoice: {"tool": ...}``, named
  ``response_format.name`` or ``json_answer``), its input streamed as the answer's text and
  its ``tool_use`` stop a plain STOP (:mod:`router.backends.tool_wire` has the rules). Only
  models that take ``toolChoice.tool``/``any`` can do it (Anthropic Claude 3+, Mistral
  Large, Amazon Nova, per the Bedrock docs); list ``capabilities`` without ``json_schema``
  for the others, or the ValidationException fails the request.
* **Answer.** ``contentBlockDelta`` text deltas are relayed as they arrive (each counts
  ``ceil(chars / 3)`` tokens until usage arrives); ``messageStop.stopReason`` gives the finish
  reason (``max_tokens`` and ``model_context_window_exceeded`` -> length); the ``metadata``
  event's ``usage`` gives input and output tokens. A stream without ``messageStop`` is an
  error (RETRYABLE); one without ``metadata`` is complete but its usage is estimated.
* **Errors** (HTTP errors and exceptions inside the event stream alike):

  ================================================  ===================================
  ThrottlingException, ServiceUnavailableException   RETRYABLE (``Retry-After`` honoured
  ModelNotReadyException, InternalServerException    when the response has one)
  ModelTimeoutException, ModelErrorException,
  ModelStreamErrorException, ServiceQuotaExceeded,
  ResourceNotFoundException (wrong model id),
  connection and read errors, no credentials
  ValidationException naming the context window     TOO_LARGE
  ("Input is too long", "prompt is too long"...)
  ValidationException (other)                        FATAL, INVALID_ARGUMENT
  AccessDeniedException                              FATAL, PERMISSION_DENIED
  UnrecognizedClient, InvalidSignature, ExpiredToken FATAL, UNAUTHENTICATED
  ================================================  ===================================

  botocore's own retries are off (``total_max_attempts: 1``): failover is the router's job.
* **Trace context.** The attempt's W3C ``traceparent`` / ``tracestate``
  (``BackendCall.metadata``, as the HTTP adapters send it) goes out as HTTP headers: a
  ``before-sign`` hook on the client adds them to the request of the worker thread's
  current call (a context variable set around the boto3 call). SigV4 does not sign them
  (botocore leaves trace headers out of the signature, like ``X-Amzn-Trace-Id``), so a
  proxy that rewrites trace headers cannot break the signature.
* **Credentials** come from the standard AWS chain (IRSA web identity on EKS, the Lambda or
  ECS task role, instance profile, environment); the router never reads or logs them.
* **Cancellation.** Closing the iterator or cancelling the consumer shuts the response's
  socket down (``urllib3`` ``HTTPResponse.shutdown``), which wakes the worker thread blocked
  on it and drops the connection, so Bedrock stops generating. A call still waiting for its
  response headers is dropped when they arrive (at most ``timeout_s`` later).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from router.backends.base import Backend
from router.backends.common import (
    estimate_tokens,
    mentions_context_length,
    parse_retry_after,
    quiet_botocore_bodies,
    seconds_left,
    truncate,
)
from router.backends.tool_wire import (
    ToolPlan,
    ToolStream,
    bedrock_content,
    bedrock_replay,
    bedrock_tool_config,
    bedrock_turns,
    plan_tools,
)
from router.config import BackendConfig
from router.errors import BackendError, ConfigError, ErrorClass
from router.preflight import WARN, Finding, Options
from router.types import (
    BackendCall,
    BackendSpec,
    Chunk,
    FinishReason,
    InferenceRequest,
    Role,
)

log = logging.getLogger(__name__)

#: The trace headers of the boto3 call running in this worker thread (module doc).
_TRACE_HEADERS: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "bedrock_trace_headers", default=()
)


def _add_trace_headers(request: Any, **_: Any) -> None:
    """botocore ``before-sign`` hook: the current call's ``traceparent`` / ``tracestate``."""
    for name, value in _TRACE_HEADERS.get():
        request.headers[name] = value


_RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "ServiceUnavailableException",
        "ModelNotReadyException",
        "InternalServerException",
        "ModelTimeoutException",
        "ModelErrorException",
        "ModelStreamErrorException",
        "ServiceQuotaExceededException",
        "ResourceNotFoundException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_AUTH_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignature",
        "ExpiredTokenException",
        "MissingAuthenticationTokenException",
        "InvalidClientTokenId",
    }
)
_FINISH = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
}


def error_for(backend: str, code: str, message: str, status: int | None) -> BackendError:
    """The BackendError for a Bedrock error code (see the module doc's table).

    ``code`` may be the HTTP error's ``ThrottlingException`` or the event stream's
    ``throttlingException``; ``status`` is the HTTP status when there is one.
    """
    code = code[:1].upper() + code[1:]
    text = f"{code}: {truncate(message)}" if code else truncate(message)
    if code == "ValidationException":
        if mentions_context_length(message):
            return BackendError(backend, text, ErrorClass.TOO_LARGE)
        return BackendError(backend, text, ErrorClass.FATAL, grpc_code="INVALID_ARGUMENT")
    if code in ("AccessDeniedException", "AccessDenied"):
        return BackendError(backend, text, ErrorClass.FATAL, grpc_code="PERMISSION_DENIED")
    if code in _AUTH_CODES:
        return BackendError(backend, text, ErrorClass.FATAL, grpc_code="UNAUTHENTICATED")
    if code in _RETRYABLE_CODES or status is None or status >= 500 or status == 429:
        return BackendError(backend, text, ErrorClass.RETRYABLE)
    if status == 401:
        return BackendError(backend, text, ErrorClass.FATAL, grpc_code="UNAUTHENTICATED")
    if status == 403:
        return BackendError(backend, text, ErrorClass.FATAL, grpc_code="PERMISSION_DENIED")
    if 400 <= status < 500:
        return BackendError(backend, text, ErrorClass.FATAL, grpc_code="INVALID_ARGUMENT")
    return BackendError(backend, text, ErrorClass.RETRYABLE)


class BedrockBackend(Backend):
    """Streams Converse answers from Amazon Bedrock."""

    def __init__(
        self,
        spec: BackendSpec,
        cfg: BackendConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(spec)
        self._model_id = cfg.model
        self._region = cfg.region
        self._endpoint = cfg.endpoint
        self._timeout_s = cfg.timeout_s
        self._streaming = cfg.streaming
        self._clock = clock
        self._wall_clock = wall_clock
        self._workers = max(1, spec.max_concurrency + spec.max_queue)
        self._client: Any = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        if self._client is None:
            self._client = await asyncio.to_thread(self._make_client)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self._workers, thread_name_prefix=f"bedrock-{self.name}"
            )

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _make_client(self) -> Any:
        import boto3
        import botocore.config
        import botocore.exceptions

        quiet_botocore_bodies()
        config = botocore.config.Config(
            connect_timeout=self._timeout_s,
            read_timeout=self._timeout_s,
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=self._workers,
            tcp_keepalive=True,
            user_agent_appid="hybrid-router",
        )
        try:
            client = boto3.session.Session().client(
                "bedrock-runtime",
                region_name=self._region or None,
                endpoint_url=self._endpoint or None,
                config=config,
            )
        except botocore.exceptions.NoRegionError:
            raise ConfigError(
                "no AWS region: set the backend's region (e.g. us-east-1) or AWS_REGION",
                source=f"backend {self.name}",
                key="region",
            ) from None
        client.meta.events.register("before-sign.bedrock-runtime", _add_trace_headers)
        return client

    # --- the request --------------------------------------------------------------------

    def request(self, request: InferenceRequest, plan: ToolPlan | None = None) -> dict[str, Any]:
        """The keyword arguments of ``converse_stream`` / ``converse`` for ``request``;
        ``plan``: its tools (:func:`~router.backends.tool_wire.plan_tools`)."""
        plan = plan_tools(request, has_none=False) if plan is None else plan
        system = [{"text": m.content} for m in request.messages if m.role is Role.SYSTEM]
        messages = bedrock_turns(self.name, request.messages)
        inference: dict[str, Any] = {"maxTokens": request.max_output_tokens}
        s = request.sampling
        if s.temperature is not None:
            inference["temperature"] = s.temperature
        if s.top_p is not None:
            inference["topP"] = s.top_p
        if s.stop:
            inference["stopSequences"] = list(s.stop)
        kwargs: dict[str, Any] = {
            "modelId": self._model_id,
            "messages": messages,
            "inferenceConfig": inference,
        }
        if system:
            kwargs["system"] = system
        if plan.tools:
            kwargs["toolConfig"] = bedrock_tool_config(plan)
        return kwargs

    # --- streaming --------------------------------------------------------------------

    async def stream(self, call: BackendCall) -> AsyncIterator[Chunk]:
        if self._client is None or self._executor is None:
            await self.start()
        assert self._executor is not None
        plan = plan_tools(call.request, has_none=False)
        kwargs = self.request(call.request, plan)
        tools = ToolStream(plan.answer)
        self._remaining(call.deadline)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        worker = _Worker(loop, queue)
        run = self._run_stream if self._streaming else self._run_once
        future = loop.run_in_executor(self._executor, run, kwargs, worker, call.metadata)
        usage: dict[str, Any] | None = None
        stop_reason: str | None = None
        stopped = False
        try:
            while True:
                kind, item = await self._next(queue, call.deadline)
                if kind == "end":
                    break
                if kind == "error":
                    mapped = self._map_error(item)
                    if mapped is item:
                        raise item
                    raise mapped from item
                chunk = bedrock_content(item, tools)
                if chunk is not None:
                    yield chunk
                elif "messageStop" in item:
                    stop_reason = str(item["messageStop"].get("stopReason") or "")
                    stopped = True
                elif "metadata" in item:
                    u = item["metadata"].get("usage")
                    usage = u if isinstance(u, dict) else None
        finally:
            worker.cancel()
            if not future.done():
                future.add_done_callback(_ignore_result)
        if not stopped:
            raise BackendError(self.name, "stream ended early: no messageStop event")
        held = tools.end(estimate_tokens)
        if held is not None:
            yield held
        yield _final(stop_reason, usage, self.name, tools)

    async def _next(self, queue: asyncio.Queue[tuple[str, Any]], deadline: float | None) -> Any:
        if deadline is None:
            return await queue.get()
        try:
            async with asyncio.timeout(self._remaining(deadline)):
                return await queue.get()
        except TimeoutError as exc:
            raise BackendError(self.name, "deadline exceeded", ErrorClass.RETRYABLE) from exc

    def _remaining(self, deadline: float | None) -> float | None:
        return seconds_left(self.name, deadline, self._clock)

    def _run_stream(
        self, kwargs: dict[str, Any], worker: _Worker, trace: tuple[tuple[str, str], ...]
    ) -> None:
        """Worker thread: one ConverseStream call, its events put on the loop's queue."""
        try:
            if worker.cancelled:
                return
            token = _TRACE_HEADERS.set(trace)
            try:
                resp = self._client.converse_stream(**kwargs)
            finally:
                _TRACE_HEADERS.reset(token)
            stream = resp["stream"]
            if not worker.attach(stream):
                return
            for event in stream:
                if worker.cancelled:
                    return
                worker.put("event", event)
            worker.put("end", None)
        except Exception as exc:  # handed to the loop, mapped there
            if not worker.cancelled:
                worker.put("error", exc)
        finally:
            worker.detach()

    def _run_once(
        self, kwargs: dict[str, Any], worker: _Worker, trace: tuple[tuple[str, str], ...]
    ) -> None:
        """Worker thread: one Converse call, replayed as the events of a stream."""
        try:
            if worker.cancelled:
                return
            token = _TRACE_HEADERS.set(trace)
            try:
                resp = self._client.converse(**kwargs)
            finally:
                _TRACE_HEADERS.reset(token)
            message = (resp.get("output") or {}).get("message") or {}
            for event in bedrock_replay(message.get("content") or ()):
                worker.put("event", event)
            worker.put("event", {"messageStop": {"stopReason": resp.get("stopReason")}})
            worker.put("event", {"metadata": {"usage": resp.get("usage")}})
            worker.put("end", None)
        except Exception as exc:
            if not worker.cancelled:
                worker.put("error", exc)

    def _map_error(self, exc: BaseException) -> BaseException:
        """botocore / urllib3 errors -> BackendError; anything else is an adapter bug."""
        import botocore.eventstream
        import botocore.exceptions
        import urllib3.exceptions

        if isinstance(exc, botocore.exceptions.ClientError):
            err = exc.response.get("Error", {})
            meta = exc.response.get("ResponseMetadata", {})
            status = meta.get("HTTPStatusCode")
            if isinstance(exc, botocore.exceptions.EventStreamError):
                status = None  # inside a 200 stream: the code alone decides
            mapped = error_for(
                self.name, str(err.get("Code", "")), str(err.get("Message", "")), status
            )
            if mapped.error_class is ErrorClass.RETRYABLE:
                mapped.retry_after_s = _retry_after(meta.get("HTTPHeaders"), self._wall_clock())
            log.debug("%s: %s (HTTP %s)", self.name, err.get("Code"), status)
            return mapped
        if isinstance(
            exc,
            botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError,
        ):
            return BackendError(
                self.name,
                "no AWS credentials found in the standard chain (IRSA web identity, task or "
                "instance role, environment)",
                ErrorClass.RETRYABLE,
            )
        if isinstance(exc, botocore.exceptions.ReadTimeoutError | TimeoutError):
            return BackendError(self.name, f"timed out ({type(exc).__name__})")
        if isinstance(
            exc,
            botocore.exceptions.BotoCoreError
            | botocore.eventstream.ParserError
            | urllib3.exceptions.HTTPError
            | OSError,
        ):
            return BackendError(self.name, f"{type(exc).__name__}: {truncate(str(exc))}")
        return exc


class _Worker:
    """Hand-off between one worker thread and the event loop, with cancellation."""

    __slots__ = ("_loop", "_queue", "_lock", "_stream", "cancelled")

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        self._loop = loop
        self._queue = queue
        self._lock = threading.Lock()
        self._stream: Any = None
        self.cancelled = False

    def put(self, kind: str, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, item))

    def attach(self, stream: Any) -> bool:
        """Remember the open event stream; False (and closed) if already cancelled."""
        with self._lock:
            if not self.cancelled:
                self._stream = stream
                return True
        _abort(stream)
        return False

    def detach(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            _abort(stream)

    def cancel(self) -> None:
        """From the loop: stop the worker and drop the connection now."""
        with self._lock:
            self.cancelled = True
            stream, self._stream = self._stream, None
        if stream is not None:
            _abort(stream)


def _abort(stream: Any) -> None:
    """Shut an EventStream's socket down (waking a blocked reader), then close it.

    botocore's EventStream keeps the urllib3 response as ``_raw_stream`` and offers only
    ``close()``, which does not wake a thread blocked reading the socket.
    """
    raw = getattr(stream, "_raw_stream", None)
    with contextlib.suppress(Exception):
        if raw is not None:
            raw.shutdown()
    with contextlib.suppress(Exception):
        stream.close()


def _final(
    stop_reason: str | None, usage: dict[str, Any] | None, backend: str, tools: ToolStream
) -> Chunk:
    input_tokens = output_tokens = None
    if usage is not None:
        it, ot = usage.get("inputTokens"), usage.get("outputTokens")
        input_tokens = it if isinstance(it, int) else None
        output_tokens = ot if isinstance(ot, int) else None
        if input_tokens is not None:
            for extra in ("cacheReadInputTokens", "cacheWriteInputTokens"):
                value = usage.get(extra)
                if isinstance(value, int):
                    input_tokens += value
    if stop_reason and stop_reason not in _FINISH:
        log.debug("%s: stopReason %r treated as stop", backend, stop_reason)
    return Chunk(
        done=True,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        finish_reason=tools.finish(
            _FINISH.get(stop_reason or "end_turn", FinishReason.STOP),
            tool_use=stop_reason == "tool_use",
        ),
    )


def _retry_after(headers: Any, now: float) -> float | None:
    if not isinstance(headers, dict):
        return None
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    return parse_retry_after(lower.get, now)


def _ignore_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it


# --- start-up check and check --probe (router/backends/preflight.py) -----------------------------


async def preflight(cfg: BackendConfig, backend: Backend, opts: Options) -> list[Finding]:
    """Build the boto3 client offline, as ``start`` does at start: checks the region."""
    from router.backends.preflight import built

    try:
        await backend.start()
    except ConfigError as exc:
        return [Finding.failed(f"backend {cfg.name}", exc)]
    return [built(cfg, f"region {cfg.region or 'from the AWS config'}")]


async def probe(cfg: BackendConfig, backend: Backend, timeout: float) -> list[Finding]:
    """An HTTP HEAD on ``endpoint`` (a VPC endpoint) when one is set; the AWS SDK's
    regional endpoint is not probed."""
    from router.backends.preflight import http_probe

    if cfg.endpoint:
        return await http_probe(cfg, cfg.endpoint, timeout)
    return [
        Finding(
            WARN,
            f"probe {cfg.name}",
            f"backends[{cfg.name}].endpoint",
            "not probed: Bedrock is reached through the AWS SDK's regional endpoint "
            f"({cfg.region or 'region from the AWS config'})",
            f"set backends[{cfg.name}].endpoint to probe a VPC endpoint",
        )
    ]
