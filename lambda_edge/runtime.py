"""What one Lambda container keeps between invocations: settings, the router client (one
gRPC channel, made at init and reused), the API key provider, telemetry and AWS clients.

Handlers get a :class:`Runtime`; the ``entry_*`` modules build one from the environment
during Lambda's init phase. Tests build one from an explicit mapping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hybrid_router.client import RouterClient, lambda_timeout_s

from lambda_edge.credentials import ApiKeyProvider
from lambda_edge.settings import Settings
from lambda_edge.telemetry import Telemetry


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        client: RouterClient | None = None,
        api_key: ApiKeyProvider | None = None,
        telemetry: Telemetry | None = None,
        patch_modules: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        boto3_session: Any = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.api_key = api_key or ApiKeyProvider(
            key=settings.api_key, secret_id=settings.api_key_secret, ttl_s=settings.api_key_ttl_s
        )
        self.client = client or RouterClient(
            settings.address,
            api_key=self.api_key,
            tls=settings.tls,
            ca_bundle=settings.ca_bundle or None,
            server_name=settings.tls_server_name or None,
        )
        self.telemetry = telemetry or Telemetry(
            service=settings.service,
            namespace=settings.metrics_namespace,
            patch_modules=patch_modules,
        )
        self._session = boto3_session
        self._aws: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        jobs: bool = False,
        patch_modules: Sequence[str] = (),
        pre_connect: bool = True,
    ) -> Runtime:
        rt = cls(Settings.from_env(env, jobs=jobs), patch_modules=patch_modules)
        if pre_connect:
            rt.client.pre_connect()
        return rt

    @property
    def logger(self) -> Any:
        return self.telemetry.logger

    def timeout_s(
        self, context: Any, *, gateway_limit_s: float | None = None, started_ms: int | None = None
    ) -> float:
        """Call deadline: the Lambda's remaining time minus the margin, and (behind API
        Gateway) the integration limit minus the time already spent since the gateway took
        the request (``started_ms``: the event's epoch milliseconds)."""
        margin = self.settings.deadline_margin_s
        cap = None
        if gateway_limit_s is not None:
            spent = 0.0
            if started_ms:
                spent = min(max(self.clock() - started_ms / 1000.0, 0.0), gateway_limit_s)
            cap = gateway_limit_s - spent - margin
        return lambda_timeout_s(context, margin_s=margin, cap_s=cap)

    def aws(self, service: str, *, endpoint_url: str | None = None) -> Any:
        """A boto3 client, made once per container (imports boto3 on first use).

        ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>`` are honoured by boto3 itself
        (local emulators, VPC endpoints)."""
        key = (service, endpoint_url or "")
        with self._lock:
            found = self._aws.get(key)
            if found is None:
                import boto3
                from botocore.config import Config

                session = self._session or boto3.session.Session()
                found = session.client(
                    service,
                    endpoint_url=endpoint_url,
                    config=Config(retries={"mode": "standard", "max_attempts": 3}),
                )
                self._aws[key] = found
            return found

    def close(self) -> None:
        self.client.close()
