"""HTTP front-end (API Gateway HTTP API payload 2.0, and Lambda Function URLs, which use the
same shape) on the Powertools event handler.

- ``POST /v1/generate``: buffered generate: ``{request_id, decision, text, usage, failovers}``.
- ``POST /v1/route``: the decision alone (dry run, no model called).
- ``POST /v1/chat/completions``: OpenAI-compatible, non-streaming (lambda_edge.openai_compat).

Bodies are validated with pydantic: 400 naming the field, 413 above
``HYBRID_ROUTER_MAX_BODY_BYTES``. Router statuses map to HTTP statuses in
``lambda_edge.status`` with the router's message. No routing logic here.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from pydantic import BaseModel, ValidationError

from lambda_edge.client import RouterCallError
from lambda_edge.credentials import CredentialsError
from lambda_edge.payloads import (
    GenerateBody,
    decision_dict,
    describe,
    failover_dict,
    usage_dict,
)
from lambda_edge.runtime import Runtime
from lambda_edge.settings import HTTP_API_LIMIT_S
from lambda_edge.status import http_status

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]

ROUTES = ("POST /v1/generate", "POST /v1/route", "POST /v1/chat/completions")
OPENAI_PATH = "/v1/chat/completions"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BEARER = re.compile(r"^\s*bearer\s+(\S+)\s*$", re.IGNORECASE)


class BodyError(Exception):
    """The body is unusable: 400 (``field`` named) or 413."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def _json(status: int, body: dict[str, Any], request_id: str = "") -> Response[str]:
    headers = {"x-request-id": request_id} if request_id else None
    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps(body, separators=(",", ":")),
        headers=headers,
    )


def make_http_handler(rt: Runtime) -> Handler:
    app = APIGatewayHttpResolver()
    settings = rt.settings
    tel = rt.telemetry

    def raw_body() -> bytes:
        ev = app.current_event
        body = ev.body or ""
        limit = settings.max_body_bytes
        # Base64 grows a body by 4/3: refuse obvious excess before decoding it.
        if len(body) > limit * 4 // 3 + 4:
            raise BodyError(413, _too_large(limit))
        if ev.is_base64_encoded:
            try:
                data = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                raise BodyError(400, "body: not valid base64", "body") from None
        else:
            data = body.encode()
        if len(data) > limit:
            raise BodyError(413, _too_large(limit))
        if not data:
            raise BodyError(400, "body: empty; send a JSON object", "body")
        return data

    def parse(model: type[M]) -> M:
        data = raw_body()
        try:
            return model.model_validate_json(data)
        except ValidationError as err:
            field, message = describe(err)
            raise BodyError(400, message, field) from None

    def request_id(body_id: str | None = None) -> str:
        header = app.current_event.headers.get("x-request-id", "")
        if header and _REQUEST_ID.match(header):
            return header
        ctx = app.lambda_context
        return body_id or str(getattr(ctx, "aws_request_id", "") or "")

    def call_options() -> dict[str, Any]:
        ev = app.current_event
        headers = ev.headers
        caller_key = None
        if settings.forward_authorization:
            m = _BEARER.match(headers.get("authorization", ""))
            caller_key = m.group(1) if m else None
        started = (ev.get("requestContext") or {}).get("timeEpoch")
        return {
            "timeout_s": rt.timeout_s(
                app.lambda_context,
                gateway_limit_s=HTTP_API_LIMIT_S,
                started_ms=started if isinstance(started, int) else None,
            ),
            "api_key": caller_key,
        }

    def incoming_traceparent() -> str | None:
        return app.current_event.headers.get("traceparent")

    @app.post("/v1/generate")
    def generate() -> Response[str]:
        body = parse(GenerateBody)
        rid = request_id(body.request_id)
        with tel.router_span("router.Generate", incoming_traceparent()) as tp:
            c = rt.client.complete(body.to_proto(request_id=rid), traceparent=tp, **call_options())
        tel.usage("http.generate", c.usage, request_id=c.request_id)
        return _json(
            200,
            {
                "request_id": c.request_id,
                "decision": decision_dict(c.decision) if c.decision else None,
                "text": c.text,
                "usage": usage_dict(c.usage) if c.usage else None,
                "failovers": [failover_dict(f) for f in c.failovers],
            },
            c.request_id,
        )

    @app.post("/v1/route")
    def route() -> Response[str]:
        body = parse(GenerateBody)
        rid = request_id(body.request_id)
        with tel.router_span("router.Route", incoming_traceparent()) as tp:
            decision = rt.client.route(
                body.to_proto(request_id=rid), traceparent=tp, **call_options()
            )
        return _json(200, decision_dict(decision), decision.request_id or rid)

    @app.post(OPENAI_PATH)
    def chat_completions() -> Response[str]:
        # Imported on first use: only the OpenAI route needs these models (cold start).
        from lambda_edge.openai_compat import (
            ChatCompletionRequest,
            UnsupportedParameter,
            completion_response,
        )

        body = parse(ChatCompletionRequest)
        rid = request_id()
        try:
            req = body.to_proto(request_id=rid)
        except UnsupportedParameter as exc:
            raise BodyError(400, str(exc), exc.param) from None
        with tel.router_span("router.Generate", incoming_traceparent()) as tp:
            c = rt.client.complete(req, traceparent=tp, **call_options())
        tel.usage("http.chat_completions", c.usage, request_id=c.request_id)
        return _json(200, completion_response(c, created=int(rt.clock())), c.request_id)

    def is_openai() -> bool:
        return str(app.current_event.raw_path or "").rstrip("/").endswith(OPENAI_PATH)

    @app.exception_handler(BodyError)
    def bad_body(exc: BodyError) -> Response[str]:
        code = "PAYLOAD_TOO_LARGE" if exc.status == 413 else "INVALID_ARGUMENT"
        if is_openai():
            body = openai_error(exc.status, exc.message, param=exc.field, code=code)
            return _json(exc.status, body)
        err: dict[str, Any] = {"status": code, "message": exc.message}
        if exc.field:
            err["field"] = exc.field
        return _json(exc.status, {"error": err})

    @app.exception_handler(RouterCallError)
    def router_error(exc: RouterCallError) -> Response[str]:
        status = http_status(exc.code, exc.message)
        if exc.code == "UNAUTHENTICATED" and rt.api_key.from_secret:
            rt.api_key.invalidate()  # a rotated key is read again by the next request
        tel.failure("http", exc.code, exc.message, request_id=exc.request_id)
        if is_openai():
            return _json(
                status, openai_error(status, exc.message, param=None, code=exc.code), exc.request_id
            )
        err: dict[str, Any] = {
            "status": exc.code,
            "message": exc.message,
            "request_id": exc.request_id,
        }
        body: dict[str, Any] = {"error": err}
        partial = exc.partial
        if partial is not None and (partial.decision is not None or partial.text):
            body["partial"] = {
                "decision": decision_dict(partial.decision) if partial.decision else None,
                "text": partial.text,
                "usage": usage_dict(partial.usage) if partial.usage else None,
            }
        return _json(status, body, exc.request_id)

    @app.exception_handler(CredentialsError)
    def no_credentials(exc: CredentialsError) -> Response[str]:
        tel.logger.error("router credentials unavailable", extra={"error": str(exc)})
        message = "the function cannot read its router credentials; see its logs"
        if is_openai():
            return _json(500, openai_error(500, message, param=None, code="INTERNAL"))
        return _json(500, {"error": {"status": "INTERNAL", "message": message}})

    @app.not_found
    def not_found(exc: NotFoundError) -> Response[str]:
        ev = app.current_event
        message = (
            f"no route for {ev.request_context.http.method} {ev.raw_path}; "
            f"routes: {', '.join(ROUTES)}"
        )
        return _json(404, {"error": {"status": "NOT_FOUND", "message": message}})

    @tel.logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return app.resolve(event, context)

    if tel.tracer is not None and not tel.tracer.disabled:
        return tel.tracer.capture_lambda_handler(handler, capture_response=False)  # type: ignore[no-any-return]
    return handler  # type: ignore[no-any-return]


def openai_error(status: int, message: str, *, param: str | None, code: str) -> dict[str, Any]:
    from lambda_edge.openai_compat import error_body

    return error_body(status, message, param=param, code=code)


def _too_large(limit: int) -> str:
    return (
        f"body: larger than {limit} bytes; shorten the prompt (the limit is "
        f"HYBRID_ROUTER_MAX_BODY_BYTES)"
    )
