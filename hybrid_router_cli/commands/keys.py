"""``hybrid-router keys create | list | revoke``: API keys in a keys file or a secret.

The store holds ids, tenants and SHA-256 hashes only (router/security/keys.py). ``create``
prints the new key once, alone on stdout (``KEY=$(hybrid-router keys create ...)``), and a
note on stderr; nothing can show it again. ``list`` never shows a secret (there is none
to show). ``revoke`` marks the key revoked; routers stop accepting it at their next
refresh (``auth.refresh_s``).

Where: ``--file PATH`` (default ``$HYBRID_ROUTER_KEYS_FILE``) or ``--secret-id ID`` (an AWS
Secrets Manager secret; created on the first ``create``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hybrid_router.env import ENV_KEYS_FILE as ENV_KEYS_FILE  # --file's default

from hybrid_router_cli import aws, registry, render
from hybrid_router_cli.errors import EXIT_USAGE, CliError
from hybrid_router_cli.registry import Command
from router.errors import ConfigError
from router.security.keys import KeyRecord, hash_key, is_key_id, new_key

_TENANT_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")

_NOTE = """
Routers read the same file (auth.keys_file) or secret (auth.secrets_manager.secret_id)
and pick up changes within auth.refresh_s. See docs/security.md.
"""

_CREATE_EXAMPLES = """\
  hybrid-router keys create --file keys.yaml --tenant acme --name "ci pipeline"
  export HYBRID_ROUTER_API_KEY=$(hybrid-router keys create --file keys.yaml --tenant acme)
  hybrid-router keys create --secret-id hybrid-router/keys --region eu-west-1 --tenant acme
"""
_LIST_EXAMPLES = """\
  hybrid-router keys list --file keys.yaml
  hybrid-router keys list --secret-id hybrid-router/keys --region eu-west-1 --json
"""
_REVOKE_EXAMPLES = """\
  hybrid-router keys revoke --file keys.yaml 3f9a1c2b7d4e
  hybrid-router keys revoke --secret-id hybrid-router/keys --region eu-west-1 3f9a1c2b7d4e
"""
_EXAMPLES = "examples:\n" + _CREATE_EXAMPLES + _LIST_EXAMPLES + _REVOKE_EXAMPLES + _NOTE


# --- stores ---------------------------------------------------------------------------------


class _FileStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def read(self, *, missing_ok: bool = False) -> list[KeyRecord]:
        """The keys; a missing file is empty for ``create`` (which makes it), else an error."""
        from router.security.keystore import parse_keys_document

        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if missing_ok:
                return []
            raise CliError(
                f"{self.path}: file not found; check --file (or ${ENV_KEYS_FILE}), or make "
                f"the file with: hybrid-router keys create --file {self.path} --tenant NAME",
                exit_code=EXIT_USAGE,
            ) from None
        except OSError as exc:
            raise CliError(f"cannot read {self.path}: {exc.strerror}") from None
        return parse_keys_document(text, source=str(self.path))

    def write(self, records: list[KeyRecord]) -> None:
        from router.security.keystore import write_keys_file

        try:
            write_keys_file(self.path, records)
        except OSError as exc:
            raise CliError(f"cannot write {self.path}: {exc.strerror}") from None


class _SecretStore:
    def __init__(self, secret_id: str, region: str, endpoint_url: str) -> None:
        self.secret_id = secret_id
        self.where = f"secret {secret_id}"
        try:
            import boto3  # noqa: F401
        except ImportError as exc:  # pragma: no cover - boto3 is in the router extra
            raise CliError(f"--secret-id needs boto3 ({exc})") from None
        self._client = aws.client(
            "secretsmanager", region=region, endpoint_url=endpoint_url, what=self.where
        )
        self._exists = True

    def _call(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            if code == "ResourceNotFoundException":
                raise
            raise CliError(f"{self.where}: {code}: {exc}") from None
        except BotoCoreError as exc:
            raise CliError(f"{self.where}: {exc}") from None

    def read(self, *, missing_ok: bool = False) -> list[KeyRecord]:
        """The keys; a missing secret is empty for ``create`` (which makes it), else an
        error."""
        from botocore.exceptions import ClientError

        from router.security.keystore import parse_keys_document

        try:
            resp = self._call(self._client.get_secret_value, SecretId=self.secret_id)
        except ClientError:
            if not missing_ok:
                raise CliError(
                    f"{self.where}: not found (ResourceNotFoundException); check --secret-id "
                    "and --region, or make it with: hybrid-router keys create --secret-id "
                    f"{self.secret_id} --tenant NAME",
                    exit_code=EXIT_USAGE,
                ) from None
            self._exists = False
            return []
        return parse_keys_document(resp.get("SecretString") or "", source=self.where)

    def write(self, records: list[KeyRecord]) -> None:
        from router.security.keystore import dump_keys_document

        text = dump_keys_document(records)
        if self._exists:
            self._call(self._client.put_secret_value, SecretId=self.secret_id, SecretString=text)
        else:
            self._call(
                self._client.create_secret,
                Name=self.secret_id,
                SecretString=text,
                Description="hybrid-router API keys (hashes only)",
            )
            self._exists = True


def _store(args: argparse.Namespace, environ: Mapping[str, str]) -> _FileStore | _SecretStore:
    if args.secret_id:
        if args.file:
            raise CliError("give --file or --secret-id, not both", exit_code=EXIT_USAGE)
        return _SecretStore(args.secret_id, args.region or "", args.endpoint_url or "")
    path = args.file or environ.get(ENV_KEYS_FILE)
    if not path:
        raise CliError(
            f"no keys store: pass --file PATH (or set {ENV_KEYS_FILE}) or --secret-id ID",
            exit_code=EXIT_USAGE,
        )
    return _FileStore(Path(path))


# --- commands ---------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _create(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    tenant = args.tenant
    if not tenant or len(tenant) > 64 or not set(tenant) <= _TENANT_CHARS or tenant[0] in "._-":
        raise CliError(
            f"--tenant must be 1-64 characters from letters, digits and . _ - "
            f"(starting with a letter or digit), got {tenant!r}",
            exit_code=EXIT_USAGE,
        )
    store = _store(args, environ)
    records = store.read(missing_ok=True)
    key_id, key = new_key()
    while any(r.id == key_id for r in records):  # 48 random bits: practically never
        key_id, key = new_key()
    record = KeyRecord(
        id=key_id, tenant=tenant, hash=hash_key(key), created=_now(), name=args.name or ""
    )
    store.write([*records, record])
    if args.json:
        data = {"id": key_id, "tenant": tenant, "key": key, "created": record.created}
        print(render.to_json(data, indent=None))
    else:
        print(key)
    print(
        f"created key {key_id} for tenant {tenant!r} in {store.where}. The key above is shown "
        "only now: store it in your secret manager. The store keeps only its hash.",
        file=sys.stderr,
    )
    return 0


def _row(record: KeyRecord) -> dict[str, Any]:
    """A key as ``--json`` prints it: never a secret (the store has none)."""
    return {f: getattr(record, f) for f in ("id", "tenant", "name", "created", "revoked")}


def _list(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    store = _store(args, environ)
    records = store.read()
    if args.json:
        print(render.to_json([_row(r) for r in records]))
        return 0
    if not records:
        print(f"no keys in {store.where}", file=sys.stderr)
        return 0
    render.make_console().print(render.keys_table(records, where=store.where))
    return 0


def _revoke(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    key_id = args.key_id
    if key_id.startswith("hr_"):
        raise CliError(
            "give the key's id (the 12 hex digits after hr_), not the key itself",
            exit_code=EXIT_USAGE,
        )
    if not is_key_id(key_id):
        raise CliError(
            f"a key id is 12 hex digits (see `keys list`), got {key_id!r}", exit_code=EXIT_USAGE
        )
    store = _store(args, environ)
    records = store.read()
    match = [r for r in records if r.id == key_id]
    if not match:
        raise CliError(f"no key {key_id} in {store.where} (see `hybrid-router keys list`)")
    already = match[0].revoked
    if not already:
        store.write([replace(r, revoked=True) if r.id == key_id else r for r in records])
    if args.json:
        row = _row(replace(match[0], revoked=True)) | {"already_revoked": already}
        print(render.to_json(row, indent=None))
    if already:
        print(f"key {key_id} was already revoked", file=sys.stderr)
        return 0
    print(
        f"revoked key {key_id} (tenant {match[0].tenant!r}); routers reject it after their "
        "next refresh (auth.refresh_s)",
        file=sys.stderr,
    )
    return 0


_ACTIONS: dict[str, Callable[[argparse.Namespace, Mapping[str, str]], int]] = {
    "create": _create,
    "list": _list,
    "revoke": _revoke,
}


def run(args: argparse.Namespace) -> int:
    aws.check_endpoint_url(args.endpoint_url or "")
    try:
        return _ACTIONS[args.keys_command](args, os.environ)
    except ConfigError as exc:  # a keys file or secret that does not parse: exit 2
        raise CliError(exc.message, exit_code=EXIT_USAGE) from None


# --- parser -----------------------------------------------------------------------------------


def _store_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("store")
    g.add_argument("--file", metavar="PATH", help=f"keys file (default: ${ENV_KEYS_FILE})")
    g.add_argument("--secret-id", metavar="ID", help="AWS Secrets Manager secret instead")
    g.add_argument("--region", help="AWS region of the secret (default: the AWS config)")
    g.add_argument("--endpoint-url", metavar="URL", help="Secrets Manager endpoint override")
    p.add_argument("--json", action="store_true", help="print JSON")


def _action(ks: Any, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    return ks.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog="examples:\n" + examples + _NOTE,
        formatter_class=registry.FORMATTER,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    c = _action(ks, "create", "create a key (printed once)", _CREATE_EXAMPLES)
    c.add_argument("--tenant", required=True, help="tenant the key belongs to (auth.tenants)")
    c.add_argument("--name", default="", help="a label, e.g. who holds the key")
    _store_options(c)
    lst = _action(ks, "list", "list keys (ids, tenants, dates; never secrets)", _LIST_EXAMPLES)
    _store_options(lst)
    r = _action(ks, "revoke", "revoke a key by id", _REVOKE_EXAMPLES)
    r.add_argument("key_id", metavar="KEY_ID", help="the key's id (12 hex digits)")
    _store_options(r)


COMMAND = Command(
    name="keys",
    help="create, list and revoke API keys",
    description="Manage the router's API keys. Stores hold hashes only; see docs/security.md.",
    epilog=_EXAMPLES,
    add_arguments=add_arguments,
    run=run,
)
