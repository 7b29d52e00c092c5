"""Router security: API keys and tenants, TLS credentials, stream limits (docs/security.md).

Nothing here imports grpc's server layer; ``router.server.auth`` wires it into the server.
"""
