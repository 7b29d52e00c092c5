"""The start-up check of a control's Redis URL (rate limits, budgets): its ``env:VAR`` is
set, and with ``check --probe`` the server answers PING."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hybrid_router.refs import env_ref

from router.errors import ConfigError, StoreUnavailable

if TYPE_CHECKING:
    from router.preflight import Finding, Options


async def redis_findings(
    section: str,
    raw_url: str,
    resolve: Callable[[], str],
    open_store: Callable[[str, float], Any],
    opts: Options,
) -> list[Finding]:
    """Findings for ``<section>.redis.url`` (``raw_url`` as written; ``resolve`` reads an
    ``env:VAR``; ``open_store(url, timeout_s)`` makes the control's store to ping)."""
    from router.preflight import OK, WARN, Finding

    key = f"{section}.redis.url"
    try:
        url = resolve()
    except ConfigError as exc:
        return [Finding.failed(key, exc, key)]
    findings = []
    var = env_ref(raw_url)
    if var is not None:
        findings.append(Finding(OK, key, key, f"${var} is set"))
    if opts.probe:
        store = open_store(url, opts.probe_timeout_s)
        try:
            await store.ping()
            findings.append(Finding(OK, key, key, f"{store.name} answers PING"))
        except StoreUnavailable as exc:
            findings.append(Finding(WARN, key, key, exc.message, "start Redis or fix the URL"))
        finally:
            await store.close()
    return findings
