"""``discovery:``: backends found at run time (Kubernetes EndpointSlices)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from router.config._base import _Model, validation_problems
from router.config.backends import BackendConfig

_TEMPLATE_DEFAULTS = {"tier": "gpu", "kind": "model_service"}
_TEMPLATE_PLACEHOLDER = {"model_service": "discovered:1", "openai": "http://discovered:1/v1"}


class KubernetesSourceConfig(_Model):
    """One EndpointSlice watch (router/discovery/): its endpoints become backends."""

    #: Prefix of the discovered backends' names (``<name>-<pod or service>``).
    name: Annotated[
        str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    ]
    #: Namespace to watch; "" = discovery.kubernetes.namespace.
    namespace: str = ""
    #: EndpointSlice label selector, e.g. "kubernetes.io/service-name=llama-serve-svc".
    label_selector: str = Field(min_length=1)
    #: EndpointSlice port name to call; "" = the slice's only port.
    port_name: str = ""
    #: "endpoint": one backend per ready pod; "service": one per Service (DNS name).
    backend_per: Literal["endpoint", "service"] = "endpoint"
    #: openai kind: path appended to http://host:port.
    openai_base_path: str = "/v1"
    #: Every backends[] key except name and endpoint (tier defaults to gpu).
    backend: dict[str, Any]

    @model_validator(mode="after")
    def _template(self) -> KubernetesSourceConfig:
        for key in ("name", "endpoint"):
            if key in self.backend:
                raise ValueError(
                    f"backend.{key} is set by discovery for each endpoint; remove it from the "
                    "template"
                )
        kind = str(self.backend.get("kind", "model_service"))
        self.backend_config(f"{self.name}-x", _TEMPLATE_PLACEHOLDER.get(kind, "discovered:1"))
        return self

    def backend_config(self, name: str, endpoint: str) -> BackendConfig:
        """The template filled in for one discovered endpoint."""
        data = {**_TEMPLATE_DEFAULTS, **self.backend, "name": name, "endpoint": endpoint}
        try:
            return BackendConfig.model_validate(data)
        except ValidationError as exc:
            problems = validation_problems(exc, data)
            raise ValueError(
                "in the backend template: "
                + "; ".join(f"backend.{p.key}: {p.message}" for p in problems)
            ) from None


class KubernetesDiscoveryConfig(_Model):
    #: kubeconfig file; "" = in-cluster service account inside a pod, else ~/.kube/config.
    kubeconfig: str = ""
    #: Default namespace of the sources; "" = the router pod's own namespace.
    namespace: str = ""
    #: Server-side timeout of one watch request, s (the watch is then resumed).
    watch_timeout_s: int = Field(300, ge=1, le=3600)
    #: Timeout of list requests and connects, s.
    request_timeout_s: float = Field(10.0, gt=0)
    #: Retry delay after an error: doubles from backoff_initial_s up to backoff_max_s.
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    #: At start, wait this long for the first list before serving.
    initial_sync_timeout_s: float = Field(5.0, ge=0)
    sources: tuple[KubernetesSourceConfig, ...] = ()

    @model_validator(mode="after")
    def _unique_sources(self) -> KubernetesDiscoveryConfig:
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"source names must be unique; used twice: {', '.join(dup)}")
        return self


class DiscoveryConfig(_Model):
    """Backends found at run time (router/discovery/); static backends[] still apply."""

    kubernetes: KubernetesDiscoveryConfig = KubernetesDiscoveryConfig()
