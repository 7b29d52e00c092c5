"""The GPU tier's Ray Serve app (``serving.ray_app``) through Serve's gRPC proxy.

Streaming is the ``model_service`` adapter's, with the gRPC metadata
``application: <serve_application>`` on each call (Serve's proxy routes by it; errors as
in :mod:`router.backends.model_service`: a missing application is NOT_FOUND, a deployment
with no replica UNAVAILABLE, both RETRYABLE, so dispatch fails over before the first
token).

The load signal is deployment-wide: ``poll_load`` calls ``Info`` on the load application
(``serve_load_application``, default ``<serve_application>-load``), whose one replica sums
the queued and running requests that every model replica reports (``serving.ray_app.load``).
``Info`` on the model application itself would reach one replica only, and would wait
behind ``max_ongoing_requests`` when the deployment is saturated.

============================================  =========================================
load application answers                      router sees
============================================  =========================================
queue_depth + in_flight                       ``reported_load`` (healthy)
``max_concurrency == 0`` (no live replica)    BackendError: unhealthy until a replica
                                              reports again
NOT_FOUND / UNAVAILABLE / no answer           BackendError: unhealthy
============================================  =========================================

``check --probe`` is :func:`router.backends.model_service.probe` over this ``poll_load``:
UNIMPLEMENTED from the load application's ``Info`` (the endpoint is some other gRPC
server, such as a router's own port) is ``fail``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from router.backends.model_service import ModelServiceBackend
from router.backends.model_service import probe as probe  # check --probe: poll_load's Info
from router.errors import BackendError, ErrorClass
from router.types import BackendSpec

LOAD_APP_SUFFIX = "-load"


class RayServeBackend(ModelServiceBackend):
    """ModelService through Serve's gRPC proxy, load from the load application."""

    def __init__(
        self,
        spec: BackendSpec,
        *,
        application: str,
        load_application: str = "",
        timeout_s: float = 30.0,
        info_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not application:
            raise ValueError("application: the Serve application's name is required")
        super().__init__(
            spec,
            timeout_s=timeout_s,
            info_timeout_s=info_timeout_s,
            application=application,
            clock=clock,
        )
        self.application = application
        self.load_application = load_application or f"{application}{LOAD_APP_SUFFIX}"
        self._load_metadata = (("application", self.load_application),)

    async def poll_load(self) -> int | None:
        """Queued + running requests summed over every live replica of the deployment.

        Raises BackendError when the load application does not answer or reports no live
        replica, which marks the backend unhealthy until the next good probe.
        """
        info = await self.info(self._load_metadata)
        if info.max_concurrency == 0:
            raise BackendError(
                self.name,
                f"no live replica of Serve application {self.application!r} "
                f"(load application {self.load_application!r} has no reports)",
                ErrorClass.RETRYABLE,
            )
        self.note_capabilities(info)  # the replicas' engine capabilities, as they report them
        return info.queue_depth + info.in_flight
