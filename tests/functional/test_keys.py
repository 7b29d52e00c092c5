"""``hybrid-router keys`` and keys in AWS Secrets Manager (a real moto server process), and
the CLI's --api-key / --ca-bundle / client certificate options against a secured router."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import grpc
import pytest
from awsenv import aws_env, moto_server  # noqa: F401 - fixtures
from rtutil import ms_backend, stub_for, user_request
from secutil import bearer, make_pki

from hybrid_router_cli.main import main as cli_main
from router.config import parse_config
from router.security.keystore import parse_keys_document
from router.server.app import RouterServer, create_server
from serving.engines.scripted import ScriptedEngine

CLI = shutil.which("hybrid-router", path=str(Path(sys.executable).parent)) or ""


async def cli(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The console script in a subprocess: (exit code, stdout, stderr)."""
    assert CLI, "console script hybrid-router not installed next to the interpreter"
    proc = await asyncio.create_subprocess_exec(
        CLI,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "160", **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def routers() -> AsyncIterator[list[RouterServer]]:
    started: list[RouterServer] = []
    yield started
    for r in started:
        await r.stop(0)


async def _router(
    routers: list[RouterServer], model_server: Any, auth: dict[str, Any], **server: Any
) -> RouterServer:
    addr = await model_server(ScriptedEngine())
    cfg = parse_config(
        {
            "server": {"address": "127.0.0.1:0", "grace_period_s": 1, **server},
            "backends": [ms_backend("gpu-a", "gpu", addr)],
            "auth": {"tenants": [{"name": "acme"}], "refresh_s": 0.1, **auth},
        }
    )
    router = await create_server(cfg)
    routers.append(router)
    return router


# --- keys in a file -----------------------------------------------------------------------------


async def test_keys_create_list_revoke_on_a_file(tmp_path):
    path = tmp_path / "keys.yaml"

    rc, out, err = await cli("keys", "create", "--file", str(path), "--tenant", "acme",
                             "--name", "ci")  # fmt: skip
    assert rc == 0, err
    key = out.strip()
    assert key.startswith("hr_") and "\n" not in key
    key_id = key.split("_")[1]
    assert f"created key {key_id} for tenant 'acme'" in err and "shown only now" in err
    stored = path.read_text()
    assert key not in stored and key[16:] not in stored
    assert parse_keys_document(stored, source="t")[0].tenant == "acme"

    rc, out, _ = await cli("keys", "list", "--file", str(path), "--json")
    rows = json.loads(out)
    assert rows == [
        {"id": key_id, "tenant": "acme", "name": "ci", "created": rows[0]["created"],
         "revoked": False}
    ]  # fmt: skip
    rc, out, _ = await cli("keys", "list", "--file", str(path))
    assert key_id in out and "acme" in out and key not in out

    rc, _, err = await cli("keys", "revoke", "--file", str(path), key_id)
    assert rc == 0 and f"revoked key {key_id}" in err
    rc, out, _ = await cli("keys", "list", "--file", str(path), "--json")
    assert json.loads(out)[0]["revoked"] is True


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["keys", "create", "--tenant", "acme"], "no keys store: pass --file PATH"),
        (["keys", "create", "--file", "k.yaml", "--tenant", "a b"], "--tenant must be"),
        (["keys", "revoke", "--file", "k.yaml", "hr_0123456789ab_x"], "not the key itself"),
        (["keys", "revoke", "--file", "k.yaml", "zz"], "a key id is 12 hex digits"),
    ],
)
async def test_keys_usage_errors_say_how_to_fix_them(argv, needle):
    rc, _, err = await cli(*argv)

    assert rc == 2 and needle in err and "Traceback" not in err


async def test_keys_file_env_var_is_the_default_store(tmp_path):
    path = tmp_path / "k.yaml"
    rc, out, _ = await cli(
        "keys", "create", "--tenant", "acme", "--json", env={"HYBRID_ROUTER_KEYS_FILE": str(path)}
    )
    assert rc == 0
    assert json.loads(out)["tenant"] == "acme" and path.exists()


# --- keys in Secrets Manager (moto server) ------------------------------------------------------


@pytest.mark.usefixtures("aws_env")
async def test_router_reads_keys_from_a_secret_and_sees_new_ones(request, model_server, routers):
    moto_url = request.getfixturevalue("moto_server")
    secret_id = f"router/keys-{os.getpid()}-{id(routers)}"
    common = ["--secret-id", secret_id, "--region", "eu-west-1", "--endpoint-url", moto_url]

    rc, out, err = await cli("keys", "create", "--tenant", "acme", *common)
    assert rc == 0, err
    first = out.strip()
    raw = boto3.client(
        "secretsmanager", region_name="eu-west-1", endpoint_url=moto_url
    ).get_secret_value(SecretId=secret_id)["SecretString"]
    assert first not in raw and "sha256:" in raw

    auth = {
        "secrets_manager": {
            "secret_id": secret_id, "region": "eu-west-1", "endpoint_url": moto_url
        }
    }  # fmt: skip
    router = await _router(routers, model_server, auth)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as ch:
        stub = stub_for(ch)
        assert (await stub.Route(user_request("hi"), metadata=bearer(first))).backend == "gpu-a"

        rc, out, _ = await cli("keys", "create", "--tenant", "acme", *common)
        second = out.strip()
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            try:
                await stub.Route(user_request("hi"), metadata=bearer(second))
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() is grpc.StatusCode.UNAUTHENTICATED
                assert asyncio.get_running_loop().time() < deadline, "new key never loaded"
                await asyncio.sleep(0.1)


@pytest.mark.usefixtures("aws_env")
async def test_a_missing_secret_stops_the_router_from_starting(request, model_server):
    from router.errors import ConfigError

    moto_url = request.getfixturevalue("moto_server")

    addr = await model_server(ScriptedEngine())
    cfg = parse_config(
        {
            "server": {"address": "127.0.0.1:0"},
            "backends": [ms_backend("gpu-a", "gpu", addr)],
            "auth": {
                "secrets_manager": {
                    "secret_id": "does/not/exist", "region": "eu-west-1",
                    "endpoint_url": moto_url,
                },
                "tenants": [{"name": "acme"}],
            },
        }
    )  # fmt: skip
    with pytest.raises(ConfigError) as err:
        await create_server(cfg)

    assert "secret 'does/not/exist'" in err.value.message
    assert "ResourceNotFoundException" in err.value.message


# --- the CLI against a secured router -----------------------------------------------------------


async def test_cli_sends_the_key_and_speaks_tls_and_mtls(tmp_path, model_server, routers):
    pki = make_pki(tmp_path / "pki")
    path = tmp_path / "keys.yaml"
    rc, out, _ = await cli("keys", "create", "--file", str(path), "--tenant", "acme")
    key = out.strip()
    tls = {"cert_file": pki.server_cert, "key_file": pki.server_key, "client_ca_file": pki.ca}
    router = await _router(routers, model_server, {"keys_file": str(path)}, tls=tls)
    address = f"127.0.0.1:{router.port}"
    mtls = ["--ca-bundle", pki.ca, "--client-cert", pki.client_cert,
            "--client-key", pki.client_key]  # fmt: skip

    rc, out, err = await cli(
        "chat", "--address", address, *mtls, "--json", "--max-tokens", "3", "hey you",
        env={"HYBRID_ROUTER_API_KEY": key},
    )  # fmt: skip
    assert rc == 0, err
    assert json.loads(out.splitlines()[-1])["usage"]["backend"] == "gpu-a"

    rc, out, err = await cli("route", "--address", address, *mtls, "--api-key", key, "--json", "x")
    assert rc == 0, err
    assert json.loads(out)["backend"] == "gpu-a"

    rc, _, err = await cli("backends", "--address", address, *mtls)
    assert rc == 1
    assert "UNAUTHENTICATED: missing API key" in err and "--api-key" in err

    rc, _, err = await cli("route", "--address", address, "--api-key", key, "x")
    assert rc == 1 and "UNAVAILABLE" in err and "TLS mismatch?" in err, err

    rc, _, err = await cli("route", "--address", address, "--ca-bundle", pki.ca, "--api-key", key,
                           "--timeout", "10", "x")  # fmt: skip
    assert rc == 1 and "UNAVAILABLE" in err and "--client-cert" in err, err
    assert key not in err


# --- issue 18: flags boto3 cannot use, missing stores, --json, help ------------------------------

KEY_ID = "3f9a1c2b7d4e"
ACTIONS = {
    "create": ["keys", "create", "--tenant", "acme"],
    "list": ["keys", "list"],
    "revoke": ["keys", "revoke", KEY_ID],
}


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: ") and "Traceback" not in captured.err
    return line


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        ([], ["secret x: no AWS region", "--region", "AWS_REGION", "AWS_DEFAULT_REGION"]),
        (["--region", "eu west 1"], ["--region 'eu west 1' is not an AWS region name"]),
        (
            ["--region", "eu-west-1", "--endpoint-url", "notaurl"],
            ["--endpoint-url 'notaurl' is not an http(s) URL"],
        ),
    ],
    ids=["no-region", "bad-region", "bad-endpoint"],
)
def test_aws_flags_boto3_cannot_use_are_one_usage_error_line(action, flags, needles, capsys):
    argv = [*ACTIONS[action], "--secret-id", "x", *flags]

    assert cli_main(argv) == 2

    line = _one_error_line(capsys)
    assert all(n in line for n in needles), line


@pytest.mark.parametrize("action", ["list", "revoke"])
@pytest.mark.parametrize("via", ["flag", "env"])
def test_listing_or_revoking_from_a_missing_file_is_a_usage_error(
    action, via, tmp_path, capsys, monkeypatch
):
    path = tmp_path / "nope.yaml"
    if via == "flag":
        argv = [*ACTIONS[action], "--file", str(path)]
    else:
        monkeypatch.setenv("HYBRID_ROUTER_KEYS_FILE", str(path))
        argv = ACTIONS[action]

    assert cli_main(argv) == 2

    line = _one_error_line(capsys)
    assert line.startswith(f"error: {path}: file not found; ")
    assert f"keys create --file {path}" in line
    assert not path.exists()


async def test_listing_or_revoking_from_a_missing_secret_is_a_usage_error(request, aws_env):  # noqa: F811
    moto_url = request.getfixturevalue("moto_server")
    common = ["--secret-id", "no/such/keys", "--region", "eu-west-1", "--endpoint-url", moto_url]
    for action in ("list", "revoke"):
        rc, out, err = await cli(*ACTIONS[action], *common)

        assert (rc, out) == (2, ""), err
        assert err.startswith("error: secret no/such/keys: not found"), err
        assert "--secret-id" in err and len(err.strip().splitlines()) == 1


def test_revoke_json_prints_the_key_as_json(tmp_path, capsys):
    path = str(tmp_path / "keys.yaml")
    assert cli_main(["keys", "create", "--file", path, "--tenant", "acme", "--json"]) == 0
    key_id = json.loads(capsys.readouterr().out)["id"]

    assert cli_main(["keys", "revoke", "--file", path, key_id, "--json"]) == 0
    first = capsys.readouterr()
    assert cli_main(["keys", "revoke", "--file", path, key_id, "--json"]) == 0
    again = capsys.readouterr()

    row = json.loads(first.out)
    assert row == {
        "id": key_id, "tenant": "acme", "name": "", "created": row["created"],
        "revoked": True, "already_revoked": False,
    }  # fmt: skip
    assert json.loads(again.out) == row | {"already_revoked": True}
    assert f"revoked key {key_id}" in first.err and "already revoked" in again.err


@pytest.mark.parametrize("action", list(ACTIONS))
def test_every_keys_action_has_help_with_examples(action, capsys):
    assert cli_main(["keys", action, "--help"]) == 0

    out = capsys.readouterr().out
    assert out.startswith(f"usage: hybrid-router keys {action}")
    examples = out.split("\nexamples:\n", 1)[1]
    assert f"  hybrid-router keys {action} " in examples
