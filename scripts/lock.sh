#!/usr/bin/env bash
# Refresh the dependency locks in requirements/ (`make lock`).
#
# Every install of this project (make demo, make test, CI, the router image, the
# Greengrass recipe) installs from these files with `pip install --require-hashes`, so a
# new upstream release cannot change what a fresh machine gets. This script is the only
# thing that changes them: it resolves pyproject.toml's extras again with uv (pinned,
# installed into .tools/uv-venv), for every platform and Python >= 3.11 at once
# (--universal), with the sha256 of every file.
#
#   requirements/<extra>.txt         dev, router (+fast), cli, sim, serving, ray, edge, lambda
#   requirements/llama-cpp-python.txt  the llama-cpp-python source release (hash-checked)
#   requirements/llama-build.txt   and its build backend;
#                                      built by scripts/llama_wheel.py with portable flags,
#                                      never taken from pip's wheel cache
#   requirements/vllm-check.txt      the separate vLLM venv of `make tools` (Linux x86-64)
#
# Review the diff, run `make test`, and commit the changed files together.
set -euo pipefail

UV_VERSION="0.13.8"
VLLM_VERSION="0.29.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UV_VENV="${ROOT}/.tools/uv-venv"
UV="${UV_VENV}/bin/uv"
OUT="${ROOT}/requirements"
cd "${ROOT}"

if [[ "$("${UV}" --version 2>/dev/null)" != "uv ${UV_VERSION}"* ]]; then
    echo "lock: installing uv ${UV_VERSION} into .tools/uv-venv"
    py="${PYTHON:-python3}"
    rm -rf "${UV_VENV}"
    "${py}" -m venv "${UV_VENV}"
    "${UV_VENV}/bin/pip" install --disable-pip-version-check --quiet "uv==${UV_VERSION}"
fi
mkdir -p "${OUT}"

# The project itself is installed from the working tree, not from the lock.
common=(--universal --generate-hashes --python-version 3.11 --quiet
        --no-strip-extras --no-emit-package hybrid-router)

compile() { # compile OUTPUT EXTRA... ; llama-cpp-python is built separately
    local out="$1"
    shift
    local extras=()
    for e in "$@"; do extras+=(--extra "${e}"); done
    echo "lock: requirements/${out}.txt  (extras: $*)"
    "${UV}" pip compile pyproject.toml "${extras[@]}" "${common[@]}" \
        --no-emit-package llama-cpp-python \
        --custom-compile-command "make lock" -o "${OUT}/${out}.txt"
}

compile dev dev
compile router router fast
compile cli cli
compile sim sim
compile serving serving
compile ray ray
compile edge edge
compile lambda lambda

# llama-cpp-python: the version the dev resolution chose, as a hash-checked source release.
llama="$("${UV}" pip compile pyproject.toml --extra dev "${common[@]}" --no-header \
    --no-annotate 2>/dev/null | sed -n 's/^llama-cpp-python\(\[[a-z,]*\]\)\?==\([^ ;]*\).*/\2/p' | head -n1)"
if [[ -z "${llama}" ]]; then
    echo "lock: could not find llama-cpp-python in the dev resolution" >&2
    exit 1
fi
echo "lock: requirements/llama-cpp-python.txt  (llama-cpp-python==${llama}, source release)"
printf 'llama-cpp-python==%s\n' "${llama}" >"${OUT}/.llama.in"
"${UV}" pip compile "${OUT}/.llama.in" "${common[@]}" --no-deps --no-binary llama-cpp-python \
    --custom-compile-command "make lock" -o "${OUT}/llama-cpp-python.txt"
rm -f "${OUT}/.llama.in"
# Its build backend, installed into the venv so that the build (--no-build-isolation) uses
# locked versions too.
echo "lock: requirements/llama-build.txt  (llama-cpp-python's build backend)"
printf 'scikit-build-core[pyproject]>=0.9.2\n' >"${OUT}/.llama-build.in"
"${UV}" pip compile "${OUT}/.llama-build.in" "${common[@]}" \
    --custom-compile-command "make lock" -o "${OUT}/llama-build.txt"
rm -f "${OUT}/.llama-build.in"

echo "lock: requirements/vllm-check.txt  (vllm==${VLLM_VERSION}, Linux x86-64, CPython 3.11)"
printf 'vllm==%s\n' "${VLLM_VERSION}" >"${OUT}/.vllm.in"
"${UV}" pip compile "${OUT}/.vllm.in" --generate-hashes --quiet \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --custom-compile-command "make lock" -o "${OUT}/vllm-check.txt"
rm -f "${OUT}/.vllm.in"

echo "lock: done; review 'git diff requirements/', run 'make test', commit requirements/ together"
