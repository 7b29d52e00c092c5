"""Helpers for functional router tests (import as ``from rtutil import ...``)."""

from __future__ import annotations

from typing import Any

import grpc
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import router_pb2_grpc
from hybrid_router.v1 import types_pb2 as tpb
from testkit import collect  # noqa: F401  (re-exported: the router tests import it from here)


def ms_backend(name: str, tier: str, endpoint: str, **overrides: Any) -> dict[str, Any]:
    """A model_service backend entry for router.yaml."""
    entry: dict[str, Any] = {
        "name": name,
        "tier": tier,
        "kind": "model_service",
        "endpoint": endpoint,
        "model": "scripted",
        "model_family": "scripted",
        "context_window": 8192,
        "max_concurrency": 4,
        "data_classes": ["public", "internal", "restricted"],
        "priors": {"ttft_ms": 50, "decode_tokens_per_s": 100},
    }
    entry.update(overrides)
    return entry


def openai_backend(
    base_url: str, name: str, price: float = 1.0, **overrides: Any
) -> dict[str, Any]:
    """A hosted ``openai`` backend entry for router.yaml whose model is its name (which
    picks the scenario of tests/functional/openai_wire.py's server)."""
    entry: dict[str, Any] = {
        "name": name,
        "tier": "hosted",
        "kind": "openai",
        "endpoint": base_url,
        "model": name,
        "context_window": 8192,
        "priors": {"ttft_ms": 50, "decode_tokens_per_s": 100},
        "cost": {"input_per_mtok_usd": price, "output_per_mtok_usd": price},
        "timeout_s": 10,
    }
    entry.update(overrides)
    return entry


def stub_for(channel: grpc.aio.Channel) -> router_pb2_grpc.InferenceRouterStub:
    return router_pb2_grpc.InferenceRouterStub(channel)


def user_request(text: str = "alpha beta gamma", **fields: Any) -> rpb.GenerateRequest:
    return rpb.GenerateRequest(
        messages=[tpb.ChatMessage(role=tpb.ROLE_USER, content=text)], **fields
    )


def kinds(events: list[rpb.GenerateEvent]) -> list[str]:
    return [ev.WhichOneof("event") for ev in events]


def shape(events: list[rpb.GenerateEvent]) -> list[str]:
    """Event kinds with each run of deltas folded into one ``"delta+"``.

    The router merges deltas while a reader is behind (server.coalesce_deltas), so on a
    busy machine three tokens may arrive as one, two or three messages: tests that are not
    about coalescing assert on this shape plus the text and token counts.
    """
    out: list[str] = []
    for kind in kinds(events):
        kind = "delta+" if kind == "delta" else kind
        if not (kind == "delta+" and out and out[-1] == "delta+"):
            out.append(kind)
    return out


def delta_tokens(events: list[rpb.GenerateEvent]) -> int:
    return sum(ev.delta.tokens for ev in events if ev.WhichOneof("event") == "delta")


def text_of(events: list[rpb.GenerateEvent]) -> str:
    return "".join(ev.delta.text for ev in events if ev.WhichOneof("event") == "delta")
