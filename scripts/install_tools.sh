#!/usr/bin/env bash
# Install the project's non-Python tools into .tools/ (git-ignored).
#
#   scripts/install_tools.sh        # or: make tools
#
# Tools (pinned):
#   buf  @bufbuild/buf from npm: `buf lint` and `buf breaking` on proto/
#        (tests/unit/test_proto_contract.py, `make proto-check`).
#
# Idempotent: does nothing when the pinned version is already there.
# Needs `npm` (Debian: apt-get install npm; .ci/run installs it).
set -euo pipefail

BUF_VERSION="1.75.0"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${ROOT}/.tools"
BUF="${TOOLS}/node_modules/.bin/buf"

installed_buf_version() {
    if [[ -x "${BUF}" ]]; then
        "${BUF}" --version 2>/dev/null || true
    fi
}

if [[ "$(installed_buf_version)" == "${BUF_VERSION}" ]]; then
    echo "tools: buf ${BUF_VERSION} already in .tools/"
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "tools: npm not found. Install Node.js + npm (Debian/Ubuntu: sudo apt-get install npm)," >&2
    echo "       then run 'make tools' again." >&2
    exit 1
fi

echo "tools: installing @bufbuild/buf@${BUF_VERSION} into .tools/ (npm)"
mkdir -p "${TOOLS}"
# A private package.json keeps npm from walking up to any other project.
if [[ ! -f "${TOOLS}/package.json" ]]; then
    printf '{\n  "name": "hybrid-router-tools",\n  "private": true\n}\n' >"${TOOLS}/package.json"
fi
npm install --prefix "${TOOLS}" --no-audit --no-fund --save-exact \
    "@bufbuild/buf@${BUF_VERSION}"

got="$(installed_buf_version)"
if [[ "${got}" != "${BUF_VERSION}" ]]; then
    echo "tools: expected buf ${BUF_VERSION} at ${BUF}, found '${got:-nothing}'" >&2
    exit 1
fi
echo "tools: buf ${got} ready at .tools/node_modules/.bin/buf"
