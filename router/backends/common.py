"""Error semantics shared by the hosted adapters (OpenAI-compatible, Anthropic, Bedrock).

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

import email.utils
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


def pooled_http_client(headers: Mapping[str, str], timeout_s: float, concurrency: int) -> Any:
    """The httpx client the HTTP adapters share the shape of: the policy bounds concurrency,
    the pool only keeps connections warm. httpx is imported here, not at module import."""
    import httpx

    return httpx.AsyncClient(
        headers=dict(headers),
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(
            max_connections=None,
            max_keepalive_connections=max(8, concurrency),
            keepalive_expiry=30.0,
        ),
    )


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
