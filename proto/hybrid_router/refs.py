"""References in configuration, resolved in one place with one rule for empty values.

Every component resolves its references here: the router (router.yaml, through
``router.config.refs``), the Lambda functions (``lambda_edge.credentials``) and anything else
that ships the ``hybrid_router`` package. Stdlib only at import; boto3 is imported when a
secret is first read.

The forms, as written today:

==================================  ============================================================
``env:NAME`` in a string field      the value of environment variable NAME (:func:`resolve`);
                                    any other string is a literal, returned as it is
a field that names a variable       e.g. ``api_key_env: OPENAI_API_KEY``,
                                    ``edge.relay.token_env`` (:func:`resolve_env`)
a Secrets Manager secret            a secret name or ARN in its own field (``api_key_secret``
                                    with ``api_key_secret_field``,
                                    ``HYBRID_ROUTER_API_KEY_SECRET``); the value is the
                                    secret's string, or one field of it when it is a JSON
                                    object (:func:`resolve_secret`, :func:`secret_value`)
==================================  ============================================================

**The rule for empty values:** a reference whose value is unset, empty or only whitespace
is an error (:class:`RefError`) that names the field and the variable or secret, e.g.
``backends[gpu].api_key_env: env:OPENAI_API_KEY is unset or empty; set it or remove the
field``. Only references are checked: a literal, empty or not, is the field's own business.
Values from the environment are returned as they are; values from a secret are stripped.

Secret values are never part of an error message or a log line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = [
    "ENV_REF_PREFIX",
    "PERMANENT_SECRET_ERRORS",
    "RefError",
    "SecretSource",
    "SecretUnreadable",
    "SecretsManager",
    "env_ref",
    "quiet_botocore_bodies",
    "resolve",
    "resolve_env",
    "resolve_secret",
    "secret_value",
]

#: A string field whose value starts with this reads the rest as an environment variable name.
ENV_REF_PREFIX = "env:"

#: Secrets Manager error codes no retry fixes: the secret is missing, unreadable or bad.
PERMANENT_SECRET_ERRORS = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "AccessDenied",
        "DecryptionFailure",
        "InvalidParameterException",
        "InvalidRequestException",
        "ValidationException",
    }
)

_MAX_DETAIL = 300
_DEFAULT_FIX = "set it or remove the field"


class RefError(ValueError):
    """A reference cannot be resolved. ``message`` names the field and the reference;
    ``detail`` is the same without the field (for callers that add their own context).

    ``permanent``: only a change of configuration, environment or secret fixes it (a
    transient Secrets Manager failure is the one case where it is False). The base of every
    reference error; ``router.errors`` re-exports it and ``router.config.refs.ConfigRefError``
    is both this and a ``router.errors.ConfigError``.
    """

    permanent: bool = True

    def __init__(self, message: str, *, field: str = "", ref: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.ref = ref
        self.detail = detail or message


class SecretUnreadable(RefError):
    """A secret could not be read (missing, no permission, no network...). ``code`` is the
    service's error code when it answered."""

    def __init__(
        self,
        message: str,
        *,
        field: str = "",
        ref: str = "",
        detail: str = "",
        code: str = "",
        permanent: bool = True,
    ) -> None:
        super().__init__(message, field=field, ref=ref, detail=detail)
        self.code = code
        self.permanent = permanent


# --- environment ------------------------------------------------------------------------------


def env_ref(value: str) -> str | None:
    """The variable name of an ``env:NAME`` value; None for a literal."""
    if value.startswith(ENV_REF_PREFIX):
        return value[len(ENV_REF_PREFIX) :]
    return None


def resolve(value: str, *, field: str, env: Mapping[str, str] | None = None, fix: str = "") -> str:
    """``value``, or the environment variable it names when it is ``env:NAME``.

    ``field``: where the value was written (``backends[gpu].headers.X-Team``), for the
    error; ``env``: the environment (default ``os.environ``, read now, never at import);
    ``fix``: what the error tells the reader to do (default: set it or remove the field).
    Raises :class:`RefError` when the variable is unset, empty or only whitespace.
    """
    name = env_ref(value)
    if name is None:
        return value
    return resolve_env(name, field=field, env=env, fix=fix)


def resolve_env(
    name: str, *, field: str, env: Mapping[str, str] | None = None, fix: str = ""
) -> str:
    """The value of environment variable ``name``, for a field that names a variable
    (``api_key_env``, ``edge.relay.token_env``). Same rule and errors as :func:`resolve`."""
    environ = os.environ if env is None else env
    ref = f"{ENV_REF_PREFIX}{name}"
    if not name.strip():
        detail = f"{ref!r} names no variable"
        raise RefError(f"{field}: {detail}; write env:NAME", field=field, ref=ref, detail=detail)
    value = environ.get(name, "")
    if not value.strip():
        detail = f"{ref} is unset or empty"
        raise RefError(
            f"{field}: {detail}; {fix or _DEFAULT_FIX}", field=field, ref=ref, detail=detail
        )
    return value


# --- Secrets Manager ---------------------------------------------------------------------------


class SecretSource(Protocol):
    """Reads a secret's text by id. Raises :class:`SecretUnreadable`."""

    def __call__(self, secret_id: str) -> str: ...


#: botocore loggers that write request and response bodies at DEBUG: prompts, answers and
#: Secrets Manager values. Kept at INFO unless the operator set their level explicitly.
_BODY_LOGGERS = ("botocore.endpoint", "botocore.parsers", "botocore.auth")


def quiet_botocore_bodies() -> None:
    """Stop botocore from logging bodies (secrets, prompt text) under a DEBUG root logger."""
    for name in _BODY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


class SecretsManager:
    """:class:`SecretSource` over AWS Secrets Manager: one GetSecretValue per call, blocking
    (run it in a worker thread from async code).

    Credentials come from the standard AWS chain; ``region`` and ``endpoint_url`` empty
    mean the chain's (``AWS_REGION``, ``AWS_ENDPOINT_URL_SECRETS_MANAGER``...). boto3 is
    imported, and the client made, on the first call. ``binary``: a secret stored as
    SecretBinary is read as UTF-8 text (otherwise it is an error naming the fix).
    """

    def __init__(self, *, region: str = "", endpoint_url: str = "", binary: bool = False) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self.binary = binary
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SecretsManager(region={self.region!r}, endpoint_url={self.endpoint_url!r})"

    def _unreadable(
        self, secret_id: str, detail: str, *, code: str = "", permanent: bool = True
    ) -> SecretUnreadable:
        return SecretUnreadable(
            f"cannot read secret {secret_id!r}: {detail}",
            ref=secret_id,
            detail=detail,
            code=code,
            permanent=permanent,
        )

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3

                quiet_botocore_bodies()
                kwargs: dict[str, Any] = {}
                if self.region:
                    kwargs["region_name"] = self.region
                if self.endpoint_url:
                    kwargs["endpoint_url"] = self.endpoint_url
                self._client = boto3.session.Session().client("secretsmanager", **kwargs)
            return self._client

    def __call__(self, secret_id: str) -> str:
        try:
            import botocore.exceptions
        except ImportError:
            raise self._unreadable(
                secret_id, "boto3 is not installed (pip install boto3)", permanent=True
            ) from None
        try:
            resp = self._get_client().get_secret_value(SecretId=secret_id)
        except botocore.exceptions.ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", "")) or "error"
            message = _short(str(err.get("Message", "")))
            raise self._unreadable(
                secret_id,
                f"{code}: {message}" if message else code,
                code=code,
                permanent=code in PERMANENT_SECRET_ERRORS,
            ) from None
        except botocore.exceptions.NoRegionError:
            raise self._unreadable(
                secret_id,
                "no AWS region (set the region in the configuration, or AWS_DEFAULT_REGION)",
            ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._unreadable(
                secret_id, f"{type(exc).__name__}: {_short(str(exc))}", permanent=False
            ) from None
        text = resp.get("SecretString")
        if text is None and resp.get("SecretBinary") is not None:
            if not self.binary:
                raise self._unreadable(
                    secret_id, "holds binary data (SecretBinary); store the value as a string"
                )
            try:
                text = bytes(resp["SecretBinary"]).decode("utf-8")
            except UnicodeDecodeError:
                raise self._unreadable(secret_id, "SecretBinary is not UTF-8 text") from None
        if not isinstance(text, str):
            raise self._unreadable(secret_id, "the secret has no value")
        return text


def secret_value(
    text: str, *, secret_id: str, field: str, json_key: str = "", detect_json: bool = False
) -> str:
    """The value held by a secret's ``text``, stripped: the whole text, or the string field
    ``json_key`` of the JSON object it holds. ``detect_json``: read ``json_key`` only when
    the text looks like a JSON object (starts with ``{``), else take the whole text.

    Raises :class:`RefError` (naming ``field`` and the secret, never the value) when the
    value is empty or only whitespace, or the JSON is not as expected.
    """
    stripped = text.strip()
    ref = secret_id
    if json_key and (not detect_json or stripped.startswith("{")):
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
        value = data.get(json_key) if isinstance(data, dict) else None
        if isinstance(value, str) and value.strip():
            return value.strip()
        if detect_json and not isinstance(data, dict):
            detail = f"looks like JSON but is not a JSON object with a string {json_key!r} field"
        else:
            detail = f"is not a JSON object with a non-empty string {json_key!r} field"
        fix = f'store {{"{json_key}": "..."}}' + (" or the value alone" if detect_json else "")
        raise RefError(
            f"{field}: secret {secret_id!r} {detail}; {fix}", field=field, ref=ref, detail=detail
        )
    if not stripped:
        detail = "is empty"
        raise RefError(
            f"{field}: secret {secret_id!r} {detail}; put the value in it or remove the field",
            field=field,
            ref=ref,
            detail=detail,
        )
    return stripped


def resolve_secret(
    secret_id: str,
    *,
    field: str,
    json_key: str = "",
    detect_json: bool = False,
    secrets: SecretSource | None = None,
) -> str:
    """The value a Secrets Manager secret holds (:func:`secret_value`), read through
    ``secrets`` (default: a :class:`SecretsManager` with the standard chain). Blocking.

    Raises :class:`SecretUnreadable` (``permanent`` False for a transient failure) or
    :class:`RefError`, both naming ``field`` and the secret.
    """
    source = SecretsManager() if secrets is None else secrets
    try:
        text = source(secret_id)
    except SecretUnreadable as exc:
        raise SecretUnreadable(
            f"{field}: {exc.message}",
            field=field,
            ref=secret_id,
            detail=exc.detail,
            code=exc.code,
            permanent=exc.permanent,
        ) from None
    return secret_value(
        text, secret_id=secret_id, field=field, json_key=json_key, detect_json=detect_json
    )
