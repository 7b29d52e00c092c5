"""hybrid_router.refs: one resolver for configuration references, one rule for empty values.

Also the call sites that use it (router config, backends, keys file, edge directory and
relay token, the Lambda key secret) and hybrid_router.env, the one list of variable names.
Secrets Manager itself (a moto server) is in tests/functional/test_refs_secrets.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hybrid_router import env as env_names
from hybrid_router import refs
from hybrid_router.refs import RefError, SecretUnreadable

from lambda_edge.credentials import ApiKeyProvider, CredentialsError
from router.backends import create_backend
from router.config import BackendConfig, ConfigRefError, EdgeConfig, backend_refs, resolve_ref
from router.edge.hub import relay_token
from router.errors import ConfigError, RouterError
from router.errors import RefError as RouterRefError
from router.security.keystore import resolve_keys_path
from router.stores.device_directory import resolve_url

ROOT = Path(__file__).resolve().parents[2]


# --- env:NAME ---------------------------------------------------------------------------------


def test_a_literal_is_returned_as_written() -> None:
    for value in ("sk-literal", "", "  spaced  ", "ENV:UPPER", "environment"):
        assert refs.resolve(value, field="f", env={}) == value
    assert refs.env_ref("literal") is None and refs.env_ref("env:NAME") == "NAME"


def test_an_env_reference_reads_the_variable_as_it_is() -> None:
    env = {"TEAM": "router", "PADDED": " v "}
    assert refs.resolve("env:TEAM", field="headers.X-Team", env=env) == "router"
    assert refs.resolve("env:PADDED", field="f", env=env) == " v "  # never altered
    assert refs.resolve_env("TEAM", field="api_key_env", env=env) == "router"


@pytest.mark.parametrize("env", [{}, {"OPENAI_API_KEY": ""}, {"OPENAI_API_KEY": "  \n"}])
def test_unset_empty_and_blank_are_one_error_naming_field_and_variable(env: dict) -> None:
    with pytest.raises(RefError) as info:
        refs.resolve("env:OPENAI_API_KEY", field="backends[gpu].api_key", env=env)
    err = info.value
    assert err.message == (
        "backends[gpu].api_key: env:OPENAI_API_KEY is unset or empty; set it or remove the field"
    )
    assert str(err) == err.message and isinstance(err, ValueError) and err.permanent
    assert err.field == "backends[gpu].api_key" and err.ref == "env:OPENAI_API_KEY"
    assert err.detail == "env:OPENAI_API_KEY is unset or empty"
    with pytest.raises(RefError) as info:
        refs.resolve_env("OPENAI_API_KEY", field="backends[gpu].api_key_env", env=env)
    assert info.value.message.startswith("backends[gpu].api_key_env: env:OPENAI_API_KEY is unset")


def test_the_fix_can_be_named_and_a_reference_must_name_a_variable() -> None:
    with pytest.raises(RefError, match=r"^edge.directory.redis_url: env:R is unset or empty; set"):
        refs.resolve("env:R", field="edge.directory.redis_url", env={}, fix="set it to the URL")
    with pytest.raises(RefError, match="names no variable; write env:NAME"):
        refs.resolve("env:", field="auth.keys_file", env={"": "x"})


def test_the_environment_is_read_when_resolving_never_at_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REFS_TEST_LATE", "late")
    assert refs.resolve("env:REFS_TEST_LATE", field="f") == "late"
    monkeypatch.delenv("REFS_TEST_LATE")
    with pytest.raises(RefError):
        refs.resolve("env:REFS_TEST_LATE", field="f")


# --- secrets ----------------------------------------------------------------------------------


def test_a_secret_value_is_the_stripped_text_or_a_json_field() -> None:
    assert refs.secret_value(" sk-1 \n", secret_id="s", field="f") == "sk-1"
    doc = '{"api_key": " hr_k ", "other": 1}'
    assert refs.secret_value(doc, secret_id="s", field="f", json_key="api_key") == "hr_k"
    # detect_json: JSON only when it looks like an object, the whole text otherwise.
    detect: dict[str, Any] = {
        "secret_id": "s",
        "field": "f",
        "json_key": "api_key",
        "detect_json": True,
    }
    assert refs.secret_value(doc, **detect) == "hr_k"
    assert refs.secret_value("hr_plain", **detect) == "hr_plain"


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_an_empty_secret_is_the_same_error(text: str) -> None:
    with pytest.raises(RefError) as info:
        refs.secret_value(text, secret_id="router/key", field="backends[a].api_key_secret")
    assert info.value.message == (
        "backends[a].api_key_secret: secret 'router/key' is empty; put the value in it or "
        "remove the field"
    )
    assert info.value.ref == "router/key" and info.value.detail == "is empty"


@pytest.mark.parametrize(
    ("text", "detect", "words"),
    [
        ("just-a-key", False, "is not a JSON object with a non-empty string 'api_key' field"),
        ('{"api_key": ""}', False, "non-empty string 'api_key' field"),
        ('{"api_key": "  "}', True, "non-empty string 'api_key' field"),
        ('{"key": "sk-hidden"}', True, '\'api_key\' field; store {"api_key": "..."} or'),
        ("{sk-hidden", True, "looks like JSON but is not a JSON object"),
    ],
)
def test_a_json_secret_without_the_field_says_so_without_the_value(
    text: str, detect: bool, words: str
) -> None:
    with pytest.raises(RefError) as info:
        refs.secret_value(text, secret_id="s", field="F", json_key="api_key", detect_json=detect)
    assert words in info.value.message and info.value.message.startswith("F: secret 's' ")
    assert "sk-hidden" not in info.value.message and "just-a-key" not in info.value.message


def test_resolve_secret_reads_through_the_source_and_names_the_field() -> None:
    read: list[str] = []

    def source(secret_id: str) -> str:
        read.append(secret_id)
        return '{"token": "t-1"}'

    got = refs.resolve_secret("arn:s", field="F", json_key="token", secrets=source)
    assert got == "t-1" and read == ["arn:s"]

    def failing(secret_id: str) -> str:
        raise SecretUnreadable(
            f"cannot read secret {secret_id!r}: ThrottlingException: slow down",
            ref=secret_id,
            detail="ThrottlingException: slow down",
            code="ThrottlingException",
            permanent=False,
        )

    with pytest.raises(SecretUnreadable) as info:
        refs.resolve_secret("arn:s", field="F", secrets=failing)
    err = info.value
    assert err.message == "F: cannot read secret 'arn:s': ThrottlingException: slow down"
    assert err.field == "F" and err.code == "ThrottlingException" and not err.permanent
    with pytest.raises(RefError, match="is empty"):
        refs.resolve_secret("arn:s", field="F", secrets=lambda _: " ")


def test_importing_the_resolver_imports_no_aws_sdk_and_no_router() -> None:
    code = (
        "import sys, hybrid_router.refs, hybrid_router.env; "
        "bad = [m for m in ('boto3', 'botocore', 'router', 'grpc') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --- the router's side ------------------------------------------------------------------------


def test_router_errors_are_config_errors_and_ref_errors() -> None:
    assert RouterRefError is RefError
    with pytest.raises(ConfigRefError) as info:
        resolve_ref("env:NOPE", env={}, key="headers.X-Team", source="backend gpu")
    err = info.value
    assert isinstance(err, ConfigError) and isinstance(err, RouterError)
    assert isinstance(err, RefError)
    assert err.message == (
        "backend gpu: headers.X-Team: env:NOPE is unset or empty; set it or remove the field"
    )
    assert err.key == "headers.X-Team" and err.source == "backend gpu" and err.ref == "env:NOPE"


def _hosted(kind: str = "openai", **kw: object) -> BackendConfig:
    base: dict[str, object] = {
        "name": "gpu",
        "tier": "hosted",
        "kind": kind,
        "model": "m",
        "context_window": 1000,
        "endpoint": "http://127.0.0.1:1/v1" if kind == "openai" else "",
    }
    return BackendConfig.model_validate({**base, **kw})


def test_backend_refs_resolve_headers_and_the_key_once() -> None:
    cfg = _hosted(headers={"X-Team": "env:TEAM", "X-Lit": "lit"}, api_key_env="KEY")
    got = backend_refs(cfg, {"TEAM": "t", "KEY": "sk-1"})
    assert dict(got.headers) == {"X-Team": "t", "X-Lit": "lit"} and got.api_key == "sk-1"
    assert "sk-1" not in repr(got) and "'t'" not in repr(got)
    # anthropic: an x-api-key header is dropped by the adapter, so it is never resolved.
    cfg = _hosted("anthropic", headers={"x-api-key": "env:UNSET"}, api_key_env="KEY")
    assert backend_refs(cfg, {"KEY": "k"}).headers == {}


def test_an_empty_header_variable_is_now_an_error_like_every_other_reference() -> None:
    # Before the one resolver, an env:VAR header accepted a variable set to "".
    cfg = _hosted(headers={"X-Team": "env:TEAM"})
    with pytest.raises(ConfigError) as info:
        create_backend(cfg, environ={"TEAM": ""})
    assert info.value.key == "headers.X-Team"
    assert "backend gpu: headers.X-Team: env:TEAM is unset or empty" in info.value.message


EMPTY = {"V": ""}
SITES: list[tuple[str, Callable[[], object], str]] = [
    (
        "backend header",
        lambda: create_backend(_hosted(headers={"X-A": "env:V"}), environ=EMPTY),
        "backend gpu: headers.X-A: env:V is unset or empty",
    ),
    (
        "openai api_key_env",
        lambda: create_backend(_hosted(api_key_env="V"), environ=EMPTY),
        "backend gpu: api_key_env: env:V is unset or empty",
    ),
    (
        "anthropic api_key_env",
        lambda: create_backend(_hosted("anthropic", api_key_env="V"), environ=EMPTY),
        "backend gpu: api_key_env: env:V is unset or empty",
    ),
    (
        "auth.keys_file",
        lambda: resolve_keys_path("env:V", EMPTY),
        "auth.keys_file: env:V is unset or empty",
    ),
    (
        "edge.directory.redis_url",
        lambda: resolve_url("env:V", EMPTY),
        "edge.directory.redis_url: env:V is unset or empty",
    ),
    (
        "edge.relay.token_env",
        lambda: relay_token(EdgeConfig(relay={"token_env": "V"}), EMPTY),
        "edge.relay.token_env: env:V is unset or empty",
    ),
]


@pytest.mark.parametrize(("site", "call", "message"), SITES, ids=[s[0] for s in SITES])
def test_every_router_call_site_applies_the_one_rule(
    site: str, call: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigRefError) as info:
        call()
    assert info.value.message.startswith(message), info.value.message


def test_literals_pass_through_every_call_site() -> None:
    assert str(resolve_keys_path("/etc/k.yaml", {})) == "/etc/k.yaml"
    assert resolve_url("redis://r:6379/0", {}) == "redis://r:6379/0"
    assert relay_token(EdgeConfig(), {}) == ""


def test_the_lambda_key_secret_follows_the_same_rule() -> None:
    provider = ApiKeyProvider(secret_id="arn:s", fetch=lambda _: "  ")
    with pytest.raises(CredentialsError) as info:
        provider()
    assert str(info.value) == (
        "HYBRID_ROUTER_API_KEY_SECRET: secret 'arn:s' is empty; put the value in it or remove "
        "the field"
    )


# --- hybrid_router.env --------------------------------------------------------------------------


def test_every_variable_name_is_defined_once() -> None:
    names = env_names.ALL
    assert len(names) == len(set(names)) and "HYBRID_ROUTER_CONFIG" in names
    assert all(re.fullmatch(r"HYBRID_ROUTER_[A-Z0-9_]+", n) for n in names)
    assert env_names.ENV_OVERRIDE_PREFIX == "HYBRID_ROUTER__"


def test_no_reader_spells_a_variable_name_itself() -> None:
    """Every HYBRID_ROUTER_* name is assigned in hybrid_router/env.py only; readers import it."""
    assigned = re.compile(r"""^\s*\w+\s*(?::[^=]+)?=\s*["']HYBRID_ROUTER_""", re.M)
    offenders = []
    for top in ("router", "lambda_edge", "greengrass", "serving", "scripts"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if assigned.search(path.read_text(encoding="utf-8")):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
