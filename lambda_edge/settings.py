"""Every environment variable the Lambda handlers read, read once at init.

Precedence: an explicit argument, then the variable, then the default. Errors name the
variable and the fix. The ``HYBRID_ROUTER_*`` names are defined once, in
:mod:`hybrid_router.env` (shipped in the layer with the contract); Powertools' own
variables are named here. The API key secret (``HYBRID_ROUTER_API_KEY_SECRET``) is
resolved by :mod:`lambda_edge.credentials` through :mod:`hybrid_router.refs`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from hybrid_router.env import (
    ENV_ADDRESS,
    ENV_API_KEY,
    ENV_API_KEY_SECRET,
    ENV_API_KEY_TTL_S,
    ENV_CA_BUNDLE,
    ENV_DEADLINE_MARGIN_MS,
    ENV_FORWARD_AUTHORIZATION,
    ENV_IDEMPOTENCY_TABLE,
    ENV_IDEMPOTENCY_TTL_S,
    ENV_JOB_TIMEOUT_S,
    ENV_JOBS_BUCKET,
    ENV_JOBS_DLQ_URL,
    ENV_JOBS_FAILURE_PREFIX,
    ENV_JOBS_RESULT_PREFIX,
    ENV_MAX_BODY_BYTES,
    ENV_TLS,
    ENV_TLS_SERVER_NAME,
    ENV_WS_FLUSH_MS,
    ENV_WS_MAX_FRAME_BYTES,
)

# Every HYBRID_ROUTER_* name is defined, with its meaning, in hybrid_router.env (one place
# for the router, the Lambda functions and the edge agent); re-exported here.
__all__ = [
    "ENV_ADDRESS",
    "ENV_API_KEY",
    "ENV_API_KEY_SECRET",
    "ENV_API_KEY_TTL_S",
    "ENV_CA_BUNDLE",
    "ENV_DEADLINE_MARGIN_MS",
    "ENV_FORWARD_AUTHORIZATION",
    "ENV_IDEMPOTENCY_TABLE",
    "ENV_IDEMPOTENCY_TTL_S",
    "ENV_JOBS_BUCKET",
    "ENV_JOBS_DLQ_URL",
    "ENV_JOBS_FAILURE_PREFIX",
    "ENV_JOBS_RESULT_PREFIX",
    "ENV_JOB_TIMEOUT_S",
    "ENV_MAX_BODY_BYTES",
    "ENV_METRICS_NAMESPACE",
    "ENV_SERVICE",
    "ENV_TLS",
    "ENV_TLS_SERVER_NAME",
    "ENV_WS_FLUSH_MS",
    "ENV_WS_MAX_FRAME_BYTES",
    "Settings",
    "SettingsError",
]

#: CloudWatch namespace of the EMF metrics (Powertools' own variable).
ENV_METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
ENV_SERVICE = "POWERTOOLS_SERVICE_NAME"

#: API Gateway integration limits (seconds): the call deadline never exceeds them.
HTTP_API_LIMIT_S = 30.0
WEBSOCKET_LIMIT_S = 29.0
WS_FRAME_LIMIT = 32 * 1024

_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()/-]{0,200}$")


class SettingsError(ValueError):
    """A variable is missing or malformed; the message names it and the fix."""


@dataclass(frozen=True, slots=True)
class Settings:
    address: str
    api_key: str = ""
    api_key_secret: str = ""
    api_key_ttl_s: float = 300.0
    forward_authorization: bool = False
    tls: bool = False
    ca_bundle: str = ""
    tls_server_name: str = ""
    deadline_margin_s: float = 1.0
    max_body_bytes: int = 1_048_576
    ws_flush_s: float = 0.1
    ws_max_frame_bytes: int = 32_000
    jobs_bucket: str = ""
    jobs_result_prefix: str = "results/"
    jobs_failure_prefix: str = "failures/"
    #: "": a job that no retry can help is reported failed like any other (SQS moves it
    #: to its DLQ after maxReceiveCount); set: it goes to this queue at once.
    jobs_dlq_url: str = ""
    idempotency_table: str = ""
    idempotency_ttl_s: int = 86_400
    job_timeout_s: float = 300.0
    metrics_namespace: str = "HybridRouter"
    service: str = "hybrid-router-lambda"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, jobs: bool = False) -> Settings:
        """Read and check every variable. ``jobs``: the SQS function's bucket and table
        are required."""
        env = os.environ if env is None else env
        address = env.get(ENV_ADDRESS, "").strip()
        if not address:
            raise SettingsError(
                f"{ENV_ADDRESS} is not set: set it to the router's host:port "
                f"(e.g. router.internal:50051)"
            )
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise SettingsError(f"{ENV_ADDRESS}={address!r}: must be host:port")
        s = cls(
            address=address,
            api_key=env.get(ENV_API_KEY, "").strip(),
            api_key_secret=env.get(ENV_API_KEY_SECRET, "").strip(),
            api_key_ttl_s=_number(env, ENV_API_KEY_TTL_S, 300.0, low=0.0),
            forward_authorization=_bool(env, ENV_FORWARD_AUTHORIZATION, False),
            tls=_bool(env, ENV_TLS, False),
            ca_bundle=env.get(ENV_CA_BUNDLE, "").strip(),
            tls_server_name=env.get(ENV_TLS_SERVER_NAME, "").strip(),
            deadline_margin_s=_number(env, ENV_DEADLINE_MARGIN_MS, 1000.0, low=0.0) / 1000.0,
            max_body_bytes=int(_number(env, ENV_MAX_BODY_BYTES, 1_048_576, low=1.0)),
            ws_flush_s=_number(env, ENV_WS_FLUSH_MS, 100.0, low=0.0) / 1000.0,
            ws_max_frame_bytes=int(
                _number(env, ENV_WS_MAX_FRAME_BYTES, 32_000, low=1024.0, high=WS_FRAME_LIMIT)
            ),
            jobs_bucket=env.get(ENV_JOBS_BUCKET, "").strip(),
            jobs_result_prefix=_prefix(env, ENV_JOBS_RESULT_PREFIX, "results/"),
            jobs_failure_prefix=_prefix(env, ENV_JOBS_FAILURE_PREFIX, "failures/"),
            jobs_dlq_url=env.get(ENV_JOBS_DLQ_URL, "").strip(),
            idempotency_table=env.get(ENV_IDEMPOTENCY_TABLE, "").strip(),
            idempotency_ttl_s=int(_number(env, ENV_IDEMPOTENCY_TTL_S, 86_400, low=60.0)),
            job_timeout_s=_number(env, ENV_JOB_TIMEOUT_S, 300.0, low=0.1),
            metrics_namespace=env.get(ENV_METRICS_NAMESPACE, "").strip() or "HybridRouter",
            service=env.get(ENV_SERVICE, "").strip() or "hybrid-router-lambda",
        )
        if s.api_key and s.api_key_secret:
            raise SettingsError(
                f"{ENV_API_KEY} and {ENV_API_KEY_SECRET} are both set: keep one (the secret "
                f"is the safer choice)"
            )
        if jobs:
            for var, value in (
                (ENV_JOBS_BUCKET, s.jobs_bucket),
                (ENV_IDEMPOTENCY_TABLE, s.idempotency_table),
            ):
                if not value:
                    raise SettingsError(f"{var} is not set: the SQS job function needs it")
        return s


def _number(
    env: Mapping[str, str], name: str, default: float, *, low: float, high: float | None = None
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: must be a number") from None
    if value < low or (high is not None and value > high):
        bound = f">= {low:g}" if high is None else f"between {low:g} and {high:g}"
        raise SettingsError(f"{name}={raw!r}: must be {bound}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r}: use true or false")


def _prefix(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, default).strip()
    if not _PREFIX.match(raw):
        raise SettingsError(f"{name}={raw!r}: use letters, digits and !_.*'()/- only")
    return raw
