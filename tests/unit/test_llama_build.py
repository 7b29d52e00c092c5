"""The llama.cpp build: portable profiles picked per CPU, and a guard on the installed build.

``test_installed_build_has_no_ruled_out_cpu_paths`` reads llama.cpp's own system-info
string from the installed library: it fails if the build has AVX-512, AVX-VNNI or AMX
compiled in (x86) — the native paths that fault on CPUs that merely advertise them.
"""

from __future__ import annotations

import platform
import signal
import sys
from pathlib import Path

import pytest

from serving.engines import llama_build, llama_selftest

SAPPHIRE_RAPIDS = (
    "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n"
    "flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma bmi1 bmi2 avx2 avx512f avx512dq "
    "avx512bw avx512vl avx512vbmi avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8\n"
)
GRAVITON3 = (
    "processor\t: 0\nBogoMIPS\t: 2100.00\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
    "asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm\n"
    "CPU part\t: 0xd40\n"
)
RASPBERRY_PI_4 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n"
SYSTEM_INFO_V3 = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
SYSTEM_INFO_NATIVE = SYSTEM_INFO_V3 + "AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | "


def test_an_amx_xeon_gets_the_avx2_baseline_not_a_native_build():
    flags = llama_build.cpu_flags(SAPPHIRE_RAPIDS)
    assert {"amx_tile", "avx512f"} <= flags
    profile = llama_build.pick("x86_64", flags)
    assert profile.name == "x86-64-v3"
    assert "-DGGML_NATIVE=OFF" in profile.cmake_args
    assert "-DGGML_AMX_INT8=OFF" in profile.cmake_args
    assert "-DGGML_AVX512=OFF" in profile.cmake_args


def test_cpus_without_avx2_get_the_sse_baseline():
    assert llama_build.pick("x86_64", frozenset({"sse4_2", "avx"})).name == "x86-64-v2"


def test_arm64_profiles_follow_the_dot_product_flag():
    assert llama_build.pick("aarch64", llama_build.cpu_flags(GRAVITON3)).name == "armv8.2-a"
    assert llama_build.pick("aarch64", llama_build.cpu_flags(RASPBERRY_PI_4)).name == "armv8-a"


def test_no_cpuinfo_gets_the_most_portable_profile():
    assert llama_build.pick("x86_64", frozenset()).name == "x86-64-v2"
    assert llama_build.pick("arm64", frozenset()).name == "armv8-a"


def test_unsupported_machines_are_named_with_the_way_out():
    with pytest.raises(llama_build.NoProfile, match=r"'riscv64'.*HYBRID_ROUTER_LLAMA_PROFILE"):
        llama_build.pick("riscv64", frozenset({"rv64"}))
    with pytest.raises(llama_build.NoProfile, match="lacks sse4_2"):
        llama_build.pick("x86_64", frozenset({"sse2"}))
    with pytest.raises(llama_build.NoProfile, match="unknown llama.cpp build profile 'fast'"):
        llama_build.by_name("fast")


def test_the_wheel_key_changes_with_any_flag():
    v3 = llama_build.by_name("x86-64-v3")
    v4 = llama_build.by_name("x86-64-v4")
    assert v3.key.startswith("x86-64-v3-") and v3.key != v4.key
    assert v3.key == llama_build.by_name("x86-64-v3").key  # stable


def test_violations_read_from_system_info():
    v3 = llama_build.by_name("x86-64-v3")
    assert llama_build.violations(v3, SYSTEM_INFO_V3) == []
    assert llama_build.violations(v3, SYSTEM_INFO_NATIVE) == ["AMX_INT8", "AVX512", "AVX512_VNNI"]
    assert "AVX2" in llama_build.enabled_features(SYSTEM_INFO_V3)


def _installed_profile() -> llama_build.Profile:
    stamp = Path(sys.prefix) / ".llama-cpp-python-build"
    if stamp.is_file():
        key = stamp.read_text().split()[-1]
        return llama_build.by_name(key.rsplit("-", 1)[0])
    return llama_build.pick(platform.machine(), llama_build.read_cpu_flags())


def test_installed_build_has_no_ruled_out_cpu_paths():
    llama_cpp = pytest.importorskip("llama_cpp", exc_type=ImportError)
    info = llama_cpp.llama_print_system_info().decode()
    profile = _installed_profile()
    assert profile in llama_build.PROFILES, f"installed build uses {profile.name}: not portable"
    assert llama_build.enabled_features(info), f"unreadable system info: {info!r}"
    assert llama_build.violations(profile, info) == [], (
        f"the installed llama.cpp build ({profile.name}) has CPU-specific paths compiled in: "
        f"{info}; rebuild with `make llama-rebuild`"
    )
    if platform.machine() in llama_build.X86:
        assert not {"AMX_INT8", "AVX512"} & llama_build.enabled_features(info)


def test_a_crashing_engine_is_explained_with_signal_library_cpu_and_fix():
    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    report = llama_selftest.run(command=crash)
    assert not report["ok"]
    assert report["signal"] == signal.SIGSEGV.name
    assert "llama.cpp died with SIGSEGV while generating" in report["error"]
    assert report["library"] in report["error"]
    assert "CPU:" in report["error"] and "installed build:" in report["error"]
    assert "make llama-rebuild" in report["fix"]


def test_a_failing_engine_check_names_its_exit_status():
    report = llama_selftest.run(command=[sys.executable, "-c", "raise SystemExit(3)"])
    assert not report["ok"] and "exited with status 3" in report["error"]


@pytest.mark.model
def test_the_engine_check_generates_real_tokens_here():
    report = llama_selftest.run(tokens=4)
    assert report["ok"], report
    assert report["tokens"] >= 1 and report["text"].strip()
