"""Anthropic Messages API with streaming (``POST {endpoint}/v1/messages``, ``stream: true``).

aiohttp streams the response (:class:`~router.backends.common.HTTPSession`);
:class:`~router.backends.sse.SSEDecoder` splits it into Server-Sent Events chunk by chunk.
The events, as Anthropic documents them::

    event: message_start        {"message": {..., "usage": {"input_tokens": N, ...}}}
    event: content_block_start  {"index": 0, "content_block": {"type": "text", ...}}
    event: ping
    event: content_block_delta  {"index": 0, "delta": {"type": "text_delta", "text": "..."}}
    event: content_block_stop
    event: message_delta        {"delta": {"stop_reason": "end_turn"}, "usage": {...}}
    event: message_stop
    event: error                {"error": {"type": "overloaded_error", "message": "Overloaded"}}

Choices made here:

* **Request.** System messages become the top-level ``system`` string (joined by blank
  lines); the rest go to ``messages`` in order. ``temperature``, ``top_p``, ``top_k`` and
  ``stop_sequences`` are sent when the request sets them; ``seed`` has no equivalent.
* **Tools** (docs/tools.md). ``tools`` as ``{name, description, input_schema}``;
  ``tool_choice`` as ``{"type": "auto" | "any" | "tool" (+ name) | "none"}`` (REQUIRED is
  ``any``). An assistant turn's tool calls are ``tool_use`` blocks (``input`` the parsed
  arguments) after its text; tool results are ``tool_result`` blocks (``tool_use_id``,
  ``content``) in a user turn, consecutive ones merged into one (consecutive turns of one
  role merge; a turn of one text block is sent as a string). In the stream a
  ``content_block_start`` of type ``tool_use`` opens a call (its id and name, as a
  ``ToolCallEvent`` with the next index, counted from 0), its ``input_json_delta``
  fragments are the arguments, and ``stop_reason: tool_use`` is FINISH_REASON_TOOL_CALLS.
* **JSON answers.** The Messages API has no JSON mode: a JSON ``response_format`` is served
  with a forced tool whose input schema is the answer's schema (``{"type": "object"}`` for
  JSON_OBJECT), named ``response_format.name`` or ``json_answer``, with ``tool_choice``
  ``{"type": "tool", "name": ...}`` (``any`` when the request's own tools are offered too).
  That tool's ``input_json_delta`` fragments are relayed as the answer's text, and its
  ``tool_use`` stop is a plain STOP. The rules, and the wrapping of a schema whose top
  level is not an object: :mod:`router.backends.tool_wire`.
* **Tokens.** Deltas hold several tokens; each counts as ``ceil(chars / 3)`` until the
  provider's usage arrives: ``input_tokens`` (plus cache reads and writes) from
  ``message_start``, the cumulative ``output_tokens`` from ``message_delta``.
* **Errors** follow :mod:`router.backends.common` (HTTP status, ``Retry-After``, context
  length wording such as ``prompt is too long``). 529 ``overloaded_error`` and 429 are
  RETRYABLE. An ``error`` event inside the stream is RETRYABLE (TOO_LARGE if it names the
  context window): before the first token the router fails over; after it, the stream ends
  with ``complete=false`` and the provider's error type and message. A body that ends before
  ``message_stop`` is RETRYABLE too.
* **Key.** ``api_key_env`` (resolved once, when the backend is created, by the config layer:
  ``router.config.backend_refs``, with the ``env:VAR`` headers) or ``api_key_secret``
  (Secrets Manager, cached, re-fetched after a 401). Sent as ``x-api-key``; never logged.
* **Cancellation.** Closing the iterator or cancelling the consumer closes the response
  before it is fully read; the provider sees the disconnect and stops generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any, cast

import aiohttp

from router.backends.base import Backend
from router.backends.common import (
    HTTPSession,
    estimate_tokens,
    http_status_error,
    json_body,
    mentions_context_length,
    parse_retry_after,
    read_error_body,
    reason_phrase,
    seconds_left,
    transport_error,
    truncate,
)
from router.backends.secrets import SecretsManagerKey
from router.backends.sse import SSEDecoder
from router.backends.tool_wire import (
    ToolPlan,
    ToolStream,
    anthropic_tool_fields,
    anthropic_turns,
    plan_tools,
)
from router.config import BackendConfig, BackendRefs, backend_refs
from router.errors import BackendError, ErrorClass
from router.preflight import Finding
from router.types import BackendCall, BackendSpec, Chunk, FinishReason, InferenceRequest, Role

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://api.anthropic.com"
#: Largest error body read from a failed response.
_MAX_ERROR_BODY = 64 * 1024
_FINISH = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
}
#: Error types in the body that say the request is too big whatever the wording.
_TOO_LARGE_TYPES = frozenset({"request_too_large"})


class AnthropicBackend(Backend):
    """Streams messages from the Anthropic API (or a server speaking its wire format)."""

    def __init__(
        self,
        spec: BackendSpec,
        cfg: BackendConfig,
        *,
        refs: BackendRefs | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``refs``: the resolved headers and key (``create_backend`` passes them; None
        resolves ``cfg`` against an empty environment)."""
        super().__init__(spec)
        if refs is None:
            refs = backend_refs(cfg, {})
        self._url = (cfg.endpoint or DEFAULT_ENDPOINT).rstrip("/") + "/v1/messages"
        self._model = cfg.model
        self._timeout_s = cfg.timeout_s
        self._clock = clock
        self._wall_clock = wall_clock
        headers = {
            name: value for name, value in refs.headers.items() if name.lower() != "x-api-key"
        }
        headers["anthropic-version"] = cfg.anthropic_version
        headers["Accept"] = "text/event-stream"
        self._headers = headers
        self._key: str | None = None
        self._secret: SecretsManagerKey | None = None
        if cfg.api_key_secret:
            self._secret = SecretsManagerKey(
                cfg.api_key_secret,
                backend=cfg.name,
                field=cfg.api_key_secret_field,
                region=cfg.region,
                ttl_s=cfg.secret_ttl_s,
                clock=clock,
            )
        else:
            self._key = refs.api_key  # non-empty: backend_refs checked api_key_env
        self._http = HTTPSession(self._url, headers, cfg.timeout_s)

    async def start(self) -> None:
        self._http.session()
        if self._secret is not None:
            await self._secret.prefetch()

    async def close(self) -> None:
        await self._http.close()

    def body(self, request: InferenceRequest, plan: ToolPlan | None = None) -> dict[str, Any]:
        """The Messages API request body for ``request`` (streaming); ``plan``: its tools
        (:func:`~router.backends.tool_wire.plan_tools`, made here when not given)."""
        plan = plan_tools(request, has_none=True) if plan is None else plan
        system = [m.content for m in request.messages if m.role is Role.SYSTEM]
        messages = anthropic_turns(self.name, request.messages)
        body: dict[str, Any] = {
            "model": self._model,
            "max_tokens": request.max_output_tokens,
            "messages": messages,
            "stream": True,
        }
        if system:
            body["system"] = "\n\n".join(system)
        s = request.sampling
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if s.top_p is not None:
            body["top_p"] = s.top_p
        if s.top_k is not None:
            body["top_k"] = s.top_k
        if s.stop:
            body["stop_sequences"] = list(s.stop)
        body.update(anthropic_tool_fields(plan))
        return body

    def _remaining(self, deadline: float | None) -> float | None:
        return seconds_left(self.name, deadline, self._clock)

    async def stream(self, call: BackendCall) -> AsyncIterator[Chunk]:
        plan = plan_tools(call.request, has_none=True)
        body = self.body(call.request, plan)
        deadline = call.deadline
        remaining = self._remaining(deadline)
        timeout = (
            self._http.timeout
            if remaining is None or remaining >= self._timeout_s
            else HTTPSession.timeouts(remaining)
        )
        key = self._key if self._secret is None else await self._secret.get()
        headers = {"x-api-key": key or ""}
        headers.update(call.metadata)  # W3C traceparent of this attempt (docs/telemetry.md)
        try:
            async with self._http.post(json_body(body), headers, timeout) as resp:
                if resp.status != 200:
                    raise self._status_error(
                        resp.status, resp.headers, await read_error_body(resp, _MAX_ERROR_BODY)
                    )
                chunks = self._chunks(resp.content, deadline, ToolStream(plan.answer))
                try:
                    async with contextlib.aclosing(chunks):
                        async for chunk in chunks:
                            yield chunk
                finally:
                    # Cancelled or closed early (or failed): drop the connection, so that
                    # the provider sees the disconnect. A body read to its end is reused.
                    if not resp.content.at_eof():
                        resp.close()
        except aiohttp.ClientError as exc:
            raise transport_error(self.name, exc) from exc

    async def _chunks(
        self, content: Any, deadline: float | None, tools: ToolStream
    ) -> AsyncGenerator[Chunk]:
        decoder = SSEDecoder()
        state = _State()
        read = content.readany
        while not state.stopped:
            data = await (read() if deadline is None else self._read(read, deadline))
            for event in decoder.feed(data) if data else decoder.end():
                chunk = self._apply(event.event, event.data, state, tools)
                if chunk is not None:
                    yield chunk
                if state.stopped:
                    break
            if not data:
                break
        if not state.stopped:
            raise BackendError(self.name, "stream ended early: no message_stop event")
        # Read the body to its end so the connection goes back to the pool.
        while data:
            data = await (read() if deadline is None else self._read(read, deadline))
        held = tools.end(estimate_tokens)
        if held is not None:
            yield held
        stop = state.stop_reason or "end_turn"
        yield Chunk(
            done=True,
            input_tokens=state.input_tokens,
            output_tokens=state.output_tokens,
            finish_reason=tools.finish(
                _FINISH.get(stop, FinishReason.STOP), tool_use=stop == "tool_use"
            ),
        )

    def _apply(self, name: str, data: str, state: _State, tools: ToolStream) -> Chunk | None:
        """Fold one SSE event into ``state``; return its chunk (text or a tool call)."""
        if name == "ping":
            return None
        try:
            payload = json.loads(data)
        except ValueError as exc:
            raise BackendError(self.name, "malformed stream event (not JSON)") from exc
        if not isinstance(payload, dict):
            raise BackendError(self.name, "malformed stream event (not an object)")
        kind = name if name != "message" else str(payload.get("type", ""))
        index = payload.get("index")
        block = index if isinstance(index, int) else -1
        if kind == "content_block_delta":
            delta = payload.get("delta")
            if not isinstance(delta, dict):
                return None
            if delta.get("type") == "text_delta":
                text = delta.get("text")
                return tools.text(text, estimate_tokens(text)) if isinstance(text, str) else None
            if delta.get("type") == "input_json_delta":
                part = delta.get("partial_json")
                if isinstance(part, str):
                    return tools.arguments(block, part, estimate_tokens(part))
            return None  # thinking, citations: not part of the answer
        if kind == "content_block_start":
            cb = payload.get("content_block")
            if isinstance(cb, dict) and cb.get("type") == "tool_use":
                return tools.start(block, str(cb.get("id") or ""), str(cb.get("name") or ""))
        elif kind == "message_start":
            message = payload.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            state.take_usage(usage)
        elif kind == "message_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                state.stop_reason = delta["stop_reason"]
            state.take_usage(payload.get("usage"))
        elif kind == "message_stop":
            state.stopped = True
        elif kind == "error":
            raise self._stream_error(payload.get("error"))
        return None

    def _stream_error(self, error: Any) -> BackendError:
        err = error if isinstance(error, dict) else {"message": str(error)}
        etype = str(err.get("type") or "error")
        message = truncate(str(err.get("message") or "unknown error"))
        too_large = etype in _TOO_LARGE_TYPES or mentions_context_length(message)
        cls = ErrorClass.TOO_LARGE if too_large else ErrorClass.RETRYABLE
        return BackendError(self.name, f"error in stream: {etype}: {message}", cls)

    async def _read(self, read: Callable[[], Any], deadline: float) -> bytes:
        """The next bytes of the body (``b""`` at its end), bounded by the deadline."""
        try:
            async with asyncio.timeout(self._remaining(deadline)):
                return cast(bytes, await read())
        except TimeoutError as exc:
            if isinstance(exc, aiohttp.ServerTimeoutError):
                raise
            raise BackendError(self.name, "deadline exceeded", ErrorClass.RETRYABLE) from exc

    def _status_error(self, status: int, headers: Mapping[str, str], body: bytes) -> BackendError:
        err = _error_object(body)
        etype = str(err.get("type") or "")
        message = str(err.get("message") or "") or reason_phrase(status)
        if status == 401 and self._secret is not None:
            self._secret.invalidate()  # a rotated key: fetch it again for the next request
        log.debug("%s: HTTP %d (%s)", self.name, status, etype)
        return http_status_error(
            self.name,
            status,
            f"{etype}: {message}" if etype else message,
            too_large=etype in _TOO_LARGE_TYPES or mentions_context_length(message),
            retry_after_s=parse_retry_after(headers.get, self._wall_clock()),
        )


class _State:
    __slots__ = ("input_tokens", "output_tokens", "stop_reason", "stopped")

    def __init__(self) -> None:
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.stop_reason: str | None = None
        self.stopped = False

    def take_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        parts = [
            usage.get(k)
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        ]
        if isinstance(parts[0], int):
            self.input_tokens = sum(p for p in parts if isinstance(p, int))
        out = usage.get("output_tokens")
        if isinstance(out, int):
            self.output_tokens = out


def _error_object(body: bytes) -> dict[str, Any]:
    """``{"type": "error", "error": {"type": ..., "message": ...}}`` -> the inner object."""
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return {"message": text} if text else {}
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return err
        if "message" in data:
            return data
    return {"message": str(data)}


# --- check --probe (router/backends/preflight.py) ----------------------------------------------


async def probe(cfg: BackendConfig, backend: Backend, timeout: float) -> list[Finding]:
    """An HTTP HEAD on the endpoint (the provider's by default): no model is called."""
    from router.backends.preflight import http_probe

    return await http_probe(cfg, cfg.endpoint or DEFAULT_ENDPOINT, timeout)
