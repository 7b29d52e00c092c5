"""What the hosted adapters share (OpenAI-compatible, Anthropic, Bedrock): error semantics,
and the HTTP session the OpenAI-compatible and Anthropic adapters stream through
(:class:`HTTPSession`).

One table, so the three providers fail the same way:

=====================================================  ====================================
throttled (429, ``ThrottlingException``), overloaded   RETRYABLE: the router fails over and
(529, ``overloaded_error``), 408/409/425, any 5xx,     the failure counts toward the
connection or read errors, a wrong endpoint or model   circuit breaker; ``retry_after_s``
(404): the backend's fault, not the request's          (from ``Retry-After``) makes the
                                                       router skip the backend until then
                                                       instead (see router/stats.py)
the prompt does not fit the context window (any        TOO_LARGE: the router moves to a
status, recognised by the provider's wording), 413     candidate with a larger window
401, bad or expired credentials                        FATAL, UNAUTHENTICATED
403, access denied                                     FATAL, PERMISSION_DENIED
any other 4xx (bad request)                            FATAL, INVALID_ARGUMENT with the
                                                       provider's message
=====================================================  ====================================

FATAL errors are not retried anywhere: dispatch stops and the caller gets the status.
"""

from __future__ import annotations

import contextlib
import email.utils
import http
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

# botocore body logs off (secrets, prompts): defined with the secret reader, used by bedrock.
from hybrid_router.refs import quiet_botocore_bodies as quiet_botocore_bodies

from router.errors import BackendError, ErrorClass

#: Longest provider message copied into an error.
MAX_MESSAGE = 500

#: Status codes that are the backend's trouble, not the request's (besides 5xx).
RETRYABLE_STATUS = frozenset({404, 408, 409, 425, 429})

#: How providers say "the prompt does not fit": OpenAI, vLLM and llama.cpp ("maximum context
#: length", "context size"), Anthropic ("prompt is too long", "input length and `max_tokens`
#: exceed context limit"), Bedrock ("Input is too long for requested model", "too many total
#: text bytes", "model_context_window_exceeded").
CONTEXT_RE = re.compile(
    r"context[ _-]?(length|window|size|limit)|maximum context|prompt is too long"
    r"|too many (input |total )?(tokens|text bytes)|input is too long"
    r"|max_tokens.{0,40}too large",
    re.IGNORECASE,
)

#: Characters per token for counting streamed text when a provider reports no usage (the
#: same default as ``policy.token_estimate.chars_per_token``).
CHARS_PER_TOKEN = 3.0


#: Longest status or header line accepted from an HTTP upstream.
_MAX_HEAD_LINE = 16 * 1024


class HTTPSession:
    """The HTTP client the OpenAI-compatible and Anthropic adapters stream through: one
    aiohttp session per backend (its C HTTP parser costs a fraction of httpx's per request
    and per chunk: BENCHMARKS.md, "Hosted path overhead"), with httpx's behaviour kept:

    * connections: no cap (the policy bounds concurrency), idle ones kept 30 s, all of
      them (httpx kept ``max(8, max_concurrency)``);
    * TLS: the trust store httpx uses (certifi, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``);
    * proxies: ``HTTP(S)_PROXY`` / ``NO_PROXY`` for ``url``, read once here (aiohttp's own
      ``trust_env`` would read them, and ``.netrc``, in a worker thread on every request);
    * no redirects followed, no cookies kept, head lines up to 16 KiB;
    * ``timeout_s`` bounds the connect and every wait for bytes (``timeout`` per call).

    aiohttp is imported here, when the first HTTP backend is built. The session itself is
    made on first use, inside the event loop (aiohttp requires one).
    """

    __slots__ = ("_url", "_headers", "_session", "_proxy", "_proxy_auth", "timeout")

    def __init__(self, url: str, headers: Mapping[str, str], timeout_s: float) -> None:
        """``url``: what :meth:`post` posts to; ``headers``: sent with every request."""
        import aiohttp
        from aiohttp.helpers import get_env_proxy_for_url
        from yarl import URL

        self._url = URL(url)  # parsed once, not on every request
        self._headers = dict(headers)
        if not any(name.lower() == "content-type" for name in self._headers):
            self._headers["Content-Type"] = "application/json"  # every body is JSON
        self._session: aiohttp.ClientSession | None = None
        self._proxy: Any = None
        self._proxy_auth: Any = None
        with contextlib.suppress(LookupError, ValueError):
            self._proxy, self._proxy_auth = get_env_proxy_for_url(self._url)
        #: The per-call timeout without a deadline (made once).
        self.timeout = self.timeouts(timeout_s)

    @staticmethod
    def timeouts(seconds: float) -> Any:
        """aiohttp's timeout: ``seconds`` to connect and for each wait for bytes."""
        import aiohttp

        return aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=seconds, sock_read=seconds
        )

    def session(self) -> Any:
        if self._session is None or self._session.closed:
            import aiohttp
            import httpx

            connector = aiohttp.TCPConnector(
                limit=0,
                limit_per_host=0,
                keepalive_timeout=30.0,
                ssl=httpx.create_ssl_context(),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=self.timeout,
                trust_env=False,
                # h11's (httpx's) limit on a response head line, not aiohttp's 8 KiB
                max_line_size=_MAX_HEAD_LINE,
                max_field_size=_MAX_HEAD_LINE,
            )
        return self._session

    def post(self, body: bytes, headers: Mapping[str, str], timeout: Any) -> Any:
        """``POST`` ``body`` (JSON) with ``headers`` besides the session's: an ``async with``
        context manager yielding the response."""
        return self.session().post(
            self._url,
            data=body,
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
            proxy=self._proxy,
            proxy_auth=self._proxy_auth,
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def json_body(body: Mapping[str, Any]) -> bytes:
    """A request body as httpx's ``json=`` wrote it (compact, UTF-8, no NaN)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def transport_error(backend: str, exc: BaseException) -> BackendError:
    """The RETRYABLE BackendError for an aiohttp client error (no HTTP status): named as
    httpx named them (``ConnectError``, ``timed out (ReadTimeout)``...), so that logs and
    alerts read the same whichever client a router runs."""
    import aiohttp

    if isinstance(exc, aiohttp.ServerTimeoutError):
        kind = (
            "ConnectTimeout" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "ReadTimeout"
        )
        return BackendError(backend, f"timed out ({kind})", ErrorClass.RETRYABLE)
    if isinstance(exc, aiohttp.ClientConnectorError):
        name = "ConnectError"
    elif isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        name = "RemoteProtocolError"
    elif isinstance(exc, aiohttp.ClientOSError):
        name = "ReadError"
    else:
        name = type(exc).__name__
    return BackendError(backend, f"{name}: {exc or 'connection failed'}", ErrorClass.RETRYABLE)


async def read_error_body(resp: Any, limit: int) -> bytes:
    """At most ``limit`` bytes of an error response's body (an aiohttp response)."""
    buf = bytearray()
    while len(buf) < limit:
        part = await resp.content.readany()
        if not part:
            break
        buf += part
    return bytes(buf[:limit])


def reason_phrase(status: int) -> str:
    """The standard reason phrase of ``status``; empty for an unknown code."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def seconds_left(backend: str, deadline: float | None, clock: Callable[[], float]) -> float | None:
    """Seconds until ``deadline`` (a ``clock()`` value), or None without one; a deadline
    already passed is a RETRYABLE BackendError (dispatch decides what that means)."""
    if deadline is None:
        return None
    remaining = deadline - clock()
    if remaining <= 0:
        raise BackendError(backend, "deadline exceeded", ErrorClass.RETRYABLE)
    return remaining


def mentions_context_length(text: str) -> bool:
    """Whether a provider's error message says the request exceeds the context window."""
    return bool(CONTEXT_RE.search(text))


def truncate(text: str) -> str:
    """One line of at most MAX_MESSAGE characters."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def estimate_tokens(text: str) -> int:
    """Tokens in a streamed delta, for providers whose deltas hold several tokens."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN)) if text else 0


def parse_retry_after(get: Callable[[str], str | None], now: float) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date).

    ``get`` looks a header up case-insensitively (``httpx.Headers.get``); ``now`` is
    wall-clock time (``time.time()``), used for the HTTP-date form.
    """
    raw_ms = get("retry-after-ms")
    if raw_ms:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value)
    raw = get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isfinite(value):
        return max(0.0, value)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def http_status_error(
    backend: str,
    status: int,
    message: str,
    *,
    too_large: bool = False,
    retry_after_s: float | None = None,
) -> BackendError:
    """The BackendError for an HTTP error status (see the table in the module doc).

    ``too_large``: the provider's error says the prompt exceeds the context window (a 429
    never counts as too large: rate limits on tokens per minute use similar words).
    """
    text = f"HTTP {status}: {truncate(message)}"
    if status == 401:
        return BackendError(backend, text, ErrorClass.FATAL, grpc_code="UNAUTHENTICATED")
    if status == 403:
        return BackendError(backend, text, ErrorClass.FATAL, grpc_code="PERMISSION_DENIED")
    if status == 413 or (status != 429 and too_large):
        return BackendError(backend, text, ErrorClass.TOO_LARGE)
    if status in RETRYABLE_STATUS or status >= 500:
        return BackendError(backend, text, ErrorClass.RETRYABLE, retry_after_s=retry_after_s)
    if 400 <= status < 500:
        return BackendError(backend, text, ErrorClass.FATAL, grpc_code="INVALID_ARGUMENT")
    # 1xx/2xx other than 200, 3xx (redirects are not followed): a misbehaving endpoint.
    return BackendError(backend, f"unexpected {text}", ErrorClass.RETRYABLE)
