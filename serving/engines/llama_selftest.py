"""Prove the installed llama.cpp build generates on this CPU, in a child process.

    python -m serving.engines.llama_selftest            # make demo / make test run this
    python -m serving.engines.llama_selftest --json

A child process loads the packaged Gemma 3 270M model and generates a few tokens. If the
child dies (a native build's AMX or AVX-512 path faulting, a wheel built for another
CPU), the parent names the signal, the library, the CPU and its flags, and the fix, and
exits 1: the install stops there instead of the demo failing later with "connection
refused". It also fails when the build has CPU-specific paths compiled in that the
portable profiles rule out (``llama_build.violations``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from serving.engines import llama_build

CHILD_TIMEOUT_S = 180.0
PROMPT = "The capital of France is"
#: Flags worth naming when a build faults: the ones native builds pick up.
NOTABLE_FLAGS = frozenset(
    {"avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni"}
    | {"asimddp", "asimdhp", "i8mm", "sve", "sve2", "sme", "sme2"}
)
NOTABLE_PREFIXES = ("amx",)


def _child(model_path: str | None, tokens: int) -> int:
    """Runs in the child: load, generate, print one JSON line."""
    import llama_cpp

    from serving.engines.llamacpp import default_model_path

    path = model_path or default_model_path()
    started = time.perf_counter()
    llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=2, verbose=False, seed=1)
    loaded = time.perf_counter()
    text = []
    count = 0
    first = 0.0
    stream: Any = llm.create_completion(PROMPT, max_tokens=tokens, temperature=0.0, stream=True)
    for chunk in stream:
        if not first:
            first = time.perf_counter()
        choice = chunk["choices"][0]
        text.append(choice["text"])
        count += choice.get("finish_reason") is None  # the last chunk carries no token
    done = time.perf_counter()
    decode_s = max(done - first, 1e-9)
    print(
        json.dumps(
            {
                "tokens": count,
                "text": "".join(text),
                "load_s": round(loaded - started, 3),
                "ttft_ms": round((first - loaded) * 1000, 1),
                "decode_tokens_per_s": round((count - 1) / decode_s, 1) if count > 1 else 0.0,
                "system_info": llama_cpp.llama_print_system_info().decode(errors="replace"),
                "library": _library(),
                "model": path,
            }
        ),
        flush=True,
    )
    return 0


def _library() -> str:
    """Where the installed build's CPU backend lives (named in crash reports)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("llama_cpp")
        if spec and spec.origin:
            lib = Path(spec.origin).parent / "lib"
            for name in ("libggml-cpu.so", "libggml-cpu.dylib", "libggml.so"):
                if (lib / name).exists():
                    return str(lib / name)
            return str(lib)
    except ImportError:
        pass
    return "llama_cpp/lib (llama-cpp-python not importable)"


def _notable(flags: frozenset[str]) -> list[str]:
    return sorted(f for f in flags if f in NOTABLE_FLAGS or f.startswith(NOTABLE_PREFIXES))


def _installed_build() -> str:
    stamp = Path(sys.prefix) / ".llama-cpp-python-build"
    try:
        return stamp.read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown (not installed by scripts/llama_wheel.py)"


def run(
    model_path: str | None = None, tokens: int = 8, *, command: list[str] | None = None
) -> dict[str, Any]:
    """Run the child and judge it; ``ok`` says whether the engine works here.

    ``command`` replaces the child's command line (tests give it one that crashes).
    """
    cmd = command or [
        sys.executable,
        "-m",
        "serving.engines.llama_selftest",
        "--child",
        "--tokens",
        str(tokens),
    ]
    if model_path and command is None:
        cmd += ["--model", model_path]
    flags = llama_build.read_cpu_flags()
    report: dict[str, Any] = {
        "ok": False,
        "cpu": llama_build.cpu_model(),
        "machine": platform.machine(),
        "cpu_flags": _notable(flags),
        "build": _installed_build(),
        "library": _library(),
    }
    fix = (
        "rebuild llama-cpp-python with a portable profile: `make llama-rebuild` (picks the "
        "profile from this CPU; HYBRID_ROUTER_LLAMA_PROFILE=x86-64-v2 or armv8-a for the "
        "most conservative build; `python3 scripts/llama_wheel.py --list` lists them)"
    )
    try:
        child = subprocess.run(
            cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        report["error"] = f"a {tokens}-token generation took over {CHILD_TIMEOUT_S:.0f} s"
        report["fix"] = "check that the machine is not overloaded; then " + fix
        return report
    tail = "\n".join(child.stderr.strip().splitlines()[-8:])
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        report["signal"] = name
        report["error"] = (
            f"llama.cpp died with {name} while generating, in {report['library']}; "
            f"CPU: {report['cpu']} ({report['machine']}), notable flags: "
            f"{' '.join(report['cpu_flags']) or 'none'}; installed build: {report['build']}"
        )
        report["fix"] = fix
        report["stderr_tail"] = tail
        return report
    if child.returncode != 0:
        report["error"] = f"the generation check exited with status {child.returncode}"
        report["fix"] = "read the output below; if llama_cpp is missing, run `make install`; " + fix
        report["stderr_tail"] = tail
        return report
    try:
        result = json.loads(child.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        report["error"] = f"the generation check printed no result: {child.stdout[-300:]!r}"
        report["fix"] = fix
        return report
    report.update(result)
    if result["tokens"] < 1:
        report["error"] = "the model generated no token"
        report["fix"] = fix
        return report
    profile_name = report["build"].split(" ")[-1].rsplit("-", 1)[0]
    try:
        profile = llama_build.by_name(profile_name)
    except llama_build.NoProfile:
        try:  # not built by scripts/llama_wheel.py: hold it to this CPU's profile
            profile = llama_build.pick(platform.machine(), frozenset(flags))
        except llama_build.NoProfile:
            profile = None
    bad = llama_build.violations(profile, result["system_info"]) if profile else []
    if bad:
        report["error"] = (
            f"the installed build has {', '.join(bad)} compiled in, which profile "
            f"{profile_name} rules out (a wheel built with other flags?)"
        )
        report["fix"] = fix
        return report
    report["ok"] = True
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.engines.llama_selftest",
        description="Generate a few tokens with the installed llama.cpp build, in a child "
        "process, and explain a crash (signal, library, CPU flags, fix).",
    )
    parser.add_argument("--model", help="a GGUF file (default: the packaged Gemma 3 270M)")
    parser.add_argument("--tokens", type=int, default=8, help="tokens to generate (default 8)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tokens < 1 or args.tokens > 256:
        parser.error("--tokens must be between 1 and 256")
    if args.child:
        return _child(args.model, args.tokens)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    report = run(args.model, args.tokens)
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["ok"]:
        features = sorted(llama_build.enabled_features(report["system_info"]))
        print(
            f"engine check: ok, {report['tokens']} tokens from the packaged model "
            f"(TTFT {report['ttft_ms']:.0f} ms, {report['decode_tokens_per_s']:.0f} tok/s); "
            f"build {report['build']}; llama.cpp CPU features: {' '.join(features)}"
        )
    else:
        print(f"error: {report['error']}", file=sys.stderr)
        print(f"  fix: {report['fix']}", file=sys.stderr)
        if report.get("stderr_tail"):
            print("  its last output:", file=sys.stderr)
            for line in report["stderr_tail"].splitlines():
                print(f"    {line}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
