"""Token streaming over a Lambda Function URL (``InvokeMode: RESPONSE_STREAM``) through the
Lambda Web Adapter (docs/lambda.md#function-url-response-streaming-response_stream).

Lambda streams natively only from Node.js; for Python the adapter (LWA) runs as an
extension, starts this server (``lambda_edge/run_stream.sh``), waits for ``GET /healthz``
(``AWS_LWA_READINESS_CHECK_PATH``), then forwards each Function URL request to it and, with
``AWS_LWA_INVOKE_MODE=response_stream``, streams the chunked response to the caller.

Routes:

- ``POST /v1/chat/completions``: OpenAI-compatible. ``"stream": true`` answers
  ``chat.completion.chunk`` Server-Sent Events ending in ``data: [DONE]`` (the OpenAI
  SDKs' ``stream=True`` works); ``"stream": false`` answers buffered, as the HTTP function.
- ``POST /v1/generate/stream``: the router's own events (decision, delta, tool_call,
  failover, usage) as SSE; the body of ``POST /v1/generate``.
- ``GET /healthz``: readiness.

Until the first token (or tool-call fragment) nothing is sent: a bad body, the router
refusing the request or every candidate failing gets the HTTP function's status and
error body (lambda_edge.http_common). After it, a failure is an SSE error event, then
the stream ends. A caller whose connection closes (a failed write, or the socket's end
seen by a watcher thread) cancels the router call, so the backend stops decoding.

Stdlib only (http.server, one thread per request; Lambda sends one request at a time per
environment), plus what the other handlers use: the sync RouterClient (one channel per
container), the pydantic models, Powertools logs and EMF metrics. The call deadline is the
invocation's, read from the adapter's ``x-amzn-lambda-context`` header.

    python -m lambda_edge.stream_server [--host 127.0.0.1] [--port 8080]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hybrid_router.client import (
    Completion,
    GenerateStream,
    OptionError,
    RouterCallError,
    traceparent_from_xray,
    valid_traceparent,
)
from hybrid_router.v1 import router_pb2 as rpb

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
from lambda_edge.payloads import GenerateBody
from lambda_edge.runtime import Runtime
from lambda_edge.settings import Settings, SettingsError
from lambda_edge.sse import OpenAIStream, RouterEventStream, Tracker
from lambda_edge.status import http_status
from lambda_edge.telemetry import Telemetry

#: The adapter's variables this server reads too (the port it forwards to).
ENV_LWA_PORT = "AWS_LWA_PORT"
ENV_PORT = "PORT"
DEFAULT_PORT = 8080
#: The Lambda invocation context the adapter forwards (JSON: request_id, deadline, ...).
LAMBDA_CONTEXT_HEADER = "x-amzn-lambda-context"
#: Longest a Function URL invocation may run (15 min); the deadline without the header.
FUNCTION_URL_LIMIT_S = 900.0

OPENAI_PATH = "/v1/chat/completions"
GENERATE_STREAM_PATH = "/v1/generate/stream"
HEALTH_PATH = "/healthz"
ROUTES = (f"POST {OPENAI_PATH}", f"POST {GENERATE_STREAM_PATH}", f"GET {HEALTH_PATH}")
WATCH_INTERVAL_S = 0.2


class ClientGone(Exception):
    """The caller's connection closed while the answer was streaming."""


class InvocationContext:
    """The Lambda context as the adapter forwards it, shaped like Lambda's context object
    (what Runtime.timeout_s needs)."""

    def __init__(
        self,
        *,
        deadline_s: float,
        aws_request_id: str = "",
        xray_trace_id: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.deadline_s = deadline_s
        self.aws_request_id = aws_request_id
        self.xray_trace_id = xray_trace_id
        self._clock = clock

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self.deadline_s - self._clock()) * 1000), 0)

    @classmethod
    def from_header(
        cls, value: str | None, *, clock: Callable[[], float] = time.time
    ) -> InvocationContext:
        """From ``x-amzn-lambda-context``; without it (a local run), the Function URL's
        15-minute limit from now."""
        data: dict[str, Any] = {}
        if value:
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                data = parsed
        deadline_ms = data.get("deadline", data.get("deadline_ms"))
        if isinstance(deadline_ms, int | float) and deadline_ms > 0:
            deadline_s = float(deadline_ms) / 1000.0
        else:
            deadline_s = clock() + FUNCTION_URL_LIMIT_S
        rid = data.get("request_id")
        trace = data.get("xray_trace_id")
        return cls(
            deadline_s=deadline_s,
            aws_request_id=rid if isinstance(rid, str) else "",
            xray_trace_id=trace if isinstance(trace, str) else "",
            clock=clock,
        )


class DisconnectWatch:
    """Calls ``on_gone`` once if the peer closes ``sock`` (seen as end-of-file) while a
    stream is open, so a caller that left is noticed even between tokens."""

    def __init__(
        self, sock: socket.socket, on_gone: Callable[[], object], interval_s: float
    ) -> None:
        self._sock = sock
        self._on_gone = on_gone
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="disconnect-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([self._sock], [], [], self._interval_s)
                if not readable:
                    continue
                peeked = self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except (OSError, ValueError):
                peeked = b""
            if not self._stop.is_set() and not peeked:
                self._on_gone()
            return  # closed, or the peer sent more (a next request): nothing to tell

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def listen_port(env: Mapping[str, str] | None = None) -> int:
    """``AWS_LWA_PORT``, else ``PORT``, else 8080: where the adapter forwards requests."""
    env = os.environ if env is None else env
    for name in (ENV_LWA_PORT, ENV_PORT):
        raw = env.get(name, "").strip()
        if raw:
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise SettingsError(f"{name}={raw!r}: must be a port number (1-65535)")
            return int(raw)
    return DEFAULT_PORT


class StreamServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, rt: Runtime, address: tuple[str, int]) -> None:
        self.rt = rt
        super().__init__(address, StreamHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def make_stream_server(rt: Runtime, host: str = "127.0.0.1", port: int = 0) -> StreamServer:
    """A server bound to ``host:port`` (0: any free port); call ``serve_forever()``."""
    return StreamServer(rt, (host, port))


class StreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hybrid-router-stream/1"
    server: StreamServer
    streaming = False  # the SSE response has started: errors go in it from then on

    # --- plumbing ----------------------------------------------------------------------

    @property
    def rt(self) -> Runtime:
        return self.server.rt

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        self.rt.logger.debug("http", extra={"line": format % args})

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def _send_json(
        self,
        status: int,
        body: dict[str, Any],
        request_id: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if request_id:
            self.send_header("x-request-id", request_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _start_sse(self, request_id: str) -> None:
        self.streaming = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        if request_id:
            self.send_header("x-request-id", request_id)
        self.end_headers()

    def _write(self, frames: Sequence[bytes]) -> None:
        """One HTTP chunk holding ``frames``; ClientGone when the connection is closed."""
        if not frames:
            return
        data = b"".join(frames)
        try:
            self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
        except OSError as exc:
            raise ClientGone(str(exc)) from None

    def _end_chunks(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
        except OSError as exc:
            raise ClientGone(str(exc)) from None

    def _body(self) -> bytes:
        limit = self.rt.settings.max_body_bytes
        if self.headers.get("transfer-encoding", "identity").lower() != "identity":
            self.close_connection = True
            raise BodyError(411, "body: send it with a Content-Length header", "body")
        raw = self.headers.get("content-length") or "0"
        if not raw.isdigit():
            self.close_connection = True
            raise BodyError(400, f"Content-Length: {raw!r} is not a number", "body")
        length = int(raw)
        if length > limit:
            self.close_connection = True  # the unread body must not be taken for a request
            raise BodyError(413, too_large(limit))
        return check_body(self.rfile.read(length), limit)

    def _context(self) -> InvocationContext:
        return InvocationContext.from_header(
            self.headers.get(LAMBDA_CONTEXT_HEADER), clock=self.rt.clock
        )

    def _call_options(self, ctx: InvocationContext) -> dict[str, Any]:
        settings = self.rt.settings
        caller_key = None
        if settings.forward_authorization:
            caller_key = bearer_key(self.headers.get("authorization"))
        traceparent = valid_traceparent(self.headers.get("traceparent")) or (
            traceparent_from_xray(ctx.xray_trace_id or self.headers.get("x-amzn-trace-id"))
        )
        return {
            "timeout_s": self.rt.timeout_s(ctx),
            "api_key": caller_key,
            "traceparent": traceparent,
        }

    def _request_id(self, ctx: InvocationContext, body_id: str | None = None) -> str:
        return header_request_id(self.headers.get("x-request-id")) or body_id or ctx.aws_request_id

    def _failed(self, kind: str, exc: RouterCallError) -> None:
        rt = self.rt
        if exc.code == "UNAUTHENTICATED" and rt.api_key.from_secret:
            rt.api_key.invalidate()  # a rotated key is read again by the next request
        rt.telemetry.failure(kind, exc.code, exc.message, request_id=exc.request_id)

    # --- routes ------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802
        if self._path() == HEALTH_PATH:
            state = self.rt.client.connectivity
            self._send_json(200, {"status": "ok", "router": state.name if state else "unknown"})
            return
        self._not_found()

    def do_POST(self) -> None:  # noqa: N802
        path = self._path()
        openai = path == OPENAI_PATH
        try:
            if openai:
                self._chat_completions()
            elif path == GENERATE_STREAM_PATH:
                self._generate_stream()
            else:
                self.close_connection = True  # its body is not read
                self._not_found()
        except BodyError as exc:
            self._send_json(exc.status, body_error(exc, openai=openai))
        except OptionError as exc:  # a value the body's models let through
            self._send_json(400, body_error(BodyError(400, str(exc), exc.option), openai=openai))
        except RouterCallError as exc:
            self._failed("stream", exc)
            status, body = router_error(exc, openai=openai)
            self._send_json(status, body, exc.request_id, error_headers(exc))
        except CredentialsError as exc:
            self.rt.logger.error("router credentials unavailable", extra={"error": str(exc)})
            self._send_json(500, credentials_error(openai=openai))
        except OSError:
            self.close_connection = True  # the caller left before its answer was written
        except Exception:
            self.rt.logger.exception("stream server failed", extra={"path": path})
            self.close_connection = True
            if not self.streaming:
                message = "the streaming function failed; see its logs"
                body = (
                    openai_error(500, message, param=None, code="INTERNAL")
                    if openai
                    else {"error": {"status": "INTERNAL", "message": message}}
                )
                with contextlib.suppress(OSError):
                    self._send_json(500, body)
        finally:
            self.streaming = False

    def _not_found(self) -> None:
        message = f"no route for {self.command} {self.path}; routes: {', '.join(ROUTES)}"
        self._send_json(404, {"error": {"status": "NOT_FOUND", "message": message}})

    def _chat_completions(self) -> None:
        from lambda_edge.openai_compat import (
            SESSION_HEADER,
            ChatCompletionRequest,
            UnsupportedParameter,
            completion_response,
        )

        body = parse_body(ChatCompletionRequest, self._body())
        ctx = self._context()
        rid = self._request_id(ctx)
        session = self.headers.get(SESSION_HEADER)
        try:
            req = body.to_proto(request_id=rid, streaming=True, session_header=session)
        except UnsupportedParameter as exc:
            raise BodyError(400, str(exc), exc.param) from None
        created = int(self.rt.clock())
        if not body.stream:
            c = self.rt.client.complete(req, **self._call_options(ctx))
            self.rt.telemetry.usage("stream.chat_completions", c.usage, request_id=c.request_id)
            self._send_json(200, completion_response(c, created=created), c.request_id)
            return
        include_usage = body.include_usage
        self._relay(
            req,
            ctx,
            "stream.chat_completions",
            openai=True,
            formatter=lambda request_id, t: OpenAIStream(
                request_id, created=created, include_usage=include_usage, tracker=t
            ),
        )

    def _generate_stream(self) -> None:
        body = parse_body(GenerateBody, self._body())
        ctx = self._context()
        req = body.to_proto(request_id=self._request_id(ctx, body.request_id))
        self._relay(
            req,
            ctx,
            "stream.generate",
            openai=False,
            formatter=lambda request_id, t: RouterEventStream(request_id, tracker=t),
        )

    # --- the stream --------------------------------------------------------------------

    def _relay(
        self,
        req: rpb.GenerateRequest,
        ctx: InvocationContext,
        kind: str,
        *,
        openai: bool,
        formatter: Callable[[str, Tracker], OpenAIStream | RouterEventStream],
    ) -> None:
        """Hold events until the first token (or the end), then start the SSE response and
        relay the rest. Errors before it propagate to do_POST (a JSON error)."""
        rt = self.rt
        log = rt.logger
        t = Tracker()
        gone = threading.Event()
        stream = rt.client.generate(req, **self._call_options(ctx))

        def on_gone() -> None:
            gone.set()
            stream.cancel()  # the router stops the backend; its slot is freed

        watch = DisconnectWatch(self.connection, on_gone, WATCH_INTERVAL_S)
        fmt: OpenAIStream | RouterEventStream | None = None
        try:
            with stream:
                held = self._until_first_token(stream, t)
                if gone.is_set():
                    raise ClientGone("before the first token")
                fmt = formatter(stream.request_id, t)
                self._start_sse(stream.request_id)
                for ev, ev_kind in held:
                    self._write(fmt.add(ev, ev_kind))
                for ev in stream:
                    self._write(fmt.add(ev, t.see(ev)))
                if gone.is_set():
                    raise ClientGone("mid-stream")
                # Logged before the last bytes: the router call is complete either way.
                rt.telemetry.usage(kind, t.usage, request_id=stream.request_id)
                log.info(
                    "stream relayed",
                    extra={
                        "request_id": stream.request_id,
                        "deltas": t.deltas,
                        "chars": t.chars,
                        "tool_calls": len(t.calls.calls()),
                    },
                )
                self._write(fmt.end())
                self._end_chunks()
        except RouterCallError as exc:
            if gone.is_set():
                self._gone(stream, t)
                return
            if fmt is None:  # nothing sent yet: do_POST answers with the status
                exc.partial = Completion(
                    request_id=stream.request_id,
                    decision=t.decision,
                    usage=t.usage,
                    failovers=list(t.failovers),
                )
                raise
            self._failed(kind, exc)
            try:
                self._write(fmt.error(exc.code, http_status(exc.code, exc.message), exc.message))
                self._end_chunks()
            except ClientGone:
                self.close_connection = True
            return
        except ClientGone:
            stream.cancel()
            self._gone(stream, t)
            return
        finally:
            watch.stop()

    @staticmethod
    def _until_first_token(
        stream: GenerateStream, t: Tracker
    ) -> list[tuple[rpb.GenerateEvent, str]]:
        held: list[tuple[rpb.GenerateEvent, str]] = []
        for ev in stream:
            ev_kind = t.see(ev)
            held.append((ev, ev_kind))
            if ev_kind in ("delta", "tool_call"):
                break
        return held

    def _gone(self, stream: GenerateStream, t: Tracker) -> None:
        self.close_connection = True
        self.rt.logger.info(
            "client gone mid-stream; router call cancelled",
            extra={"request_id": stream.request_id, "deltas": t.deltas},
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lambda_edge.stream_server",
        description="Streaming HTTP server for a Lambda Function URL behind the Lambda Web "
        "Adapter (docs/lambda.md). Reads the HYBRID_ROUTER_* variables of the other "
        "functions; the port from AWS_LWA_PORT, else PORT, else 8080.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: AWS_LWA_PORT)")
    args = p.parse_args(argv)
    try:
        settings = Settings.from_env()
        port = args.port if args.port is not None else listen_port()
    except SettingsError as exc:
        p.exit(2, f"error: {exc}\n")
    # The X-Ray SDK's Lambda mode reads a per-invocation variable that only the Python
    # runtime sets; behind the adapter the trace header comes with each request instead.
    telemetry = Telemetry(
        service=settings.service, namespace=settings.metrics_namespace, tracing=False
    )
    rt = Runtime(settings, telemetry=telemetry)
    rt.client.pre_connect()
    server = make_stream_server(rt, args.host, port)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)  # the adapter's graceful shutdown
    rt.logger.info("stream server listening", extra={"host": args.host, "port": server.port})
    print(f"READY {server.port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        rt.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
