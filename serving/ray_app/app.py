"""Application builders for ``serve run`` / ``serve deploy`` (import paths in the config).

``deploy/ray/serve_config.yaml`` deploys both applications::

    applications:
      - name: gpu-load
        route_prefix: /gpu-load
        import_path: serving.ray_app.app:build_load_app
        args: {}
      - name: gpu
        route_prefix: /gpu
        import_path: serving.ray_app.app:build_app
        args: {engine: llamacpp, ...}

Give every application a ``route_prefix``: Serve's gRPC proxy answers NOT_FOUND for an
application deployed with ``route_prefix: null``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray import serve
from ray.serve import Application

from serving.ray_app.deployment import ModelServer
from serving.ray_app.load import LoadBoard
from serving.ray_app.settings import (
    LOAD_DEPLOYMENT,
    MODEL_DEPLOYMENT,
    LoadAppArgs,
    ModelAppArgs,
)

#: The servicer Serve's gRPC proxy registers (gRPCOptions.grpc_servicer_functions).
GRPC_SERVICER_FUNCTIONS = (
    "hybrid_router.v1.model_service_pb2_grpc.add_ModelServiceServicer_to_server",
)


def _validated(model: Any, args: Mapping[str, Any] | Any) -> Any:
    if isinstance(args, model):
        return args
    return model.model_validate(dict(args or {}))


def build_app(args: Mapping[str, Any] | ModelAppArgs | None = None) -> Application:
    """The model application (ingress ``ModelServer``) from its ``args:``."""
    settings: ModelAppArgs = _validated(ModelAppArgs, args or {})
    deployment = serve.deployment(name=MODEL_DEPLOYMENT)(ModelServer).options(
        **settings.deployment.to_options()
    )
    return deployment.bind(settings.model_dump())


def build_load_app(args: Mapping[str, Any] | LoadAppArgs | None = None) -> Application:
    """The load application (ingress ``LoadBoard``, one replica) from its ``args:``."""
    settings: LoadAppArgs = _validated(LoadAppArgs, args or {})
    deployment = serve.deployment(name=LOAD_DEPLOYMENT)(LoadBoard).options(
        num_replicas=1,
        max_ongoing_requests=1000,
        ray_actor_options={"num_cpus": settings.num_cpus},
    )
    return deployment.bind(settings.app_name, settings.stale_after_s)
