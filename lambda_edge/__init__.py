"""AWS Lambda front-ends for the router (docs/lambda.md).

- ``client``: the dependency-light router client (grpcio + protobuf + the contract); it
  ships alone in the Lambda layer for users' own orchestrators.
- ``http_api``, ``websocket``, ``jobs``: Powertools handlers (HTTP API / Function URL,
  WebSocket API, SQS), built by the ``entry_*`` modules at Lambda init.

This package imports only the contract (``hybrid_router.v1``) and its own modules, never
the router's internals. Importing it imports nothing else.
"""
