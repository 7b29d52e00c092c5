"""Every ``HYBRID_ROUTER_*`` environment variable the project reads, named once.

Names only: nothing here reads the environment (readers take an ``env`` mapping, or read
``os.environ`` inside a function, never at import). It imports nothing, so every
deployable imports it: the router, the Lambda layer and functions, the edge agent,
the model servers and ``scripts/llama_wheel.py`` (before the package is installed).
"""

from __future__ import annotations

# --- router (hybrid-router serve, check, prices) ----------------------------------------------

#: Path of router.yaml when --config is not given.
ENV_CONFIG = "HYBRID_ROUTER_CONFIG"
#: Prefix of config overrides: HYBRID_ROUTER__SECTION__KEY=value (a prefix, not a variable).
ENV_OVERRIDE_PREFIX = "HYBRID_ROUTER__"

# --- clients of the router (the CLI and the Lambda client) ------------------------------------

#: host:port of the router.
ENV_ADDRESS = "HYBRID_ROUTER_ADDRESS"
#: API key sent as ``authorization: Bearer <key>``.
ENV_API_KEY = "HYBRID_ROUTER_API_KEY"
#: PEM CA bundle that verifies the router's certificate (implies TLS).
ENV_CA_BUNDLE = "HYBRID_ROUTER_CA_BUNDLE"
#: Lambda client: "true" for TLS with the system's root certificates.
ENV_TLS = "HYBRID_ROUTER_TLS"
#: Lambda client: the name the router's certificate must carry (when it differs from the host).
ENV_TLS_SERVER_NAME = "HYBRID_ROUTER_TLS_SERVER_NAME"

# --- hybrid-router keys ----------------------------------------------------------------------

#: Keys file used by ``hybrid-router keys`` when neither --file nor --secret-id is given.
ENV_KEYS_FILE = "HYBRID_ROUTER_KEYS_FILE"

# --- Lambda functions (lambda_edge.settings) -------------------------------------------------

#: Secrets Manager secret id/ARN holding the router API key (used when ENV_API_KEY is unset).
ENV_API_KEY_SECRET = "HYBRID_ROUTER_API_KEY_SECRET"
#: Seconds the secret's value is cached.
ENV_API_KEY_TTL_S = "HYBRID_ROUTER_API_KEY_TTL_S"
#: "true": forward the HTTP caller's own Authorization header instead of the function's key.
ENV_FORWARD_AUTHORIZATION = "HYBRID_ROUTER_FORWARD_AUTHORIZATION"
#: Milliseconds kept back from the Lambda's remaining time when setting the call deadline.
ENV_DEADLINE_MARGIN_MS = "HYBRID_ROUTER_DEADLINE_MARGIN_MS"
#: Largest request body the HTTP and WebSocket handlers accept (bytes).
ENV_MAX_BODY_BYTES = "HYBRID_ROUTER_MAX_BODY_BYTES"
#: WebSocket: least milliseconds between two delta posts.
ENV_WS_FLUSH_MS = "HYBRID_ROUTER_WS_FLUSH_MS"
#: WebSocket: largest frame posted (bytes).
ENV_WS_MAX_FRAME_BYTES = "HYBRID_ROUTER_WS_MAX_FRAME_BYTES"
#: SQS jobs: the S3 bucket for results.
ENV_JOBS_BUCKET = "HYBRID_ROUTER_JOBS_BUCKET"
#: SQS jobs: key prefix of results.
ENV_JOBS_RESULT_PREFIX = "HYBRID_ROUTER_JOBS_RESULT_PREFIX"
#: SQS jobs: key prefix of failures.
ENV_JOBS_FAILURE_PREFIX = "HYBRID_ROUTER_JOBS_FAILURE_PREFIX"
#: SQS jobs: URL of the dead-letter queue that jobs no retry can help go to at once.
ENV_JOBS_DLQ_URL = "HYBRID_ROUTER_JOBS_DLQ_URL"
#: SQS jobs: DynamoDB table of the Powertools idempotency records.
ENV_IDEMPOTENCY_TABLE = "HYBRID_ROUTER_IDEMPOTENCY_TABLE"
#: SQS jobs: lifetime of an idempotency record (seconds).
ENV_IDEMPOTENCY_TTL_S = "HYBRID_ROUTER_IDEMPOTENCY_TTL_S"
#: SQS jobs: longest router call per job (seconds).
ENV_JOB_TIMEOUT_S = "HYBRID_ROUTER_JOB_TIMEOUT_S"

# --- the command line (hybrid_router_cli) ----------------------------------------------------

#: Any non-empty value but "0": an unexpected error in a command shows its traceback
#: (the same as --debug).
ENV_DEBUG = "HYBRID_ROUTER_DEBUG"

# --- building llama.cpp (scripts/llama_wheel.py) ---------------------------------------------

#: CPU profile of the llama-cpp-python build (serving/engines/llama_build.py names them).
ENV_LLAMA_PROFILE = "HYBRID_ROUTER_LLAMA_PROFILE"
#: Where built llama-cpp-python wheels are kept (default: the user's cache).
ENV_WHEELHOUSE = "HYBRID_ROUTER_WHEELHOUSE"

#: Every variable above (the override prefix excluded).
ALL: tuple[str, ...] = tuple(
    value
    for name, value in sorted(globals().items())
    if name.startswith("ENV_") and name != "ENV_OVERRIDE_PREFIX"
)
