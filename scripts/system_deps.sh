#!/usr/bin/env bash
# Installs the system packages that the build, the demo and the tests need (Debian):
# compilers and cmake for llama-cpp-python, npm for buf, redis-server. Only what is
# missing is installed; as non-root without sudo it names the packages and stops.
# Called by `make test` and `make demo`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1

log() { printf '\n==> %s\n' "$*"; }

# The whole install needs about 2.5 GB (`make demo`) or 12 GB (`make test`, with the vLLM
# check environment): say what there is before it starts.
log "disk: $(df -Ph "${ROOT}" | awk 'NR == 2 { print $4 " free of " $2 " on " $6 }')"


# --- system packages -------------------------------------------------------------
# command -> Debian package providing it.
declare -A NEED=(
    [make]=make
    [git]=git
    [gcc]=gcc
    [g++]=g++          # llama-cpp-python compiles llama.cpp from source
    [cmake]=cmake
    [npm]=npm          # buf (@bufbuild/buf) for the proto contract tests
    [redis-server]=redis-server
)
missing=()
for cmd in "${!NEED[@]}"; do
    if ! command -v "${cmd}" >/dev/null 2>&1; then
        missing+=("${NEED[${cmd}]}")
    fi
done

# The venv must be creatable by the interpreter the Makefile picks (python3 >= 3.11).
py=""
for c in python3.13 python3.12 python3.11 python3; do
    if command -v "${c}" >/dev/null 2>&1 &&
        "${c}" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        py="${c}"
        break
    fi
done
if [[ -z "${py}" ]]; then
    missing+=(python3 python3-venv python3-dev)
elif ! "${py}" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    # Debian splits ensurepip out of the interpreter.
    missing+=("python3-venv")
fi

if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing system packages: ${missing[*]}"
    if [[ "$(id -u)" -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            echo "error: need root (or sudo) to apt-get install: ${missing[*]}" >&2
            exit 1
        fi
    else
        SUDO=()
    fi
    echo "+ apt-get update"
    "${SUDO[@]}" apt-get update -qq
    echo "+ apt-get install -y --no-install-recommends ${missing[*]}"
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    log "system packages: all present"
fi

log "versions"
echo "python: $(${py:-python3} --version 2>&1) ($(command -v "${py:-python3}"))"
echo "node:   $(node --version 2>&1)  npm: $(npm --version 2>&1)"
echo "redis:  $(redis-server --version 2>&1 | head -n1)"
echo "cmake:  $(cmake --version 2>&1 | head -n1)"

