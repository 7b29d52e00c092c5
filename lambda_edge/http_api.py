"""HTTP front-end (API Gateway HTTP API payload 2.0, and Lambda Function URLs, which use the
same shape) on the Powertools event handler.

- ``POST /v1/generate``: buffered generate: ``{request_id, decision, text, tool_calls,
  format_error, usage, failovers}``.
- ``POST /v1/route``: the decision alone (dry run, no model called).
- ``POST /v1/chat/completions``: OpenAI-compatible, non-streaming (lambda_edge.openai_compat).

A body's ``session_id`` continues a conversation the router keeps (on the OpenAI route,
the ``X-Session-Id`` header or ``hybrid_router.session_id``); the decision JSON carries
``session_id``, ``context_strategy`` and ``session_turns``.

Bodies are validated with pydantic: 400 naming the field, 413 above
``HYBRID_ROUTER_MAX_BODY_BYTES``. Router statuses map to HTTP statuses in
``lambda_edge.status`` with the router's message. No routing logic here.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from hybrid_router.client import OptionError, RouterCallError
from pydantic import BaseModel

from lambda_edge.credentials import CredentialsError
from lambda_edge.http_common import (
    BodyError,
    bearer_key,
    body_error,
    check_body,
    credentials_error,
    error_headers,
    header_request_id,
    openai_error,
    parse_body,
    router_error,
    too_large,
)
from lambda_edge.payloads import (
    GenerateBody,
    decision_dict,
    failover_dict,
    tool_call_dict,
    usage_dict,
)
from lambda_edge.runtime import Runtime
from lambda_edge.settings import HTTP_API_LIMIT_S

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]

ROUTES = ("POST /v1/generate", "POST /v1/route", "POST /v1/chat/completions")
OPENAI_PATH = "/v1/chat/completions"
__all__ = ["ROUTES", "BodyError", "make_http_handler", "openai_error"]


def _json(
    status: int,
    body: dict[str, Any],
    request_id: str = "",
    headers: dict[str, str] | None = None,
) -> Response[str]:
    extra = {"x-request-id": request_id} if request_id else {}
    extra.update(headers or {})
    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps(body, separators=(",", ":")),
        headers=extra or None,
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
            raise BodyError(413, too_large(limit))
        if ev.is_base64_encoded:
            try:
                data = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                raise BodyError(400, "body: not valid base64", "body") from None
        else:
            data = body.encode()
        return check_body(data, limit)

    def parse(model: type[M]) -> M:
        return parse_body(model, raw_body())

    def request_id(body_id: str | None = None) -> str:
        header = header_request_id(app.current_event.headers.get("x-request-id"))
        if header:
            return header
        ctx = app.lambda_context
        return body_id or str(getattr(ctx, "aws_request_id", "") or "")

    def call_options() -> dict[str, Any]:
        ev = app.current_event
        headers = ev.headers
        caller_key = None
        if settings.forward_authorization:
            caller_key = bearer_key(headers.get("authorization"))
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
                "tool_calls": [tool_call_dict(t) for t in c.tool_calls],
                "format_error": c.usage.format_error if c.usage else "",
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
            SESSION_HEADER,
            ChatCompletionRequest,
            UnsupportedParameter,
            completion_response,
        )

        body = parse(ChatCompletionRequest)
        rid = request_id()
        session = app.current_event.headers.get(SESSION_HEADER.lower())
        try:
            req = body.to_proto(request_id=rid, session_header=session)
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
        return _json(exc.status, body_error(exc, openai=is_openai()))

    @app.exception_handler(OptionError)
    def bad_option(exc: OptionError) -> Response[str]:  # a value the models let through
        return bad_body(BodyError(400, str(exc), exc.option))

    @app.exception_handler(RouterCallError)
    def failed_call(exc: RouterCallError) -> Response[str]:
        if exc.code == "UNAUTHENTICATED" and rt.api_key.from_secret:
            rt.api_key.invalidate()  # a rotated key is read again by the next request
        tel.failure("http", exc.code, exc.message, request_id=exc.request_id)
        status, body = router_error(exc, openai=is_openai())
        return _json(status, body, exc.request_id, error_headers(exc))

    @app.exception_handler(CredentialsError)
    def no_credentials(exc: CredentialsError) -> Response[str]:
        tel.logger.error("router credentials unavailable", extra={"error": str(exc)})
        return _json(500, credentials_error(openai=is_openai()))

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
