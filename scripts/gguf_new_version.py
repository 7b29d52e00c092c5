"""Make a new version of a GGUF model file by rewriting one string metadata key.

Usage: python scripts/gguf_new_version.py SRC DEST [--key general.name] [--value TEXT]

The copy has the same weights and behaviour but different bytes (and sha256): a second
version of the one real model, for rehearsing a fleet switch (``hybrid-router models
publish``) and for the sync tests and benchmarks. The value is written in place, so it
must have the same UTF-8 length as the old one (the default value flips the last
character's case). Uses the ``gguf`` package (dev extra).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def new_version(src: str | Path, dest: str | Path, *, key: str = "general.name",
                value: str | None = None) -> str:  # fmt: skip
    """Copy ``src`` to ``dest`` with ``key`` set to ``value``; returns the value written.
    Raises ValueError when the key is missing, not a string, or the length differs."""
    from gguf import GGUFReader, GGUFValueType

    shutil.copyfile(src, dest)
    reader = GGUFReader(dest, "r+")
    field = reader.fields.get(key)
    if field is None or field.types != [GGUFValueType.STRING]:
        raise ValueError(f"{key}: not a string metadata key of {src}")
    part = field.parts[field.data[0]]
    old = bytes(part).decode("utf-8")
    if value is None:
        value = old[:-1] + (old[-1].swapcase() if old[-1].swapcase() != old[-1] else "_")
    raw = value.encode("utf-8")
    if len(raw) != len(part):
        raise ValueError(
            f"{key}: the new value must be {len(part)} bytes like {old!r}, got {len(raw)}"
        )
    part[:] = list(raw)
    reader.data.flush()
    del reader
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--key", default="general.name")
    p.add_argument("--value", help="new value, same length as the old one")
    args = p.parse_args(argv)
    try:
        value = new_version(args.src, args.dest, key=args.key, value=args.value)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.dest}: {args.key} = {value!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
