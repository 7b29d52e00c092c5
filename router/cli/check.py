"""``hybrid-router check``: is this router.yaml ready to run? Without starting the server.

The config is loaded exactly as ``serve`` loads it (same loader, ``HYBRID_ROUTER__...``
overrides, same errors). Then every check that ``serve`` would otherwise only make at
start, or at the first request, runs through the code that ``serve`` itself uses:

=====================  ==============================================================
check                  the code it runs
=====================  ==============================================================
event loop             ``router.server.app.loop_factory`` (uvloop installed when asked)
exposure               ``router.security.exposure``: no keys only on loopback; TLS off
                       on a public address
server.tls             ``router.security.tls.CertificateFiles``: files parse, the key
                       belongs to the certificate; plus the certificate's validity dates
auth keys              ``router.security.keystore.KeyStore``: the keys file (``env:VAR``
                       path included) and inline keys load; counts keys and tenants,
                       never prints a secret; keys naming undefined tenants
edge.*                 ``check_device_auth``, ``RelayTls``, ``relay_token``,
                       ``resolve_url`` (``router/edge``)
discovery              ``check_kubeconfig`` (``router/discovery``)
telemetry.tracing      ``build_provider`` (the OTLP exporter is installed)
backend NAME           ``create_backend``: ``api_key_env`` and ``env:VAR`` headers set;
                       Bedrock's region (its client is built, offline)
prices                 ``router.cli.prices`` rows: unpriced backends, prices without a source
tokenizer ID           ``Tokenizers.warm``: exact (GGUF) vocabularies load
routable NAME          ``TenantAccess`` + the policy's own ``RequestFilter``: some tenant
                       may send some data class to it, and a one-word prompt with
                       ``policy.default_max_output_tokens`` fits its context window
probe NAME             (``--probe``) the adapter's ``poll_load`` (ModelService ``Info``) or
                       an HTTP HEAD on the endpoint; never calls a model
=====================  ==============================================================

Results: ``ok``; ``warn`` (``serve`` runs, but degraded or with something that can never
be used; it logs a warning); ``fail`` (``serve`` would refuse to start, or requests would
fail). Exit status: 0 without a fail, 1 with one, 2 when the config does not load (as
``serve``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybrid_router.env import ENV_CONFIG
from hybrid_router.refs import env_ref

from router.cli.errors import CliError
from router.errors import ConfigError

if TYPE_CHECKING:
    from router.backends.base import Backend
    from router.config import BackendConfig, RouterConfig
    from router.security.tenants import TenantAccess

OK = "ok"
WARN = "warn"
FAIL = "fail"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

#: A certificate that expires sooner than this is a warning.
EXPIRY_WARNING = dt.timedelta(days=14)
DEFAULT_PROBE_TIMEOUT_S = 3.0

_EXAMPLES = """\
examples:
  hybrid-router check --config router.yaml
  hybrid-router check --config router.yaml --probe          # also dial every backend
  HYBRID_ROUTER__SERVER__ADDRESS=0.0.0.0:50051 hybrid-router check --config router.yaml
  hybrid-router check --config router.yaml --json | jq '.checks[] | select(.result != "ok")'

exit status:
  0  no check failed (warnings allowed)
  1  at least one check failed: serve would refuse to start, or requests would fail
  2  the config does not load (the same error, and status, as `hybrid-router serve`)

The config is loaded as serve loads it (--config, else $HYBRID_ROUTER_CONFIG, plus
HYBRID_ROUTER__... overrides); no port is opened and no model is called. See
docs/configuration.md#checking-a-config.
"""


@dataclass(frozen=True, slots=True)
class Finding:
    """One row of the report: what was checked, the result and the detail (with the fix)."""

    check: str
    result: str
    detail: str
    #: The config key the finding is about ("" when it is about the whole file).
    key: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _error(check: str, exc: ConfigError, key: str = "") -> Finding:
    """A failed check from the ConfigError ``serve`` would stop with (``key`` when the
    error names only a file)."""
    return Finding(check, FAIL, exc.message, exc.key or key)


class _Logged(logging.Handler):
    """Warnings the checked code logs (what ``serve`` would log at start)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _logged() -> Iterator[list[str]]:
    """Collect the warnings logged inside the block instead of printing them."""
    handler = _Logged()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.messages
    finally:
        root.removeHandler(handler)


class Checker:
    """Runs every check on a loaded config (see the module doc)."""

    def __init__(
        self,
        config: RouterConfig,
        *,
        environ: Mapping[str, str],
        probe: bool = False,
        probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.config = config
        self.environ = environ
        self.probe = probe
        self.probe_timeout_s = probe_timeout_s
        self._now = now
        self.findings: list[Finding] = []

    def _add(self, check: str, result: str, detail: str, key: str = "") -> None:
        self.findings.append(Finding(check, result, detail, key))

    async def run(self) -> list[Finding]:
        self._event_loop()
        self._exposure()
        self._server_tls()
        await self._keys()
        self._edge()
        self._discovery()
        self._tracing()
        self._any_backend()
        backends = await self._backends()
        try:
            self._prices()
            counter = self._tokenizers()
            self._routable(counter)
            if self.probe:
                for name, backend in backends.items():
                    await self._probe(name, backend)
        finally:
            for backend in backends.values():
                with contextlib.suppress(Exception):
                    await backend.close()
        return self.findings

    # --- server ---------------------------------------------------------------------------

    def _event_loop(self) -> None:
        from router.server.app import loop_factory

        choice = self.config.server.event_loop
        try:
            factory = loop_factory(choice)
        except ConfigError as exc:
            self.findings.append(_error("event loop", exc))
            return
        used = "asyncio" if factory is None else "uvloop"
        self._add("event loop", OK, f"server.event_loop {choice}: {used}", "server.event_loop")

    def _exposure(self) -> None:
        from router.security.exposure import check_auth_exposure, plaintext_notice

        try:
            notice = check_auth_exposure(self.config)
        except ConfigError as exc:
            self.findings.append(_error("exposure", exc))
            return
        address = self.config.server.address
        if notice is not None:
            self._add("exposure", WARN, notice, "auth")
        else:
            self._add("exposure", OK, f"API keys are required on {address}", "auth")
        plaintext = plaintext_notice(self.config)
        if plaintext is not None:
            self._add("exposure", WARN, plaintext, "server.tls")

    def _server_tls(self) -> None:
        from router.security.tls import CertificateFiles

        tls = self.config.server.tls
        if not tls.enabled:
            self._add("server.tls", OK, "off (plaintext gRPC port)", "server.tls")
            return
        try:
            CertificateFiles(tls)
        except ConfigError as exc:
            self.findings.append(_error("server.tls", exc))
            return
        mtls = ""
        if tls.client_ca_file:
            mtls = (
                "; client certificates required (mTLS)"
                if tls.require_client_cert
                else "; client_ca_file set but require_client_cert is false: none are asked for"
            )
        self._validity("server.tls", tls.cert_file, "server.tls.cert_file", f"key matches{mtls}")

    def _validity(self, check: str, cert_file: str, key: str, detail: str) -> None:
        """The (already checked) certificate's dates: expired or not yet valid fails."""
        from cryptography import x509

        cert = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())[0]
        now = self._now()
        end, start = cert.not_valid_after_utc, cert.not_valid_before_utc
        subject = cert.subject.rfc4514_string()
        if now >= end:
            self._add(
                check,
                FAIL,
                f"{key}: {cert_file} ({subject}) expired on {end:%Y-%m-%d %H:%M} UTC; clients "
                "refuse it: renew the certificate",
                key,
            )
        elif now < start:
            self._add(
                check,
                FAIL,
                f"{key}: {cert_file} ({subject}) is not valid before {start:%Y-%m-%d %H:%M} "
                "UTC; check the issuer's clock or reissue it",
                key,
            )
        elif end - now < EXPIRY_WARNING:
            self._add(
                check,
                WARN,
                f"{detail}; {cert_file} ({subject}) expires on {end:%Y-%m-%d %H:%M} UTC, in "
                f"{_days(end - now)}: renew it (rotated files are picked up without a restart)",
                key,
            )
        else:
            self._add(check, OK, f"{detail}; {subject}, valid until {end:%Y-%m-%d} UTC", key)

    # --- auth -----------------------------------------------------------------------------

    async def _keys(self) -> None:
        from router.config import SecretsManagerConfig
        from router.security.keystore import KeyStore

        auth = self.config.auth
        if not auth.configured:
            return  # the exposure check says what that means on this address
        sources = []
        if auth.keys:
            sources.append(f"{len(auth.keys)} inline (auth.keys)")
        if auth.keys_file:
            sources.append(f"file {auth.keys_file}")
        secret = auth.secrets_manager.secret_id
        unread = ""
        if secret and not self.probe:
            # Reading the secret needs AWS; only --probe goes out to the network.
            auth = auth.model_copy(update={"secrets_manager": SecretsManagerConfig()})
            unread = f"; secret {secret!r} not read (needs AWS: --probe reads it)"
        elif secret:
            sources.append(f"secret {secret}")
        tenants = [t.name for t in self.config.auth.tenants]
        with _logged() as warnings:
            try:
                store = KeyStore(auth, environ=self.environ, tenants=tenants)
                await store.load()  # starts no refresh task: nothing to close
            except ConfigError as exc:
                self.findings.append(_error("auth keys", exc, "auth.keys_file"))
                return
        records = store.records()
        active = [r for r in records if not r.revoked]
        detail = (
            f"keys: {len(records)} ({len(active)} active, {len(records) - len(active)} revoked) "
            f"from {', '.join(sources) or 'no source read'}; key tenants: "
            f"{', '.join(sorted({r.tenant for r in active})) or 'none'}; auth.tenants: "
            f"{', '.join(tenants) or 'none'}{unread}"
        )
        if warnings:
            self._add("auth keys", WARN, f"{detail}. {' '.join(warnings)}", "auth.tenants")
        elif not active and not unread:
            self._add(
                "auth keys",
                WARN,
                f"{detail}: every request is refused (UNAUTHENTICATED); create one with "
                "`hybrid-router keys create --tenant NAME --file PATH`",
                "auth.keys_file",
            )
        else:
            self._add("auth keys", OK, detail, "auth")

    # --- edge, discovery, telemetry -------------------------------------------------------

    def _edge(self) -> None:
        edge = self.config.edge
        if not edge.enabled:
            return
        from router.edge.hub import relay_token
        from router.server.edge_link import check_device_auth
        from router.server.relay import RelayTls
        from router.stores.device_directory import resolve_url

        try:
            check_device_auth(self.config)
        except ConfigError as exc:
            self.findings.append(_error("edge", exc))
        else:
            self._add("edge", OK, f"edge.device_auth {edge.device_auth}", "edge.device_auth")
        relay = edge.relay
        if relay.tls.enabled:
            try:
                RelayTls(relay.tls)
            except ConfigError as exc:
                self.findings.append(_error("edge.relay.tls", exc))
            else:
                self._validity(
                    "edge.relay.tls",
                    relay.tls.cert_file,
                    "edge.relay.tls.cert_file",
                    f"key matches; peers verified against {relay.tls.ca_file}",
                )
        if relay.token_env:
            try:
                relay_token(edge, self.environ)
            except ConfigError as exc:
                self.findings.append(_error("edge.relay.token_env", exc))
            else:
                self._add(
                    "edge.relay.token_env",
                    OK,
                    f"${relay.token_env} is set",
                    "edge.relay.token_env",
                )
        redis_var = env_ref(edge.directory.redis_url)
        if redis_var is not None:
            try:
                resolve_url(edge.directory.redis_url, self.environ)
            except ConfigError as exc:
                self.findings.append(_error("edge.directory.redis_url", exc))
            else:
                self._add(
                    "edge.directory.redis_url",
                    OK,
                    f"${redis_var} is set",
                    "edge.directory.redis_url",
                )

    def _discovery(self) -> None:
        kube = self.config.discovery.kubernetes
        if not kube.sources:
            return
        from router.discovery import check_kubeconfig

        try:
            check_kubeconfig(self.config.discovery)
        except ConfigError as exc:
            self.findings.append(_error("discovery", exc))
            return
        where = kube.kubeconfig or "the pod's service account, else ~/.kube/config"
        self._add(
            "discovery",
            OK,
            f"{len(kube.sources)} EndpointSlice sources; Kubernetes API through {where}",
            "discovery.kubernetes",
        )

    def _tracing(self) -> None:
        tracing = self.config.telemetry.tracing
        if tracing.exporter == "none":
            return
        from router.telemetry.tracing import build_provider

        try:
            provider = build_provider(tracing)
        except ConfigError as exc:
            self.findings.append(_error("telemetry.tracing", exc))
            return
        if provider is not None:
            provider.shutdown()
        self._add(
            "telemetry.tracing",
            OK,
            f"OTLP exporter to {tracing.endpoint or 'its default endpoint'}",
            "telemetry.tracing",
        )

    # --- backends ---------------------------------------------------------------------------

    def _any_backend(self) -> None:
        cfg = self.config
        if cfg.backends or cfg.discovery.kubernetes.sources or cfg.edge.enabled:
            return
        self._add(
            "backends",
            WARN,
            "no backends[], no discovery.kubernetes.sources and edge.enabled is off: the "
            "router starts, but every request fails (UNAVAILABLE); add a backend",
            "backends",
        )

    async def _backends(self) -> dict[str, Backend]:
        """Build each static backend's adapter as ``serve`` does (secrets from the
        environment are read here); Bedrock's client is built too (its region)."""
        from router.backends import create_backend

        built: dict[str, Backend] = {}
        for cfg in self.config.backends:
            check = f"backend {cfg.name}"
            try:
                backend = create_backend(cfg, environ=self.environ)
            except ConfigError as exc:
                self.findings.append(_error(check, exc))
                continue
            if cfg.kind == "bedrock":
                try:
                    await backend.start()  # builds the boto3 client offline: the region
                except ConfigError as exc:
                    self.findings.append(_error(check, exc))
                    await backend.close()
                    continue
            built[cfg.name] = backend
            self._add(check, OK, _backend_detail(cfg), f"backends[{cfg.name}]")
        return built

    def _prices(self) -> None:
        from router.cli.prices import rows_for

        rows = rows_for(self.config.backends)
        if not rows:
            return
        unpriced = [r.name for r in rows if not r.priced]
        unsourced = [r.name for r in rows if r.priced and not r.source]
        if unpriced:
            self._add(
                "prices",
                WARN,
                f"no price for {', '.join(unpriced)}: cost counts as 0, so the cheapest "
                "objective favours it; set backends[].cost.* and cost.source "
                "(`hybrid-router prices` shows the table)",
                "backends[].cost",
            )
        if unsourced:
            self._add(
                "prices",
                WARN,
                f"no cost.source for {', '.join(unsourced)}: note the provider's price page "
                "and the date the figures were taken",
                "backends[].cost.source",
            )
        if not unpriced and not unsourced:
            self._add("prices", OK, f"{len(rows)} backends priced, each with a source")

    def _tokenizers(self) -> Any:
        from router.tokenizers import ESTIMATE, Tokenizers

        counter = Tokenizers(self.config.policy.token_estimate)
        users: dict[str, list[str]] = {}
        for b in self.config.backends:
            users.setdefault(b.tokenizer.id, []).append(f"backends[{b.name}]")
        if self.config.edge.enabled:
            users.setdefault(self.config.edge.backend.tokenizer.id, []).append("edge.backend")
        for tid, where in sorted(users.items()):
            if tid == ESTIMATE:
                continue
            with _logged() as warnings:
                exact = counter.warm([tid]).get(tid, False)
            keys = ", ".join(f"{w}.tokenizer.path" for w in where)
            if exact:
                self._add(f"tokenizer {tid}", OK, "vocabulary loads: prompts counted exactly", keys)
            else:
                why = " ".join(warnings) or "the vocabulary did not load"
                self._add(
                    f"tokenizer {tid}",
                    FAIL,
                    f"{keys}: {why}. Fix the path (a readable .gguf file) or use "
                    "tokenizer.kind: estimate",
                    keys,
                )
        return counter

    def _tenants(self) -> list[TenantAccess] | None:
        """The tenants, or None when auth is off (anyone may send anything)."""
        from router.security.tenants import TenantAccess

        if not self.config.auth.configured:
            return None
        return [TenantAccess.from_config(t) for t in self.config.auth.tenants]

    def _routable(self, counter: Any) -> None:
        """Whether any caller can ever be routed to each static backend."""
        from router.errors import PermissionDenied
        from router.policy.filters import CONTEXT_WINDOW, RequestFilter
        from router.types import BackendSnapshot, DataClass, InferenceRequest, Message, Role

        policy = self.config.policy
        max_out = policy.default_max_output_tokens
        tenants = self._tenants()
        ids = {b.tokenizer.id for b in self.config.backends}
        requests = {
            dc: InferenceRequest(
                messages=(Message(Role.USER, "hello"),),
                max_output_tokens=max_out,
                request_id="check",
                data_class=dc,
            )
            for dc in DataClass
        }
        filters = {
            dc: RequestFilter(counter.features(req, ids), max_out, 0.0)
            for dc, req in requests.items()
        }
        for cfg in self.config.backends:
            spec = cfg.to_spec()
            key = f"backends[{cfg.name}]"
            callers = [None] if tenants is None else [t for t in tenants if t.allows(spec)]
            if not callers:
                self._add(
                    f"routable {cfg.name}",
                    WARN,
                    f"no tenant in auth.tenants may use it ({cfg.tier.value} tier): add the "
                    "tier (or the backend's name) to a tenant's tiers (backends), or remove "
                    "the backend",
                    key,
                )
                continue
            fresh = BackendSnapshot(name=spec.name)  # healthy, idle: only static filters bite
            reached: dict[str, set[str]] = {}
            window: str | None = None
            for dc, req in requests.items():
                for tenant in callers:
                    if tenant is not None:
                        try:
                            tenant.check_request(req)
                        except PermissionDenied:
                            continue
                    f = filters[dc]
                    rejection = f.check(spec, fresh, f.prompt_tokens(spec))
                    if rejection is None:
                        reached.setdefault(dc.value, set()).add(
                            "anyone" if tenant is None else tenant.name
                        )
                    elif rejection[0] == CONTEXT_WINDOW:
                        window = rejection[1]
            if window is not None:
                self._add(
                    f"routable {cfg.name}",
                    WARN,
                    f"{key}.context_window: a one-word prompt with the default max output "
                    f"(policy.default_max_output_tokens {max_out}) {window}: requests that do "
                    "not set a smaller max_output_tokens never go there; raise context_window "
                    "or lower policy.default_max_output_tokens",
                    f"{key}.context_window",
                )
            elif not reached:
                allowed = "; ".join(
                    f"{t.name}: {', '.join(sorted(t.data_classes)) or 'none'}"
                    for t in callers
                    if t is not None
                )
                self._add(
                    f"routable {cfg.name}",
                    WARN,
                    f"{key}.data_classes ({', '.join(sorted(spec.data_classes))}) shares no "
                    f"data class with the tenants that may use it ({allowed}): no request can "
                    f"go there; widen {key}.data_classes or a tenant's "
                    "auth.tenants[].data_classes",
                    f"{key}.data_classes",
                )
            else:
                who = "; ".join(
                    f"{dc} from {', '.join(sorted(names))}" for dc, names in sorted(reached.items())
                )
                self._add(f"routable {cfg.name}", OK, who, key)

    # --- probe ------------------------------------------------------------------------------

    async def _probe(self, name: str, backend: Backend) -> None:
        """Reachability through the adapter's own health signal, else an HTTP HEAD."""
        cfg = next(b for b in self.config.backends if b.name == name)
        check = f"probe {name}"
        key = f"backends[{name}].endpoint"
        timeout = self.probe_timeout_s
        try:
            await asyncio.wait_for(backend.start(), timeout)
        except ConfigError as exc:
            self.findings.append(_error(check, exc))
            return
        except TimeoutError:
            self._add(check, FAIL, f"setting up the adapter took over {timeout:g} s", key)
            return
        if cfg.kind in ("model_service", "ray_serve"):
            await self._probe_model_service(check, key, cfg, backend)
            return
        url = _http_probe_url(cfg)
        if url is None:
            self._add(
                check,
                WARN,
                "not probed: Bedrock is reached through the AWS SDK's regional endpoint "
                f"({cfg.region or 'region from the AWS config'}); set backends[{name}].endpoint "
                "to probe a VPC endpoint",
                key,
            )
            return
        import httpx

        try:
            async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
                resp = await client.head(url)
        except httpx.HTTPError as exc:
            self._add(
                check,
                FAIL,
                f"unreachable: HEAD {url}: {type(exc).__name__}: {exc or 'no detail'}; check "
                f"{key}, DNS and network policy",
                key,
            )
            return
        self._add(check, OK, f"reachable: HEAD {url} answered HTTP {resp.status_code}", key)

    async def _probe_model_service(
        self, check: str, key: str, cfg: BackendConfig, backend: Backend
    ) -> None:
        from router.backends.model_service import ModelServiceBackend
        from router.errors import BackendError

        timeout = self.probe_timeout_s
        try:
            load = await asyncio.wait_for(backend.poll_load(), timeout)
        except BackendError as exc:
            self._add(
                check,
                FAIL,
                f"unreachable: {cfg.endpoint}: {exc.reason}; check {key}, that the server "
                "runs and that the network allows it",
                key,
            )
            return
        except TimeoutError:
            self._add(check, FAIL, f"no answer from {cfg.endpoint} within {timeout:g} s", key)
            return
        if load is None:
            self._add(check, OK, f"reachable: {cfg.endpoint} (no Info RPC: no load signal)", key)
            return
        detail = f"reachable: {cfg.endpoint}, load {load}"
        if isinstance(backend, ModelServiceBackend) and cfg.kind == "model_service":
            with contextlib.suppress(BackendError, TimeoutError):
                info = await asyncio.wait_for(backend.info(), timeout)
                detail += f", serves {info.model or '?'} ({info.engine or 'engine ?'})"
                if info.context_window and cfg.context_window > info.context_window:
                    self._add(
                        check,
                        WARN,
                        f"{detail}; backends[{cfg.name}].context_window {cfg.context_window} > "
                        f"the server's {info.context_window}: prompts in between fail over "
                        f"as too large; set context_window: {info.context_window}",
                        f"backends[{cfg.name}].context_window",
                    )
                    return
        self._add(check, OK, detail, key)


def _days(delta: dt.timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} hours" if hours < 48 else f"{hours / 24:.0f} days"


def _backend_detail(cfg: BackendConfig) -> str:
    parts = [f"{cfg.kind} adapter", cfg.endpoint or "the provider's endpoint"]
    secrets = [f"${cfg.api_key_env} set"] if cfg.api_key_env else []
    secrets += [
        f"headers.{name} from ${var}"
        for name, value in cfg.headers.items()
        if (var := env_ref(value)) is not None
    ]
    if cfg.api_key_secret:
        secrets.append(f"key from secret {cfg.api_key_secret} (read at start)")
    if cfg.kind == "bedrock":
        secrets.append(f"region {cfg.region or 'from the AWS config'}")
    return ", ".join(parts + secrets)


def _http_probe_url(cfg: BackendConfig) -> str | None:
    if cfg.kind == "anthropic":
        from router.backends.anthropic import DEFAULT_ENDPOINT

        return cfg.endpoint or DEFAULT_ENDPOINT
    return cfg.endpoint or None


# --- command ------------------------------------------------------------------------------


def add_parser(sub: Any, formatter: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "check",
        help="validate a router.yaml before it runs (exit 0 ok, 1 a check failed, 2 bad config)",
        description=(
            "Load a router.yaml as serve does, then check what serve would only find at "
            "start or at the first request: the auth/exposure rule, TLS files, the keys "
            "file, secrets named by env, prices, backends no request can reach and exact "
            "tokenizers. --probe also dials every static backend (never calls a model)."
        ),
        epilog=_EXAMPLES,
        formatter_class=formatter,
    )
    p.add_argument("--config", metavar="PATH", help=f"router.yaml (default: ${ENV_CONFIG})")
    p.add_argument(
        "--probe",
        action="store_true",
        help="also connect to each static backend (health / Info, or HTTP HEAD)",
    )
    p.add_argument(
        "--probe-timeout",
        type=float,
        default=DEFAULT_PROBE_TIMEOUT_S,
        metavar="SECONDS",
        help=f"per backend (default: {DEFAULT_PROBE_TIMEOUT_S:g})",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    import os

    from router.config import load_config

    env = os.environ if environ is None else environ
    if args.probe_timeout <= 0:
        raise CliError(f"--probe-timeout must be > 0, got {args.probe_timeout:g}", exit_code=2)
    try:
        config = load_config(args.config, environ=env)
    except ConfigError as exc:
        raise CliError(exc.message, exit_code=EXIT_CONFIG) from None
    source = str(args.config or env.get(ENV_CONFIG, ""))
    checker = Checker(config, environ=env, probe=args.probe, probe_timeout_s=args.probe_timeout)
    findings = [
        Finding(
            "config",
            OK,
            f"{source} loads: backends: {len(config.backends)}, tenants: "
            f"{len(config.auth.tenants)}, server.address {config.server.address}",
        ),
        *asyncio.run(checker.run()),
    ]
    failed = any(f.result == FAIL for f in findings)
    if args.json:
        print(
            json.dumps(
                {
                    "config": source,
                    "ok": not failed,
                    "probed": args.probe,
                    "counts": _counts(findings),
                    "checks": [f.to_dict() for f in findings],
                },
                indent=2,
            )
        )
    else:
        _print_table(findings, source)
    return EXIT_FAILED if failed else EXIT_OK


def _counts(findings: Sequence[Finding]) -> dict[str, int]:
    return {r: sum(1 for f in findings if f.result == r) for r in (OK, WARN, FAIL)}


def _print_table(findings: Sequence[Finding], source: str) -> None:
    from rich.table import Table
    from rich.text import Text

    from router.cli import render

    styles = {OK: "green", WARN: "yellow", FAIL: "bold red"}
    table = Table(title=f"check {source}", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", ratio=1)
    for f in findings:
        # Text, not markup: details hold config keys such as backends[gpu-a].
        table.add_row(Text(f.check), Text(f.result, style=styles[f.result]), Text(f.detail))
    console = render.make_console()
    console.print(table)
    counts = _counts(findings)
    summary = f"{counts[OK]} ok, {counts[WARN]} warn, {counts[FAIL]} fail"
    console.print(Text(summary, style="bold red" if counts[FAIL] else "green"))
