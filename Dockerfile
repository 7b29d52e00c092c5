# The router image: `hybrid-router serve`, with only the router extra's locked dependencies
# (gRPC service, policy, adapters, discovery, telemetry) and the fast extra (uvloop, which
# server.event_loop: auto picks). No compilers, no model servers.
# Build, push and install: docs/eks.md. Checked by tests/deploy/test_image.py (hadolint,
# and the same pip install in a clean venv, after which the router starts).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/hybrid-router
# The router's lock first (its own layer: code changes do not reinstall it): every
# version pinned, every file's sha256 checked (requirements/router.txt, `make lock`).
COPY requirements/router.txt requirements/router.txt
RUN /opt/hybrid-router/bin/pip install --no-cache-dir --require-hashes --no-deps \
      -r requirements/router.txt
# The whole build context (.dockerignore keeps tests, venvs and caches out): setuptools
# needs every package directory that pyproject.toml lists.
COPY . .
RUN /opt/hybrid-router/bin/pip install --no-cache-dir --no-deps .

FROM python:${PYTHON_VERSION}-slim
LABEL org.opencontainers.image.title="hybrid-router" \
      org.opencontainers.image.description="gRPC router for hosted, GPU and edge LLM backends" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric user, the one the Helm chart's securityContext runs as (runAsNonRoot).
RUN groupadd --system --gid 10001 router \
 && useradd --system --uid 10001 --gid router --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin router
COPY --from=build /opt/hybrid-router /opt/hybrid-router
ENV PATH=/opt/hybrid-router/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# gRPC (router.yaml server.address) and Prometheus metrics (telemetry.metrics.address).
EXPOSE 50051 9464
ENTRYPOINT ["hybrid-router"]
CMD ["serve", "--config", "/etc/hybrid-router/router.yaml"]
