"""Model servers: the engine interface, llama.cpp engine and the ModelService gRPC server.

Never imports ``router``: it shares only the generated contract (hybrid_router.v1).
"""
