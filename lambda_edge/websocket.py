"""WebSocket front-end (API Gateway WebSocket API): ``$connect``, ``$disconnect`` and
``$default``, relaying the router's stream to the connection with ``post_to_connection``.

A message is ``{"action": "generate" | "route", "request": {...GenerateBody...}}``. The
answer comes back as frames (lambda_edge.ws_frames): the decision, coalesced deltas and
tool-call fragments, failovers, then usage (with the reassembled tool calls), or an
error frame naming the field / the router's status. A client
that went away (``GoneException``) cancels the router call at once, so the backend stops
decoding. Events are validated with the Powertools parser models.

One session per connection by default: a message without ``request.session_id`` continues
the router session :func:`connection_session_id` names (``ws-<connection id>``), so a
chat over one socket is multi-turn (each message the new turn only) while the function
keeps no state; ``"session": false`` sends a message without one. Nothing is deleted on
``$disconnect``: the session expires after the router's ``sessions.ttl_s`` since its last
turn.

The Management API endpoint is ``https://{domainName}/{stage}`` from the event (the
execute-api host when the API sits behind a custom domain); when ``AWS_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI`` is set (local emulators), boto3 uses it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayWebSocketConnectEventModel,
    APIGatewayWebSocketDisconnectEventModel,
    APIGatewayWebSocketMessageEventModel,
)
from hybrid_router.client import OptionError, RouterCallError
from pydantic import ValidationError

from lambda_edge.credentials import CredentialsError
from lambda_edge.payloads import WsMessage, describe
from lambda_edge.runtime import Runtime
from lambda_edge.settings import WEBSOCKET_LIMIT_S
from lambda_edge.status import http_status
from lambda_edge.ws_frames import FrameBuilder

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI", "AWS_ENDPOINT_URL")
#: Prefix of the session a connection keeps by default.
SESSION_PREFIX = "ws-"
_BASE64ISH = re.compile(r"[A-Za-z0-9+/=]{1,125}")
#: API Gateway's connection ids are base64 (``L0SM9cOFvHcCIhw=``); a session id may not
#: hold ``+ / =``, so they are written as ``- _ .`` (which base64 never uses: one id, one
#: session).
_TO_SESSION_ALPHABET = str.maketrans("+/=", "-_.")


def connection_session_id(connection_id: str) -> str:
    """The session a connection keeps: ``ws-<connection id>`` in the session id alphabet;
    an id of any other shape (never seen from API Gateway) as ``ws:<sha-256 prefix>``,
    which no base64 id can give (``:`` is not in the mapped alphabet)."""
    if _BASE64ISH.fullmatch(connection_id):
        return SESSION_PREFIX + connection_id.translate(_TO_SESSION_ALPHABET)
    return "ws:" + hashlib.sha256(connection_id.encode()).hexdigest()[:40]


def message_session_id(msg: WsMessage, connection_id: str) -> str:
    """The session a message goes to: ``request.session_id``, else the connection's,
    else none (``"session": false``)."""
    if msg.request.session_id:
        return msg.request.session_id
    return connection_session_id(connection_id) if msg.session else ""


class ClientGone(Exception):
    """The WebSocket client disconnected (410 GoneException)."""


def management_endpoint(
    domain: str, stage: str, api_id: str, region: str, env: dict[str, str] | None = None
) -> str | None:
    """The Management API endpoint for a connection, or None to let boto3's endpoint
    configuration decide (AWS_ENDPOINT_URL*)."""
    env = dict(os.environ) if env is None else env
    if any(env.get(v) for v in ENDPOINT_ENV):
        return None
    if domain.endswith(".amazonaws.com"):
        return f"https://{domain}/{stage}"
    return f"https://{api_id}.execute-api.{region}.amazonaws.com/{stage}"


class Poster:
    """post_to_connection for one connection; counts posts and bytes."""

    def __init__(self, client: Any, connection_id: str) -> None:
        self._client = client
        self.connection_id = connection_id
        self.posts = 0
        self.bytes = 0

    def __call__(self, data: bytes) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.post_to_connection(ConnectionId=self.connection_id, Data=data)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "GoneException":
                raise ClientGone(self.connection_id) from exc
            raise
        self.posts += 1
        self.bytes += len(data)


def make_ws_handler(rt: Runtime) -> Handler:
    settings = rt.settings
    tel = rt.telemetry
    log = tel.logger

    def on_message(event: dict[str, Any], context: Any) -> dict[str, Any]:
        ev = parse(event=event, model=APIGatewayWebSocketMessageEventModel)
        rc = ev.request_context
        region = os.environ.get("AWS_REGION", "us-east-1")
        endpoint = management_endpoint(rc.domain_name, rc.stage, rc.api_id, region)
        post = Poster(rt.aws("apigatewaymanagementapi", endpoint_url=endpoint), rc.connection_id)
        rid = str(getattr(context, "aws_request_id", "") or "")

        def send_error(fb: FrameBuilder, code: str, status: int, message: str) -> None:
            try:
                for frame in fb.error(code, status, message):
                    post(frame)
            except ClientGone:
                log.info("client gone before the error frame", extra={"request_id": fb.request_id})

        raw = ev.body if isinstance(ev.body, str) else ""
        try:
            data = base64.b64decode(raw, validate=True) if ev.is_base64_encoded else raw.encode()
        except (binascii.Error, ValueError):
            data = b""
        fb = FrameBuilder(
            rid,
            max_frame_bytes=settings.ws_max_frame_bytes,
            flush_s=settings.ws_flush_s,
            clock=rt.clock,
        )
        if len(data) > settings.max_body_bytes:
            send_error(
                fb,
                "PAYLOAD_TOO_LARGE",
                413,
                f"message larger than {settings.max_body_bytes} bytes; shorten the prompt",
            )
            return {"statusCode": 413}
        try:
            msg = WsMessage.model_validate_json(data or b"{}")
        except ValidationError as err:
            _, message = describe(err)
            send_error(fb, "INVALID_ARGUMENT", 400, message)
            return {"statusCode": 400}
        rid = msg.request.request_id or rid
        fb.request_id = rid
        session_id = message_session_id(msg, rc.connection_id)
        try:
            req = msg.request.to_proto(request_id=rid, session_id=session_id)
        except OptionError as exc:  # a value the models let through
            send_error(fb, "INVALID_ARGUMENT", 400, f"request.{exc}")
            return {"statusCode": 400}
        started = event.get("requestContext", {}).get("requestTimeEpoch")
        timeout = rt.timeout_s(
            context,
            gateway_limit_s=WEBSOCKET_LIMIT_S,
            started_ms=started if isinstance(started, int) else None,
        )
        try:
            with tel.router_span(f"router.{msg.action}") as tp:
                if msg.action == "route":
                    decision = rt.client.route(req, timeout_s=timeout, traceparent=tp)
                    post(fb.decision_frame(decision))
                    return {"statusCode": 200}
                return relay(rt, fb, post, req, timeout, tp)
        except ClientGone:
            log.info("client gone", extra={"request_id": rid, "posts": post.posts})
            return {"statusCode": 410}
        except RouterCallError as exc:
            if exc.code == "UNAUTHENTICATED" and rt.api_key.from_secret:
                rt.api_key.invalidate()
            tel.failure("websocket", exc.code, exc.message, request_id=exc.request_id or rid)
            send_error(fb, exc.code, http_status(exc.code, exc.message), exc.message)
            return {"statusCode": 200}
        except CredentialsError as exc:
            log.error("router credentials unavailable", extra={"error": str(exc)})
            send_error(fb, "INTERNAL", 500, "the function cannot read its router credentials")
            return {"statusCode": 500}

    def relay(
        rt: Runtime, fb: FrameBuilder, post: Poster, req: Any, timeout: float, tp: str | None
    ) -> dict[str, Any]:
        usage = None
        with rt.client.generate(req, timeout_s=timeout, traceparent=tp) as stream:
            try:
                for ev in stream:
                    if ev.WhichOneof("event") == "usage":
                        usage = ev.usage
                    for frame in fb.add(ev):
                        post(frame)
                for frame in fb.flush():
                    post(frame)
            except ClientGone:
                stream.cancel()  # the router stops the backend; its slot is freed
                log.info(
                    "client gone mid-stream; router call cancelled",
                    extra={"request_id": stream.request_id, "posts": post.posts},
                )
                return {"statusCode": 410}
        tel.usage("websocket", usage, request_id=stream.request_id)
        log.info(
            "stream relayed",
            extra={"request_id": stream.request_id, "posts": post.posts, "bytes": post.bytes},
        )
        return {"statusCode": 200}

    @log.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        route = event.get("requestContext", {}).get("routeKey", "")
        try:
            if route == "$connect":
                ev = parse(event=event, model=APIGatewayWebSocketConnectEventModel)
                log.info("connected", extra={"connection": ev.request_context.connection_id})
                return {"statusCode": 200}
            if route == "$disconnect":
                dis = parse(event=event, model=APIGatewayWebSocketDisconnectEventModel)
                log.info(
                    "disconnected",
                    extra={
                        "connection": dis.request_context.connection_id,
                        "reason": dis.request_context.disconnect_reason,
                    },
                )
                return {"statusCode": 200}
            return on_message(event, context)
        except ValidationError as err:  # not an API Gateway WebSocket event
            _, message = describe(err, prefix="event")
            log.error("malformed WebSocket event", extra={"error": message})
            return {"statusCode": 400, "body": message}

    if tel.tracer is not None and not tel.tracer.disabled:
        return tel.tracer.capture_lambda_handler(handler, capture_response=False)  # type: ignore[no-any-return]
    return handler  # type: ignore[no-any-return]
