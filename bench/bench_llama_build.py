"""Tokens/s of llama.cpp builds side by side: the portable profile against the others.

    .venv/bin/python bench/bench_llama_build.py --profiles x86-64-v3,x86-64-v4,native

Each profile's wheel is built (or taken from .wheelhouse/) by scripts/llama_wheel.py,
unpacked into a temporary folder and imported from there by a child process, so every
build runs the same Python, model and prompt. Runs alternate between builds (A B C A B C
...) on this noisy shared machine; the table gives medians of prompt processing
(tokens/s over a ~200-token prompt) and decode (tokens/s over 64 tokens, greedy), and the
ratio to the first profile. A build whose child dies is reported with its signal
(a native build on an AMX Xeon: SIGSEGV) instead of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
import llama_cpp
from serving.engines.llamacpp import default_model_path
threads, n_out = int(sys.argv[1]), int(sys.argv[2])
llm = llama_cpp.Llama(model_path=default_model_path(), n_ctx=1024, n_threads=threads,
                      n_batch=512, verbose=False, seed=1)
prompt = " ".join(f"Day {i}: the pump was checked and the valve was cleaned." for i in range(16))
tokens = llm.tokenize(prompt.encode())
llm.reset()
t0 = time.perf_counter()
llm.eval(tokens)
t1 = time.perf_counter()
out = 0
for _ in llm.generate(tokens, temp=0.0):  # reuses the evaluated prompt (prefix match)
    out += 1
    if out == 1:
        t2 = time.perf_counter()
    if out >= n_out:
        break
t3 = time.perf_counter()
print(json.dumps({"prompt_tokens": len(tokens), "prompt_tps": len(tokens) / (t1 - t0),
                  "decode_tps": (out - 1) / (t3 - t2),
                  "system_info": llama_cpp.llama_print_system_info().decode()}))
"""


def wheel_for(profile: str) -> Path:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "llama_wheel.py"), "--build-only"],
        env={**os.environ, "HYBRID_ROUTER_LLAMA_PROFILE": profile},
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"building {profile} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def run_once(site: Path, threads: int, n_out: int) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(threads), str(n_out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if child.returncode < 0:
        return {"died": signal.Signals(-child.returncode).name}
    if child.returncode != 0:
        return {"died": f"exit {child.returncode}: {child.stderr.strip().splitlines()[-1:]}"}
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", default="x86-64-v3,x86-64-v4,native")
    parser.add_argument("--rounds", type=int, default=5, help="runs per build (alternated)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64, help="decoded tokens per run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    results: dict[str, list[dict]] = {p: [] for p in profiles}
    with tempfile.TemporaryDirectory(prefix="bench-llama-") as tmp:
        sites = {}
        for p in profiles:
            wheel = wheel_for(p)
            sites[p] = Path(tmp) / p
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(sites[p])
            print(f"{p}: {wheel.parent.name}", file=sys.stderr, flush=True)
        for r in range(args.rounds):
            for p in profiles:
                if results[p] and "died" in results[p][-1]:
                    continue
                results[p].append(run_once(sites[p], args.threads, args.tokens))
                print(f"round {r + 1} {p}: {results[p][-1]}", file=sys.stderr, flush=True)
    rows = []
    base = None
    for p in profiles:
        ok = [x for x in results[p] if "died" not in x]
        if not ok:
            rows.append({"profile": p, "died": results[p][0]["died"]})
            continue
        prompt = statistics.median(x["prompt_tps"] for x in ok)
        decode = statistics.median(x["decode_tps"] for x in ok)
        feats = sorted(
            f.split("=")[0].strip()
            for f in ok[0]["system_info"].split("|")
            if f.strip().endswith("= 1")
        )
        row = {"profile": p, "runs": len(ok), "prompt_tps": prompt, "decode_tps": decode}
        row["features"] = " ".join(f for f in feats if f.startswith(("AVX", "AMX", "F16C")))
        if base is None:
            base = row
        row["prompt_ratio"] = prompt / base["prompt_tps"]
        row["decode_ratio"] = decode / base["decode_tps"]
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| build | runs | prompt tok/s (median) | decode tok/s (median) | vs first | CPU paths |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "died" in row:
            print(f"| `{row['profile']}` | - | died with {row['died']} | - | - | - |")
            continue
        print(
            f"| `{row['profile']}` | {row['runs']} | {row['prompt_tps']:.0f} | "
            f"{row['decode_tps']:.1f} | prompt {row['prompt_ratio']:.2f}x, decode "
            f"{row['decode_ratio']:.2f}x | {row['features']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
