#!/usr/bin/env python3
"""Build the Lambda artifacts (`make lambda-layer`; docs/lambda.md#the-layer).

- ``build/lambda-layer.zip``: the router client for any Python Lambda: the
  ``hybrid_router`` package (``python/hybrid_router/``: the contract stubs ``v1/``, the
  client library ``client/``, the variable names ``env.py`` and the reference resolver
  ``refs.py``) and its only dependencies: grpcio, protobuf, typing-extensions. Lambda
  unpacks it under /opt and puts /opt/python on sys.path.
- ``build/lambda-functions.zip``: the handlers' code (``lambda_edge/``); the template pairs
  it with the layer above and the AWS-managed Powertools layer.

Where grpcio/protobuf come from:

- ``--deps download`` (default): the target's wheels (``--python-version``,
  ``--platform``; default python3.12 / manylinux2014_x86_64, the template's runtime) at
  the versions installed here, through pip (which caches them).
- ``--deps local``: the files of the distributions installed in this interpreter, no
  network. Only for a target that matches this interpreter (same Python minor version,
  Linux, same machine); the script refuses otherwise.

``.pyc`` files are compiled (unchecked-hash, so the zip's timestamps do not matter) when
this interpreter is the target's version: a read-only /opt cannot cache them at run time.
The zips are reproducible: sorted entries, fixed timestamps.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.metadata as md
import json
import platform
import py_compile
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEPS = ("grpcio", "protobuf", "typing-extensions")
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
SKIP_DIRS = {"__pycache__"}


def _copy_tree_files(src: Path, dst: Path, patterns: tuple[str, ...]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for pattern in patterns:
        for f in sorted(src.glob(pattern)):
            if f.is_file():
                shutil.copy2(f, dst / f.name)


def stage_client(python_dir: Path) -> None:
    """The hybrid_router package: its own modules (env, refs), the stubs and the client."""
    pkg = REPO / "proto" / "hybrid_router"
    # The package's own modules too: env.py (variable names) and refs.py (the resolver).
    _copy_tree_files(pkg, python_dir / "hybrid_router", ("*.py", "py.typed"))
    _copy_tree_files(
        pkg / "v1",
        python_dir / "hybrid_router" / "v1",
        ("__init__.py", "*_pb2.py", "*_pb2_grpc.py"),
    )
    _copy_tree_files(pkg / "client", python_dir / "hybrid_router" / "client", ("*.py",))


def local_deps(python_dir: Path, target_version: str) -> dict[str, str]:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if here != target_version or sys.platform != "linux":
        raise SystemExit(
            f"--deps local copies this interpreter's packages (Python {here} on "
            f"{sys.platform}/{platform.machine()}), which would not run on a python"
            f"{target_version} Lambda; use --deps download, or run with Python {target_version}"
        )
    versions = {}
    for name in DEPS:
        dist = md.distribution(name)
        versions[name] = dist.version
        for rel in dist.files or ():
            parts = Path(str(rel)).parts
            if parts[0] == ".." or SKIP_DIRS.intersection(parts):
                continue
            src = Path(str(dist.locate_file(rel)))
            if not src.is_file():
                continue
            dst = python_dir / Path(*parts)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return versions


def download_deps(python_dir: Path, target_version: str, plat: str) -> dict[str, str]:
    versions = {name: md.version(name) for name in DEPS}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--only-binary=:all:", "--implementation", "cp",
            "--python-version", target_version, "--platform", plat, "--dest", tmp,
            *[f"{n}=={v}" for n, v in versions.items()],
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        for wheel in sorted(Path(tmp).glob("*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(python_dir)
    return versions


def compile_tree(root: Path) -> None:
    compileall.compile_dir(
        str(root),
        quiet=1,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        stripdir=str(root),
        prependdir="/opt/python" if root.name == "python" else "/var/task",
    )


def write_zip(src: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(f.relative_to(src)), FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            # Shared libraries and scripts (the streaming function's run_stream.sh, which
            # the Lambda Web Adapter executes) keep the execute bit.
            info.external_attr = (0o755 if f.suffix in (".so", ".sh") else 0o644) << 16
            zf.writestr(info, f.read_bytes())
    tmp.replace(out)


def dir_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def build(args: argparse.Namespace) -> dict[str, object]:
    out_dir = Path(args.out).resolve()
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    compile_pyc = args.compile and here == args.python_version
    report: dict[str, object] = {"python_version": args.python_version, "deps_from": args.deps}
    with tempfile.TemporaryDirectory() as tmp:
        layer = Path(tmp) / "layer"
        python_dir = layer / "python"
        stage_client(python_dir)
        if args.deps == "local":
            versions = local_deps(python_dir, args.python_version)
            report["platform"] = f"linux_{platform.machine()} (this interpreter)"
        else:
            versions = download_deps(python_dir, args.python_version, args.platform)
            report["platform"] = args.platform
        report["versions"] = versions
        if compile_pyc:
            compile_tree(python_dir)
        report["pyc"] = compile_pyc
        (layer / "hybrid-router-layer.json").write_text(json.dumps(report, indent=2) + "\n")
        layer_zip = out_dir / "lambda-layer.zip"
        write_zip(layer, layer_zip)
        report["layer_zip"] = str(layer_zip)
        report["layer_zip_bytes"] = layer_zip.stat().st_size
        report["layer_unzipped_bytes"] = dir_size(layer)

        functions = Path(tmp) / "functions"
        pkg = functions / "lambda_edge"
        pkg.mkdir(parents=True)
        for f in sorted((REPO / "lambda_edge").glob("*.py")):
            shutil.copy2(f, pkg / f.name)
        for f in sorted((REPO / "lambda_edge").glob("*.sh")):
            shutil.copy2(f, pkg / f.name)
        shutil.copy2(REPO / "lambda_edge" / "py.typed", pkg / "py.typed")
        if compile_pyc:
            compile_tree(functions)
        fn_zip = out_dir / "lambda-functions.zip"
        write_zip(functions, fn_zip)
        report["functions_zip"] = str(fn_zip)
        report["functions_zip_bytes"] = fn_zip.stat().st_size
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default=str(REPO / "build"), help="output folder (default: build/)")
    p.add_argument("--python-version", default="3.12", help="Lambda runtime's Python (3.12)")
    p.add_argument(
        "--platform", default="manylinux2014_x86_64",
        help="wheel platform for --deps download (manylinux2014_aarch64 for arm64)",
    )  # fmt: skip
    p.add_argument("--deps", choices=("download", "local"), default="download")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="ship no .pyc")
    args = p.parse_args(argv)
    report = build(args)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
