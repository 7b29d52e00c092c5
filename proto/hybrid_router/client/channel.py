"""Where and how to reach the router: the target, TLS, keepalive and message size, read
from arguments or the environment, and the metadata every call carries.

:class:`ChannelConfig` is shared by the sync and the async client; ``open_sync()`` and
``open_aio()`` make the channel. Its defaults are the ones a long-lived client needs:

- keepalive pings every 30 s while a call is open (what the router's server accepts),
  so a connection that died while a Lambda container was frozen is noticed;
- reconnect after 100 ms-1 s instead of gRPC's 1-120 s backoff (a Lambda invocation has
  seconds, and the clients' retries need a live channel);
- messages up to 16 MiB received (a large decision table, a long answer).

TLS: ``tls=True`` uses the system's root certificates; ``ca_bundle`` (a PEM file's path,
or the PEM text or bytes), a client certificate and key (mTLS), or ``server_name`` (the
name to check in the router's certificate when the address is not one of its names)
turn it on too. A plaintext channel is only ever made when none of them is given.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc
from grpc import aio

from hybrid_router.client.context import valid_traceparent
from hybrid_router.client.errors import REQUEST_ID_METADATA, OptionError

# The variables :meth:`ChannelConfig.from_env` and the clients' ``from_env`` read (at call
# time, never at import); named once, in hybrid_router.env, and re-exported here.
from hybrid_router.env import (
    ENV_ADDRESS,
    ENV_API_KEY,
    ENV_CA_BUNDLE,
    ENV_TLS,
    ENV_TLS_SERVER_NAME,
)

__all__ = [
    "ENV_ADDRESS",
    "ENV_API_KEY",
    "ENV_CA_BUNDLE",
    "ENV_TLS",
    "ENV_TLS_SERVER_NAME",
    "ApiKey",
    "ChannelConfig",
    "call_metadata",
    "check_api_key",
    "check_metadata",
    "parse_target",
]

AUTH_METADATA = "authorization"
TRACEPARENT_METADATA = "traceparent"
USER_AGENT = "hybrid-router-client/1"

#: An API key: the key, or a callable that returns the current one (e.g. a cached
#: secret), read for every call.
ApiKey = str | Callable[[], str | None] | None

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def parse_target(address: str, option: str = "address") -> str:
    """``address`` when it is ``host:port`` (port 1-65535; ``[v6]:port`` too), else
    :class:`OptionError` naming ``option``."""
    host, sep, port = (address or "").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise OptionError(
            option, f"must be host:port (e.g. router.internal:50051), got {address!r}"
        )
    return address


def read_pem(value: bytes | str, option: str) -> bytes:
    """PEM given as bytes, as text, or as the path of a file; :class:`OptionError`
    naming ``option`` when the file cannot be read."""
    if isinstance(value, bytes):
        return value
    if "-----BEGIN" in value:
        return value.encode()
    try:
        with open(value, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise OptionError(
            option,
            f"{value!r} cannot be read ({exc.strerror}); give the path of a PEM file "
            "(e.g. shipped in the Lambda layer under /opt) or the PEM text itself",
        ) from None


def truthy(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise OptionError(name, "use true or false", text=f"{name}={value!r}: use true or false")


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """One router channel's settings; checked when made (errors name the option)."""

    address: str
    tls: bool = False
    ca_bundle: bytes | str | None = None
    client_cert: bytes | str | None = None
    client_key: bytes | str | None = None
    server_name: str | None = None
    keepalive_time_s: float = 30.0
    keepalive_timeout_s: float = 5.0
    max_receive_message_bytes: int = 16 * 1024 * 1024
    user_agent: str = USER_AGENT

    def __post_init__(self) -> None:
        parse_target(self.address)
        if bool(self.client_cert) != bool(self.client_key):
            raise OptionError(
                "client_cert" if not self.client_cert else "client_key",
                "a client certificate and its key go together: give both or neither",
            )
        if self.keepalive_time_s <= 0 or self.keepalive_timeout_s <= 0:
            raise OptionError("keepalive_time_s", "keepalive times must be > 0")
        if self.max_receive_message_bytes < 1024:
            raise OptionError("max_receive_message_bytes", "must be >= 1024")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ChannelConfig:
        """From ``HYBRID_ROUTER_ADDRESS`` (required), ``HYBRID_ROUTER_TLS``,
        ``HYBRID_ROUTER_CA_BUNDLE`` (a PEM file; implies TLS) and
        ``HYBRID_ROUTER_TLS_SERVER_NAME``. Keyword arguments win over the environment."""
        env = os.environ if env is None else env
        kwargs: dict[str, Any] = {"address": env.get(ENV_ADDRESS, "")}
        if env.get(ENV_TLS) is not None:
            kwargs["tls"] = truthy(env[ENV_TLS], ENV_TLS)
        if env.get(ENV_CA_BUNDLE):
            kwargs["ca_bundle"] = env[ENV_CA_BUNDLE]
        if env.get(ENV_TLS_SERVER_NAME):
            kwargs["server_name"] = env[ENV_TLS_SERVER_NAME]
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        if not kwargs["address"]:
            raise OptionError(
                ENV_ADDRESS,
                "is not set",
                text=f"{ENV_ADDRESS} is not set: set it to the router's host:port",
            )
        return cls(**kwargs)

    @property
    def use_tls(self) -> bool:
        return bool(self.tls or self.ca_bundle or self.client_cert or self.server_name)

    def with_files_read(self) -> ChannelConfig:
        """The same settings with PEM files read now (OptionError names a bad one), so a
        missing file is reported before any call."""
        return replace(
            self,
            ca_bundle=read_pem(self.ca_bundle, "ca_bundle") if self.ca_bundle else None,
            client_cert=read_pem(self.client_cert, "client_cert") if self.client_cert else None,
            client_key=read_pem(self.client_key, "client_key") if self.client_key else None,
        )

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials, or None for a plaintext channel."""
        if not self.use_tls:
            return None
        cfg = self.with_files_read()
        return grpc.ssl_channel_credentials(
            root_certificates=cfg.ca_bundle,
            private_key=cfg.client_key,
            certificate_chain=cfg.client_cert,
        )

    def options(self) -> list[tuple[str, Any]]:
        opts: list[tuple[str, Any]] = [
            ("grpc.keepalive_time_ms", int(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_receive_message_length", self.max_receive_message_bytes),
            ("grpc.primary_user_agent", self.user_agent),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        if self.server_name:
            opts.append(("grpc.ssl_target_name_override", self.server_name))
            opts.append(("grpc.default_authority", self.server_name))
        return opts

    def open_sync(self) -> grpc.Channel:
        creds = self.credentials()
        if creds is None:
            return grpc.insecure_channel(self.address, options=self.options())
        return grpc.secure_channel(self.address, creds, options=self.options())

    def open_aio(self) -> aio.Channel:
        """A ``grpc.aio`` channel: make it inside the event loop that will use it."""
        creds = self.credentials()
        if creds is None:
            return aio.insecure_channel(self.address, options=self.options())
        return aio.secure_channel(self.address, creds, options=self.options())


def current_key(api_key: ApiKey) -> str | None:
    return api_key() if callable(api_key) else api_key


def call_metadata(
    *,
    api_key: str | None = None,
    request_id: str = "",
    traceparent: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    """A call's metadata: ``authorization: Bearer <key>``, ``x-request-id``, a valid W3C
    ``traceparent`` (a malformed one is dropped), then ``extra``."""
    md: list[tuple[str, str]] = []
    if api_key:
        check_api_key(api_key)
        md.append((AUTH_METADATA, f"Bearer {api_key}"))
    if request_id:
        if not _printable(request_id):
            raise OptionError("request_id", "must be printable ASCII on one line")
        md.append((REQUEST_ID_METADATA, request_id))
    if tp := valid_traceparent(traceparent):
        md.append((TRACEPARENT_METADATA, tp))
    md.extend(check_metadata(extra))
    return md


_METADATA_KEY = re.compile(r"[0-9a-z_.-]+")


def _printable(text: str) -> bool:
    return all(" " <= c <= "~" for c in text)


def check_api_key(key: str) -> None:
    """OptionError (never quoting the key) unless ``key`` can travel in a header."""
    if not _printable(key) or " " in key:
        raise OptionError(
            "api_key",
            "holds spaces, line breaks or non-ASCII characters; copy the key again "
            "(an hr_<id>_<secret> key is printable ASCII)",
        )


def check_metadata(pairs: Sequence[tuple[str, str]]) -> Sequence[tuple[str, str]]:
    """``pairs`` when gRPC can send them, else OptionError naming the bad one: keys are
    lower-case letters, digits, ``-``, ``_`` and ``.``, not ``grpc-...``; values are
    printable ASCII (bytes under a key ending ``-bin``)."""
    for key, value in pairs:
        if not isinstance(key, str) or not _METADATA_KEY.fullmatch(key):
            raise OptionError(
                "metadata",
                f"key {key!r} is not a gRPC metadata key: use lower-case letters, digits, "
                "'-', '_' and '.'",
            )
        if key.startswith("grpc-"):
            raise OptionError("metadata", f"key {key!r}: keys starting grpc- are reserved")
        if key.endswith("-bin"):
            if not isinstance(value, bytes | str):
                raise OptionError("metadata", f"value of {key!r} must be bytes")
        elif not isinstance(value, str) or not _printable(value):
            raise OptionError(
                "metadata",
                f"value of {key!r} must be printable ASCII on one line (binary values go "
                "under a key ending -bin)",
            )
    return pairs


CHANNEL_KEYS = frozenset(ChannelConfig.__dataclass_fields__) - {"address"}


def make_config(target: str | ChannelConfig, channel: Mapping[str, Any]) -> ChannelConfig:
    """A ChannelConfig from an address and channel keywords (None: the default)."""
    unknown = sorted(set(channel) - CHANNEL_KEYS)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(unknown)}")
    given = {k: v for k, v in channel.items() if v is not None}
    if isinstance(target, ChannelConfig):
        if given:
            raise TypeError(f"give {', '.join(sorted(given))} in the ChannelConfig")
        return target
    return ChannelConfig(target, **given)


def config_from_env(
    env: Mapping[str, str] | None, overrides: dict[str, Any]
) -> tuple[ChannelConfig, dict[str, Any]]:
    """A client's ``from_env``: (ChannelConfig, the client's own keywords, with
    ``api_key`` from ``HYBRID_ROUTER_API_KEY`` unless given) from the environment and
    keyword overrides (which win)."""
    env = os.environ if env is None else env
    channel = {k: overrides.pop(k) for k in list(overrides) if k in CHANNEL_KEYS | {"address"}}
    config = ChannelConfig.from_env(env, **channel)
    if env.get(ENV_API_KEY) and "api_key" not in overrides:
        overrides["api_key"] = env[ENV_API_KEY]
    return config, overrides
