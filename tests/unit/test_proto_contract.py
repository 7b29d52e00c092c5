"""The proto contract: generated stubs are fresh, buf lint passes, changes stay additive.

buf comes from npm (`make tools` installs the pinned version into .tools/). The buf
tests carry the `tools` marker; when buf is missing they fail and say how to get it.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
STUB_DIR = PROTO / "hybrid_router" / "v1"
BASELINE = PROTO / "baseline" / "hybrid_router_v1.binpb"
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
STUB_PATTERNS = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py")
BUF_TIMEOUT_S = 90  # below the pytest-timeout of 120 s, so the message is ours


def _load_gen_proto() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stubs(folder: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for pattern in STUB_PATTERNS for p in sorted(folder.glob(pattern))
    }


def _buf(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if not BUF.exists():
        pytest.fail(f"buf not found at {BUF}: run `make tools` (needs npm)", pytrace=False)
    return subprocess.run(
        [str(BUF), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUF_TIMEOUT_S,
        check=False,
    )


def _copy_proto_sources(dest: Path) -> Path:
    """Copy buf.yaml and the .proto files (not stubs, not the baseline) into dest/proto."""
    out = dest / "proto"
    out.mkdir()
    shutil.copy2(PROTO / "buf.yaml", out / "buf.yaml")
    for src in PROTO.rglob("*.proto"):
        target = out / src.relative_to(PROTO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return out


def test_stubs_are_fresh(tmp_path: Path) -> None:
    _load_gen_proto().generate(tmp_path)

    fresh = _stubs(tmp_path / "hybrid_router" / "v1")
    committed = _stubs(STUB_DIR)

    assert fresh, "scripts/gen_proto.py generated no stubs"
    stale = sorted(
        name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name)
    )
    assert not stale, f"stubs are stale: run `make proto` (differ: {', '.join(stale)})"


def test_every_proto_has_committed_stubs() -> None:
    committed = _stubs(STUB_DIR)
    for proto in sorted(STUB_DIR.glob("*.proto")):
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            name = proto.stem + suffix
            assert name in committed, f"{name} missing: run `make proto`"


@pytest.mark.tools
def test_buf_lint_passes() -> None:
    result = _buf("lint", "proto")

    assert result.returncode == 0, f"buf lint proto failed:\n{result.stdout}{result.stderr}"


@pytest.mark.tools
def test_contract_is_compatible_with_baseline() -> None:
    assert BASELINE.is_file(), f"baseline image missing: {BASELINE} (see docs/development.md)"

    result = _buf("breaking", "proto", "--against", BASELINE)

    assert result.returncode == 0, (
        "buf breaking found changes that break hybrid_router.v1 (changes must be additive; "
        f"see docs/development.md):\n{result.stdout}{result.stderr}"
    )


@pytest.mark.tools
def test_buf_breaking_detects_a_deleted_field(tmp_path: Path) -> None:
    proto = _copy_proto_sources(tmp_path)
    types_proto = proto / "hybrid_router" / "v1" / "types.proto"
    text = types_proto.read_text(encoding="utf-8")
    field = "  string content = 2;\n"
    assert text.count(field) == 1, "test fixture drifted: ChatMessage.content not found"
    types_proto.write_text(text.replace(field, ""), encoding="utf-8")
    # The edited copy is still a valid module (so the failure below is the breaking check).
    assert _buf("build", proto, "-o", tmp_path / "edited.binpb").returncode == 0

    result = _buf("breaking", proto, "--against", BASELINE)

    assert result.returncode != 0, "buf breaking accepted a deleted field"
    output = result.stdout + result.stderr
    assert "ChatMessage" in output and "content" in output, output
