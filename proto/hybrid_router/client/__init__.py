"""The router's client library: one for the CLI, the Lambda front-ends, the demo, the
tests and your own code. grpcio, protobuf and the contract (``hybrid_router.v1``) only;
it ships beside the stubs in every deployable and in the Lambda layer.

    from hybrid_router.client import RouterClient, make_request

    with RouterClient("127.0.0.1:50051", api_key=key) as client:
        print(client.complete(make_request(prompt="Hello", max_output_tokens=32)).text)

Modules: ``options`` (RequestOptions -> GenerateRequest, errors naming the option),
``enums`` (the one name <-> number table per contract enum), ``channel`` (target, TLS,
keepalive, message size, auth metadata, environment), ``sync`` and ``aio`` (the clients:
streaming, buffered ``complete``, ``route``, ``list_backends``, the session calls
``create_session``, ``get_session``, ``list_sessions``, ``iter_sessions``,
``delete_session``; deadlines, request ids, safe retries, cancellation), ``sessions``
(the session requests and the id rule), ``retry``, ``errors`` (``RouterCallError``, the one error a
failed call raises), ``completion``, ``context`` (traceparent, X-Ray, Lambda deadlines).
"""

from hybrid_router.client.aio import AsyncGenerateStream, AsyncRouterClient
from hybrid_router.client.channel import (
    ENV_ADDRESS,
    ENV_API_KEY,
    ENV_CA_BUNDLE,
    ENV_TLS,
    ENV_TLS_SERVER_NAME,
    ChannelConfig,
    parse_target,
)
from hybrid_router.client.completion import Completion
from hybrid_router.client.context import (
    ENV_XRAY_TRACE,
    lambda_timeout_s,
    traceparent_from_xray,
    valid_traceparent,
)
from hybrid_router.client.enums import (
    BACKEND_TIERS,
    CIRCUIT_STATES,
    CONTEXT_STRATEGIES,
    DATA_CLASSES,
    FINISH_REASONS,
    OBJECTIVES,
    RESPONSE_FORMATS,
    ROLES,
    TIERS,
    TOOL_CHOICES,
    EnumTable,
)
from hybrid_router.client.errors import OptionError, RouterCallError, call_error
from hybrid_router.client.options import RequestOptions, build_request, make_request
from hybrid_router.client.retry import RetryPolicy
from hybrid_router.client.sessions import SESSION_ID_RULE, valid_session_id
from hybrid_router.client.sync import GenerateStream, RouterClient

__all__ = [
    "BACKEND_TIERS",
    "CIRCUIT_STATES",
    "CONTEXT_STRATEGIES",
    "DATA_CLASSES",
    "ENV_ADDRESS",
    "ENV_API_KEY",
    "ENV_CA_BUNDLE",
    "ENV_TLS",
    "ENV_TLS_SERVER_NAME",
    "ENV_XRAY_TRACE",
    "FINISH_REASONS",
    "OBJECTIVES",
    "RESPONSE_FORMATS",
    "ROLES",
    "SESSION_ID_RULE",
    "TIERS",
    "TOOL_CHOICES",
    "AsyncGenerateStream",
    "AsyncRouterClient",
    "ChannelConfig",
    "Completion",
    "EnumTable",
    "GenerateStream",
    "OptionError",
    "RequestOptions",
    "RetryPolicy",
    "RouterCallError",
    "RouterClient",
    "build_request",
    "call_error",
    "lambda_timeout_s",
    "make_request",
    "parse_target",
    "traceparent_from_xray",
    "valid_session_id",
    "valid_traceparent",
]
