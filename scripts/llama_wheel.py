#!/usr/bin/env python3
"""Build llama-cpp-python with a portable CPU profile and install it into a venv.

    python3 scripts/llama_wheel.py --python .venv/bin/python        # make install does this
    HYBRID_ROUTER_LLAMA_PROFILE=x86-64-v2 python3 scripts/llama_wheel.py --python ...
    python3 scripts/llama_wheel.py --list                            # the profiles

The version and the source release's sha256 come from requirements/llama-cpp-python.txt
(the lock). The profile comes from the CPU's flags (serving/engines/llama_build.py) unless
HYBRID_ROUTER_LLAMA_PROFILE (or --profile) names one. Wheels are kept in this project's
wheelhouse, keyed by version, machine and flags:
~/.cache/hybrid-router/wheelhouse/llama-cpp-python/<version>/<machine>/<profile>-<hash of
the CMake flags>/ (HYBRID_ROUTER_WHEELHOUSE moves it; a fresh clone reuses it), each wheel
beside a build-info.json that must name the same version and flags to be reused. They are
built with `pip wheel --no-cache-dir`, so pip's wheel cache, which ignores CMAKE_ARGS, can
never hand back a wheel built with other flags. A venv records the build it has in
<venv>/.llama-cpp-python-build; nothing is rebuilt or reinstalled when that matches.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# hybrid_router: proto/hybrid_router in the repository, hybrid_router/ beside scripts/ in the
# edge artifact (already on the path through ROOT).
sys.path.insert(1, str(ROOT / "proto"))

# Both stdlib only, importable pre-install.
from hybrid_router.env import ENV_LLAMA_PROFILE, ENV_WHEELHOUSE  # noqa: E402

from serving.engines import llama_build  # noqa: E402

LOCK = ROOT / "requirements" / "llama-cpp-python.txt"
BUILD_LOCK = ROOT / "requirements" / "llama-build.txt"
STAMP_NAME = ".llama-cpp-python-build"
PROFILE_ENV = ENV_LLAMA_PROFILE
WHEELHOUSE_ENV = ENV_WHEELHOUSE


def say(message: str) -> None:
    print(f"llama-cpp: {message}", flush=True)


def fail(message: str, fix: str) -> None:
    print(f"error: {message}\n  fix: {fix}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def locked_version() -> str:
    try:
        text = LOCK.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read the lock {LOCK}: {exc}", "run `make lock` to write it")
    match = re.search(r"^llama-cpp-python==([^\s;\\]+)", text, re.MULTILINE)
    if not match:
        fail(f"{LOCK} names no llama-cpp-python version", "run `make lock` to write it again")
    return match.group(1)


def choose_profile(name: str | None) -> llama_build.Profile:
    try:
        if name:
            return llama_build.by_name(name)
        return llama_build.pick(platform.machine(), llama_build.read_cpu_flags())
    except llama_build.NoProfile as exc:
        fail(str(exc), f"set {PROFILE_ENV} to a profile from `scripts/llama_wheel.py --list`")
    raise AssertionError("unreachable")


def compiler() -> str:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            out = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
            return out.stdout.splitlines()[0] if out.stdout else cc
    return "none"


def check_toolchain() -> None:
    missing = [tool for tool in ("cmake", "c++") if not shutil.which(tool)]
    if missing:
        fail(
            f"building llama-cpp-python needs {' and '.join(missing)}, not found on PATH",
            "Debian/Ubuntu: apt-get install cmake g++ (or run `make system-deps` as root)",
        )


def wheel_dir(wheelhouse: Path, version: str, profile: llama_build.Profile) -> Path:
    key = profile.key
    if profile.name == "native":  # only good for this very CPU
        flags = " ".join(sorted(llama_build.read_cpu_flags()))
        key += "-cpu" + hashlib.sha256(flags.encode()).hexdigest()[:10]
    return wheelhouse / "llama-cpp-python" / version / platform.machine() / key


def default_wheelhouse() -> Path:
    """$HYBRID_ROUTER_WHEELHOUSE, else the user's cache: a fresh clone reuses the build."""
    if os.environ.get(WHEELHOUSE_ENV):
        return Path(os.environ[WHEELHOUSE_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "hybrid-router" / "wheelhouse"


def find_wheel(directory: Path, version: str, profile: llama_build.Profile) -> Path | None:
    """The cached wheel, if its build record matches the exact flags asked for."""
    info = directory / "build-info.json"
    wheels = sorted(directory.glob("llama_cpp_python-*.whl"))
    if len(wheels) != 1 or not info.is_file():
        return None
    try:
        record = json.loads(info.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("version") != version or record.get("cmake_args") != list(profile.cmake_args):
        return None
    return wheels[0]


def build(python: str, directory: Path, version: str, profile: llama_build.Profile) -> Path:
    check_toolchain()
    say("installing the locked build backend (requirements/llama-build.txt)")
    pip(python, "install", "--require-hashes", "--no-deps", "-r", str(BUILD_LOCK))
    say(
        f"compiling llama-cpp-python {version} with profile {profile.name} "
        f"({profile.summary}); about 3-5 minutes on 2 cores"
    )
    say(f"CMAKE_ARGS={profile.cmake_args_text}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    for stale in directory.parent.glob(".building-*"):  # left by a build that was killed
        if time.time() - stale.stat().st_mtime > 3 * 3600:
            shutil.rmtree(stale, ignore_errors=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=directory.parent, prefix=".building-") as tmp:
        env = dict(os.environ, CMAKE_ARGS=profile.cmake_args_text, FORCE_CMAKE="1")
        env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        pip(
            python,
            "wheel",
            "--no-deps",
            "--no-cache-dir",
            "--no-build-isolation",
            "--no-binary",
            "llama-cpp-python",
            "--require-hashes",
            "-r",
            str(LOCK),
            "-w",
            tmp,
            env=env,
        )
        wheels = list(Path(tmp).glob("llama_cpp_python-*.whl"))
        if len(wheels) != 1:
            fail(f"pip wheel left {len(wheels)} wheels in {tmp}", "see pip's output above")
        record = {
            "version": version,
            "profile": profile.name,
            "cmake_args": list(profile.cmake_args),
            "machine": platform.machine(),
            "cpu": llama_build.cpu_model(),
            "compiler": compiler(),
            "built_unix": int(time.time()),
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (Path(tmp) / "build-info.json").write_text(json.dumps(record, indent=2) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
        os.mkdir(tmp)  # TemporaryDirectory removes it again
    say(f"built in {time.monotonic() - started:.0f} s -> {directory}")
    wheel = find_wheel(directory, version, profile)
    assert wheel is not None
    return wheel


def pip(python: str, *args: str, env: dict[str, str] | None = None) -> None:
    cmd = [python, "-m", "pip", "--disable-pip-version-check", *args]
    result = subprocess.run(cmd, env=env, check=False)
    if result.returncode != 0:
        fail(f"`{' '.join(cmd)}` exited with {result.returncode}", "see pip's output above")


def venv_dir(python: str) -> Path:
    out = subprocess.run(
        [python, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True
    )
    if out.returncode != 0:
        fail(f"{python} does not run: {out.stderr.strip()}", "create the venv first (make venv)")
    return Path(out.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Profiles are chosen from /proc/cpuinfo; "
            f"{PROFILE_ENV}=NAME overrides. See serving/engines/llama_build.py."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--python", default=sys.executable, help="the venv's interpreter")
    parser.add_argument(
        "--profile",
        default=os.environ.get(PROFILE_ENV) or None,
        help=f"build profile (default: ${PROFILE_ENV}, else picked from the CPU's flags)",
    )
    parser.add_argument(
        "--wheelhouse",
        type=Path,
        default=default_wheelhouse(),
        help=f"where built wheels are kept (default: ${WHEELHOUSE_ENV}, else "
        "~/.cache/hybrid-router/wheelhouse)",
    )
    parser.add_argument("--rebuild", action="store_true", help="build even if a wheel is kept")
    parser.add_argument(
        "--build-only", action="store_true", help="build (or find) the wheel, print its path"
    )
    parser.add_argument("--list", action="store_true", help="list the profiles and exit")
    args = parser.parse_args(argv)

    if args.list:
        here = llama_build.read_cpu_flags()
        for p in llama_build.PROFILES + llama_build.BENCH_PROFILES:
            fits = (
                "fits this CPU"
                if p.requires <= here
                else "missing " + ",".join(sorted(p.requires - here))
            )
            kind = "supported" if p in llama_build.PROFILES else "benchmarks only"
            print(f"{p.name:10} {kind:16} {fits:28} {p.summary}")
            print(f"{'':10} CMAKE_ARGS={p.cmake_args_text}")
        return 0

    version = locked_version()
    profile = choose_profile(args.profile)
    directory = wheel_dir(args.wheelhouse, version, profile)
    stamp_value = f"{version} {profile.key}"

    if not args.build_only:
        stamp = venv_dir(args.python) / STAMP_NAME
        if stamp.is_file() and stamp.read_text().strip() == stamp_value and not args.rebuild:
            probe = subprocess.run(
                [args.python, "-c", "import llama_cpp"], capture_output=True, check=False
            )
            if probe.returncode == 0:
                say(f"{version} ({profile.name}) already installed")
                return 0

    wheel = None if args.rebuild else find_wheel(directory, version, profile)
    if wheel is None:
        wheel = build(args.python, directory, version, profile)
    else:
        say(f"using the kept wheel {wheel.relative_to(args.wheelhouse)} ({profile.name})")
    if args.build_only:
        print(wheel)
        return 0

    say(f"installing {wheel.name} ({profile.name}) into {venv_dir(args.python)}")
    pip(args.python, "install", "--no-deps", "--force-reinstall", "--no-cache-dir", str(wheel))
    stamp.write_text(stamp_value + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
