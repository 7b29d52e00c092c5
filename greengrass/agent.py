"""The edge agent's entry point: ``python -m greengrass.agent --router HOST:PORT
--device-id ID --work-dir DIR [--site S] [--config component-config.json] ...``.

Start: load the installed model (or the bundled one), dial the router, print
``READY <device id> <router id>`` on stdout once registered, then serve and sync. SIGTERM
or SIGINT drains: the device heartbeats ``draining`` (the router stops choosing it),
requests in flight get ``drainGraceS`` to finish, then the link closes and the engine is
released. Exit status: 0 after a drain, 2 for bad configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from hybrid_router.v1 import edge_link_pb2 as epb

from greengrass import AGENT_VERSION
from greengrass.backoff import Backoff
from greengrass.config import AgentConfig, AgentConfigError, from_args, validate
from greengrass.hardware import detect
from greengrass.ipc import Ipc, NoIpc, connect
from greengrass.link import EdgeLinkClient
from greengrass.runner import RequestRunner
from greengrass.s3 import S3ModelSource
from greengrass.slot import EngineSlot
from greengrass.store import ModelStore
from greengrass.sync import ModelSync

log = logging.getLogger("greengrass.agent")


_TLS_FILES = (("ca_file", "tls.caFile"), ("cert_file", "tls.certFile"), ("key_file", "tls.keyFile"))


def _read_tls_files(cfg: AgentConfig) -> dict[str, bytes | None]:
    """The CA, certificate and key files (None where not set). Raises AgentConfigError
    naming the key for a file that cannot be read or is not whole PEM (half written)."""
    out: dict[str, bytes | None] = {}
    for attr, key in _TLS_FILES:
        path = getattr(cfg, attr)
        if not path:
            out[attr] = None
            continue
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise AgentConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
        begins, ends = data.count(b"-----BEGIN "), data.count(b"-----END ")
        if not begins or begins != ends:
            raise AgentConfigError(f"{key}: {path} is not a complete PEM file")
        out[attr] = data
    return out


def _credentials(files: Mapping[str, bytes | None]) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=files["ca_file"],
        private_key=files["key_file"],
        certificate_chain=files["cert_file"],
    )


def channel_credentials(cfg: AgentConfig) -> grpc.ChannelCredentials | None:
    """TLS (mTLS with the device certificate) unless ``insecure``. Raises AgentConfigError."""
    if cfg.insecure:
        return None
    return _credentials(_read_tls_files(cfg))


class DeviceCredentials:
    """The link's TLS credentials, read from the files again before every dial.

    A rotated device certificate (or router CA) is used from the next reconnect on, with
    no restart. If the files cannot be read or are not whole PEM at that moment (a
    rotation half done), the link dials with the last good set and logs one warning
    naming the key and the file. The first read, at start, raises AgentConfigError.
    """

    def __init__(self, cfg: AgentConfig) -> None:
        self._cfg = cfg
        self._files = _read_tls_files(cfg)
        self._creds = _credentials(self._files)
        self._warned = ""

    def __call__(self) -> grpc.ChannelCredentials:
        try:
            files = _read_tls_files(self._cfg)
        except AgentConfigError as exc:
            if str(exc) != self._warned:
                self._warned = str(exc)
                log.warning("%s; dialing with the files read before", exc)
            return self._creds
        self._warned = ""
        if files != self._files:
            changed = [key for attr, key in _TLS_FILES if files[attr] != self._files[attr]]
            log.info("edge link: %s changed; dialing with the new files", ", ".join(changed))
            self._files = files
            self._creds = _credentials(files)
        return self._creds


class Agent:
    def __init__(self, cfg: AgentConfig, *, ipc: Ipc | None = None) -> None:
        self.cfg = cfg
        self.ipc = ipc or NoIpc()
        self.slot = EngineSlot()
        self.runner = RequestRunner(self.slot)
        self.store = ModelStore(cfg.work_dir)
        source = None
        if cfg.model_bucket:
            source = S3ModelSource(
                cfg.model_bucket,
                cfg.model_prefix,
                region=cfg.s3_region,
                endpoint_url=cfg.s3_endpoint_url,
            )
        self.sync = ModelSync(cfg, self.store, self.slot, source, on_switch=self._changed)
        self.hardware = detect()
        self.draining = False
        self.link = EdgeLinkClient(
            cfg.router,
            credentials=None if cfg.insecure else DeviceCredentials(cfg),
            register=self.register_message,
            heartbeat=self.heartbeat_message,
            runner=self.runner,
            on_desired=self.sync.set_router_desired,
            backoff=Backoff(cfg.reconnect_initial_s, cfg.reconnect_max_s),
            server_name=cfg.server_name,
            on_registered=self._registered,
        )
        self._announced = False

    # --- what the router hears ----------------------------------------------------------------

    def _models(self) -> list[epb.EdgeModel]:
        m = self.slot.model
        if m is None:
            return []
        engine = self.slot.engine
        return [
            epb.EdgeModel(
                name=m.name,
                version=m.version,
                context_window=m.context_window,
                sha256=m.sha256,
                model_family=m.model_family,
                # what the engine offers for it (chat, tools, json_schema): the router
                # routes tool and JSON requests to the device by these
                capabilities=list(engine.info.capabilities) if engine is not None else [],
            )
        ]

    def register_message(self) -> epb.Register:
        engine = self.slot.engine
        hw = self.hardware
        return epb.Register(
            device_id=self.cfg.device_id,
            site=self.cfg.site,
            models=self._models(),
            hardware=epb.Hardware(
                arch=hw.arch,
                cpu_cores=hw.cpu_cores,
                memory_bytes=hw.memory_bytes,
                accelerator=hw.accelerator,
            ),
            agent_version=AGENT_VERSION,
            max_concurrency=engine.info.max_concurrency if engine is not None else 0,
        )

    def heartbeat_message(self) -> epb.Heartbeat:
        engine = self.slot.engine
        queued, rate, prefill = 0, 0.0, 0.0
        if engine is not None:
            load = engine.load()
            queued, rate = load.queue_depth, load.decode_tokens_per_s
            prefill = load.prefill_tokens_per_s
        running = max(0, self.runner.in_flight - queued)
        return epb.Heartbeat(
            queue_depth=queued,
            in_flight=running,
            decode_tokens_per_s=rate,
            prefill_tokens_per_s=prefill,
            models=self._models(),
            desired_versions=self.sync.desired_versions(),
            sync_status=self.sync.status,
            draining=self.draining,
        )

    def status(self) -> dict[str, Any]:
        m = self.slot.model
        return {
            "device_id": self.cfg.device_id,
            "site": self.cfg.site,
            "model": m.name if m else "",
            "version": m.version if m else "",
            "desired": self.sync.desired_versions(),
            "sync_status": self.sync.status,
            "router_id": self.link.router_id,
            "draining": self.draining,
        }

    def _changed(self) -> None:
        self.link.nudge()
        self.ipc.publish_status(self.status())

    def _registered(self, router_id: str) -> None:
        if not self._announced:
            self._announced = True
            print(f"READY {self.cfg.device_id} {router_id}", flush=True)
        self.ipc.publish_status(self.status())

    def _config_update(self, conf: Mapping[str, Any]) -> None:
        model = conf.get("model")
        version = model.get("version", "") if isinstance(model, Mapping) else ""
        if isinstance(version, str) and version != self.sync.desired_versions().get(
            self.cfg.model_name, ""
        ):
            log.info("component configuration: model.version %r", version)
            self.sync.set_config_desired(version)

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self.sync.load_initial()
        self.ipc.subscribe_config(self._config_update)
        loop = asyncio.get_running_loop()
        link_task = loop.create_task(self.link.run(stop))
        sync_task = loop.create_task(self.sync.run(stop))
        try:
            await stop.wait()
            await self.drain()
        finally:
            for task in (sync_task, link_task):
                task.cancel()
            for task in (sync_task, link_task):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.slot.close()
            self.ipc.close()

    async def drain(self) -> None:
        """Take no new request, let the ones in flight finish, then leave the router."""
        self.draining = True
        self.runner.draining = True
        self.link.nudge()
        log.info(
            "draining: %d request(s) in flight, up to %.1f s",
            self.runner.in_flight,
            self.cfg.drain_grace_s,
        )
        if not await self.runner.wait_idle(self.cfg.drain_grace_s):
            log.warning("drain grace over: cancelling %d request(s)", self.runner.in_flight)
            self.runner.cancel_all()
            await self.runner.wait_idle(2.0)
        await self.link.close()


async def _main(cfg: AgentConfig) -> None:
    agent = Agent(cfg, ipc=connect(cfg.ipc, cfg.device_id))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.run(stop)
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = validate(from_args(argv))
    except AgentConfigError as exc:
        print(f"greengrass.agent: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=cfg.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(_main(cfg))
    except AgentConfigError as exc:
        print(f"greengrass.agent: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
