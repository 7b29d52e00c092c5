"""How llama.cpp is compiled for this project: portable CPU profiles, picked per machine.

pip compiles llama-cpp-python from source, and llama.cpp's default build is *native*
(``-march=native``): it uses every instruction the build machine advertises. On Intel
Xeons with AMX (Sapphire Rapids and later: AWS c7i/m7i/r7i) that build dies with SIGSEGV
in ``ggml_backend_amx_mul_mat`` on the first generation where the CPU advertises AMX but
the process cannot use it (seen on KVM guests), and a native wheel copied to another
machine can fault with SIGILL. So the project never builds natively: it picks one of the
profiles below from the CPU's flags, and ``scripts/llama_wheel.py`` builds it into the
project's wheelhouse, keyed by version, machine and flags (never pip's wheel cache).

- ``x86-64-v3``: x86-64 with AVX2, FMA, F16C, BMI2 (Intel Haswell+, AMD Zen+); AVX2
  baseline, no AVX-512, no AMX.
- ``x86-64-v2``: older x86-64; SSE4.2.
- ``armv8.2-a``: arm64 with dot product and fp16 (Graviton 2/3/4, Raspberry Pi 5, Jetson
  Orin); armv8.2-a+dotprod+fp16.
- ``armv8-a``: any other arm64 (Raspberry Pi 4, Cortex-A72); armv8-a.

``native``, ``x86-64-v4`` (AVX-512, no AMX) and the others in ``BENCH_PROFILES`` exist
for benchmarks only (BENCHMARKS.md, "llama.cpp build"). Stdlib only: the build script
imports this module before anything else is installed.
"""

from __future__ import annotations

import hashlib
import platform
import re
from dataclasses import dataclass
from pathlib import Path

#: The multimodal library (llava/mtmd) is never used here; skipping it halves the build.
_COMMON = ("-DLLAVA_BUILD=OFF",)
_NO_X86_EXTRAS = (
    "-DGGML_AVX_VNNI=OFF",
    "-DGGML_AVX512=OFF",
    "-DGGML_AVX512_VBMI=OFF",
    "-DGGML_AVX512_VNNI=OFF",
    "-DGGML_AVX512_BF16=OFF",
    "-DGGML_AMX_TILE=OFF",
    "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
)
#: llama.cpp system-info features a portable x86 build must not have compiled in: the
#: CPU-specific paths ruled out above (tests/unit/test_llama_build.py reads them back).
X86_RULED_OUT = ("AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AMX_INT8", "AVX_VNNI")


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    #: ``platform.machine()`` values it builds for.
    machines: tuple[str, ...]
    cmake_args: tuple[str, ...]
    #: /proc/cpuinfo flags (x86 "flags", arm "Features") the CPU must have.
    requires: frozenset[str]
    #: Features llama.cpp's system info must not report as enabled with this build.
    ruled_out: tuple[str, ...]
    summary: str

    @property
    def cmake_args_text(self) -> str:
        return " ".join(self.cmake_args)

    @property
    def key(self) -> str:
        """Short, stable id of the exact flags: a changed flag is a different wheel."""
        digest = hashlib.sha256("\n".join(self.cmake_args).encode()).hexdigest()[:10]
        return f"{self.name}-{digest}"


X86 = ("x86_64", "amd64", "AMD64")
ARM = ("aarch64", "arm64")

PROFILES: tuple[Profile, ...] = (
    Profile(
        "x86-64-v3",
        X86,
        _COMMON
        + (
            "-DGGML_NATIVE=OFF",
            "-DGGML_SSE42=ON",
            "-DGGML_AVX=ON",
            "-DGGML_AVX2=ON",
            "-DGGML_FMA=ON",
            "-DGGML_F16C=ON",
            "-DGGML_BMI2=ON",
        )
        + _NO_X86_EXTRAS,
        frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"}),
        X86_RULED_OUT,
        "x86-64 with AVX2/FMA/F16C/BMI2 (Intel Haswell and later, AMD Zen and later)",
    ),
    Profile(
        "x86-64-v2",
        X86,
        _COMMON
        + (
            "-DGGML_NATIVE=OFF",
            "-DGGML_SSE42=ON",
            "-DGGML_AVX=OFF",
            "-DGGML_AVX2=OFF",
            "-DGGML_FMA=OFF",
            "-DGGML_F16C=OFF",
            "-DGGML_BMI2=OFF",
        )
        + _NO_X86_EXTRAS,
        frozenset({"sse4_2"}),
        (*X86_RULED_OUT, "AVX", "AVX2", "FMA", "F16C", "BMI2"),
        "older x86-64 with SSE4.2 only (slow: no AVX)",
    ),
    Profile(
        "armv8.2-a",
        ARM,
        _COMMON + ("-DGGML_NATIVE=OFF", "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16"),
        frozenset({"asimd", "asimddp", "fphp", "asimdhp"}),
        ("SVE", "SME"),
        "arm64 with dot product and fp16 (Graviton 2/3/4, Raspberry Pi 5, Jetson Orin)",
    ),
    Profile(
        "armv8-a",
        ARM,
        _COMMON + ("-DGGML_NATIVE=OFF", "-DGGML_CPU_ARM_ARCH=armv8-a"),
        frozenset({"asimd"}),
        ("SVE", "SME", "DOTPROD"),
        "any arm64 (Raspberry Pi 4, Cortex-A72)",
    ),
)

#: Builds for comparisons only (BENCHMARKS.md): never picked automatically.
BENCH_PROFILES: tuple[Profile, ...] = (
    Profile(
        "native",
        X86 + ARM,
        _COMMON + ("-DGGML_NATIVE=ON",),
        frozenset(),
        (),
        "llama.cpp's default: -march=native (faults on some CPUs; not portable)",
    ),
    Profile(
        "x86-64-v4",
        X86,
        _COMMON
        + (
            "-DGGML_NATIVE=OFF",
            "-DGGML_AVX2=ON",
            "-DGGML_FMA=ON",
            "-DGGML_F16C=ON",
            "-DGGML_BMI2=ON",
            "-DGGML_AVX512=ON",
            "-DGGML_AVX512_VBMI=ON",
            "-DGGML_AVX512_VNNI=ON",
            "-DGGML_AVX512_BF16=ON",
            "-DGGML_AVX_VNNI=ON",
            "-DGGML_AMX_TILE=OFF",
            "-DGGML_AMX_INT8=OFF",
            "-DGGML_AMX_BF16=OFF",
        ),
        frozenset({"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512vbmi"}),
        ("AMX_INT8",),
        "x86-64 with AVX-512 (VBMI, VNNI, BF16) and no AMX: the fastest safe build here",
    ),
    Profile(
        "all-variants",
        X86,
        _COMMON + ("-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON"),
        frozenset(),
        (),
        "llama.cpp's runtime CPU-variant selection (one libggml-cpu-*.so per x86 level)",
    ),
)


class NoProfile(Exception):
    """No portable profile fits this machine; the message says what to do."""


def by_name(name: str) -> Profile:
    for profile in PROFILES + BENCH_PROFILES:
        if profile.name == name:
            return profile
    names = ", ".join(p.name for p in PROFILES + BENCH_PROFILES)
    raise NoProfile(f"unknown llama.cpp build profile {name!r}; choose one of: {names}")


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo text (x86 ``flags``, arm ``Features``)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def read_cpu_flags(path: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    try:
        return cpu_flags(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return frozenset()


def cpu_model(path: Path = Path("/proc/cpuinfo")) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^(?:model name|Model|CPU part)\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else (platform.processor() or "unknown")


def pick(machine: str, flags: frozenset[str]) -> Profile:
    """The first (fastest) supported profile whose required flags this CPU has."""
    fitting = [p for p in PROFILES if machine in p.machines]
    if not fitting:
        raise NoProfile(
            f"no llama.cpp build profile for machine type {machine!r}: supported are x86-64 "
            "and arm64 (aarch64). Set HYBRID_ROUTER_LLAMA_PROFILE=native to try llama.cpp's "
            "native build at your own risk."
        )
    if not flags:
        # No /proc/cpuinfo (macOS, containers that hide it): the most portable profile.
        return fitting[-1]
    for profile in fitting:
        if profile.requires <= flags:
            return profile
    missing = sorted(fitting[-1].requires - flags)
    raise NoProfile(
        f"this CPU lacks {', '.join(missing)}, which every supported {machine} llama.cpp "
        "build needs; set HYBRID_ROUTER_LLAMA_PROFILE=native to try a native build"
    )


def enabled_features(system_info: str) -> frozenset[str]:
    """Features that llama.cpp's ``llama_print_system_info()`` reports as enabled (``= 1``)."""
    return frozenset(m.group(1) for m in re.finditer(r"([A-Z][A-Z0-9_]*)\s*=\s*1\b", system_info))


def violations(profile: Profile, system_info: str) -> list[str]:
    """Ruled-out features the installed build has compiled in (should be none)."""
    enabled = enabled_features(system_info)
    return sorted(f for f in profile.ruled_out if f in enabled)
