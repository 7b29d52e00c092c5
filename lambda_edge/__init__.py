"""AWS Lambda front-ends for the router (docs/lambda.md).

- ``http_api``, ``websocket``, ``jobs``: Powertools handlers (HTTP API / Function URL,
  WebSocket API, SQS), built by the ``entry_*`` modules at Lambda init.

The router client is ``hybrid_router.client`` (grpcio + protobuf + the contract), shipped
in the Lambda layer beside the stubs for users' own orchestrators too. This package
imports only the ``hybrid_router`` package and its own modules, never the router's
internals. Importing it imports nothing else.
"""
