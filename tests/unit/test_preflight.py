"""Start-up checks owned by their components (router/preflight.py), called directly.

The same preflights run in ``serve`` and ``check``; here each is called on a parsed
config, without a server or the CLI. The whole command is in
tests/functional/test_check_cli.py, serve's side in tests/functional/test_preflight_serve.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from router import preflight
from router.backends.preflight import prices
from router.config import RouterConfig, parse_config
from router.discovery import preflight as discovery_preflight
from router.errors import ConfigError
from router.preflight import FAIL, OK, WARN, Component, Finding, Options
from router.security import exposure, tls

ROOT = Path(__file__).resolve().parents[2]
OPTS = Options()


def config(**sections: Any) -> RouterConfig:
    raw: dict[str, Any] = {"server": {"address": "127.0.0.1:0"}}
    raw.update(sections)
    return parse_config(raw)


def backend(name: str, **cost: Any) -> dict[str, Any]:
    return {
        "name": name,
        "tier": "gpu",
        "kind": "model_service",
        "endpoint": "127.0.0.1:1",
        "model": "m",
        "context_window": 4096,
        "cost": cost,
    }


# --- the record and the runner ------------------------------------------------------------------


def test_a_finding_is_frozen_and_its_text_joins_the_fix() -> None:
    f = Finding(FAIL, "server.tls", "server.tls.cert_file", "it expired", "renew it")
    assert f.text == "it expired; renew it"
    assert Finding(OK, "c", "", "fine").text == "fine"
    with pytest.raises(AttributeError):
        f.level = OK  # type: ignore[misc]
    assert not hasattr(f, "__dict__")  # slotted


def test_a_config_error_becomes_a_failure_with_its_message_and_key() -> None:
    exc = ConfigError("no such file", source="router.yaml", key="auth.keys_file")
    f = Finding.failed("auth keys", exc)
    assert (f.level, f.key, f.text) == (FAIL, "auth.keys_file", exc.message)
    assert Finding.failed("x", ConfigError("bad"), "fallback").key == "fallback"


async def test_the_runner_keeps_order_awaits_async_preflights_and_skips_unused_ones() -> None:
    def sync(cfg: RouterConfig, env: Any, opts: Options) -> list[Finding]:
        return [Finding(OK, "sync", "", env["A"])]

    async def asynchronous(cfg: RouterConfig, env: Any, opts: Options) -> list[Finding]:
        return [Finding(WARN, "async", "", f"probe={opts.probe}")]

    never = Component("router.no_such_module:preflight", lambda cfg: cfg.edge.enabled)
    found = await preflight.run([sync, never, asynchronous], config(), {"A": "a"}, probe=True)
    assert [(f.component, f.message) for f in found] == [("sync", "a"), ("async", "probe=True")]


def test_one_failure_raises_exactly_its_text_several_one_a_line() -> None:
    one = [Finding(OK, "a", "", "fine"), Finding(FAIL, "b", "k", "broken", "fix it")]
    with pytest.raises(ConfigError) as err:
        preflight.raise_on_failure(one)
    assert str(err.value) == "broken; fix it"
    two = [*one, Finding(FAIL, "c", "", "also broken")]
    with pytest.raises(ConfigError) as err:
        preflight.raise_on_failure(two)
    assert str(err.value) == "broken; fix it\nalso broken"
    preflight.raise_on_failure(one[:1])  # warnings and oks pass


def test_captured_warnings_are_kept_and_quieter_records_pass_on(caplog: Any) -> None:
    log = logging.getLogger("router.test_preflight_capture")
    caplog.set_level(logging.INFO)
    with preflight.captured_warnings(log.name) as warnings:
        log.warning("vocabulary missing")
        log.info("loaded")
    log.warning("after")
    assert warnings == ["vocabulary missing"]
    assert [r.getMessage() for r in caplog.records] == ["loaded", "after"]


def test_every_component_resolves_and_edge_modules_load_only_for_edge() -> None:
    for component in preflight.COMPONENTS:
        assert callable(preflight.resolve(component)), component.target
    code = (
        "import asyncio, sys\n"
        "from router import preflight\n"
        "from router.config import parse_config\n"
        "cfg = parse_config({'server': {'address': '127.0.0.1:0'}})\n"
        "asyncio.run(preflight.run(preflight.COMPONENTS, cfg, {}))\n"
        "print(sorted(m for m in sys.modules if m.startswith(('router.edge', "
        "'router.server.edge_link', 'router.server.relay', 'router.stores'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# --- components ---------------------------------------------------------------------------------


def test_exposure_fails_as_serve_refuses_a_public_address_without_keys() -> None:
    cfg = config(server={"address": "0.0.0.0:50051"})
    with pytest.raises(ConfigError) as err:
        exposure.check_auth_exposure(cfg)
    (f,) = exposure.preflight(cfg, {}, OPTS)
    assert (f.level, f.component, f.key, f.text) == (FAIL, "exposure", "auth", err.value.message)


def test_exposure_warns_on_loopback_without_keys() -> None:
    (f,) = exposure.preflight(config(), {}, OPTS)
    assert f.level == WARN and f.key == "auth" and "auth is OFF" in f.message


def _certificate(path: Path, start: dt.datetime, end: dt.datetime) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "router.test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return str(path)


@pytest.mark.parametrize(
    ("days_left", "level", "words"),
    [
        (-1, FAIL, "expired on"),
        (3, WARN, "expires on"),
        (90, OK, "valid until"),
    ],
)
def test_certificate_dates(tmp_path: Path, days_left: int, level: str, words: str) -> None:
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    cert = _certificate(
        tmp_path / "c.pem", now - dt.timedelta(days=200), now + dt.timedelta(days=days_left)
    )
    f = tls.certificate_validity("server.tls", cert, "server.tls.cert_file", "key matches", now)
    assert (f.level, f.component, f.key) == (level, "server.tls", "server.tls.cert_file")
    assert words in f.text and "CN=router.test" in f.text
    if level == FAIL:
        assert f.fix == "clients refuse it: renew the certificate"


def test_a_certificate_not_yet_valid_fails(tmp_path: Path) -> None:
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    cert = _certificate(
        tmp_path / "c.pem", now + dt.timedelta(hours=2), now + dt.timedelta(days=30)
    )
    f = tls.certificate_validity("edge.relay.tls", cert, "edge.relay.tls.cert_file", "", now)
    assert f.level == FAIL and "is not valid before" in f.message
    assert f.fix == "check the issuer's clock or reissue it"


def test_discovery_names_a_missing_kubeconfig(tmp_path: Path) -> None:
    template = {"model": "m", "context_window": 4096}
    source = {"name": "gpu", "label_selector": "app=m", "backend": template}
    kube = {"kubeconfig": str(tmp_path / "absent"), "sources": [source]}
    (f,) = discovery_preflight(config(discovery={"kubernetes": kube}), {}, OPTS)
    assert (f.level, f.key) == (FAIL, "discovery.kubernetes.kubeconfig")
    assert "kubeconfig file not found" in f.text
    (tmp_path / "absent").write_text("apiVersion: v1\n")
    (f,) = discovery_preflight(config(discovery={"kubernetes": kube}), {}, OPTS)
    assert f.level == OK and "1 EndpointSlice sources" in f.message
    assert discovery_preflight(config(), {}, OPTS) == []


def test_prices_use_the_policy_formula() -> None:
    cfg = config(
        backends=[
            backend("priced", gpu_hourly_usd=1.0, gpu_throughput_tokens_per_s=100, source="p"),
            backend("free"),
            backend("unsourced", gpu_hourly_usd=1.0, gpu_throughput_tokens_per_s=100),
        ]
    )
    unpriced, unsourced = prices(cfg.backends)
    assert unpriced.level == WARN and unpriced.message.startswith("no price for free:")
    assert unsourced.key == "backends[].cost.source" and "unsourced" in unsourced.message
