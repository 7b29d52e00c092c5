"""Arguments of the Ray Serve applications, validated with pydantic.

Serve passes a config file's ``args:`` to the builders in ``serving.ray_app.app``, which
validate them with these models: a bad value fails the deploy with the key named, e.g.
``engine: Input should be 'llamacpp', 'scripted' or 'vllm'``.

Deployment options (replicas, autoscaling, ``max_ongoing_requests``,
``ray_actor_options``) live under ``deployment:``; a Serve config file's own
``deployments:`` section overrides them (Serve's precedence: config file over code).
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Application names used when none is given (``serve_application`` in router.yaml).
DEFAULT_APP_NAME = "gpu"
LOAD_APP_SUFFIX = "-load"
#: Deployment names (the ingress of each application).
MODEL_DEPLOYMENT = "ModelServer"
LOAD_DEPLOYMENT = "LoadBoard"

EngineKind = Literal["llamacpp", "scripted", "vllm"]


#: Engine constructor parameters that are not configuration (injected for tests).
_INTERNAL = frozenset(
    {
        "clock",
        "sleep",
        "engine_factory",
        "sampling_factory",
        "structured_factory",
        "tool_parser_factory",
    }
)


def _engine_class(kind: str) -> type:
    # The engine modules import their libraries lazily, so this is cheap.
    if kind == "llamacpp":
        from serving.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine
    if kind == "vllm":
        from serving.engines.vllm import VllmEngine

        return VllmEngine
    from serving.engines.scripted import ScriptedEngine

    return ScriptedEngine


def load_app_name(app_name: str) -> str:
    """The load board's application name for a model application."""
    return f"{app_name}{LOAD_APP_SUFFIX}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSettings(_Model):
    """What ``Info`` reports; empty fields keep the engine's own values."""

    #: Model id (e.g. ``gemma3-270m``, ``meta-llama/Llama-3.1-8B-Instruct``).
    id: str = ""
    #: Model version (e.g. a GGUF file name or a revision); "" = the engine's.
    version: str = ""
    #: Family a request may require (e.g. ``gemma3``, ``llama3``).
    family: str = ""


class AutoscalingSettings(_Model):
    """Ray Serve autoscaling on ongoing requests per replica (Serve's AutoscalingConfig)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    #: Ongoing requests per replica that Serve aims for.
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)

    @model_validator(mode="after")
    def _range(self) -> AutoscalingSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must not exceed max_replicas "
                f"({self.max_replicas})"
            )
        return self


class ActorSettings(_Model):
    """Resources of one replica (Serve's ray_actor_options)."""

    #: Fractional CPUs are fine locally (e.g. 0.5 on a 2-core machine).
    num_cpus: float = Field(1.0, ge=0)
    #: GPUs per replica (1 on an EKS GPU node; 0 locally).
    num_gpus: float = Field(0.0, ge=0)
    #: Bytes of memory to reserve (0 = none).
    memory: int = Field(0, ge=0)
    #: Custom resources, e.g. {"accelerator_type:A10G": 0.001}.
    resources: dict[str, float] = Field(default_factory=dict)

    def to_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory:
            options["memory"] = self.memory
        if self.resources:
            options["resources"] = dict(self.resources)
        return options


class DeploymentSettings(_Model):
    """Replicas, autoscaling and per-replica limits of the ModelServer deployment."""

    #: Fixed replica count; ignored when ``autoscaling`` is set.
    num_replicas: int = Field(1, ge=1)
    autoscaling: AutoscalingSettings | None = None
    #: Requests one replica accepts at once (Serve queues the rest in its proxy).
    #: Keep it >= the engine's concurrency plus the queue you accept in a replica, so that
    #: waiting happens in replicas, where the load board counts it.
    max_ongoing_requests: int = Field(8, ge=1)
    ray_actor_options: ActorSettings = ActorSettings()
    #: Seconds a stopping replica lets open streams finish.
    graceful_shutdown_timeout_s: float = Field(20.0, ge=0)
    health_check_period_s: float = Field(10.0, gt=0)

    def to_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options()``."""
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": self.ray_actor_options.to_options(),
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
            "health_check_period_s": self.health_check_period_s,
        }
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling.model_dump()
        else:
            options["num_replicas"] = self.num_replicas
        return options


class ModelAppArgs(_Model):
    """``args:`` of the model application (``serving.ray_app.app:build_app``)."""

    engine: EngineKind = "llamacpp"
    #: Keyword arguments of the engine: llamacpp (model_path, n_ctx, n_threads, seed,
    #: max_decode_tokens_per_s), scripted (ttft_ms, tokens_per_s, max_concurrency, ...),
    #: vllm (engine_kwargs: vLLM's AsyncEngineArgs; see serving/engines/vllm.py).
    engine_options: dict[str, Any] = Field(default_factory=dict)
    model: ModelSettings = ModelSettings()
    deployment: DeploymentSettings = DeploymentSettings()
    #: Application of the load board replicas report to; "" = ``<this app>-load``;
    #: "-" = do not report (no deployment-wide load signal).
    load_application: str = ""
    #: Seconds between two reports of one replica while its load keeps changing.
    report_min_interval_s: float = Field(0.05, gt=0)
    #: Seconds between reports when nothing changes (the board's liveness signal).
    report_heartbeat_s: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _engine_options(self) -> ModelAppArgs:
        """Unknown engine options fail the deploy here, not in every replica."""
        params = inspect.signature(_engine_class(self.engine)).parameters
        known = sorted(n for n in params if n != "self" and n not in _INTERNAL)
        for key in self.engine_kwargs():
            if key not in params or key in _INTERNAL:
                raise ValueError(
                    f"engine_options.{key}: not an option of the {self.engine} engine "
                    f"(options: {', '.join(known)})"
                )
        if self.engine == "vllm":
            vllm_kwargs = self.engine_options.get("engine_kwargs") or {}
            if not isinstance(vllm_kwargs, dict):
                raise ValueError("engine_options.engine_kwargs: must be a mapping (vLLM's args)")
            if not (vllm_kwargs.get("model") or self.model.id):
                raise ValueError(
                    "engine vllm needs a model: set model.id or engine_options.engine_kwargs.model"
                )
        return self

    def engine_kwargs(self) -> dict[str, Any]:
        """Arguments for ``serving.engines.create_engine`` (model settings included)."""
        options = dict(self.engine_options)
        for key, value in (
            ("model_name", self.model.id),
            ("version", self.model.version),
            ("model_family", self.model.family),
        ):
            if value:
                options[key] = value
        return options


class LoadAppArgs(_Model):
    """``args:`` of the load application (``serving.ray_app.app:build_load_app``)."""

    #: The model application it serves (shown in Info.replica_id and logs).
    app_name: str = DEFAULT_APP_NAME
    #: A replica that has not reported for this long counts as gone.
    stale_after_s: float = Field(3.0, gt=0)
    #: Resources of the board's one replica (it does no model work).
    num_cpus: float = Field(0.05, ge=0)
