"""``hybrid-router check``: a config is checked as ``serve`` would find it, without serving.

Each failing check is shown on a real file (keys files, PEM files from a test CA, env vars);
``--probe`` dials a real ModelService server on 127.0.0.1 (port 0), gRPC servers that do
not serve ModelService (a real router, a bare health-only server), real local HTTP servers
answering model lists, error pages and 401s, and a port nobody listens on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2_grpc
from httpwire import Recorded, WireHTTPServer, send_whole
from rtutil import ms_backend
from secutil import make_keys, make_pki

from hybrid_router_cli.commands.check import FAIL, OK, WARN, Checker
from hybrid_router_cli.main import main
from router.config import parse_config
from serving.engines.scripted import ScriptedEngine

SOURCE = "test price page 2026-01-01"


def _priced(name: str = "gpu-1", endpoint: str = "127.0.0.1:1", **overrides: Any) -> dict:
    entry = ms_backend(
        name,
        "gpu",
        endpoint,
        cost={"gpu_hourly_usd": 1.0, "gpu_throughput_tokens_per_s": 100, "source": SOURCE},
    )
    entry.update(overrides)
    return entry


def _good(**sections: Any) -> dict[str, Any]:
    """A config that passes every check: loopback, one priced ModelService backend."""
    config: dict[str, Any] = {"server": {"address": "127.0.0.1:0"}, "backends": [_priced()]}
    config.update(sections)
    return config


def _write(tmp_path: Path, config: dict[str, Any]) -> str:
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def check_json(tmp_path: Path, config: dict[str, Any], capsys: Any, *extra: str) -> tuple:
    """(exit status, report) of ``hybrid-router check --json`` on ``config``."""
    rc = main(["check", "--config", _write(tmp_path, config), "--json", *extra])
    out = capsys.readouterr().out
    return rc, json.loads(out)


async def check_json_async(tmp_path: Path, config: dict[str, Any], capsys: Any, *extra: str):
    """The same from a test with a running loop (the command owns its own loop)."""
    argv = ["check", "--config", _write(tmp_path, config), "--json", *extra]
    rc = await asyncio.to_thread(main, argv)
    return rc, json.loads(capsys.readouterr().out)


def rows(report: dict[str, Any], check: str) -> list[dict[str, str]]:
    found = [c for c in report["checks"] if c["check"] == check]
    assert found, f"no {check!r} row in {[c['check'] for c in report['checks']]}"
    return found


def row(report: dict[str, Any], check: str) -> dict[str, str]:
    (only,) = rows(report, check)
    return only


def failures(report: dict[str, Any]) -> list[dict[str, str]]:
    return [c for c in report["checks"] if c["result"] == FAIL]


# --- the whole command ------------------------------------------------------------------------


def test_a_good_config_exits_0_with_a_table(tmp_path, capsys):
    rc = main(["check", "--config", _write(tmp_path, _good())])
    out = capsys.readouterr().out
    assert rc == 0
    assert "check " in out and "routable gpu-1" in out
    assert "0 fail" in out


def test_the_table_shows_config_keys_verbatim(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line per row: the key is not wrapped
    config = _good(backends=[_priced(context_window=64)], policy={"default_max_output_tokens": 256})
    assert main(["check", "--config", _write(tmp_path, config)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "backends[gpu-1].context_window" in out


def test_a_good_config_as_json(tmp_path, capsys):
    rc, report = check_json(tmp_path, _good(), capsys)
    assert rc == 0
    assert report["ok"] is True and report["counts"]["fail"] == 0
    assert row(report, "config")["result"] == OK
    # No keys on loopback is allowed, and said so: serve prints the same notice.
    exposure = row(report, "exposure")
    assert exposure["result"] == WARN and "auth is OFF" in exposure["detail"]
    assert row(report, "prices")["result"] == OK
    assert row(report, "routable gpu-1")["result"] == OK
    assert row(report, "backend gpu-1")["result"] == OK


def test_help_documents_the_exit_statuses(capsys):
    assert main(["check", "--help"]) == 0
    out = capsys.readouterr().out
    for line in ("0  no check failed", "1  at least one check failed", "2  the config does not"):
        assert line in out


def test_a_config_that_does_not_load_exits_2_like_serve(tmp_path, capsys):
    config = _good(backends=[_priced(context_window=5)])
    rc = main(["check", "--config", _write(tmp_path, config)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "router.yaml" in err and "context_window" in err
    # serve says the same thing with the same status.
    assert main(["serve", "--config", str(tmp_path / "router.yaml")]) == 2
    assert "context_window" in capsys.readouterr().err


def test_a_bad_environment_override_exits_2_naming_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYBRID_ROUTER__BACKENDS__nope__ENDPOINT", "x:1")
    rc = main(["check", "--config", _write(tmp_path, _good())])
    err = capsys.readouterr().err
    assert rc == 2
    assert "HYBRID_ROUTER__BACKENDS__nope__ENDPOINT" in err and "gpu-1" in err


def test_environment_overrides_apply_as_for_serve(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYBRID_ROUTER__SERVER__ADDRESS", "0.0.0.0:50051")
    rc, report = check_json(tmp_path, _good(), capsys)
    assert rc == 1
    assert "0.0.0.0:50051" in row(report, "exposure")["detail"]


def test_missing_config_file_exits_2(tmp_path, capsys):
    assert main(["check", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


# --- exposure and TLS ---------------------------------------------------------------------------


def test_public_address_without_keys_fails_naming_auth(tmp_path, capsys):
    rc, report = check_json(tmp_path, _good(server={"address": "0.0.0.0:50051"}), capsys)
    assert rc == 1
    (fail,) = failures(report)
    assert fail["check"] == "exposure" and fail["key"] == "auth"
    assert "auth.keys_file" in fail["detail"] and "127.0.0.1" in fail["detail"]


def test_tls_files_that_check_out_pass(tmp_path, capsys):
    pki = make_pki(tmp_path / "pki")
    tls = {"cert_file": pki.server_cert, "key_file": pki.server_key, "client_ca_file": pki.ca}
    rc, report = check_json(tmp_path, _good(server={"address": "127.0.0.1:0", "tls": tls}), capsys)
    assert rc == 0
    result = row(report, "server.tls")
    # The test CA issues certificates for one day: valid, but due for renewal.
    assert result["result"] == WARN
    assert "key matches" in result["detail"] and "mTLS" in result["detail"]
    assert "renew" in result["detail"]


def test_a_key_that_does_not_match_the_certificate_fails(tmp_path, capsys):
    pki = make_pki(tmp_path / "pki")
    tls = {"cert_file": pki.server_cert, "key_file": pki.client_key}
    rc, report = check_json(tmp_path, _good(server={"address": "127.0.0.1:0", "tls": tls}), capsys)
    assert rc == 1
    (fail,) = failures(report)
    assert fail["check"] == "server.tls" and fail["key"] == "server.tls.key_file"
    assert "does not belong to the certificate" in fail["detail"]
    assert "replace both files together" in fail["detail"]


def test_an_unreadable_certificate_fails_naming_the_key(tmp_path, capsys):
    pki = make_pki(tmp_path / "pki")
    missing = str(tmp_path / "nope.pem")
    tls = {"cert_file": missing, "key_file": pki.server_key}
    rc, report = check_json(tmp_path, _good(server={"address": "127.0.0.1:0", "tls": tls}), capsys)
    assert rc == 1
    (fail,) = failures(report)
    assert fail["key"] == "server.tls.cert_file" and missing in fail["detail"]


def test_an_expired_certificate_fails(tmp_path):
    pki = make_pki(tmp_path / "pki")
    config = parse_config(
        _good(server={"tls": {"cert_file": pki.server_cert, "key_file": pki.server_key}})
    )
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    findings = asyncio.run(Checker(config, environ={}, now=lambda: later).run())
    (tls,) = [f for f in findings if f.check == "server.tls"]
    assert tls.result == FAIL and tls.key == "server.tls.cert_file"
    assert "expired" in tls.detail and "renew" in tls.detail


def test_edge_relay_tls_with_a_mismatched_key_fails(tmp_path, capsys):
    pki = make_pki(tmp_path / "pki")
    edge = {
        "enabled": True,
        "device_auth": "none",
        "relay": {
            "address": "127.0.0.1:0",
            "tls": {
                "cert_file": pki.server_cert,
                "key_file": pki.client_key,
                "ca_file": pki.ca,
                "server_name": "localhost",
            },
        },
    }
    rc, report = check_json(tmp_path, _good(edge=edge), capsys)
    assert rc == 1
    (fail,) = failures(report)
    assert fail["check"] == "edge.relay.tls" and fail["key"] == "edge.relay.tls.key_file"


def test_edge_mtls_without_a_client_ca_fails(tmp_path, capsys):
    rc, report = check_json(tmp_path, _good(edge={"enabled": True}), capsys)
    assert rc == 1
    (fail,) = failures(report)
    assert fail["check"] == "edge" and "server.tls" in fail["detail"]
    assert "client_ca_file" in fail["detail"]


# --- keys -------------------------------------------------------------------------------------


def _auth(keys_file: str, tenants: list[str]) -> dict[str, Any]:
    return {"keys_file": keys_file, "tenants": [{"name": t} for t in tenants]}


def test_a_keys_file_is_counted_and_no_secret_is_printed(tmp_path, capsys):
    keys_path = tmp_path / "keys.yaml"
    secrets = make_keys(keys_path, ["team-a", "team-b"])
    hashes = [k["hash"] for k in yaml.safe_load(keys_path.read_text())["keys"]]
    config = _good(
        server={"address": "0.0.0.0:50051"}, auth=_auth(str(keys_path), ["team-a", "team-b"])
    )
    rc = main(["check", "--config", _write(tmp_path, config), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    keys = row(json.loads(out), "auth keys")
    assert keys["result"] == OK
    assert "keys: 2 (2 active, 0 revoked)" in keys["detail"] and "team-a, team-b" in keys["detail"]
    for secret in [*secrets.values(), *hashes]:
        assert secret not in out


def test_a_missing_keys_file_fails_with_the_fix(tmp_path, capsys):
    config = _good(auth=_auth(str(tmp_path / "absent.yaml"), ["team-a"]))
    rc, report = check_json(tmp_path, config, capsys)
    assert rc == 1
    (fail,) = failures(report)
    assert fail["check"] == "auth keys" and fail["key"] == "auth.keys_file"
    assert "keys file not found" in fail["detail"] and "hybrid-router keys create" in fail["detail"]


def test_a_keys_file_path_from_an_unset_variable_fails(tmp_path, capsys):
    config = _good(auth=_auth("env:CHECK_KEYS_PATH", ["team-a"]))
    rc, report = check_json(tmp_path, config, capsys)
    assert rc == 1
    (fail,) = failures(report)
    assert fail["key"] == "auth.keys_file" and "CHECK_KEYS_PATH" in fail["detail"]


def test_a_keys_file_that_does_not_parse_fails(tmp_path, capsys):
    keys_path = tmp_path / "keys.yaml"
    keys_path.write_text("version: 1\nkeys:\n  - {id: nothex, tenant: a, hash: x}\n")
    rc, report = check_json(tmp_path, _good(auth=_auth(str(keys_path), ["a"])), capsys)
    assert rc == 1
    (fail,) = failures(report)
    assert str(keys_path) in fail["detail"] and "keys[0]" in fail["detail"]


def test_keys_for_a_tenant_that_is_not_defined_warn(tmp_path, capsys):
    keys_path = tmp_path / "keys.yaml"
    make_keys(keys_path, ["team-a", "ghost"])
    rc, report = check_json(tmp_path, _good(auth=_auth(str(keys_path), ["team-a"])), capsys)
    assert rc == 0
    keys = row(report, "auth keys")
    assert keys["result"] == WARN and "ghost" in keys["detail"]
    assert "PERMISSION_DENIED" in keys["detail"] and keys["key"] == "auth.tenants"


# --- secrets named by env --------------------------------------------------------------------


def _openai(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "hosted-1",
        "tier": "hosted",
        "kind": "openai",
        "endpoint": "http://127.0.0.1:1/v1",
        "model": "gpt-x",
        "context_window": 8192,
        "cost": {"input_per_mtok_usd": 1.0, "output_per_mtok_usd": 2.0, "source": SOURCE},
    }
    entry.update(overrides)
    return entry


def test_an_unset_api_key_env_fails_naming_the_key(tmp_path, capsys):
    config = _good(backends=[_priced(), _openai(api_key_env="CHECK_OPENAI_KEY")])
    rc, report = check_json(tmp_path, config, capsys)
    assert rc == 1
    (fail,) = failures(report)
    assert fail["check"] == "backend hosted-1" and fail["key"] == "api_key_env"
    assert "CHECK_OPENAI_KEY" in fail["detail"] and "export" in fail["detail"]


def test_a_set_api_key_env_passes_without_printing_the_key(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CHECK_OPENAI_KEY", "sk-very-secret-value")
    config = _good(backends=[_priced(), _openai(api_key_env="CHECK_OPENAI_KEY")])
    rc = main(["check", "--config", _write(tmp_path, config), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "$CHECK_OPENAI_KEY set" in row(json.loads(out), "backend hosted-1")["detail"]
    assert "sk-very-secret-value" not in out


def test_an_env_header_with_an_unset_variable_fails(tmp_path, capsys):
    config = _good(backends=[_openai(headers={"X-Team": "env:CHECK_TEAM"})])
    rc, report = check_json(tmp_path, config, capsys)
    assert rc == 1
    (fail,) = failures(report)
    assert fail["key"] == "headers.X-Team" and "CHECK_TEAM" in fail["detail"]


def test_an_unset_relay_token_env_fails(tmp_path, capsys):
    edge = {"enabled": True, "device_auth": "none", "relay": {"token_env": "CHECK_RELAY"}}
    rc, report = check_json(tmp_path, _good(edge=edge), capsys)
    assert rc == 1
    (fail,) = failures(report)
    assert fail["key"] == "edge.relay.token_env" and "CHECK_RELAY" in fail["detail"]


# --- prices, reachability, tokenizers ------------------------------------------------------------


def test_a_router_without_any_backend_warns(tmp_path, capsys):
    rc, report = check_json(tmp_path, _good(backends=[]), capsys)
    assert rc == 0
    result = row(report, "backends")
    assert result["result"] == WARN and "every request fails" in result["detail"]


def test_an_unpriced_backend_warns(tmp_path, capsys):
    config = _good(backends=[_priced(), ms_backend("free-1", "gpu", "127.0.0.1:1")])
    rc, report = check_json(tmp_path, config, capsys)
    assert rc == 0
    prices = rows(report, "prices")
    assert [p["result"] for p in prices] == [WARN]
    assert "no price for free-1" in prices[0]["detail"] and "cost.source" in prices[0]["detail"]


def test_a_backend_no_tenant_may_use_warns(tmp_path, capsys):
    keys_path = tmp_path / "keys.yaml"
    make_keys(keys_path, ["edge-only"])
    auth = {"keys_file": str(keys_path), "tenants": [{"name": "edge-only", "tiers": ["edge"]}]}
    rc, report = check_json(tmp_path, _good(auth=auth), capsys)
    assert rc == 0
    result = row(report, "routable gpu-1")
    assert result["result"] == WARN and "no tenant in auth.tenants" in result["detail"]


def test_a_backend_whose_data_classes_no_tenant_may_send_warns(tmp_path, capsys):
    keys_path = tmp_path / "keys.yaml"
    make_keys(keys_path, ["team-a"])
    auth = {"keys_file": str(keys_path), "tenants": [{"name": "team-a"}]}  # public, internal
    config = _good(backends=[_priced(data_classes=["restricted"])], auth=auth)
    rc, report = check_json(tmp_path, config, capsys)
    assert rc == 0
    result = row(report, "routable gpu-1")
    assert result["result"] == WARN and result["key"] == "backends[gpu-1].data_classes"
    assert "team-a: internal, public" in result["detail"]


def test_a_window_smaller_than_the_default_answer_warns(tmp_path, capsys):
    config = _good(backends=[_priced(context_window=64)], policy={"default_max_output_tokens": 256})
    rc, report = check_json(tmp_path, config, capsys)
    assert rc == 0
    result = row(report, "routable gpu-1")
    assert result["result"] == WARN and result["key"] == "backends[gpu-1].context_window"
    assert "context window 64" in result["detail"]
    assert "policy.default_max_output_tokens" in result["detail"]


def test_an_exact_tokenizer_that_does_not_load_warns_as_serve_runs_on_estimates(tmp_path, capsys):
    missing = str(tmp_path / "missing.gguf")
    config = _good(backends=[_priced(tokenizer={"kind": "gguf", "path": missing})])
    rc, report = check_json(tmp_path, config, capsys)
    assert rc == 0
    assert failures(report) == []
    warn = row(report, f"tokenizer gguf:{missing}")
    assert warn["result"] == WARN
    assert "backends[gpu-1].tokenizer.path" in warn["detail"]
    assert "prompts are estimated" in warn["detail"]


# --- --probe ------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_probe_reaches_a_model_server_without_calling_the_model(
    model_server, tmp_path, capsys
):
    engine = ScriptedEngine(context_window=4096)
    address = await model_server(engine)
    config = _good(backends=[_priced(endpoint=address, context_window=4096)])
    rc, report = await check_json_async(tmp_path, config, capsys, "--probe")
    assert rc == 0, report
    probe = row(report, "probe gpu-1")
    assert probe["result"] == OK
    assert f"reachable: {address}, load 0" in probe["detail"]
    assert engine.started == []


async def test_probe_warns_when_the_server_window_is_smaller(model_server, tmp_path, capsys):
    address = await model_server(ScriptedEngine(context_window=1024))
    config = _good(backends=[_priced(endpoint=address, context_window=8192)])
    rc, report = await check_json_async(tmp_path, config, capsys, "--probe")
    assert rc == 0
    probe = row(report, "probe gpu-1")
    assert probe["result"] == WARN and probe["key"] == "backends[gpu-1].context_window"
    assert "the server's 1024" in probe["detail"]


async def test_probe_of_a_closed_port_fails_with_the_reason(tmp_path, capsys):
    endpoint = f"127.0.0.1:{_closed_port()}"
    config = _good(backends=[_priced(endpoint=endpoint)])
    rc, report = await check_json_async(tmp_path, config, capsys, "--probe", "--probe-timeout", "5")
    assert rc == 1
    (fail,) = failures(report)
    assert fail["check"] == "probe gpu-1" and fail["key"] == "backends[gpu-1].endpoint"
    assert f"unreachable: {endpoint}" in fail["detail"]


NOT_MODEL_SERVICE = (
    "answers gRPC but does not serve hybrid_router.v1.ModelService (UNIMPLEMENTED Info"
)


async def test_probe_of_a_model_service_endpoint_that_is_a_router_fails(
    model_server, start_router, tmp_path, capsys
):
    # The mistake the probe exists for: endpoint set to a router's own port, which
    # answers gRPC (InferenceRouter, health) but not ModelService.
    engine = ScriptedEngine()
    router = await start_router([ms_backend("gpu-0", "gpu", await model_server(engine))])
    endpoint = f"127.0.0.1:{router.port}"
    config = _good(backends=[_priced(endpoint=endpoint)])
    rc, report = await check_json_async(tmp_path, config, capsys, "--probe")
    assert rc == 1
    (fail,) = failures(report)
    assert fail["check"] == "probe gpu-1" and fail["key"] == "backends[gpu-1].endpoint"
    assert fail["detail"].startswith(
        f"backends[gpu-1].endpoint: {endpoint} {NOT_MODEL_SERVICE})"
    ), fail
    assert "point endpoint at a model server" in fail["detail"]
    assert engine.started == []


@pytest.fixture
async def health_only_server():
    """A bare gRPC server that serves only grpc.health.v1.Health."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def test_probe_of_a_ray_serve_endpoint_without_model_service_fails(
    health_only_server, tmp_path, capsys
):
    ray = _priced(endpoint=health_only_server, kind="ray_serve", serve_application="gpu")
    rc, report = await check_json_async(tmp_path, _good(backends=[ray]), capsys, "--probe")
    assert rc == 1
    (fail,) = failures(report)
    assert fail["check"] == "probe gpu-1"
    # The load application's Info: what the backend's own poll_load calls.
    assert (
        f"{health_only_server} {NOT_MODEL_SERVICE} via application 'gpu-load')" in (fail["detail"])
    )


class _Answers(WireHTTPServer):
    """Answers every request with one response (a model list, an error page...)."""

    def __init__(self, status: int, body: Any, content_type: str = "application/json") -> None:
        super().__init__()
        self.status = status
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.content_type = content_type

    async def respond(self, request: Recorded, reader: Any, writer: Any) -> None:
        await send_whole(writer, self.status, self.body, (("Content-Type", self.content_type),))


def _model_list(*ids: str) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": i, "object": "model"} for i in ids]}


async def _probe_openai(tmp_path, capsys, server: _Answers, **overrides: Any) -> tuple:
    """(exit status, the probe row) of check --probe on one OpenAI backend at ``server``."""
    async with server:
        config = _good(backends=[_openai(endpoint=f"{server.url}/v1", **overrides)])
        rc, report = await check_json_async(tmp_path, config, capsys, "--probe")
    assert [(r.method, r.path) for r in server.requests] == [("GET", "/v1/models")]
    return rc, row(report, "probe hosted-1")


async def test_probe_of_an_openai_backend_reads_the_model_list_with_the_key(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("CHECK_OPENAI_KEY", "sk-check")
    server = _Answers(200, _model_list("other", "gpt-x"))
    rc, probe = await _probe_openai(tmp_path, capsys, server, api_key_env="CHECK_OPENAI_KEY")
    assert rc == 0
    assert (
        probe["result"] == OK
        and f"{server.url}/v1/models lists gpt-x (2 models)" in (probe["detail"])
    )
    # The adapter's own headers: the key, as every completion sends it.
    assert server.requests[0].headers["authorization"] == "Bearer sk-check"
    assert "sk-check" not in probe["detail"]


async def test_probe_of_an_openai_list_without_the_model_warns(tmp_path, capsys):
    server = _Answers(200, _model_list(*(f"m{i}" for i in range(8))))
    rc, probe = await _probe_openai(tmp_path, capsys, server)
    assert rc == 0
    assert probe["result"] == WARN and probe["key"] == "backends[hosted-1].model"
    assert "does not list model 'gpt-x' (8 listed: m0, m1, m2, m3, m4, ...)" in probe["detail"]


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (404, b"<html><body>Not Found</body></html>", "text/html"),
        (200, b"<!doctype html><title>My app</title>", "text/html; charset=utf-8"),
        (200, {"models": ["gpt-x"]}, "application/json"),
    ],
    ids=["404-html", "200-html", "json-not-a-list"],
)
async def test_probe_of_an_endpoint_that_is_not_an_openai_api_fails(
    tmp_path, capsys, status, body, content_type
):
    server = _Answers(status, body, content_type)
    rc, probe = await _probe_openai(tmp_path, capsys, server)
    assert rc == 1
    assert probe["result"] == FAIL and probe["key"] == "backends[hosted-1].endpoint"
    assert (
        f"GET {server.url}/v1/models answered HTTP {status} ({content_type})" in (probe["detail"])
    )
    assert "not an OpenAI model list" in probe["detail"]
    assert "base URL that /chat/completions and /models are under" in probe["detail"]


async def test_probe_of_an_openai_backend_whose_key_is_refused_fails(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CHECK_OPENAI_KEY", "sk-wrong")
    server = _Answers(401, {"error": {"message": "Incorrect API key provided"}})
    rc, probe = await _probe_openai(tmp_path, capsys, server, api_key_env="CHECK_OPENAI_KEY")
    assert rc == 1
    assert probe["result"] == FAIL and probe["key"] == "backends[hosted-1].api_key_env"
    assert "answered HTTP 401 (application/json): the API key was refused" in probe["detail"]
    assert "$CHECK_OPENAI_KEY" in probe["detail"] and "sk-wrong" not in probe["detail"]


async def test_probe_of_a_closed_http_port_fails(tmp_path, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    rc, report = await check_json_async(
        tmp_path, _good(backends=[_openai(endpoint=url)]), capsys, "--probe"
    )
    assert rc == 1
    (fail,) = failures(report)
    assert fail["check"] == "probe hosted-1" and f"GET {url}/models" in fail["detail"]
    assert "ConnectError" in fail["detail"]


@pytest.mark.parametrize("value", ["0", "-1"])
def test_probe_timeout_must_be_positive(value, capsys, tmp_path):
    assert main(["check", "--config", _write(tmp_path, _good()), "--probe-timeout", value]) == 2
    assert "argument --probe-timeout: must be > 0" in capsys.readouterr().err


def test_the_readmes_local_example_passes(capsys, monkeypatch):
    """examples/local.yaml, the README's first `serve`: no failure, only auth-off warns."""
    monkeypatch.setenv("HYBRID_ROUTER__SERVER__ADDRESS", "127.0.0.1:0")  # 50051 may be taken
    root = Path(__file__).resolve().parents[2]
    rc = main(["check", "--config", str(root / "examples" / "local.yaml"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0, report
    assert [c["check"] for c in report["checks"] if c["result"] == WARN] == ["exposure"]
