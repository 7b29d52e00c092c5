"""hybrid_router.refs against Secrets Manager (a real ``moto_server``): the one source every
component reads secrets through, and the one rule for empty values."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from awsenv import aws_env, moto_server  # noqa: F401 - fixtures
from hybrid_router.refs import RefError, SecretsManager, SecretUnreadable, resolve_secret

REGION = "eu-west-1"


@pytest.fixture
def sm(aws_env: None, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:  # noqa: F811
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_server)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    client = boto3.client("secretsmanager", region_name=REGION)
    yield client
    for page in client.get_paginator("list_secrets").paginate():
        for s in page["SecretList"]:
            client.delete_secret(SecretId=s["ARN"], ForceDeleteWithoutRecovery=True)
    client.close()


def test_a_secret_is_read_whole_or_by_json_field(sm: Any) -> None:
    arn = sm.create_secret(Name="refs/plain", SecretString=" sk-plain \n")["ARN"]
    sm.create_secret(Name="refs/json", SecretString='{"api_key": "sk-json", "x": 1}')
    source = SecretsManager()
    assert resolve_secret("refs/plain", field="F", secrets=source) == "sk-plain"
    assert resolve_secret(arn, field="F", secrets=source) == "sk-plain"
    assert resolve_secret("refs/json", field="F", json_key="api_key", secrets=source) == "sk-json"
    assert source("refs/json") == '{"api_key": "sk-json", "x": 1}'  # the text, as stored


def test_an_explicit_endpoint_and_region_win_over_the_chain(
    sm: Any,
    moto_server: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sm.create_secret(Name="refs/explicit", SecretString="v")
    monkeypatch.delenv("AWS_ENDPOINT_URL_SECRETS_MANAGER")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    source = SecretsManager(region=REGION, endpoint_url=moto_server)
    assert resolve_secret("refs/explicit", field="F", secrets=source) == "v"


@pytest.mark.parametrize("stored", [" ", "\n\t "])
def test_an_empty_secret_is_an_error_naming_field_and_secret(sm: Any, stored: str) -> None:
    sm.create_secret(Name="refs/empty", SecretString=stored)
    with pytest.raises(RefError) as info:
        resolve_secret("refs/empty", field="backends[a].api_key_secret")
    assert info.value.message == (
        "backends[a].api_key_secret: secret 'refs/empty' is empty; put the value in it or "
        "remove the field"
    )
    assert not isinstance(info.value, SecretUnreadable)


def test_a_json_secret_without_the_field_names_it_not_the_value(sm: Any) -> None:
    sm.create_secret(Name="refs/nofield", SecretString='{"token": "sk-hidden"}')
    with pytest.raises(RefError) as info:
        resolve_secret("refs/nofield", field="F", json_key="api_key")
    assert "'api_key' field" in info.value.message and "sk-hidden" not in info.value.message


def test_a_missing_secret_is_permanent_and_names_the_code(sm: Any) -> None:
    with pytest.raises(SecretUnreadable) as info:
        resolve_secret("refs/missing", field="auth.secrets_manager.secret_id")
    err = info.value
    assert err.code == "ResourceNotFoundException" and err.permanent
    assert err.message.startswith(
        "auth.secrets_manager.secret_id: cannot read secret 'refs/missing': "
        "ResourceNotFoundException"
    )


def test_a_binary_secret_is_read_only_where_asked(sm: Any) -> None:
    sm.create_secret(Name="refs/binary", SecretBinary=b"sk-bin")
    with pytest.raises(SecretUnreadable, match="holds binary data"):
        SecretsManager()("refs/binary")
    assert SecretsManager(binary=True)("refs/binary") == "sk-bin"


def test_no_region_is_a_permanent_error(
    aws_env: None,  # noqa: F811
    moto_server: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_server)
    with pytest.raises(SecretUnreadable, match="no AWS region") as info:
        SecretsManager()("refs/any")
    assert info.value.permanent
