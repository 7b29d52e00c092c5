"""Model files on the device, and which version is current.

Layout under ``<work dir>/models``::

    <name>/<version>/<artifact file>     installed, verified artifacts
    <name>/<version>/manifest.json       the manifest it was verified against
    <name>/.incoming/<version>.part      a download in progress (never loaded)
    state.json                           {"<name>": {"current": v, "previous": v,
                                                     "failed": {v: reason}}}

Installation is atomic: the download goes to ``.incoming``, is verified (size, sha256),
then renamed into ``<version>/``; a crash leaves at most a ``.part`` file, which the next
start removes. ``state.json`` is replaced atomically too. Only the current and the
previous version are kept on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greengrass.manifest import Manifest, ManifestError, parse_manifest
from greengrass.slot import ModelRecord

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class VerifyError(Exception):
    """An artifact whose size or sha256 is not the manifest's."""


@dataclass(slots=True)
class ModelState:
    current: str = ""
    previous: str = ""
    failed: dict[str, str] = field(default_factory=dict)


def sha256_of(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ModelStore:
    def __init__(self, work_dir: str | os.PathLike[str]) -> None:
        self.root = Path(work_dir) / "models"
        self.root.mkdir(parents=True, exist_ok=True)
        self._state_path = self.root / "state.json"

    # --- state ------------------------------------------------------------------------

    def state(self, name: str) -> ModelState:
        data = self._read_state().get(name, {})
        return ModelState(
            current=str(data.get("current", "")),
            previous=str(data.get("previous", "")),
            failed={str(k): str(v) for k, v in dict(data.get("failed", {})).items()},
        )

    def save_state(self, name: str, state: ModelState) -> None:
        data = self._read_state()
        data[name] = {"current": state.current, "previous": state.previous, "failed": state.failed}
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self._state_path)
        _fsync_dir(self.root)

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self._state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("model state unreadable (%s): starting from scratch", exc)
            return {}
        return data if isinstance(data, dict) else {}

    # --- files ------------------------------------------------------------------------

    def version_dir(self, name: str, version: str) -> Path:
        return self.root / name / version

    def incoming(self, name: str, version: str) -> Path:
        folder = self.root / name / ".incoming"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{version}.part"

    def clean_incoming(self) -> list[Path]:
        """Remove partial downloads left by an interrupted run; what was removed."""
        removed = []
        for part in self.root.glob("*/.incoming/*.part"):
            part.unlink(missing_ok=True)
            removed.append(part)
        return removed

    def install(self, manifest: Manifest, part: Path) -> ModelRecord:
        """Verify ``part`` against the manifest and move it into place. Raises VerifyError
        (the part file is removed)."""
        try:
            digest, size = sha256_of(part)
            if size != manifest.size:
                raise VerifyError(f"size {size} bytes, manifest says {manifest.size}")
            if digest != manifest.sha256:
                raise VerifyError(f"sha256 {digest}, manifest says {manifest.sha256}")
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        final_dir = self.version_dir(manifest.name, manifest.version)
        staging = final_dir.with_name(f".{manifest.version}.staging")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        os.replace(part, staging / manifest.file_name)
        (staging / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
        _fsync_dir(staging)
        shutil.rmtree(final_dir, ignore_errors=True)
        os.replace(staging, final_dir)
        _fsync_dir(final_dir.parent)
        return self.record(manifest)

    def record(self, manifest: Manifest) -> ModelRecord:
        path = self.version_dir(manifest.name, manifest.version) / manifest.file_name
        return ModelRecord(
            name=manifest.name,
            version=manifest.version,
            context_window=manifest.context_window,
            sha256=manifest.sha256,
            model_family=manifest.model_family,
            path=str(path),
        )

    def installed(self, name: str, version: str, *, verify: bool = True) -> ModelRecord | None:
        """The installed version, re-verified against its manifest (None when missing or
        corrupt: a corrupt artifact is removed, never loaded)."""
        folder = self.version_dir(name, version)
        try:
            manifest = parse_manifest((folder / "manifest.json").read_bytes())
        except (OSError, ManifestError):
            return None
        path = folder / manifest.file_name
        if verify:
            try:
                digest, size = sha256_of(path)
            except OSError:
                return None
            if digest != manifest.sha256 or size != manifest.size:
                log.error("installed %s %s is corrupt: removing it", name, version)
                shutil.rmtree(folder, ignore_errors=True)
                return None
        return self.record(manifest)

    def remove(self, name: str, version: str) -> None:
        shutil.rmtree(self.version_dir(name, version), ignore_errors=True)

    def prune(self, name: str, keep: set[str]) -> None:
        """Remove installed versions of ``name`` other than ``keep``."""
        folder = self.root / name
        if not folder.is_dir():
            return
        for child in folder.iterdir():
            if child.is_dir() and not child.name.startswith(".") and child.name not in keep:
                shutil.rmtree(child, ignore_errors=True)
                log.info("removed old model %s %s", name, child.name)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free
