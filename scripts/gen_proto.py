"""Regenerate the Python stubs of proto/hybrid_router/v1 in place.

Usage: python scripts/gen_proto.py [--out DIR]

The stubs are committed; tests/unit/test_proto_contract.py::test_stubs_are_fresh fails
when they are stale.
grpcio-tools is pinned in pyproject.toml (dev extra) so the output is reproducible.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "hybrid_router" / "v1").glob("*.proto"))


def generate(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc  # dev dependency only

    include = Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(p.relative_to(PROTO_ROOT)) for p in proto_files()],
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=PROTO_ROOT, help="output root (default: proto/)"
    )
    ns = parser.parse_args()
    generate(ns.out)
    print(f"generated stubs for {len(proto_files())} proto files under {ns.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
