"""The edge agent's pure parts: backoff, manifest, configuration, and the sync logic over
a local model source (files on disk) with the scripted engine."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from testkit import FakeClock

from greengrass.backoff import Backoff
from greengrass.config import (
    AgentConfig,
    AgentConfigError,
    from_args,
    from_component_config,
    validate,
)
from greengrass.manifest import (
    Manifest,
    ManifestError,
    parse_manifest,
    version_at_least,
)
from greengrass.s3 import StoreError
from greengrass.slot import EngineSlot
from greengrass.store import ModelStore
from greengrass.sync import ModelSync

# --- backoff ----------------------------------------------------------------------------


def test_backoff_doubles_to_the_cap_with_jitter_and_resets():
    ceilings: list[float] = []

    def top(lo: float, hi: float) -> float:
        ceilings.append(hi)
        return hi

    b = Backoff(0.5, 8.0, rand=top)
    assert [b.next_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    b.reset()
    assert b.next_delay() == 0.5
    low = Backoff(0.5, 8.0, rand=lambda lo, hi: lo)
    assert low.next_delay() == pytest.approx(0.05)  # full jitter: anywhere in [floor, ceiling]
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)


# --- manifest ---------------------------------------------------------------------------


def _manifest(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "gemma3-270m",
        "version": "v2",
        "artifact_key": "models/gemma3-270m/v2/model.gguf",
        "sha256": "a" * 64,
        "size": 10,
        "context_window": 2048,
    }
    data.update(over)
    return data


def test_manifest_errors_name_the_field():
    assert parse_manifest(json.dumps(_manifest())).version == "v2"
    cases = {
        "sha256": ("xyz", "manifest.sha256: must be 64 hex digits"),
        "size": (0, "manifest.size: must be > 0"),
        "context_window": (8, "manifest.context_window: must be >= 16"),
        "artifact_key": ("models/../etc/passwd", "manifest.artifact_key"),
        "version": ("../v", "manifest.version"),
        "format": ("onnx", "manifest.format"),
        "schema": (2, "update the agent"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(ManifestError, match=message.replace(".", r"\.")):
            parse_manifest(_manifest(**{key: value}))
    with pytest.raises(ManifestError, match="manifest.size: missing"):
        parse_manifest({k: v for k, v in _manifest().items() if k != "size"})


def test_agent_versions_compare_numerically():
    assert version_at_least("0.10.0", "0.9.5")
    assert version_at_least("1.0", "1.0.0")
    assert not version_at_least("0.1.0", "0.2")


# --- configuration ----------------------------------------------------------------------


def test_component_configuration_then_flags(tmp_path: Path):
    conf = tmp_path / "component-config.json"
    conf.write_text(
        json.dumps(
            {
                "routerEndpoint": "router.example.com:443",
                "site": "plant-7",
                "tls": {"certFile": "/gg/device.pem", "keyFile": "/gg/device.key"},
                "model": {"name": "gemma3-270m", "version": "v2"},
                "modelStore": {"bucket": "models-bucket"},
                "drainGraceS": 5,
            }
        )
    )
    cfg = validate(
        from_args(["--config", str(conf), "--device-id", "thing-1", "--site", "override",
                   "--work-dir", str(tmp_path)])
    )  # fmt: skip
    assert (cfg.router, cfg.device_id, cfg.site) == (
        "router.example.com:443",
        "thing-1",
        "override",
    )
    assert (cfg.cert_file, cfg.desired_version, cfg.model_bucket) == (
        "/gg/device.pem", "v2", "models-bucket",
    )  # fmt: skip
    assert cfg.drain_grace_s == 5.0 and not cfg.insecure


def test_configuration_errors_name_the_key(tmp_path: Path):
    with pytest.raises(AgentConfigError, match=r"tls.certfile: unknown key"):
        from_component_config({"tls": {"certfile": "x"}})
    with pytest.raises(AgentConfigError, match=r"drainGraceS: must be a number"):
        from_component_config({"drainGraceS": "soon"})
    base = AgentConfig(router="r:1", device_id="d", work_dir=str(tmp_path))
    with pytest.raises(AgentConfigError, match=r"routerEndpoint \(--router\): must be host:port"):
        validate(from_component_config({"routerEndpoint": "nohost"}, base))
    with pytest.raises(AgentConfigError, match="tls.certFile and tls.keyFile go together"):
        validate(from_component_config({"tls": {"certFile": "c.pem"}}, base))
    with pytest.raises(AgentConfigError, match="model.version"):
        validate(from_component_config({"model": {"version": "../x"}}, base))


# --- sync over a local source -------------------------------------------------------------


class LocalSource:
    """The model store's interface over files: {(name, version): (manifest, bytes)}."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], tuple[Manifest, bytes]] = {}
        self.downloads = 0
        self.fail_after: int | None = None

    def publish(self, version: str, options: dict[str, Any], *, lie: bytes | None = None) -> None:
        body = json.dumps(options).encode()
        served = lie if lie is not None else body
        m = Manifest(
            name="m", version=version, artifact_key=f"models/m/{version}/a.json",
            sha256=hashlib.sha256(body).hexdigest(), size=len(body), context_window=512,
            format="scripted",
        )  # fmt: skip
        self.items[("m", version)] = (m, served)

    def manifest(self, name: str, version: str) -> Manifest:
        if (name, version) not in self.items:
            raise StoreError(f"s3://b/models/{name}/{version}/manifest.json: no such manifest")
        return self.items[(name, version)][0]

    def download(self, manifest: Manifest, dest: Path, *, progress: Any = None) -> None:
        self.downloads += 1
        body = self.items[(manifest.name, manifest.version)][1]
        with dest.open("wb") as f:
            if self.fail_after is not None:
                f.write(body[: self.fail_after])
                raise StoreError("download failed: connection reset")
            f.write(body)


def make_sync(tmp_path: Path, source: LocalSource, **kw: Any) -> tuple[ModelSync, EngineSlot]:
    cfg = AgentConfig(
        router="r:1", device_id="d", engine="scripted", model_name="m",
        work_dir=str(tmp_path), min_free_disk_mb=1, smoke_timeout_s=5,
        bundled_model=kw.pop("bundled", True),
    )  # fmt: skip
    slot = EngineSlot()
    return ModelSync(cfg, ModelStore(tmp_path), slot, source, **kw), slot  # type: ignore[arg-type]


async def test_switch_installs_verifies_and_keeps_the_previous_version(tmp_path: Path):
    source = LocalSource()
    source.publish("v1", {"reply_tokens": 2})
    source.publish("v2", {"reply_tokens": 3})
    sync, slot = make_sync(tmp_path, source)
    await sync.load_initial()
    assert slot.model is not None and slot.model.version == "builtin"
    sync.set_router_desired({"m": "v1"})
    await sync.reconcile()
    sync.set_router_desired({"m": "v2"})
    await sync.reconcile()
    assert slot.model.version == "v2" and sync.status == "ok: m v2"
    state = ModelStore(tmp_path).state("m")
    assert (state.current, state.previous) == ("v2", "v1")
    sync.set_router_desired({"m": "v1"})  # roll back: from disk, re-verified, no download
    await sync.reconcile()
    assert slot.model.version == "v1" and source.downloads == 2
    await slot.close()


async def test_an_interrupted_download_leaves_nothing_and_the_retry_starts_clean(tmp_path: Path):
    source = LocalSource()
    source.publish("v1", {"reply_tokens": 2})
    clock = FakeClock(0.0)
    sync, slot = make_sync(tmp_path, source, retry_s=10, clock=clock)
    await sync.load_initial()
    source.fail_after = 5
    sync.set_router_desired({"m": "v1"})
    await sync.reconcile()
    assert slot.model.version == "builtin" and "connection reset" in sync.status  # type: ignore[union-attr]
    assert not list((tmp_path / "models" / "m" / ".incoming").iterdir())
    source.fail_after = None
    await sync.reconcile()
    assert source.downloads == 1  # not before retry_s
    clock.advance(11.0)
    await sync.reconcile()
    assert slot.model.version == "v1" and source.downloads == 2  # type: ignore[union-attr]
    await slot.close()


async def test_a_corrupt_artifact_is_never_installed(tmp_path: Path):
    source = LocalSource()
    source.publish("v1", {"reply_tokens": 2}, lie=b'{"reply_tokens": 9}')
    sync, slot = make_sync(tmp_path, source)
    await sync.load_initial()
    sync.set_router_desired({"m": "v1"})
    await sync.reconcile()
    assert "rejected the artifact: sha256" in sync.status
    assert slot.model.version == "builtin"  # type: ignore[union-attr]
    assert not (tmp_path / "models" / "m" / "v1").exists()
    assert ModelStore(tmp_path).state("m").failed["v1"].startswith("rejected the artifact")
    await slot.close()


async def test_refusals_before_any_download(tmp_path: Path):
    source = LocalSource()
    source.publish("v1", {"reply_tokens": 2})
    sync, slot = make_sync(tmp_path, source, free_bytes=lambda: 100)
    await sync.load_initial()
    sync.set_router_desired({"m": "v1"})
    await sync.reconcile()
    assert "not enough disk" in sync.status and source.downloads == 0
    sync2, slot2 = make_sync(tmp_path / "b", source, agent_version="0.0.1")
    m, body = source.items[("m", "v1")]
    source.items[("m", "v1")] = (replace(m, min_agent_version="0.2.0"), body)
    await sync2.load_initial()
    sync2.set_router_desired({"m": "v1"})
    await sync2.reconcile()
    assert "needs agent >= 0.2.0" in sync2.status and source.downloads == 0
    await slot.close()
    await slot2.close()


async def test_a_failed_smoke_test_keeps_the_current_version(tmp_path: Path):
    source = LocalSource()
    source.publish("v1", {"reply_tokens": 2})
    source.publish("v2", {"fail_before_first_token": "unavailable"})
    sync, slot = make_sync(tmp_path, source)
    await sync.load_initial()
    sync.set_router_desired({"m": "v1"})
    await sync.reconcile()
    sync.set_router_desired({"m": "v2"})
    await sync.reconcile()
    assert slot.model.version == "v1"  # type: ignore[union-attr]
    assert "smoke test failed" in sync.status and "serving v1" in sync.status
    assert not (tmp_path / "models" / "m" / "v2").exists()
    await slot.close()


async def test_at_start_a_corrupt_current_version_rolls_back_to_the_previous(tmp_path: Path):
    source = LocalSource()
    source.publish("v1", {"reply_tokens": 2})
    source.publish("v2", {"reply_tokens": 3})
    sync, slot = make_sync(tmp_path, source)
    await sync.load_initial()
    for v in ("v1", "v2"):
        sync.set_router_desired({"m": v})
        await sync.reconcile()
    await slot.close()
    (tmp_path / "models" / "m" / "v2" / "a.json").write_text('{"reply_tokens": 30}')  # bit rot
    restarted, slot = make_sync(tmp_path, source, bundled=False)
    await restarted.load_initial()
    assert slot.model is not None and slot.model.version == "v1"
    assert not (tmp_path / "models" / "m" / "v2").exists()
    await slot.close()
