# hybrid-router: set-up, tests, checks. GNU make.
#
#   make demo    install everything and run the embedded demo (the main job)
#   make test    install everything (Python + tools), lint, run the whole test suite and
#                check the demo's report
#
# Both install from the locks in requirements/ (`make lock` refreshes them) and are
# idempotent: the second run skips the install unless a lock or pyproject.toml changed.
# `make help` lists every target. See docs/development.md.

# On CI (CI=true) everything is installed once: pip's cache would only hold a second copy
# of every wheel (several GB with the vLLM check environment).
ifeq ($(CI),true)
export PIP_NO_CACHE_DIR := 1
endif

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV        := .venv
PY          := $(VENV)/bin/python
PYTEST      := $(VENV)/bin/pytest
# Written after a successful install and engine check; newer than the locks = up to date.
STAMP       := $(VENV)/.hybrid-router-installed
LOCKS       := requirements/dev.txt requirements/llama-cpp-python.txt requirements/llama-build.txt
BUF         := .tools/node_modules/.bin/buf
BASELINE    := proto/baseline/hybrid_router_v1.binpb
# Interpreter for the venv: $(PYTHON) if given, else the newest python3.1x >= 3.11 on PATH.
PYTHON      ?=
# Extra arguments for pytest, e.g. make test PYTEST_ARGS="-x -k dispatch".
PYTEST_ARGS ?=
# Extra arguments for `hybrid-router demo`, e.g. make demo DEMO_ARGS="--json".
DEMO_ARGS   ?=
# Extra arguments for scripts/build_lambda_layer.py, e.g. LAMBDA_LAYER_ARGS="--platform manylinux2014_aarch64".
LAMBDA_LAYER_ARGS ?=
# llama-cpp-python compiles from source: use every core.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv install system-deps tools demo test test-fast lint format proto proto-check lambda-layer \
        proto-baseline bench clean distclean helm-lint image-check edge-artifact engine-check \
        llama-rebuild lock demo-check

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

# --- environment -----------------------------------------------------------------

venv: $(PY) ## create .venv (Python >= 3.11)

$(PY):
	@py="$(PYTHON)"; \
	if [ -z "$$py" ]; then \
	  for c in python3.13 python3.12 python3.11 python3; do \
	    if command -v "$$c" >/dev/null 2>&1 && \
	       "$$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
	      py="$$c"; break; \
	    fi; \
	  done; \
	fi; \
	if [ -z "$$py" ] || ! "$$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
	  echo "error: hybrid-router needs Python >= 3.11; found: $$("$${py:-python3}" --version 2>&1 || echo no python3) ($${py:-python3})." >&2; \
	  echo "  fix: install Python 3.11+ (Debian/Ubuntu: apt-get install python3.11 python3.11-venv," >&2; \
	  echo "       or pyenv install 3.11) and run 'make venv PYTHON=python3.11'." >&2; \
	  exit 1; \
	fi; \
	echo "venv: creating $(VENV) with $$("$$py" --version) ($$(command -v "$$py"))"; \
	if ! "$$py" -m venv $(VENV); then \
	  rm -rf $(VENV); \
	  echo "error: '$$py -m venv' failed. Debian/Ubuntu: apt-get install python3-venv, then retry." >&2; \
	  exit 1; \
	fi

install: $(STAMP) ## install the locked dependencies, llama.cpp (portable build) and the project into .venv

# Locked (requirements/*.txt, with hashes): a new upstream release cannot change what a
# fresh machine gets. llama-cpp-python is compiled by scripts/llama_wheel.py with a
# portable CPU profile into .wheelhouse/ (never pip's wheel cache); then a short real
# generation in a child process proves the engine runs on this CPU.
$(STAMP): pyproject.toml $(LOCKS) serving/engines/llama_build.py | $(PY)
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "error: $(VENV) uses $$($(PY) --version); Python >= 3.11 is needed." >&2; \
	  echo "  fix: rm -rf $(VENV) && make venv PYTHON=python3.11" >&2; exit 1; }
	@echo "install: locked dependencies (requirements/dev.txt, hash-checked)"
	$(PY) -m pip install --require-hashes --no-deps -r requirements/dev.txt
	$(PY) scripts/llama_wheel.py --python $(PY)
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	$(PY) -m serving.engines.llama_selftest
	@touch $@

engine-check: install ## generate a few tokens with the installed llama.cpp build (child process)
	$(PY) -m serving.engines.llama_selftest

llama-rebuild: | $(PY) ## rebuild llama-cpp-python (HYBRID_ROUTER_LLAMA_PROFILE=NAME picks a profile)
	$(PY) scripts/llama_wheel.py --python $(PY) --rebuild
	$(PY) -m serving.engines.llama_selftest

lock: ## re-resolve requirements/*.txt from pyproject.toml (uv, hashes); review, test, commit
	@bash scripts/lock.sh

system-deps: ## apt-get install missing system packages (compilers, cmake, npm, redis-server)
	@bash scripts/system_deps.sh

tools: ## install pinned tools into .tools/ (buf via npm; vLLM for the engine-args check)
	@bash scripts/install_tools.sh
	@bash scripts/install_vllm_check.sh

# --- the two README commands ----------------------------------------------------

demo: system-deps install ## install and run the embedded demo (router + local model servers)
	$(VENV)/bin/hybrid-router demo $(DEMO_ARGS)

test: system-deps install tools ## install everything, lint, run the whole suite (all markers), check the demo
	$(MAKE) lint
	$(PYTEST) -m "" tests $(PYTEST_ARGS)
	$(MAKE) demo-check

demo-check: install ## run the demo with --json and check its report (every scenario, three tiers, no failure)
	@mkdir -p .bench-out
	$(VENV)/bin/hybrid-router demo --json $(DEMO_ARGS) > .bench-out/demo-report.json
	$(PY) -m hybrid_router_cli.demo.check .bench-out/demo-report.json

# --- development ----------------------------------------------------------------

test-fast: install ## unit tests only (no model, slow or tools tests)
	$(PYTEST) -m "not model and not slow and not tools" tests/unit $(PYTEST_ARGS)

lint: install ## ruff check, ruff format --check, mypy on router/ hybrid_router_cli/ serving/ greengrass/ lambda_edge/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy router hybrid_router_cli serving greengrass lambda_edge

format: install ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

proto: install ## regenerate the committed Python stubs from proto/
	$(PY) scripts/gen_proto.py

proto-check: tools ## buf lint + buf breaking against the release baseline
	$(BUF) lint proto
	$(BUF) breaking proto --against $(BASELINE)

proto-baseline: tools ## refresh the buf baseline image: ONLY when cutting a release
	$(BUF) build proto -o $(BASELINE)
	@echo "proto-baseline: wrote $(BASELINE); commit it with the release"

lambda-layer: install ## build/lambda-layer.zip (client + grpcio + protobuf) and build/lambda-functions.zip
	$(PY) scripts/build_lambda_layer.py $(LAMBDA_LAYER_ARGS)

edge-artifact: | $(PY) ## build the Greengrass component (zip + recipe) into build/edge/
	$(PY) scripts/build_edge_artifact.py --out build/edge

bench: install ## run every bench/*.py script (results: BENCHMARKS.md)
	@found=0; \
	for f in bench/*.py; do \
	  [ -e "$$f" ] || continue; \
	  case "$$(basename "$$f")" in _*) continue;; esac; \
	  found=1; echo "+ $(PY) $$f"; $(PY) "$$f"; \
	done; \
	[ "$$found" = 1 ] || echo "bench: no bench/*.py scripts yet"

helm-lint: install ## Helm chart: lint --strict, render every value set, validate every object against its schema
	$(PYTEST) -q tests/deploy/test_helm_chart.py $(PYTEST_ARGS)

image-check: install ## router image without Docker: hadolint + its pip install in a clean venv
	$(PYTEST) -q -m "" tests/deploy/test_image.py $(PYTEST_ARGS)

clean: ## remove caches and build output (keeps .venv and .tools)
	rm -rf build dist .pytest_cache .ruff_cache .mypy_cache .bench-out
	find . -path ./.venv -prune -o -path ./.tools -prune -o \
	  \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +

distclean: clean ## also remove .venv and .tools
	rm -rf $(VENV) .tools
