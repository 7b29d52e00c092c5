"""Build the Greengrass component of the edge agent: the artifact zip and a filled recipe.

Usage:
    python scripts/build_edge_artifact.py [--out build/edge]     # `make edge-artifact`
    python scripts/build_edge_artifact.py --gdk DIR              # GDK custom build

The zip holds only the edge extra's code, under one folder ``hybrid-router-edge/``:
``greengrass/`` (the agent), ``serving/engines/`` (the engines it loads: llama.cpp and
the scripted test engine, the llama.cpp build profiles and engine check),
``hybrid_router/`` (the generated contract, the environment variable names
``env.py`` and the reference resolver ``refs.py``), ``requirements.txt`` (the ``edge`` lock,
requirements/edge.txt: every version pinned, every file's sha256), and what builds
llama-cpp-python on the device with a portable CPU profile: ``scripts/llama_wheel.py``
with ``requirements/llama-cpp-python.txt`` and ``requirements/llama-build.txt``. The
recipe's Install step installs the lock into a venv, builds llama.cpp for the device's
CPU, and runs the engine check (a short real generation) before the agent may run.
Entries are sorted with fixed timestamps, so the same sources give the same bytes (and
the same Greengrass digest).

Output (``--out``)::

    hybrid-router-edge.zip
    recipes/<component>-<version>.yaml            placeholders filled (not BUCKET_NAME)
    artifacts/<component>/<version>/hybrid-router-edge.zip

which is what ``greengrass-cli deployment create --recipeDir recipes --artifactDir
artifacts`` wants. ``--gdk DIR`` writes ``DIR/greengrass-build/{recipes,artifacts}``, the
layout the GDK CLI publishes from. Component name, version and author come from
``greengrass/gdk-config.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GG = ROOT / "greengrass"
TOP = "hybrid-router-edge"
ZIP_NAME = f"{TOP}.zip"
_EPOCH = (2020, 1, 1, 0, 0, 0)
#: What the edge agent imports, relative to the repository (and where it goes in the zip).
SOURCES: tuple[tuple[Path, str, tuple[str, ...]], ...] = (
    (GG, "greengrass", ("*.py", "py.typed")),
    (ROOT / "serving", "serving", ("__init__.py", "py.typed")),
    (ROOT / "serving" / "engines", "serving/engines",
     ("__init__.py", "base.py", "prompt.py", "llamacpp.py", "scripted.py",
      "llama_build.py", "llama_selftest.py", "wire.py", "llama_prompt.py", "grammar.py",
      "tool_calls.py", "instances.py")),
    (ROOT / "scripts", "scripts", ("llama_wheel.py",)),
    (ROOT / "requirements", "requirements", ("llama-cpp-python.txt", "llama-build.txt")),
    (ROOT / "proto" / "hybrid_router", "hybrid_router", ("*.py", "py.typed")),
    (ROOT / "proto" / "hybrid_router" / "v1", "hybrid_router/v1", ("*.py", "*.pyi")),
)  # fmt: skip


def component() -> tuple[str, str, str]:
    """(name, version, author) from gdk-config.json."""
    cfg = json.loads((GG / "gdk-config.json").read_text(encoding="utf-8"))
    [(name, comp)] = cfg["component"].items()
    version = comp["version"]
    if not re.match(r"^\d+\.\d+\.\d+", version):
        raise SystemExit(f"gdk-config.json: version must be semver for a build, got {version!r}")
    return name, version, comp["author"]


def requirements() -> str:
    """The ``edge`` lock (requirements/edge.txt), as the device's requirements.txt."""
    return (ROOT / "requirements" / "edge.txt").read_text(encoding="utf-8")


def files() -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    for folder, dest, patterns in SOURCES:
        for pattern in patterns:
            for path in sorted(folder.glob(pattern)):
                if path.is_file():
                    found.append((path, f"{TOP}/{dest}/{path.name}"))
    return sorted(set(found), key=lambda item: item[1])


def _entry(zf: zipfile.ZipFile, arcname: str, data: bytes) -> None:
    info = zipfile.ZipInfo(arcname, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def build_zip(dest: Path, version: str) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        entries = [(arc, path.read_bytes()) for path, arc in files()]
        entries.append((f"{TOP}/requirements.txt", requirements().encode()))
        entries.append(
            (f"{TOP}/BUILD.json", json.dumps({"component_version": version}, indent=2).encode())
        )
        for arc, data in sorted(entries):
            _entry(zf, arc, data)
    tmp.replace(dest)
    return dest


def filled_recipe(name: str, version: str, author: str) -> str:
    text = (GG / "recipe.yaml").read_text(encoding="utf-8")
    for key, value in (("NAME", name), ("VERSION", version), ("AUTHOR", author)):
        text = text.replace("{COMPONENT_" + key + "}", value)
    return text.replace("/COMPONENT_NAME/COMPONENT_VERSION/", f"/{name}/{version}/")


def build(out: Path, *, gdk: bool = False) -> dict[str, str]:
    name, version, author = component()
    base = out / "greengrass-build" if gdk else out
    artifact_dir = base / "artifacts" / name / version
    artifact_dir.mkdir(parents=True, exist_ok=True)
    zip_path = build_zip(artifact_dir / ZIP_NAME, version)
    recipes = base / "recipes"
    recipes.mkdir(parents=True, exist_ok=True)
    recipe = recipes / ("recipe.yaml" if gdk else f"{name}-{version}.yaml")
    recipe.write_text(filled_recipe(name, version, author), encoding="utf-8")
    result = {"recipe": str(recipe), "artifact": str(zip_path)}
    if not gdk:
        top = out / ZIP_NAME
        shutil.copyfile(zip_path, top)
        result["zip"] = str(top)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--out", default=str(ROOT / "build" / "edge"), help="output folder")
    p.add_argument("--gdk", metavar="DIR", help="write DIR/greengrass-build for the GDK CLI")
    args = p.parse_args(argv)
    result = build(Path(args.gdk or args.out), gdk=bool(args.gdk))
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
