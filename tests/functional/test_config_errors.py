"""Config errors name their true source and use the project's words (issue 18, rows 4-7 and
24): bounds that ``check`` and ``serve`` share, the file actually given, the environment
variable or flag that set a key, no pydantic or PyYAML wording.

Each case runs the real CLI entry point on a real file; ``serve`` runs as the installed
console script in a subprocess and must refuse with the same line ``check`` prints.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from rtutil import ms_backend

from hybrid_router_cli.main import main
from router.config import load_config
from router.config._base import INT_MAX
from router.errors import ConfigError

CLI = shutil.which("hybrid-router", path=str(Path(sys.executable).parent)) or ""


def _config(**sections: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "server": {"address": "127.0.0.1:0"},
        "backends": [ms_backend("gpu-1", "gpu", "127.0.0.1:1")],
    }
    config.update(sections)
    return config


def _write(tmp_path: Path, config: dict[str, Any] | str, name: str = "site-a.yaml") -> Path:
    path = tmp_path / name
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


def _check(path: Path, capsys: Any, *extra: str) -> tuple[int, str, str]:
    rc = main(["check", "--config", str(path), *extra])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _serve(path: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run(
        [CLI, "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert "READY" not in done.stdout
    return done.returncode, done.stderr


# --- bounds: check and serve accept exactly the same configs -------------------------------------


BOUNDS = [
    ({"server": {"address": "127.0.0.1:0", "max_receive_message_bytes": 99999999999999}},
     "server.max_receive_message_bytes"),
    ({"backends": [{**ms_backend("gpu-1", "gpu", "127.0.0.1:1"),
                    "context_window": 99999999999999999999999}]},
     "backends[0](gpu-1).context_window"),
    ({"server": {"address": "127.0.0.1:0", "max_concurrent_streams": 2**40}},
     "server.max_concurrent_streams"),
    ({"policy": {"ttft_timeout_ms": float("inf")}}, "policy.ttft_timeout_ms"),
    ({"server": {"address": "127.0.0.1:0", "grace_period_s": 1e300}}, "server.grace_period_s"),
]  # fmt: skip


@pytest.mark.parametrize(("sections", "key"), BOUNDS, ids=[b[1] for b in BOUNDS])
def test_a_value_the_runtime_cannot_take_is_refused_at_load(tmp_path, capsys, sections, key):
    # Before: check said ok, and serve crashed (OverflowError) or the Backends RPC
    # answered INTERNAL.
    path = _write(tmp_path, _config(**sections))
    rc, _, err = _check(path, capsys)
    assert rc == 2
    assert err.startswith(f"error: {path}: invalid configuration:\n")
    assert f"  {key}: must be " in err
    assert "Traceback" not in err


@pytest.mark.skipif(not CLI, reason="console script not installed")
def test_serve_refuses_what_check_refuses(tmp_path, capsys):
    path = _write(tmp_path, _config(**BOUNDS[0][0]))
    rc, _, check_err = _check(path, capsys)
    serve_rc, serve_err = _serve(path)
    assert (serve_rc, serve_err) == (rc, check_err)
    assert f"must be at most {INT_MAX}" in serve_err


def test_the_widest_value_is_accepted(tmp_path, capsys):
    config = _config(server={"address": "127.0.0.1:0", "max_receive_message_bytes": INT_MAX})
    rc, _, err = _check(_write(tmp_path, config), capsys, "--json")
    assert rc == 0, err


# --- the true source -----------------------------------------------------------------------------


def test_a_bad_override_names_the_variable_not_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYBRID_ROUTER__POLICY__OBJECTIV", "fastest")
    rc, _, err = _check(_write(tmp_path, _config()), capsys)
    assert rc == 2
    assert err == (
        "error: environment overrides: invalid configuration:\n"
        "  HYBRID_ROUTER__POLICY__OBJECTIV (policy.objectiv): unknown key; check the spelling "
        "(see docs/configuration.md for allowed keys)\n"
    )


def test_a_bad_override_value_names_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYBRID_ROUTER__SERVER__GRACE_PERIOD_S", "soon")
    rc, _, err = _check(_write(tmp_path, _config()), capsys)
    assert rc == 2
    assert (
        "HYBRID_ROUTER__SERVER__GRACE_PERIOD_S (server.grace_period_s): must be a number, "
        "got 'soon'"
    ) in err


def test_file_and_override_problems_name_each_source(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYBRID_ROUTER__BACKENDS__gpu-1__CONTEXT_WINDOW", "5")
    path = _write(tmp_path, _config(policy={"max_fallbacks": 99}))
    rc, _, err = _check(path, capsys)
    assert rc == 2
    assert err.startswith(f"error: {path}: invalid configuration:\n")
    assert "  policy.max_fallbacks: must be <= 16, got 99" in err
    assert (
        "  HYBRID_ROUTER__BACKENDS__gpu-1__CONTEXT_WINDOW (backends[0](gpu-1).context_window): "
        "must be >= 16, got 5"
    ) in err


def _fail(report: dict[str, Any]) -> dict[str, str]:
    (fail,) = [c for c in report["checks"] if c["result"] == "fail"]
    return fail


@pytest.mark.parametrize(
    ("sections", "check", "key"),
    [
        ({"server": {"address": "0.0.0.0:50051"}}, "exposure", "auth"),
        (
            {
                "server": {
                    "address": "127.0.0.1:0",
                    "tls": {"cert_file": "/nonexistent/c.pem", "key_file": "/nonexistent/k.pem"},
                }
            },
            "server.tls",
            "server.tls.cert_file",
        ),
        ({"edge": {"enabled": True}}, "edge", "edge.device_auth"),
        (
            {
                "discovery": {
                    "kubernetes": {
                        "kubeconfig": "/nonexistent/kubeconfig",
                        "sources": [
                            {
                                "name": "gpu",
                                "label_selector": "a=b",
                                "backend": {
                                    "tier": "gpu",
                                    "kind": "model_service",
                                    "model": "m",
                                    "context_window": 4096,
                                },
                            }
                        ],
                    }
                }
            },
            "discovery",
            "discovery.kubernetes.kubeconfig",
        ),
        (
            {"auth": {"keys_file": "env:UNSET_KEYS_PATH", "tenants": [{"name": "a"}]}},
            "auth keys",
            "auth.keys_file",
        ),
    ],  # fmt: skip
    ids=["auth", "tls", "device-auth", "kubeconfig", "env-keys-file"],
)
def test_a_failed_check_names_the_file_given(tmp_path, capsys, monkeypatch, sections, check, key):
    # Before: these said "router.yaml:" whatever file was given.
    monkeypatch.delenv("UNSET_KEYS_PATH", raising=False)
    path = _write(tmp_path, _config(**sections))
    rc, out, _ = _check(path, capsys, "--json")
    assert rc == 1
    fail = _fail(json.loads(out))
    assert (fail["check"], fail["key"]) == (check, key)
    assert fail["detail"].startswith(f"{path}: {key}: "), fail["detail"]
    assert "router.yaml" not in fail["detail"]


def test_a_key_set_by_a_variable_is_blamed_on_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYBRID_ROUTER__SERVER__TLS__CERT_FILE", "/nonexistent/c.pem")
    monkeypatch.setenv("HYBRID_ROUTER__SERVER__TLS__KEY_FILE", "/nonexistent/k.pem")
    rc, out, _ = _check(_write(tmp_path, _config()), capsys, "--json")
    assert rc == 1
    fail = _fail(json.loads(out))
    assert fail["detail"].startswith("HYBRID_ROUTER__SERVER__TLS__CERT_FILE: server.tls.cert_file:")


def test_no_config_file_names_the_flag_and_the_variable(capsys, monkeypatch):
    monkeypatch.delenv("HYBRID_ROUTER_CONFIG", raising=False)
    assert main(["check"]) == 2
    assert capsys.readouterr().err == (
        "error: no config file given: pass --config PATH or set HYBRID_ROUTER_CONFIG\n"
    )


# --- the project's words -------------------------------------------------------------------------


def test_yaml_errors_give_the_file_line_and_column(tmp_path, capsys):
    path = _write(tmp_path, "server:\n  address: [unclosed\npolicy: {}\n")
    rc, _, err = _check(path, capsys)
    assert rc == 2
    assert err.startswith(f"error: {path}: not valid YAML: line ")
    assert "<unicode string>" not in err


@pytest.mark.parametrize(
    ("sections", "line"),
    [
        ({"server": 5}, "  server: must be a section (key: value lines), got 5"),
        ({"backends": {"gpu": 1}}, "  backends: must be a list (- item lines)"),
        ({"server": {"reflection": "maybe"}}, "  server.reflection: must be true or false"),
        ({"policy": {"max_fallbacks": "two"}}, "  policy.max_fallbacks: must be a whole number"),
        ({"policy": {"objective": "best"}}, "  policy.objective: must be one of"),
    ],
)
def test_validation_errors_are_in_our_words(tmp_path, capsys, sections, line):
    rc, _, err = _check(_write(tmp_path, _config(**sections)), capsys)
    assert rc == 2
    assert line in err
    for leak in ("instance of", "Input should", "pydantic", "For further information"):
        assert leak not in err


def test_load_config_error_carries_the_source(tmp_path):
    path = _write(tmp_path, _config(server={"address": "127.0.0.1:0", "grace_period_s": -1}))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.source == str(path)
    assert "server.grace_period_s: must be >= 0, got -1" in info.value.message


# --- overrides a shell can set --------------------------------------------------------------------


def test_a_backend_is_named_in_shell_spelling(tmp_path, capsys):
    # `export HYBRID_ROUTER__BACKENDS__gpu-1__...` is not a valid shell identifier.
    script = (
        f"export HYBRID_ROUTER__BACKENDS__GPU_1__PRIORS__TTFT_MS=123\n"
        f"{sys.executable} -m hybrid_router_cli.main prices --config "
        f"{_write(tmp_path, _config())} --json\n"
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    config = load_config(
        tmp_path / "site-a.yaml",
        environ={"HYBRID_ROUTER__BACKENDS__GPU_1__PRIORS__TTFT_MS": "123"},
    )
    assert config.backends[0].priors.ttft_ms == 123
    assert config.origin("backends[gpu-1].priors.ttft_ms") == (
        "HYBRID_ROUTER__BACKENDS__GPU_1__PRIORS__TTFT_MS"
    )


def test_a_shell_spelling_two_backends_share_asks_for_the_exact_name(tmp_path):
    backends = [ms_backend("gpu-a", "gpu", "x:1"), ms_backend("gpu.a", "gpu", "x:2")]
    path = _write(tmp_path, _config(backends=backends))
    var = "HYBRID_ROUTER__BACKENDS__GPU_A__ENDPOINT"
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={var: "y:1"})
    assert info.value.message.startswith(f"{var}: 'GPU_A' matches several backends (gpu-a, gpu.a)")
    exact = load_config(path, environ={"HYBRID_ROUTER__BACKENDS__gpu.a__ENDPOINT": "y:1"})
    assert [b.endpoint for b in exact.backends] == ["x:1", "y:1"]


def test_a_keys_file_yaml_error_gives_line_and_column(tmp_path, capsys):
    keys = tmp_path / "keys.yaml"
    keys.write_text("version: 1\nkeys: [unclosed\n")
    assert main(["keys", "list", "--file", str(keys)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {keys}: not valid YAML or JSON: line 3, column 1: ")
    assert "<unicode string>" not in err
