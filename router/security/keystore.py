"""Where API key records come from, and the in-memory index the authenticator reads.

Sources (every one that is configured; ids must be unique across them):

- ``auth.keys``: records inline in router.yaml;
- ``auth.keys_file``: a YAML file written by ``hybrid-router keys`` (``env:VAR`` reads the
  path from the environment variable VAR, when the store is built; unset or empty is a
  config error, the rule of every reference: hybrid_router.refs);
- ``auth.secrets_manager.secret_id``: an AWS Secrets Manager secret whose SecretString is
  the same document (YAML or JSON). boto3 is imported only when this is set.

The file and the secret are re-read every ``auth.refresh_s`` seconds by a background task
(the file only when its mtime or size changed), so revocations reach running routers
within that time. A failed refresh keeps the last good set and logs a warning; a failed
first load stops the router from starting. Look-ups are one dict access by key id: the
request path never touches the file, the network or any other key's hash.

The document (keys file or secret)::

    version: 1
    keys:
      - {id: 3f9a1c2b7d4e, tenant: acme, hash: "sha256:...", created: "...", name: ci}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from hybrid_router.refs import SecretsManager, SecretUnreadable
from pydantic import ValidationError

from router.config import ApiKeyConfig, AuthConfig, SecretsManagerConfig, resolve_ref, yaml_problem
from router.errors import ConfigError
from router.preflight import OK, WARN, Finding, Options, captured_warnings
from router.security.keys import KeyRecord

if TYPE_CHECKING:
    from router.config import RouterConfig

log = logging.getLogger(__name__)

DOC_VERSION = 1
_HEADER = (
    "# hybrid-router API keys: ids, tenants and SHA-256 hashes only, never a secret.\n"
    "# Managed with `hybrid-router keys create|list|revoke`; see docs/security.md.\n"
)


# --- the document -------------------------------------------------------------------------


def _record(cfg: ApiKeyConfig) -> KeyRecord:
    return KeyRecord(
        id=cfg.id,
        tenant=cfg.tenant,
        hash=cfg.hash,
        created=cfg.created,
        name=cfg.name,
        revoked=cfg.revoked,
    )


def parse_keys_document(text: str, *, source: str) -> list[KeyRecord]:
    """Records from a keys document (YAML or JSON). Raises ConfigError naming the entry."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML or JSON: {yaml_problem(exc)}", source=source) from None
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("keys", []), list):
        raise ConfigError("expected a mapping with a 'keys' list (version: 1)", source=source)
    version = data.get("version", DOC_VERSION)
    if version != DOC_VERSION:
        raise ConfigError(f"version {version!r} is not supported (use 1)", source=source)
    unknown = set(data) - {"version", "keys"}
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)}; allowed: version, keys", source=source)
    records: list[KeyRecord] = []
    seen: set[str] = set()
    for i, item in enumerate(data.get("keys") or []):
        try:
            cfg = ApiKeyConfig.model_validate(item)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"keys[{i}]: {problems}", source=source) from None
        if cfg.id in seen:
            raise ConfigError(f"keys[{i}]: id {cfg.id} is used twice", source=source)
        seen.add(cfg.id)
        records.append(_record(cfg))
    return records


def dump_keys_document(records: Iterable[KeyRecord]) -> str:
    keys = []
    for r in records:
        entry: dict[str, Any] = {"id": r.id, "tenant": r.tenant, "hash": r.hash}
        if r.created:
            entry["created"] = r.created
        if r.name:
            entry["name"] = r.name
        if r.revoked:
            entry["revoked"] = True
        keys.append(entry)
    body = yaml.safe_dump({"version": DOC_VERSION, "keys": keys}, sort_keys=False)
    return _HEADER + body


def write_keys_file(path: Path, records: Iterable[KeyRecord]) -> None:
    """Replace ``path`` atomically (same folder, then rename), mode 0600."""
    text = dump_keys_document(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def resolve_keys_path(value: str, environ: Mapping[str, str]) -> Path:
    """``auth.keys_file``: a path, or ``env:VAR`` naming the variable that holds one (an unset
    or empty variable is a ConfigError naming it: hybrid_router.refs' one rule)."""
    return Path(
        resolve_ref(value, env=environ, key="auth.keys_file", fix="set it to the keys file's path")
    )


# --- Secrets Manager ------------------------------------------------------------------------

SecretReader = Callable[[SecretsManagerConfig], str]


def read_secret(cfg: SecretsManagerConfig) -> str:
    """The SecretString of ``cfg.secret_id`` (blocking; run it in a thread), read by
    hybrid_router.refs' Secrets Manager source. The keys document is a document, not a
    referenced value: an empty one is valid (no keys)."""
    source = SecretsManager(region=cfg.region, endpoint_url=cfg.endpoint_url)
    try:
        return source(cfg.secret_id)
    except SecretUnreadable as exc:
        fix = (
            " (check the name, region and the role's secretsmanager:GetSecretValue permission)"
            if exc.code
            else ""
        )
        raise ConfigError(
            f"cannot read secret {cfg.secret_id!r}: {exc.detail}{fix}",
            key="auth.secrets_manager.secret_id",
        ) from None


# --- the store --------------------------------------------------------------------------------


class KeyStore:
    """Key records by id, from every configured source, refreshed in the background."""

    def __init__(
        self,
        cfg: AuthConfig,
        *,
        environ: Mapping[str, str] | None = None,
        secret_reader: SecretReader = read_secret,
        tenants: Iterable[str] = (),
    ) -> None:
        env = os.environ if environ is None else environ
        self._cfg = cfg
        self._inline = [_record(k) for k in cfg.keys]
        self._path = resolve_keys_path(cfg.keys_file, env) if cfg.keys_file else None
        self._secret = cfg.secrets_manager if cfg.secrets_manager.secret_id else None
        self._read_secret = secret_reader
        self._tenants = frozenset(tenants)
        self._file_stamp: tuple[float, int] | None = None
        self._file_records: list[KeyRecord] = []
        self._secret_records: list[KeyRecord] = []
        self._secret_text: str | None = None
        self._by_id: dict[str, KeyRecord] = {r.id: r for r in self._inline}
        self._task: asyncio.Task[None] | None = None
        self.loads = 0

    # --- look-up (request path) ------------------------------------------------------------

    def get(self, key_id: str) -> KeyRecord | None:
        return self._by_id.get(key_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def records(self) -> list[KeyRecord]:
        return list(self._by_id.values())

    # --- loading ------------------------------------------------------------------------------

    def _read_file(self, force: bool) -> list[KeyRecord] | None:
        """Records of the keys file, or None when it did not change since the last read."""
        assert self._path is not None
        try:
            st = self._path.stat()
            stamp = (st.st_mtime, st.st_size)
            if not force and stamp == self._file_stamp:
                return None
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                "keys file not found; create it with `hybrid-router keys create --file "
                f"{self._path} --tenant NAME` or fix auth.keys_file",
                source=str(self._path),
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"cannot read keys file: {exc.strerror}", source=str(self._path)
            ) from None
        records = parse_keys_document(text, source=str(self._path))
        self._file_stamp = stamp
        return records

    def _load_sync(self, force: bool) -> bool:
        """Read the sources (blocking). True when the key set changed."""
        file_records = self._file_records
        secret_records = self._secret_records
        changed = force
        if self._path is not None:
            got = self._read_file(force)
            if got is not None:
                file_records, changed = got, True
        secret_text = self._secret_text
        if self._secret is not None:
            text = self._read_secret(self._secret)
            if force or text != self._secret_text:
                secret_records = parse_keys_document(
                    text, source=f"secret {self._secret.secret_id}"
                )
                secret_text, changed = text, True
        if not changed:
            return False
        by_id: dict[str, KeyRecord] = {}
        origin: dict[str, str] = {}
        for name, records in (
            ("auth.keys", self._inline),
            ("auth.keys_file", file_records),
            ("auth.secrets_manager", secret_records),
        ):
            for r in records:
                if r.id in by_id:
                    raise ConfigError(
                        f"key id {r.id} appears in both {origin[r.id]} and {name}; "
                        "keep each key in one source",
                        key="auth",
                    )
                by_id[r.id] = r
                origin[r.id] = name
        self._file_records = file_records
        self._secret_records = secret_records
        self._secret_text = secret_text
        self._by_id = by_id
        self.loads += 1
        orphans = sorted({r.tenant for r in by_id.values() if not r.revoked} - self._tenants)
        if orphans:
            log.warning(
                "API keys name tenants that auth.tenants does not define (%s): "
                "their requests get PERMISSION_DENIED until the tenants are added",
                ", ".join(orphans),
            )
        return True

    async def load(self) -> None:
        """The first load: raises ConfigError when a source cannot be read."""
        await asyncio.to_thread(self._load_sync, True)
        active = sum(1 for r in self._by_id.values() if not r.revoked)
        log.info("auth: %d API keys loaded (%d active)", len(self._by_id), active)

    async def refresh(self) -> bool:
        """Re-read the file (if changed) and the secret; keep the old set on failure."""
        try:
            changed = await asyncio.to_thread(self._load_sync, False)
        except ConfigError as exc:
            log.warning("auth: refreshing API keys failed, keeping the previous set: %s", exc)
            return False
        if changed:
            log.info("auth: API keys reloaded (%d keys)", len(self._by_id))
        return True

    def start(self) -> None:
        """Refresh every ``auth.refresh_s`` seconds while the router runs."""
        if self._task is None and (self._path is not None or self._secret is not None):
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._cfg.refresh_s)
            await self.refresh()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- start-up check (router/preflight.py) -----------------------------------------------------


async def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options) -> list[Finding]:
    """``auth keys``: every key source loads as ``serve`` loads it (the Secrets Manager
    secret only with ``opts.probe``: it needs AWS); counts keys and tenants, never prints
    a secret; keys naming undefined tenants warn."""
    auth = config.auth
    if not auth.configured:
        return []  # the exposure check says what that means on this address
    sources = []
    if auth.keys:
        sources.append(f"{len(auth.keys)} inline (auth.keys)")
    if auth.keys_file:
        sources.append(f"file {auth.keys_file}")
    secret = auth.secrets_manager.secret_id
    unread = ""
    if secret and not opts.probe:
        auth = auth.model_copy(update={"secrets_manager": SecretsManagerConfig()})
        unread = f"; secret {secret!r} not read (needs AWS: --probe reads it)"
    elif secret:
        sources.append(f"secret {secret}")
    tenants = [t.name for t in config.auth.tenants]
    with captured_warnings(log.name) as warnings:
        try:
            store = KeyStore(auth, environ=env, tenants=tenants)
            await store.load()  # starts no refresh task: nothing to close
        except ConfigError as exc:
            return [Finding.failed("auth keys", exc, "auth.keys_file")]
    records = store.records()
    active = [r for r in records if not r.revoked]
    detail = (
        f"keys: {len(records)} ({len(active)} active, {len(records) - len(active)} revoked) "
        f"from {', '.join(sources) or 'no source read'}; key tenants: "
        f"{', '.join(sorted({r.tenant for r in active})) or 'none'}; auth.tenants: "
        f"{', '.join(tenants) or 'none'}{unread}"
    )
    if warnings:
        return [Finding(WARN, "auth keys", "auth.tenants", f"{detail}. {' '.join(warnings)}")]
    if not active and not unread:
        return [
            Finding(
                WARN,
                "auth keys",
                "auth.keys_file",
                f"{detail}: every request is refused (UNAUTHENTICATED)",
                "create one with `hybrid-router keys create --tenant NAME --file PATH`",
            )
        ]
    return [Finding(OK, "auth keys", "auth", detail)]
