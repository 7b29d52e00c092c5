"""The agent's settings: component configuration (JSON, the recipe's DefaultConfiguration
shape) overridden by command-line flags.

Precedence: flag > ``--config`` file (or the Greengrass configuration read over IPC at
start) > default. Under Greengrass the recipe passes each value as a flag, interpolated
from ``{configuration:/...}``; standalone, ``--config component-config.json`` is handy.
Errors name the key (``tls.certFile``) or the flag and what is allowed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from greengrass.manifest import ManifestError, check_segment
from greengrass.probation import MAX_ERROR_RATE, MIN_REQUESTS, PROBATION_S, ProbationPolicy


class AgentConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class AgentConfig:
    #: host:port of the router (the Service in front of the replicas).
    router: str = ""
    device_id: str = ""
    site: str = ""
    #: Plaintext link (development only); otherwise TLS, mTLS with cert_file/key_file.
    insecure: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    engine: str = "llamacpp"
    model_name: str = "gemma3-270m"
    model_family: str = "gemma3"
    #: Version to run until the router says otherwise ("" = keep what is installed).
    desired_version: str = ""
    #: Serve the model shipped with the engine package until a version is installed.
    bundled_model: bool = True
    model_bucket: str = ""
    model_prefix: str = "models"
    s3_region: str = ""
    s3_endpoint_url: str = ""
    work_dir: str = ""
    n_threads: int = 2
    #: llama.cpp context window (0 = the manifest's; 2048 for the bundled model).
    context_window: int = 0
    max_decode_tokens_per_s: float = 0.0
    #: Scripted engine options for the built-in (artifact-less) model: tests only.
    scripted: Mapping[str, Any] = field(default_factory=dict)
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    drain_grace_s: float = 20.0
    min_free_disk_mb: int = 256
    smoke_timeout_s: float = 60.0
    #: Post-swap watchdog (greengrass.probation): a new version whose engine fails more
    #: than ``probation_max_error_rate`` of at least ``probation_min_requests`` requests
    #: within ``probation_s`` of its swap is rolled back (probation_s 0: never).
    probation_s: float = PROBATION_S
    probation_min_requests: int = MIN_REQUESTS
    probation_max_error_rate: float = MAX_ERROR_RATE
    #: Greengrass IPC: configuration updates and status to IoT Core (needs a nucleus).
    ipc: bool = False
    log_level: str = "INFO"


#: Component-configuration key path -> field.
_KEYS: dict[str, str] = {
    "routerEndpoint": "router",
    "deviceId": "device_id",
    "site": "site",
    "tls.insecure": "insecure",
    "tls.caFile": "ca_file",
    "tls.certFile": "cert_file",
    "tls.keyFile": "key_file",
    "tls.serverName": "server_name",
    "engine": "engine",
    "model.name": "model_name",
    "model.family": "model_family",
    "model.version": "desired_version",
    "model.bundled": "bundled_model",
    "modelStore.bucket": "model_bucket",
    "modelStore.prefix": "model_prefix",
    "modelStore.region": "s3_region",
    "modelStore.endpointUrl": "s3_endpoint_url",
    "llamacpp.threads": "n_threads",
    "llamacpp.contextWindow": "context_window",
    "llamacpp.maxDecodeTokensPerS": "max_decode_tokens_per_s",
    "scripted": "scripted",
    "reconnect.initialS": "reconnect_initial_s",
    "reconnect.maxS": "reconnect_max_s",
    "drainGraceS": "drain_grace_s",
    "minFreeDiskMb": "min_free_disk_mb",
    "smokeTimeoutS": "smoke_timeout_s",
    "probation.seconds": "probation_s",
    "probation.minRequests": "probation_min_requests",
    "probation.maxErrorRate": "probation_max_error_rate",
    "workDir": "work_dir",
    "ipc": "ipc",
    "logLevel": "log_level",
}
_TYPES = {f.name: f.type for f in fields(AgentConfig)}


def _coerce(key: str, name: str, value: Any) -> Any:
    kind = _TYPES[name]
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", ""):
            return value.lower() == "true"
        raise AgentConfigError(f"{key}: must be true or false, got {value!r}")
    if kind in ("int", "float"):
        if isinstance(value, bool):
            raise AgentConfigError(f"{key}: must be a number, got {value!r}")
        try:
            number = float(value) if kind == "float" else int(value)
        except (TypeError, ValueError):
            raise AgentConfigError(f"{key}: must be a number, got {value!r}") from None
        if number < 0:
            raise AgentConfigError(f"{key}: must be >= 0, got {value!r}")
        return number
    if kind == "str":
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise AgentConfigError(f"{key}: must be a string, got {value!r}")
        return str(value)
    if not isinstance(value, Mapping):
        raise AgentConfigError(f"{key}: must be an object, got {value!r}")
    return dict(value)


def from_component_config(data: Mapping[str, Any], base: AgentConfig | None = None) -> AgentConfig:
    """Apply a component configuration (camelCase keys, nested) on ``base``."""
    updates: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path in _KEYS:
                updates[_KEYS[path]] = _coerce(path, _KEYS[path], value)
            elif isinstance(value, Mapping) and any(k.startswith(path + ".") for k in _KEYS):
                walk(value, path + ".")
            else:
                known = ", ".join(sorted(_KEYS))
                raise AgentConfigError(f"{path}: unknown key (known: {known})")

    walk(data, "")
    return replace(base or AgentConfig(), **updates)


def load_file(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AgentConfigError(f"--config {path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise AgentConfigError(f"--config {path}: cannot read JSON: {exc}") from None
    if not isinstance(data, dict):
        raise AgentConfigError(f"--config {path}: must be a JSON object")
    return data


def validate(cfg: AgentConfig) -> AgentConfig:
    """Check what the agent needs to start. Raises AgentConfigError."""
    host, sep, port = cfg.router.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise AgentConfigError(f"routerEndpoint (--router): must be host:port, got {cfg.router!r}")
    if not cfg.device_id:
        raise AgentConfigError("deviceId (--device-id): required (the Greengrass thing name)")
    if cfg.engine not in ("llamacpp", "scripted"):
        raise AgentConfigError(f"engine: 'llamacpp' or 'scripted', got {cfg.engine!r}")
    if bool(cfg.cert_file) != bool(cfg.key_file):
        raise AgentConfigError("tls.certFile and tls.keyFile go together: set both or neither")
    try:
        check_segment(cfg.model_name, "model.name")
        if cfg.desired_version:
            check_segment(cfg.desired_version, "model.version")
    except ManifestError as exc:
        raise AgentConfigError(str(exc)) from None
    if cfg.reconnect_initial_s <= 0 or cfg.reconnect_max_s < cfg.reconnect_initial_s:
        raise AgentConfigError("reconnect: need 0 < initialS <= maxS")
    if cfg.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise AgentConfigError(f"logLevel: DEBUG, INFO, WARNING or ERROR, got {cfg.log_level!r}")
    if not cfg.work_dir:
        raise AgentConfigError("workDir (--work-dir): required (Greengrass: {work:path})")
    probation_policy(cfg)
    return cfg


def probation_policy(cfg: AgentConfig) -> ProbationPolicy:
    """The post-swap watchdog's settings. Raises AgentConfigError naming the key."""
    try:
        return ProbationPolicy(
            seconds=cfg.probation_s,
            min_requests=cfg.probation_min_requests,
            max_error_rate=cfg.probation_max_error_rate,
        )
    except ValueError as exc:
        raise AgentConfigError(str(exc)) from None


_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("--router", "router", "router host:port (routerEndpoint)"),
    ("--device-id", "device_id", "device id, the Greengrass thing name (deviceId)"),
    ("--site", "site", "site name for site affinity (site)"),
    ("--ca-file", "ca_file", "CA bundle of the router's certificate (tls.caFile)"),
    ("--cert-file", "cert_file", "device client certificate, PEM (tls.certFile)"),
    ("--key-file", "key_file", "device private key, PEM (tls.keyFile)"),
    ("--server-name", "server_name", "name to check the router's certificate against"),
    ("--engine", "engine", "llamacpp (default) or scripted (tests)"),
    ("--model-name", "model_name", "model name (model.name)"),
    ("--model-family", "model_family", "model family (model.family)"),
    ("--desired-version", "desired_version", "model version to run at start (model.version)"),
    ("--model-bucket", "model_bucket", "S3 bucket of the model store (modelStore.bucket)"),
    ("--model-prefix", "model_prefix", "key prefix of the model store (modelStore.prefix)"),
    ("--s3-region", "s3_region", "region of the bucket (modelStore.region)"),
    ("--s3-endpoint-url", "s3_endpoint_url", "S3 endpoint override (modelStore.endpointUrl)"),
    ("--work-dir", "work_dir", "folder for models and state (workDir; Greengrass {work:path})"),
    ("--threads", "n_threads", "llama.cpp threads (llamacpp.threads)"),
    ("--context-window", "context_window", "llama.cpp context (llamacpp.contextWindow)"),
    ("--max-decode-tokens-per-s", "max_decode_tokens_per_s", "cap decoding (tokens/s)"),
    ("--drain-grace-s", "drain_grace_s", "seconds to finish requests on SIGTERM"),
    ("--min-free-disk-mb", "min_free_disk_mb", "disk to leave free after a download"),
    ("--smoke-timeout-s", "smoke_timeout_s", "seconds a new model gets for its smoke test"),
    ("--probation-s", "probation_s", "seconds a new version is watched after a swap (0: off)"),
    (
        "--probation-min-requests",
        "probation_min_requests",
        "requests a new version serves before it can fail its probation",
    ),
    (
        "--probation-max-error-rate",
        "probation_max_error_rate",
        "engine failure rate above which a new version is rolled back (0.5)",
    ),
    ("--reconnect-initial-s", "reconnect_initial_s", "first reconnect delay"),
    ("--reconnect-max-s", "reconnect_max_s", "largest reconnect delay"),
    ("--log-level", "log_level", "DEBUG, INFO, WARNING, ERROR"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m greengrass.agent",
        description=(
            "The hybrid-router edge agent: serves a local model to the router over an "
            "EdgeLink it dials out (gRPC, mTLS) and keeps the model at the version the "
            "router asks for (S3 model store). Prints 'READY <device id>' once registered; "
            "drains on SIGTERM."
        ),
    )
    p.add_argument("--config", metavar="JSON", help="component configuration file")
    for flag, dest, text in _FLAGS:
        p.add_argument(flag, dest=dest, default=None, help=text)
    p.add_argument("--insecure", action="store_true", default=None, help="plaintext link (dev)")
    p.add_argument(
        "--no-bundled-model",
        dest="bundled_model",
        action="store_false",
        default=None,
        help="serve nothing until a model version is installed",
    )
    p.add_argument("--scripted", metavar="JSON", help="scripted engine options (tests)")
    p.add_argument("--ipc", action="store_true", default=None, help="use Greengrass IPC")
    return p


def from_args(argv: Sequence[str] | None = None) -> AgentConfig:
    """Parse flags (over ``--config``) into a validated AgentConfig."""
    args = build_parser().parse_args(argv)
    cfg = AgentConfig()
    if args.config:
        cfg = from_component_config(load_file(args.config), cfg)
    updates: dict[str, Any] = {}
    for flag, dest, _ in _FLAGS:
        value = getattr(args, dest)
        if value is not None:
            updates[dest] = _coerce(flag, dest, value)
    for dest in ("insecure", "bundled_model", "ipc"):
        value = getattr(args, dest)
        if value is not None:
            updates[dest] = value
    if args.scripted:
        try:
            updates["scripted"] = _coerce("--scripted", "scripted", json.loads(args.scripted))
        except ValueError as exc:
            raise AgentConfigError(f"--scripted: not JSON: {exc}") from None
    return replace(cfg, **updates)
