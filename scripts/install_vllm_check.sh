#!/usr/bin/env bash
# Install vLLM (pinned) into .tools/vllm-venv for checking the GPU tier's engine arguments.
#
#   scripts/install_vllm_check.sh        # or: make tools
#
# The production config (deploy/ray/rayservice.yaml) passes engine arguments straight to
# vLLM's AsyncEngineArgs. No GPU is needed to check them: deploy/ray/check_vllm_args.py
# parses them with vLLM's own argument parser (tests/deploy/test_ray_manifests.py).
# A separate environment keeps vLLM's pins (torch, transformers, ...) out of .venv.
# About 8 GB (torch and its CUDA libraries come with vLLM, unused here) and 4 minutes the
# first time; idempotent afterwards. pip's cache is not used: it would hold another ~5 GB.
set -euo pipefail

VLLM_VERSION="0.29.0"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROOT}/.tools/vllm-venv"
LOCK="${ROOT}/requirements/vllm-check.txt"
# The stamp names the lock's content: a refreshed lock reinstalls.
STAMP="${VENV}/.vllm-${VLLM_VERSION}-$(sha256sum "${LOCK}" | cut -c1-12)"
PY="${VENV}/bin/python"

can_import() {
    VLLM_TARGET_DEVICE=cpu "${PY}" -c \
        'from vllm.engine.arg_utils import AsyncEngineArgs; import vllm.utils.argparse_utils' \
        >/dev/null 2>&1
}

if [[ -f "${STAMP}" ]] && can_import; then
    echo "tools: vLLM ${VLLM_VERSION} check environment already in .tools/vllm-venv"
    exit 0
fi

base="python3"
if [[ -x "${ROOT}/.venv/bin/python" ]]; then
    base="$("${ROOT}/.venv/bin/python" -c 'import sys; print(sys._base_executable)')"
fi
NEED_GB=10
mkdir -p "${ROOT}/.tools"
free_gb="$(df -Pk "${ROOT}/.tools" | awk 'NR == 2 { print int($4 / 1048576) }')"
if [[ -n "${free_gb}" && "${free_gb}" -lt "${NEED_GB}" ]]; then
    echo "tools: .tools/vllm-venv needs about ${NEED_GB} GB of disk; ${free_gb} GB is free on" >&2
    echo "       $(df -P "${ROOT}/.tools" | awk 'NR == 2 { print $6 }'). Free some space, then run 'make tools' again." >&2
    exit 1
fi
echo "tools: creating .tools/vllm-venv with ${base} and installing vllm==${VLLM_VERSION} (~8 GB)"
rm -rf "${VENV}"
"${base}" -m venv "${VENV}"
# Locked (requirements/vllm-check.txt, hashes; `make lock` refreshes it).
"${PY}" -m pip install --disable-pip-version-check --quiet --no-cache-dir --require-hashes --no-deps \
    -r "${ROOT}/requirements/vllm-check.txt"

if ! can_import; then
    # Where pip resolves torch to a CPU build, the CUDA builds of torchvision / torchaudio /
    # torchcodec fail to load; vLLM's argument code does not need them.
    echo "tools: vLLM's media extras do not load here; removing them (not needed for the check)"
    "${PY}" -m pip uninstall --yes --quiet torchvision torchaudio torchcodec
fi
if ! can_import; then
    echo "tools: cannot import vllm.engine.arg_utils from .tools/vllm-venv:" >&2
    VLLM_TARGET_DEVICE=cpu "${PY}" -c 'from vllm.engine.arg_utils import AsyncEngineArgs' >&2 || true
    exit 1
fi
touch "${STAMP}"
echo "tools: vLLM ${VLLM_VERSION} check environment ready at .tools/vllm-venv"
