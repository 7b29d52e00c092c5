"""Start-up checks: each component checks its own part of a config; one runner runs them.

``hybrid-router serve`` (``router.server.app``) and ``hybrid-router check``
(``hybrid_router_cli.commands.check``) run the same list, :data:`COMPONENTS`, through :func:`run`:

- ``serve`` refuses to start on any ``fail`` finding, with the finding's text as its
  error, and logs each ``warn`` finding;
- ``check`` prints every finding (table or JSON) and exits 1 on a ``fail``.

A component's preflight lives beside its code and has one signature::

    def preflight(config: RouterConfig, env: Mapping[str, str], opts: Options)
        -> list[Finding]            # or an awaitable of it

``env`` holds the environment variables that ``env:VAR`` references read. A preflight
turns the ConfigError its component would raise at start into a ``fail`` finding with the
same message (:meth:`Finding.failed`); it calls the component's own code to do so, never
a copy of its rules. Only with ``opts.probe`` may it reach the network (``check --probe``).

=========================  ===================================================
component (finding)        preflight
=========================  ===================================================
event loop, listen         ``router.server.app`` (listen: ``router.server.listen``)
exposure                   ``router.security.exposure``
server.tls                 ``router.security.tls``
auth keys                  ``router.security.keystore``
edge                       ``router.server.edge_link`` (device auth)
edge.relay.tls             ``router.server.relay``
edge.relay.token_env       ``router.edge.hub``
edge.directory.redis_url   ``router.stores.device_directory``
discovery                  ``router.discovery``
telemetry.tracing          ``router.telemetry.tracing``
backends, backend NAME,    ``router.backends.preflight``, with each kind's own
prices, tokenizer ID       ``preflight`` in its module (``router.backends.bedrock``)
routable NAME              ``router.security.tenants`` over the pure
                           ``router.policy.reachability``
controls.rate_limits       ``router.controls.limits`` (only when a limit is set)
controls.cache             ``router.controls.cache`` (only when enabled)
controls.budgets           ``router.controls.budgets`` (only when a budget is set)
controls.ledger            ``router.controls.ledger`` (only when enabled)
controls.pii               ``router.controls.pii`` (only when enabled)
probe NAME                 ``router.backends.preflight.probe`` (``--probe`` only),
                           each kind's ``probe`` in its module
=========================  ===================================================

The edge rows run only with ``edge.enabled`` (:class:`Component` ``when``), so a router
without edge imports nothing of the edge tier to check it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from router.errors import ConfigError

if TYPE_CHECKING:
    from router.config import RouterConfig

Level: TypeAlias = Literal["ok", "warn", "fail"]

OK: Level = "ok"
WARN: Level = "warn"
FAIL: Level = "fail"

#: ``check --probe``: how long one backend may take to answer.
DEFAULT_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class Finding:
    """One result of one component's start-up check."""

    level: Level
    #: What was checked: ``server.tls``, ``backend gpu-a``, ``routable gpu-a``...
    component: str
    #: The config key the finding is about ("" when it is about the whole file).
    key: str
    #: What is wrong (or, for ``ok``, what was found).
    message: str
    #: What to do about it, when the message does not already say it ("" otherwise:
    #: the ConfigError texts ``serve`` stops with carry their fix inline).
    fix: str = ""
    #: False while ``message`` names no source (a ConfigError naming only its key):
    #: :func:`run` puts the file, variable or flag that set the key in front.
    located: bool = True

    @property
    def text(self) -> str:
        """The whole text, as ``check`` prints it and ``serve`` logs or stops with."""
        return f"{self.message}; {self.fix}" if self.fix else self.message

    @classmethod
    def failed(cls, component: str, exc: ConfigError, key: str = "") -> Finding:
        """The ConfigError the component raises at start, as a finding (``key`` when
        the error names only a file)."""
        return cls(FAIL, component, exc.key or key, exc.message, located=bool(exc.source))

    def locate(self, config: RouterConfig) -> Finding:
        """This finding naming where its key was set (``config.origin``)."""
        if self.located:
            return self
        origin = config.origin(self.key)
        return dataclasses.replace(self, message=f"{origin}: {self.message}", located=True)


@dataclass(frozen=True, slots=True)
class Options:
    """What a preflight may use besides the config and the environment."""

    #: Reach the network (``check --probe``): backends, Secrets Manager.
    probe: bool = False
    probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S
    #: The time certificates are checked against.
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    #: The token counter to warm and count with (``router.tokenizers.TokenCounter``):
    #: ``serve`` passes its dispatcher's, so vocabularies load once. None: the
    #: tokenizer check builds one.
    tokens: Any = None


Preflight = Callable[
    ["RouterConfig", Mapping[str, str], Options], "list[Finding] | Awaitable[list[Finding]]"
]


@dataclass(frozen=True, slots=True)
class Component:
    """A preflight by name (``module:function``), imported only when the runner reaches it
    and ``when`` (if given) says the config uses the component: a router without edge
    imports nothing of the edge tier to check it."""

    target: str
    when: Callable[[RouterConfig], bool] | None = None


def _edge(config: RouterConfig) -> bool:
    return config.edge.enabled


def _rate_limits(config: RouterConfig) -> bool:
    return config.controls.rate_limits.enabled


def _cache(config: RouterConfig) -> bool:
    return config.controls.cache.enabled


def _budgets(config: RouterConfig) -> bool:
    return config.controls.budgets.enabled


def _ledger(config: RouterConfig) -> bool:
    return config.controls.ledger.enabled


def _pii(config: RouterConfig) -> bool:
    return config.controls.pii.enabled


#: Every component's preflight, in the order findings are reported.
COMPONENTS: tuple[Component, ...] = (
    Component("router.server.app:preflight"),
    Component("router.security.exposure:preflight"),
    Component("router.security.tls:preflight"),
    Component("router.security.keystore:preflight"),
    Component("router.server.edge_link:preflight", _edge),
    Component("router.server.relay:preflight", _edge),
    Component("router.edge.hub:preflight", _edge),
    Component("router.stores.device_directory:preflight", _edge),
    Component("router.discovery:preflight"),
    Component("router.telemetry.tracing:preflight"),
    Component("router.backends.preflight:preflight"),
    Component("router.security.tenants:preflight"),
    Component("router.controls.limits:preflight", _rate_limits),
    Component("router.controls.cache:preflight", _cache),
    Component("router.controls.budgets:preflight", _budgets),
    Component("router.controls.ledger:preflight", _ledger),
    Component("router.controls.pii:preflight", _pii),
    Component("router.backends.preflight:probe"),
)


def resolve(component: Component | str | Preflight) -> Preflight:
    """A preflight from its ``module:function`` name (callables pass through)."""
    if isinstance(component, Component):
        component = component.target
    if not isinstance(component, str):
        return component
    module, _, name = component.partition(":")
    fn: Preflight = getattr(importlib.import_module(module), name)
    return fn


async def run(
    components: Iterable[Component | str | Preflight],
    config: RouterConfig,
    env: Mapping[str, str],
    probe: bool = False,
    *,
    options: Options | None = None,
) -> list[Finding]:
    """Every component's findings, in order. ``options`` overrides ``probe``."""
    opts = Options(probe=probe) if options is None else options
    findings: list[Finding] = []
    for component in components:
        if isinstance(component, Component) and component.when and not component.when(config):
            continue
        result = resolve(component)(config, env, opts)
        if inspect.isawaitable(result):
            result = await result
        findings.extend(f.locate(config) for f in result)
    return findings


def failures(findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == FAIL]


class PreflightFailed(ConfigError):
    """The failed findings of a start: each text already names its source."""

    def located(self, source: str) -> ConfigError:
        return self


def raise_on_failure(findings: Sequence[Finding]) -> None:
    """ConfigError whose message is the failed findings' texts, one a line (one failure:
    exactly the text ``check`` prints for it), and whose ``key`` is the first one's."""
    failed = failures(findings)
    if failed:
        error = PreflightFailed("\n".join(f.text for f in failed))
        error.key = failed[0].key
        raise error


class _Collect(logging.Handler):
    """Keeps warnings; passes anything quieter on to the captured logger's parent, as
    propagation would have."""

    def __init__(self, logger: logging.Logger, messages: list[str]) -> None:
        super().__init__()
        self.logger = logger
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.messages.append(record.getMessage())
        elif self.logger.parent is not None:
            self.logger.parent.handle(record)


@contextlib.contextmanager
def captured_warnings(*loggers: str) -> Iterator[list[str]]:
    """The warnings the named loggers (and their children) log inside the block, collected
    for a finding instead of printed (the finding says them: ``serve`` logs it once)."""
    messages: list[str] = []
    saved = []
    for name in loggers:
        logger = logging.getLogger(name)
        handler = _Collect(logger, messages)
        saved.append((logger, handler, logger.propagate))
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield messages
    finally:
        for logger, handler, propagate in saved:
            logger.removeHandler(handler)
            logger.propagate = propagate
