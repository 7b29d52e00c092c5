"""API keys: format, hashing, verification; the keys document; the key store's refresh."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from router.config import AuthConfig, SecretsManagerConfig
from router.errors import ConfigError, PermissionDenied, Unauthenticated
from router.security.authn import Authenticator
from router.security.keys import KeyRecord, MalformedKey, hash_key, new_key, parse_key, verify
from router.security.keystore import (
    KeyStore,
    dump_keys_document,
    parse_keys_document,
    resolve_keys_path,
    write_keys_file,
)
from router.security.tenants import TenantAccess
from router.types import DataClass, Tier


def _record(key_id: str, key: str, tenant: str = "acme", **kw: object) -> KeyRecord:
    return KeyRecord(id=key_id, tenant=tenant, hash=hash_key(key), **kw)  # type: ignore[arg-type]


def test_new_keys_are_unique_and_parse_back_to_their_id() -> None:
    keys = {new_key() for _ in range(200)}

    assert len({k for _, k in keys}) == 200
    for key_id, key in keys:
        assert key.startswith(f"hr_{key_id}_") and len(key) == 3 + 12 + 1 + 43
        assert parse_key(key) == key_id


@pytest.mark.parametrize(
    "text",
    ["", "hr_", "hr_0123456789ab", "sk-live-0123456789abcdef", "hr_XYZ456789abc_" + "a" * 43,
     "hr_0123456789ab_" + "a" * 42, "hr_0123456789ab_" + "a" * 42 + "!"],
)  # fmt: skip
def test_malformed_keys_are_refused_without_quoting_them(text: str) -> None:
    with pytest.raises(MalformedKey) as err:
        parse_key(text)

    assert str(err.value) == "expected hr_<12 hex digits>_<43 characters>"


def test_verify_accepts_the_key_and_nothing_else() -> None:
    key_id, key = new_key()
    record = _record(key_id, key)
    _, other = new_key()

    assert record.hash.startswith("sha256:") and key not in record.hash
    assert verify(key, record)
    assert not verify(other, record)
    assert not verify(key[:-1] + ("A" if key[-1] != "A" else "B"), record)


def test_document_round_trip_keeps_every_field_and_no_secret() -> None:
    k1, key1 = new_key()
    k2, key2 = new_key()
    records = [
        _record(k1, key1, created="2025-01-01T00:00:00Z", name="ci"),
        _record(k2, key2, tenant="beta", revoked=True),
    ]

    text = dump_keys_document(records)

    assert key1 not in text and key2 not in text
    assert parse_keys_document(text, source="t") == records


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("keys: {}", "'keys' list"),
        ("version: 2\nkeys: []", "version 2"),
        ("keys: []\nextra: 1", "unknown keys"),
        ("keys:\n- {id: zz, tenant: a, hash: 'sha256:" + "0" * 64 + "'}", "keys[0]: id"),
        ("keys:\n- {id: 0123456789ab, tenant: a, hash: plain}", "keys[0]: hash"),
        (
            "keys:\n" + ("- {id: 0123456789ab, tenant: a, hash: 'sha256:" + "0" * 64 + "'}\n") * 2,
            "used twice",
        ),
        ("keys: [", "not valid YAML"),
    ],
)
def test_bad_documents_name_the_entry_and_the_problem(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_keys_document(text, source="keys.yaml")

    assert needle in err.value.message and err.value.message.startswith("keys.yaml: ")


def test_keys_file_is_written_atomically_with_owner_only_permissions(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keys.yaml"
    key_id, key = new_key()

    write_keys_file(path, [_record(key_id, key)])

    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert parse_keys_document(path.read_text(), source="t")[0].id == key_id
    assert [p.name for p in path.parent.iterdir()] == ["keys.yaml"]


def test_keys_file_path_may_come_from_the_environment() -> None:
    assert resolve_keys_path("env:KEYS", {"KEYS": "/etc/k.yaml"}) == Path("/etc/k.yaml")
    with pytest.raises(ConfigError) as err:
        resolve_keys_path("env:KEYS", {})
    assert "auth.keys_file" in err.value.message and "env:KEYS" in err.value.message


# --- the store --------------------------------------------------------------------------------


async def test_store_reloads_a_changed_file_and_sees_revocations(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    k1, key1 = new_key()
    write_keys_file(path, [_record(k1, key1)])
    store = KeyStore(AuthConfig(keys_file=str(path)), environ={})
    await store.load()
    assert store.get(k1) is not None and not store.get(k1).revoked  # type: ignore[union-attr]

    assert await store.refresh()  # unchanged file: nothing re-read
    loads = store.loads
    k2, key2 = new_key()
    write_keys_file(path, [_record(k1, key1, revoked=True), _record(k2, key2)])
    os.utime(path, (1, 1))  # a different mtime even within the clock's resolution
    assert await store.refresh()

    assert store.loads == loads + 1
    assert store.get(k1).revoked and store.get(k2) is not None  # type: ignore[union-attr]


async def test_a_failed_refresh_keeps_the_last_good_keys(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "keys.yaml"
    k1, key1 = new_key()
    write_keys_file(path, [_record(k1, key1)])
    store = KeyStore(AuthConfig(keys_file=str(path)), environ={})
    await store.load()

    path.write_text("keys: [")
    assert not await store.refresh()

    assert store.get(k1) is not None
    assert "keeping the previous set" in caplog.text


async def test_the_first_load_fails_loudly_when_the_file_is_missing(tmp_path: Path) -> None:
    store = KeyStore(AuthConfig(keys_file=str(tmp_path / "nope.yaml")), environ={})

    with pytest.raises(ConfigError) as err:
        await store.load()

    assert "keys file not found" in err.value.message and "keys create" in err.value.message


async def test_secret_source_is_read_on_every_refresh_and_ids_must_be_unique() -> None:
    k1, key1 = new_key()
    k2, key2 = new_key()
    docs = [dump_keys_document([_record(k2, key2)])]
    reads: list[str] = []

    def reader(cfg: SecretsManagerConfig) -> str:
        reads.append(cfg.secret_id)
        return docs[-1]

    inline = parse_keys_document(dump_keys_document([_record(k1, key1)]), source="t")[0]
    cfg = AuthConfig.model_validate(
        {
            "keys": [{"id": inline.id, "tenant": inline.tenant, "hash": inline.hash}],
            "secrets_manager": {"secret_id": "router/keys"},
        }
    )
    store = KeyStore(cfg, environ={}, secret_reader=reader)
    await store.load()
    assert {r.id for r in store.records()} == {k1, k2}

    docs.append(dump_keys_document([_record(k1, key1)]))  # the same id as an inline key
    assert not await store.refresh()
    assert reads == ["router/keys", "router/keys"]
    assert {r.id for r in store.records()} == {k1, k2}


# --- the authenticator ------------------------------------------------------------------------


def _authenticator(records: list[KeyRecord], tenants: list[str]) -> Authenticator:
    cfg = AuthConfig.model_validate(
        {"keys": [{"id": r.id, "tenant": r.tenant, "hash": r.hash, "revoked": r.revoked}
                  for r in records]}
    )  # fmt: skip
    access = {
        t: TenantAccess(t, frozenset(Tier), frozenset(), frozenset(DataClass)) for t in tenants
    }
    return Authenticator(KeyStore(cfg, environ={}), access)


def test_authenticate_returns_the_tenant_of_a_good_key() -> None:
    key_id, key = new_key()
    auth = _authenticator([_record(key_id, key)], ["acme"])

    principal = auth.authenticate([("authorization", f"Bearer {key}")])

    assert principal.tenant == "acme" and principal.key_id == key_id
    assert principal.access is not None and principal.access.name == "acme"
    assert auth.authenticate([("authorization", f"bearer   {key} ")]).tenant == "acme"


def test_authentication_failures_say_what_is_wrong_and_never_echo_the_key() -> None:
    key_id, key = new_key()
    rid, revoked_key = new_key()
    auth = _authenticator([_record(key_id, key), _record(rid, revoked_key, revoked=True)], ["acme"])
    _, stranger = new_key()
    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    cases = [
        ([], "missing API key"),
        ([("authorization", key)], "must be 'Bearer <key>'"),
        ([("authorization", "Basic dXNlcjpwYXNz")], "must be 'Bearer <key>'"),
        ([("authorization", "Bearer sk-not-ours-0123456789")], "malformed"),
        ([("authorization", f"Bearer {stranger}")], "not valid"),
        ([("authorization", f"Bearer {wrong_secret}")], f"API key {key_id} is not valid"),
        ([("authorization", f"Bearer {revoked_key}")], "revoked"),
        ([("authorization", f"Bearer {key}")] * 2, "one authorization"),
    ]
    for metadata, needle in cases:
        with pytest.raises(Unauthenticated) as err:
            auth.authenticate(metadata)
        message = err.value.message
        assert needle in message, (needle, message)
        for secret in (key, revoked_key, stranger, wrong_secret, "sk-not-ours", "dXNlcjpwYXNz"):
            assert secret not in message
            if secret.startswith("hr_"):
                assert secret[16:] not in message  # the 43-character secret part


def test_a_key_of_an_undefined_tenant_is_permission_denied() -> None:
    key_id, key = new_key()
    auth = _authenticator([_record(key_id, key, tenant="ghost")], ["acme"])

    with pytest.raises(PermissionDenied) as err:
        auth.authenticate([("authorization", f"Bearer {key}")])

    assert "'ghost'" in err.value.message and "auth.tenants" in err.value.message
    assert key not in err.value.message
