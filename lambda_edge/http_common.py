"""What the buffered HTTP function (lambda_edge.http_api) and the streaming server
(lambda_edge.stream_server) share: body checks, the request id and caller key from the
headers, and the JSON error bodies, so both answer a bad body or a router failure with the
same status and the same shape. No Powertools import here (the streaming server's init
stays small).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from hybrid_router.client import RouterCallError
from hybrid_router.env import ENV_MAX_BODY_BYTES
from pydantic import BaseModel, ValidationError

from lambda_edge.payloads import decision_dict, describe, tool_call_dict, usage_dict
from lambda_edge.status import http_status, retry_after_header

M = TypeVar("M", bound=BaseModel)

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BEARER = re.compile(r"^\s*bearer\s+(\S+)\s*$", re.IGNORECASE)
CREDENTIALS_MESSAGE = "the function cannot read its router credentials; see its logs"


class BodyError(Exception):
    """The body is unusable: 400 (``field`` named) or 413."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def too_large(limit: int) -> str:
    return (
        f"body: larger than {limit} bytes; shorten the prompt (the limit is {ENV_MAX_BODY_BYTES})"
    )


def check_body(data: bytes, limit: int) -> bytes:
    """413 above ``limit`` bytes, 400 when empty."""
    if len(data) > limit:
        raise BodyError(413, too_large(limit))
    if not data:
        raise BodyError(400, "body: empty; send a JSON object", "body")
    return data


def parse_body(model: type[M], data: bytes) -> M:
    """Validate a JSON body; a 400 naming the first bad field."""
    try:
        return model.model_validate_json(data)
    except ValidationError as err:
        field, message = describe(err)
        raise BodyError(400, message, field) from None


def header_request_id(value: str | None) -> str:
    """A caller's ``x-request-id`` when it is well formed, else ``""``."""
    return value if value and REQUEST_ID.match(value) else ""


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header (None for any other scheme,
    e.g. a SigV4 signature)."""
    m = _BEARER.match(authorization or "")
    return m.group(1) if m else None


def openai_error(status: int, message: str, *, param: str | None, code: str) -> dict[str, Any]:
    from lambda_edge.openai_compat import error_body

    return error_body(status, message, param=param, code=code)


def body_error(exc: BodyError, *, openai: bool) -> dict[str, Any]:
    code = "PAYLOAD_TOO_LARGE" if exc.status == 413 else "INVALID_ARGUMENT"
    if openai:
        return openai_error(exc.status, exc.message, param=exc.field, code=code)
    err: dict[str, Any] = {"status": code, "message": exc.message}
    if exc.field:
        err["field"] = exc.field
    return {"error": err}


def router_error(exc: RouterCallError, *, openai: bool) -> tuple[int, dict[str, Any]]:
    """HTTP status and body for a failed router call (with what arrived before it)."""
    status = http_status(exc.code, exc.message)
    if openai:
        return status, openai_error(status, exc.message, param=None, code=exc.code)
    err: dict[str, Any] = {
        "status": exc.code,
        "message": exc.message,
        "request_id": exc.request_id,
    }
    if exc.retry_after is not None:
        err["retry_after_s"] = exc.retry_after
    body: dict[str, Any] = {"error": err}
    partial = exc.partial
    if partial is not None and (partial.decision is not None or partial.text or partial.tool_calls):
        body["partial"] = {
            "decision": decision_dict(partial.decision) if partial.decision else None,
            "text": partial.text,
            "tool_calls": [tool_call_dict(c) for c in partial.tool_calls],
            "usage": usage_dict(partial.usage) if partial.usage else None,
        }
    return status, body


def error_headers(exc: RouterCallError) -> dict[str, str]:
    """Headers of a failed router call's answer: ``Retry-After`` when the router said how
    long to wait (a rate limit)."""
    return retry_after_header(exc.code, exc.message, exc.retry_after)


def credentials_error(*, openai: bool) -> dict[str, Any]:
    if openai:
        return openai_error(500, CREDENTIALS_MESSAGE, param=None, code="INTERNAL")
    return {"error": {"status": "INTERNAL", "message": CREDENTIALS_MESSAGE}}
