"""Real Lambda event shapes (API Gateway HTTP API 2.0, Function URL, WebSocket, SQS), the
runtime's context object, and small helpers for the Lambda tests: a local Function URL
stand-in for the HTTP handler, an SSE reader, the WebSocket frames moto recorded.

Shapes follow the AWS documentation's examples field for field; times are "now" so the
handlers' deadline arithmetic sees what it would see in Lambda.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_ID = "a1b2c3d4e5"
ACCOUNT = "123456789012"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class LambdaContext:
    """The attributes and method of the Lambda runtime's context object."""

    timeout_s: float = 30.0
    function_name: str = "hybrid-router-test"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/hybrid-router-test"
    log_stream_name: str = "2025/01/01/[$LATEST]0123456789abcdef"
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        left = self.timeout_s - (time.monotonic() - self.started)
        return max(int(left * 1000), 0)


def _http_request_context(method: str, path: str, *, domain: str, api_id: str) -> dict[str, Any]:
    return {
        "accountId": ACCOUNT,
        "apiId": api_id,
        "domainName": domain,
        "domainPrefix": domain.split(".")[0],
        "http": {
            "method": method,
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": "203.0.113.10",
            "userAgent": "pytest",
        },
        "requestId": base64.b64encode(uuid.uuid4().bytes[:10]).decode(),
        "routeKey": f"{method} {path}",
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
        "timeEpoch": now_ms(),
    }


def http_event(
    path: str,
    body: Any = None,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    base64_body: bool = False,
    raw: str | bytes | None = None,
) -> dict[str, Any]:
    """API Gateway HTTP API, payload format 2.0 (headers lower-cased by the gateway)."""
    domain = f"{API_ID}.execute-api.{REGION}.amazonaws.com"
    data: bytes | None
    if raw is not None:
        data = raw.encode() if isinstance(raw, str) else raw
    else:
        data = None if body is None else json.dumps(body).encode()
    hdrs = {
        "accept": "*/*",
        "content-type": "application/json",
        "host": domain,
        "user-agent": "pytest",
        "x-amzn-trace-id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}",
        "x-forwarded-for": "203.0.113.10",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    if data is not None:
        hdrs["content-length"] = str(len(data))
    hdrs.update({k.lower(): v for k, v in (headers or {}).items()})
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": hdrs,
        "requestContext": _http_request_context(method, path, domain=domain, api_id=API_ID),
        "isBase64Encoded": base64_body,
    }
    if data is not None:
        event["body"] = base64.b64encode(data).decode() if base64_body else data.decode()
    return event


def function_url_event(path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
    """A Lambda Function URL event (AuthType AWS_IAM): payload 2.0, route key $default."""
    event = http_event(path, body, **kw)
    url_id = "abcdefghijklmnopqrstuvwxyz012345"
    domain = f"{url_id}.lambda-url.{REGION}.on.aws"
    event["routeKey"] = "$default"
    event["headers"]["host"] = domain
    rc = event["requestContext"]
    rc.update(
        apiId=url_id,
        domainName=domain,
        domainPrefix=url_id,
        routeKey="$default",
        requestId=str(uuid.uuid4()),
        authorizer={
            "iam": {
                "accessKey": "AKIAIOSFODNN7EXAMPLE",
                "accountId": ACCOUNT,
                "callerId": "AIDACKCEVSQ6C2EXAMPLE",
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": f"arn:aws:iam::{ACCOUNT}:user/orchestrator",
                "userId": "AIDACKCEVSQ6C2EXAMPLE",
            }
        },
    )
    return event


def _ws_context(route: str, event_type: str, connection_id: str, stage: str) -> dict[str, Any]:
    return {
        "routeKey": route,
        "eventType": event_type,
        "extendedRequestId": base64.b64encode(uuid.uuid4().bytes[:10]).decode(),
        "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
        "messageDirection": "IN",
        "stage": stage,
        "connectedAt": now_ms() - 1000,
        "requestTimeEpoch": now_ms(),
        "identity": {"userAgent": "pytest", "sourceIp": "203.0.113.10"},
        "requestId": base64.b64encode(uuid.uuid4().bytes[:10]).decode(),
        "domainName": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
        "connectionId": connection_id,
        "apiId": API_ID,
    }


def _ws_headers() -> tuple[dict[str, str], dict[str, list[str]]]:
    h = {
        "Host": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
        "Sec-WebSocket-Key": base64.b64encode(uuid.uuid4().bytes).decode(),
        "Sec-WebSocket-Version": "13",
        "X-Amzn-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}",
        "X-Forwarded-For": "203.0.113.10",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
    return h, {k: [v] for k, v in h.items()}


def ws_connect_event(connection_id: str, stage: str = "prod") -> dict[str, Any]:
    headers, multi = _ws_headers()
    return {
        "headers": headers,
        "multiValueHeaders": multi,
        "requestContext": _ws_context("$connect", "CONNECT", connection_id, stage),
        "isBase64Encoded": False,
    }


def ws_disconnect_event(connection_id: str, stage: str = "prod") -> dict[str, Any]:
    headers, multi = _ws_headers()
    rc = _ws_context("$disconnect", "DISCONNECT", connection_id, stage)
    rc.update(disconnectStatusCode=1001, disconnectReason="Going away")
    return {
        "headers": headers,
        "multiValueHeaders": multi,
        "requestContext": rc,
        "isBase64Encoded": False,
    }


def ws_message_event(
    connection_id: str, body: Any, *, stage: str = "prod", raw: str | None = None
) -> dict[str, Any]:
    rc = _ws_context("$default", "MESSAGE", connection_id, stage)
    rc["messageId"] = base64.b64encode(uuid.uuid4().bytes[:10]).decode()
    return {
        "requestContext": rc,
        "body": raw if raw is not None else json.dumps(body),
        "isBase64Encoded": False,
    }


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS poller builds from ReceiveMessage results."""
    records = []
    for m in messages:
        attrs = m.get("Attributes", {})
        records.append(
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {
                    "ApproximateReceiveCount": attrs.get("ApproximateReceiveCount", "1"),
                    "SentTimestamp": attrs.get("SentTimestamp", str(now_ms())),
                    "SenderId": attrs.get("SenderId", "AIDAIENQZJOLO23YVJ4VO"),
                    "ApproximateFirstReceiveTimestamp": attrs.get(
                        "ApproximateFirstReceiveTimestamp", str(now_ms())
                    ),
                },
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody") or hashlib.md5(m["Body"].encode()).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}


def prompt_body(text: str = "alpha beta gamma", **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **fields}


# --- local stand-ins and readers ----------------------------------------------------------


class FunctionUrlEmulator:
    """A local HTTP server that turns requests into Function URL events for the handler
    and the handler's result back into HTTP, as Lambda's Function URL does."""

    def __init__(self, handler: Callable[[dict[str, Any], Any], dict[str, Any]]) -> None:
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                event = function_url_event(
                    self.path,
                    raw=raw,
                    headers={k.lower(): v for k, v in self.headers.items()},
                )
                result = outer.handler(event, LambdaContext())
                data = result.get("body", "").encode()
                self.send_response(result["statusCode"])
                for k, v in (result.get("headers") or {}).items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.handler = handler
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), H)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event, per the SSE format: blank-line separated."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
            else:
                raise AssertionError(f"not an SSE line: {line!r}")
        out.append((name, "\n".join(data)))
    return out


#: API Gateway's WebSocket frame limit.
FRAME_LIMIT = 32 * 1024


def posted_frames(recording: list[dict[str, Any]], connection_id: str) -> list[dict[str, Any]]:
    """The frames moto received for one connection, one per post_to_connection call."""
    frames = []
    for r in recording:
        if r["method"] == "POST" and r["url"].endswith(f"/@connections/{connection_id}"):
            body = r["body"]
            data = base64.b64decode(body) if r.get("body_encoded") else body.encode()
            assert len(data) <= FRAME_LIMIT
            frames.append(json.loads(data))
    return frames
