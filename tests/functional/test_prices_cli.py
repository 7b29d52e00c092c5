"""``hybrid-router prices``: from a config file, and from a running router (real gRPC)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from rtutil import ms_backend

from hybrid_router_cli.main import main
from serving.engines.scripted import ScriptedEngine

HOSTED_SOURCE = "price page 2026-11-28"


def _backends(ms_addr: str = "127.0.0.1:1") -> list[dict[str, Any]]:
    return [
        {
            "name": "claude",
            "tier": "hosted",
            "kind": "anthropic",
            "model": "claude-x",
            "api_key_env": "ANTHROPIC_API_KEY",
            "context_window": 200_000,
            "cost": {
                "input_per_mtok_usd": 3.0,
                "output_per_mtok_usd": 15.0,
                "source": HOSTED_SOURCE,
            },
        },
        {
            "name": "bedrock",
            "tier": "hosted",
            "kind": "bedrock",
            "model": "anthropic.claude-x-v1:0",
            "region": "us-east-1",
            "context_window": 200_000,
        },
        ms_backend(
            "gpu-a",
            "gpu",
            ms_addr,
            cost={
                "gpu_hourly_usd": 3.6,
                "gpu_throughput_tokens_per_s": 1000,
                "gpu_utilization": 0.5,
                "gpu_prefill_ratio": 0.1,
                "source": "our reserved-instance rate",
            },
        ),
        ms_backend("edge-a", "edge", ms_addr, cost={"edge_per_mtok_usd": 0.02}),
    ]


def _check(backends: list[dict[str, Any]]) -> None:
    by_name = {b["name"]: b for b in backends}
    claude = by_name["claude"]
    assert (claude["effective_input_per_mtok_usd"], claude["effective_output_per_mtok_usd"]) == (
        3.0,
        15.0,
    )
    assert claude["source"] == HOSTED_SOURCE and claude["priced"]
    gpu = by_name["gpu-a"]
    # 3.6 $/h / 3600 s / (1000 tok/s * 0.5) = 2e-6 $/token = 2 $/1M; prompt tokens x0.1
    assert gpu["effective_output_per_mtok_usd"] == pytest.approx(2.0)
    assert gpu["effective_input_per_mtok_usd"] == pytest.approx(0.2)
    assert gpu["source"] == "our reserved-instance rate"
    assert by_name["edge-a"]["effective_output_per_mtok_usd"] == 0.02
    assert not by_name["bedrock"]["priced"] and by_name["bedrock"]["source"] == ""


def test_prices_from_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"backends": _backends()}))

    assert main(["prices", "--config", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["from"] == f"config {path}"
    _check(report["backends"])

    assert main(["prices", "--config", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "none given" in out
    assert "no price for bedrock" in out and "ships no default prices" in out


def test_the_config_path_can_come_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"backends": _backends()}))
    monkeypatch.setenv("HYBRID_ROUTER_CONFIG", str(path))
    monkeypatch.setenv("HYBRID_ROUTER__BACKENDS__claude__COST__OUTPUT_PER_MTOK_USD", "16")
    assert main(["prices", "--json"]) == 0
    (claude,) = [
        b for b in json.loads(capsys.readouterr().out)["backends"] if b["name"] == "claude"
    ]
    assert claude["output_per_mtok_usd"] == 16.0  # environment overrides apply, as for serve


def test_a_bad_config_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"backends": [{"name": "x", "kind": "bedrock"}]}))
    assert main(["prices", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "backends[0](x)" in err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "hybrid-router prices" in out and "--json" in out


async def test_prices_from_a_running_router(
    model_server: Any,
    start_router: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    addr = await model_server(ScriptedEngine())
    router = await start_router(_backends(addr))
    code = await asyncio.to_thread(
        main, ["prices", "--address", f"127.0.0.1:{router.port}", "--json"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["from"] == f"router 127.0.0.1:{router.port}"
    _check(report["backends"])
