"""Bytes that are not a valid request message (issue: UNKNOWN "Unexpected DecodeError" and
a traceback per request) end with INVALID_ARGUMENT and a one-line reason, are logged as at
most one WARNING per interval, and count in the request log and metrics."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rtutil import ms_backend

# A truncated length-delimited field (tag 1, wire type 2, length 100, 2 bytes of data).
TRUNCATED = b"\x0a\x64ab"
# A tag whose varint never ends (11 continuation bytes).
ENDLESS_VARINT = b"\xff" * 11
# An invalid tag (field number 0).
BAD_TAG = b"\x00\x00\x00"

UNARY = [
    "/hybrid_router.v1.InferenceRouter/Route",
    "/hybrid_router.v1.InferenceRouter/ListBackends",
    "/hybrid_router.v1.SessionService/GetSession",
    "/hybrid_router.v1.SessionService/CreateSession",
]


def _ident(b: bytes) -> bytes:
    return b


async def _unary(ch: grpc.aio.Channel, method: str, body: bytes) -> grpc.aio.AioRpcError:
    call = ch.unary_unary(method, request_serializer=_ident, response_deserializer=_ident)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(body, timeout=10)
    return err.value


async def test_undecodable_bytes_are_invalid_argument_on_every_rpc(
    start_router: Any, caplog: pytest.LogCaptureFixture
) -> None:
    router = await start_router(
        [ms_backend("gpu-a", "gpu", "127.0.0.1:9")],
        telemetry={"metrics": {"address": "127.0.0.1:0"}},
    )
    caplog.set_level(logging.INFO)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as ch:
        gen = ch.unary_stream(
            "/hybrid_router.v1.InferenceRouter/Generate",
            request_serializer=_ident,
            response_deserializer=_ident,
        )
        for body in (TRUNCATED, ENDLESS_VARINT, BAD_TAG):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in gen(body, timeout=10):
                    pass
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = err.value.details() or ""
            assert details.startswith("the request is not a valid GenerateRequest message")
            assert "\n" not in details
        for method in UNARY:
            e = await _unary(ch, method, TRUNCATED)
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert "is not a valid" in (e.details() or "")
        # The EdgeLink stream: a device message that does not decode ends the link cleanly.
        link = ch.stream_stream(
            "/hybrid_router.v1.EdgeLink/Connect",
            request_serializer=_ident,
            response_deserializer=_ident,
        )
        call = link(timeout=10)
        await call.write(TRUNCATED)
        await call.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        assert err.value.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.UNIMPLEMENTED,  # no edge hub on this router
        )
        # The router is fine afterwards.
        ok = ch.unary_unary(
            "/hybrid_router.v1.InferenceRouter/ListBackends",
            request_serializer=_ident,
            response_deserializer=_ident,
        )
        assert await ok(b"", timeout=10) is not None

    tracebacks = [r for r in caplog.records if r.exc_info]
    assert tracebacks == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "malformed" in r.msg]
    assert len(warnings) == 1  # one per interval, however many arrive
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{router.guard.metrics_port}/metrics")).text
    counted = {
        s.labels["method"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "hybrid_router_requests_total" and s.labels["code"] == "INVALID_ARGUMENT"
    }
    assert counted["Generate"] == 3
    assert counted["Route"] == 1 and counted["GetSession"] == 1
    logged = [r for r in caplog.records if r.name == "router.requests"]
    assert sum("INVALID_ARGUMENT" in r.getMessage() for r in logged) >= 7


async def test_the_model_server_answers_undecodable_bytes_with_invalid_argument(
    model_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from serving.engines.scripted import ScriptedEngine

    address = await model_server(ScriptedEngine())
    async with grpc.aio.insecure_channel(address) as ch:
        for method in ("Generate", "Info"):
            path = f"/hybrid_router.v1.ModelService/{method}"
            if method == "Generate":
                call = ch.unary_stream(
                    path, request_serializer=_ident, response_deserializer=_ident
                )
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for _ in call(TRUNCATED, timeout=10):
                        pass
                e = err.value
            else:
                e = await _unary(ch, path, TRUNCATED)
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert "is not a valid" in (e.details() or "")
    assert not [r for r in caplog.records if r.exc_info]
