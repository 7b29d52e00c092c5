"""OpenAI-compatible streaming chat completions (OpenAI, vLLM, llama.cpp server, Ray Serve LLM).

``POST {endpoint}/chat/completions`` with ``stream: true`` and
``stream_options: {"include_usage": true}``; the answer is Server-Sent Events, one
``chat.completion.chunk`` JSON per ``data:`` line, ended by ``data: [DONE]``.

Choices made here (the router relies on them):

* **Tools and JSON answers** (docs/tools.md), as OpenAI documents them:
  ``tools`` (``{"type": "function", "function": {name, description, parameters}}``),
  ``tool_choice`` (``auto``, ``none``, ``required`` or ``{"type": "function", "function":
  {"name"}}``), sent only with tools; ``response_format`` ``{"type": "json_object"}`` or
  ``{"type": "json_schema", "json_schema": {name (default "answer"), schema, strict}}``.
  An assistant turn's calls go out as ``tool_calls`` (``content`` null when empty), a tool
  result as ``role: tool`` with its ``tool_call_id``. Streamed ``delta.tool_calls``
  fragments become ``ToolCallEvent``s (:class:`~router.backends.tool_wire.OpenAIToolDeltas`
  evens out servers that omit ``index`` or repeat ids); ``finish_reason: tool_calls`` (or
  the legacy ``function_call``) is FINISH_REASON_TOOL_CALLS.
* **Tokens.** Each content delta counts as one token (servers stream about one token per
  chunk). Usage comes from the chunk that carries ``usage`` (OpenAI and vLLM send it when
  asked with ``include_usage``). A server that sends no usage (llama-cpp-python's server
  ignores ``stream_options``) gets ``input_tokens=None`` and ``output_tokens=None`` on the
  final chunk: the router then estimates and marks the usage as estimated.
* **Errors** (:class:`~router.errors.BackendError` classes):

  ============================================  ====================================
  connect error, read/write/pool timeout        RETRYABLE
  408, 409, 425, 429, 5xx                       RETRYABLE, ``retry_after_s`` from
                                                ``retry-after-ms`` / ``Retry-After``
                                                (seconds or an HTTP date)
  body says context length (any status; see     TOO_LARGE
  :func:`is_context_length_error`), or 413
  401                                           FATAL, UNAUTHENTICATED
  403                                           FATAL, PERMISSION_DENIED
  404                                           RETRYABLE: a wrong endpoint or model
                                                name is this backend's fault, not the
                                                request's, so the router may fail over
  other 4xx                                     FATAL, INVALID_ARGUMENT with the
                                                provider's message
  ``error`` object inside the stream            RETRYABLE (the provider failed while
                                                generating), TOO_LARGE if it names
                                                the context length
  body ends before ``[DONE]`` and without a     RETRYABLE ("stream ended early")
  ``finish_reason``
  ============================================  ====================================

* **An empty stream.** llama-cpp-python's server (0.3.x) answers a streamed request whose
  prompt exceeds its window with ``200`` and an empty body (the error is raised after the
  headers went out). When a stream ends with no event at all, the adapter asks once more
  without streaming and with ``max_tokens: 1``, only to learn the error: that request is
  rejected before any decoding when the prompt does not fit (``400
  context_length_exceeded`` -> TOO_LARGE). If the second answer is fine, the original
  failure stays RETRYABLE. Servers that report errors properly never reach this path.
* **Secrets.** The API key (``api_key_env``) and ``env:VAR`` header values are resolved
  once, when the backend is created, by the config layer (``router.config.backend_refs``,
  called by ``create_backend``) and passed in as ``refs``; or the key comes from a Secrets
  Manager secret (``api_key_secret``, cached for ``secret_ttl_s``, fetched again after a
  401). Never logged (neither aiohttp's nor httpx's reprs show request headers).
* **Cancellation.** Closing the iterator or cancelling the consuming task closes the HTTP
  response before it is fully read, so the connection is dropped and the server sees the
  disconnect.
* **HTTP client.** Completions stream through aiohttp
  (:class:`~router.backends.common.HTTPSession`: a C HTTP parser, one pooled session per
  backend), the body split into events chunk by chunk
  (:class:`~router.backends.sse.SSEDecoder`); httpx serves the cold paths (``check
  --probe``'s model list, the empty-stream diagnosis).
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
import httpx

from router.backends.base import Backend
from router.backends.common import (
    HTTPSession,
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
from router.backends.sse import SSEDecoder, SSEEvent
from router.backends.tool_wire import OpenAIToolDeltas, openai_message, openai_tool_fields
from router.config import BackendConfig, BackendRefs, backend_refs
from router.errors import BackendError, ErrorClass, RouterError
from router.preflight import FAIL, OK, WARN, Finding
from router.types import (
    BackendCall,
    BackendSpec,
    Chunk,
    FinishReason,
    InferenceRequest,
    ToolCallEvent,
)

log = logging.getLogger(__name__)

#: Largest error body read from a failed response.
_MAX_ERROR_BODY = 64 * 1024
#: Upper bound on the diagnostic request sent after an empty stream.
_EXPLAIN_TIMEOUT_S = 10.0

_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_CONTEXT_TYPES = frozenset({"exceed_context_size_error"})
_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
}


def is_context_length_error(error: Mapping[str, Any]) -> bool:
    """Whether a provider's error object says the request exceeds the context window.

    Known shapes: OpenAI and llama-cpp-python (``code: context_length_exceeded``),
    llama.cpp's C++ server (``type: exceed_context_size_error``, HTTP 400 or, in older
    builds, 500), vLLM (``This model's maximum context length is N tokens...``).
    """
    if str(error.get("code") or "") in _CONTEXT_CODES:
        return True
    if str(error.get("type") or "") in _CONTEXT_TYPES:
        return True
    return mentions_context_length(str(error.get("message") or ""))


def _headers(refs: BackendRefs) -> dict[str, str]:
    headers = dict(refs.headers)
    if refs.api_key:
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        headers["Authorization"] = f"Bearer {refs.api_key}"
    headers.setdefault("Accept", "text/event-stream")
    return headers


def _error_object(body: bytes) -> dict[str, Any]:
    """The provider's error object from an error body (OpenAI, vLLM, llama.cpp shapes)."""
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return {"message": text} if text else {}
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return err
        if isinstance(err, str):
            return {"message": err, **{k: data[k] for k in ("code", "type") if k in data}}
        if "message" in data or "detail" in data:
            return {**data, "message": str(data.get("message") or data.get("detail"))}
    return {"message": str(data)}


class OpenAIBackend(Backend):
    """Streams chat completions from an OpenAI-compatible HTTP API."""

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
        resolves ``cfg`` against an empty environment: literal headers only)."""
        super().__init__(spec)
        self._url = cfg.endpoint.rstrip("/") + "/chat/completions"
        #: The model list (``check --probe``): what the server is, without calling a model.
        self.models_url = cfg.endpoint.rstrip("/") + "/models"
        self._model = cfg.model
        self._timeout_s = cfg.timeout_s
        self._headers = _headers(backend_refs(cfg, {}) if refs is None else refs)
        self._clock = clock
        self._wall_clock = wall_clock
        self._http = HTTPSession(self._url, self._headers, cfg.timeout_s)
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

    async def start(self) -> None:
        self._http.session()
        if self._secret is not None:
            await self._secret.prefetch()

    async def _auth(self) -> dict[str, str]:
        """The Authorization header when the key lives in Secrets Manager."""
        if self._secret is None:
            return {}
        return {"Authorization": f"Bearer {await self._secret.get()}"}

    async def close(self) -> None:
        await self._http.close()

    async def list_models(self, timeout: float) -> httpx.Response:
        """``GET {endpoint}/models`` with the headers and key every call sends. Raises
        httpx.HTTPError when there is no answer. (``check --probe`` only: httpx, a client
        of its own.)"""
        headers = {**self._headers, "Accept": "application/json", **await self._auth()}
        async with httpx.AsyncClient(headers=headers, timeout=timeout) as client:
            return await client.get(self.models_url)

    def _body(self, request: InferenceRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [openai_message(m) for m in request.messages],
            "max_tokens": request.max_output_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        s = request.sampling
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if s.top_p is not None:
            body["top_p"] = s.top_p
        if s.seed is not None:
            body["seed"] = s.seed
        if s.stop:
            body["stop"] = list(s.stop)
        body.update(openai_tool_fields(request))
        return body

    def _remaining(self, deadline: float | None) -> float | None:
        return seconds_left(self.name, deadline, self._clock)

    async def stream(self, call: BackendCall) -> AsyncIterator[Chunk]:
        body = self._body(call.request)
        deadline = call.deadline
        remaining = self._remaining(deadline)
        timeout = (
            self._http.timeout
            if remaining is None or remaining >= self._timeout_s
            else HTTPSession.timeouts(remaining)
        )
        # OpenAI's header for a caller's request id. Not X-Request-Id: llama-cpp-python's
        # server rejects (400, empty body) an X-Request-Id that is not a UUID.
        rid = call.request.request_id
        headers = {"X-Client-Request-Id": rid} if rid and rid.isascii() else {}
        headers.update(call.metadata)  # W3C traceparent of this attempt (docs/telemetry.md)
        headers.update(await self._auth())
        try:
            async with self._http.post(json_body(body), headers, timeout) as resp:
                if resp.status != 200:
                    raise self._status_error(
                        resp.status, resp.headers, await read_error_body(resp, _MAX_ERROR_BODY)
                    )
                chunks = self._chunks(resp.content, deadline)
                try:
                    async with contextlib.aclosing(chunks):
                        async for chunk in chunks:
                            yield chunk
                finally:
                    # Cancelled or closed early (or failed): drop the connection, so that
                    # the server sees the disconnect. A body read to its end is reused.
                    if not resp.content.at_eof():
                        resp.close()
        except aiohttp.ClientError as exc:
            raise transport_error(self.name, exc) from exc
        except _EmptyStream:
            await self._explain_empty_stream(body, deadline)
            raise BackendError(
                self.name, "stream ended early: the response had no events", ErrorClass.RETRYABLE
            ) from None

    async def _chunks(self, content: Any, deadline: float | None) -> AsyncGenerator[Chunk]:
        """The body's events as chunks; the body is read to its end after ``[DONE]`` so the
        connection goes back to the pool."""
        decoder = SSEDecoder()
        seen_event = False
        finish: str | None = None
        usage: Mapping[str, Any] | None = None
        tool_deltas = OpenAIToolDeltas()
        read = content.readany
        while True:
            if deadline is None:
                data = await read()
            else:
                data = await self._read(read, deadline)
            for event in decoder.feed(data) if data else decoder.end():
                seen_event = True
                if event.data.strip() == "[DONE]":
                    while data:  # the rest of the body, ignored
                        data = await (read() if deadline is None else self._read(read, deadline))
                    yield self._final(finish, usage)
                    return
                text, calls, fr, u = self._parse_event(event, tool_deltas)
                if text or calls:
                    yield Chunk(text=text, tokens=1, tool_calls=calls)
                if fr:
                    finish = fr
                if u is not None:
                    usage = u
            if not data:
                break
        if not seen_event:
            raise _EmptyStream
        if finish is None:
            raise BackendError(self.name, "stream ended early: no finish_reason and no [DONE]")
        yield self._final(finish, usage)

    async def _read(self, read: Callable[[], Any], deadline: float) -> bytes:
        """The next bytes of the body (``b""`` at its end), bounded by the deadline."""
        try:
            async with asyncio.timeout(self._remaining(deadline)):
                return cast(bytes, await read())
        except TimeoutError as exc:
            if isinstance(exc, aiohttp.ServerTimeoutError):
                raise
            raise BackendError(self.name, "deadline exceeded", ErrorClass.RETRYABLE) from exc

    def _parse_event(
        self, event: SSEEvent, tool_deltas: OpenAIToolDeltas
    ) -> tuple[str, tuple[ToolCallEvent, ...], str | None, Mapping[str, Any] | None]:
        try:
            payload = json.loads(event.data)
        except ValueError as exc:
            raise BackendError(self.name, "malformed stream event (not JSON)") from exc
        if not isinstance(payload, dict):
            raise BackendError(self.name, "malformed stream event (not an object)")
        err = payload.get("error")
        if err is not None or event.event == "error":
            error = err if isinstance(err, dict) else {"message": str(err or event.data)}
            cls = ErrorClass.TOO_LARGE if is_context_length_error(error) else ErrorClass.RETRYABLE
            message = truncate(str(error.get("message") or "unknown error"))
            raise BackendError(self.name, f"error in stream: {message}", cls)
        text = ""
        calls: tuple[ToolCallEvent, ...] = ()
        finish = None
        choices = payload.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            choice = choices[0]
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str):
                    text = content
                if "tool_calls" in delta:
                    calls = tool_deltas(delta["tool_calls"])
            fr = choice.get("finish_reason")
            if isinstance(fr, str) and fr:
                finish = fr
        usage = payload.get("usage")
        return text, calls, finish, usage if isinstance(usage, dict) else None

    def _final(self, finish: str | None, usage: Mapping[str, Any] | None) -> Chunk:
        input_tokens = output_tokens = None
        if usage is not None:
            pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
            input_tokens = pt if isinstance(pt, int) else None
            output_tokens = ct if isinstance(ct, int) else None
        if finish is not None and finish not in _FINISH:
            log.debug("%s: finish_reason %r treated as stop", self.name, finish)
        return Chunk(
            done=True,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=_FINISH.get(finish or "stop", FinishReason.STOP),
        )

    def _status_error(self, status: int, headers: Mapping[str, str], body: bytes) -> BackendError:
        error = _error_object(body)
        message = str(error.get("message") or "") or reason_phrase(status)
        log.debug("%s: HTTP %d (%s)", self.name, status, error.get("code") or error.get("type"))
        if status == 401 and self._secret is not None:
            self._secret.invalidate()  # a rotated key: fetch it again for the next request
        return http_status_error(
            self.name,
            status,
            message,
            too_large=is_context_length_error(error),
            retry_after_s=parse_retry_after(headers.get, self._wall_clock()),
        )

    async def _explain_empty_stream(self, body: dict[str, Any], deadline: float | None) -> None:
        """After an empty 200 stream, learn the error without streaming (see module doc).

        Raises the mapped BackendError if the server rejects the request; returns if not.
        Uses a fresh connection: a server that failed mid-response may close the pooled one.
        """
        try:
            remaining = self._remaining(deadline)
        except BackendError:
            return
        timeout = min(self._timeout_s, _EXPLAIN_TIMEOUT_S, remaining or _EXPLAIN_TIMEOUT_S)
        probe = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        probe["max_tokens"] = 1
        headers = {**self._headers, "Accept": "application/json"}
        try:
            headers.update(await self._auth())
            async with httpx.AsyncClient(headers=headers, timeout=timeout) as client:
                resp = await client.post(self._url, json=probe)
        except httpx.HTTPError:
            return
        if resp.status_code != 200:
            raise self._status_error(resp.status_code, resp.headers, resp.content[:_MAX_ERROR_BODY])


class _EmptyStream(RouterError):
    """Internal: a 200 response whose body held no SSE event at all (``stream`` turns it
    into a BackendError)."""

    def __init__(self) -> None:
        super().__init__("the response had no events")


# --- check --probe (router/backends/preflight.py) ----------------------------------------------

#: How many of a model list's ids a finding names.
_LISTED = 5


async def probe(cfg: BackendConfig, backend: Backend, timeout: float) -> list[Finding]:
    """``GET {endpoint}/models`` as the adapter sends its calls (headers, key): the answer
    must be an OpenAI model list (``{"object": "list", "data": [...]}``), which should name
    ``model``. Never a completion."""
    assert isinstance(backend, OpenAIBackend)
    component = f"probe {cfg.name}"
    key = f"backends[{cfg.name}].endpoint"
    url = backend.models_url
    try:
        resp = await asyncio.wait_for(backend.list_models(timeout), timeout)
    except httpx.HTTPError as exc:
        return [
            Finding(
                FAIL,
                component,
                key,
                f"unreachable: GET {url}: {type(exc).__name__}: {exc or 'no detail'}",
                f"check {key}, DNS and network policy",
            )
        ]
    except TimeoutError:
        return [Finding(FAIL, component, key, f"no answer from GET {url} within {timeout:g} s")]
    content_type = resp.headers.get("content-type") or "no content type"
    got = f"GET {url} answered HTTP {resp.status_code} ({content_type})"
    if location := resp.headers.get("location"):
        got += f", redirecting to {location}"
    if resp.status_code in (401, 403):
        return [_refused(cfg, got)]
    ids = _model_ids(resp) if resp.status_code == 200 else None
    if ids is None:
        return [
            Finding(
                FAIL,
                component,
                key,
                f'{got}, not an OpenAI model list ({{"object": "list", "data": [...]}}): '
                f"{cfg.endpoint} is not an OpenAI-compatible API",
                f"set {key} to the base URL that /chat/completions and /models are under "
                "(usually ending in /v1)",
            )
        ]
    if cfg.model not in ids:
        shown = ", ".join(ids[:_LISTED]) + (", ..." if len(ids) > _LISTED else "")
        return [
            Finding(
                WARN,
                component,
                f"backends[{cfg.name}].model",
                f"{url} does not list model {cfg.model!r} ({len(ids)} listed: {shown or 'none'}); "
                "requests fail unless the server takes any name (llama.cpp's server does)",
                f"set backends[{cfg.name}].model to an id the server lists",
            )
        ]
    return [Finding(OK, component, key, f"{url} lists {cfg.model} ({len(ids)} models)")]


def _model_ids(resp: httpx.Response) -> list[str] | None:
    """The ids of an OpenAI model list; None when the body is not one."""
    try:
        body = resp.json()
    except ValueError:
        return None
    models = body.get("data") if isinstance(body, dict) else None
    if not isinstance(models, list):
        return None
    return [m["id"] for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)]


def _refused(cfg: BackendConfig, got: str) -> Finding:
    """401/403: the key (or its absence) was refused, naming where the key comes from."""
    where = f"backends[{cfg.name}]"
    if cfg.api_key_secret:
        key, source = f"{where}.api_key_secret", f"secret {cfg.api_key_secret}"
    elif cfg.api_key_env:
        key, source = f"{where}.api_key_env", f"${cfg.api_key_env}"
    elif any(name.lower() == "authorization" for name in cfg.headers):
        key, source = f"{where}.headers", "headers.Authorization"
    else:
        return Finding(
            FAIL,
            f"probe {cfg.name}",
            f"{where}.api_key_env",
            f"{got}: the server wants an API key and none is configured",
            f"set {where}.api_key_env (or api_key_secret) to the key",
        )
    return Finding(
        FAIL,
        f"probe {cfg.name}",
        key,
        f"{got}: the API key was refused",
        f"check that {source} holds a key this endpoint accepts",
    )
