"""Run the GPU tier's Serve applications on this machine (CPU), and as a program.

``start_serve`` starts Serve (in a Ray instance the caller started) with the gRPC proxy
for ModelService; ``deploy`` deploys the load and model applications and waits until both
run. Run as a program (a whole local Ray instance, stopped on SIGTERM/SIGINT)::

    python -m serving.ray_app --engine llamacpp --replicas 2 --num-cpus 0.5 --grpc-port 0

prints ``READY <grpc port>`` on stdout once both applications run. Call it with gRPC
metadata ``application: gpu`` (``Generate``) or ``application: gpu-load`` (the
deployment-wide load).

While it runs it watches the Ray instance's actors (the GCS actor table, twice a second):
an actor whose worker process died (a crash in the model, the OOM killer, a signal) is
reported at once as one line on stdout, ``ACTOR_DIED <json>`` with the actor's class,
pid, Ray's death reason and message, and the worker's log file (``worker-*-<pid>.err``
under the Ray session's log folder). ``hybrid-router demo --ray`` stops on that line.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serving.ray_app.settings import (
    DEFAULT_APP_NAME,
    LoadAppArgs,
    ModelAppArgs,
    load_app_name,
)

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (Serve's proxies cannot report the one they bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class LocalServe:
    grpc_port: int
    http_port: int
    app_name: str = DEFAULT_APP_NAME

    @property
    def load_app_name(self) -> str:
        return load_app_name(self.app_name)

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def start_serve(
    grpc_port: int = 0, http_port: int = 0, host: str = "127.0.0.1", *, attempts: int = 2
) -> tuple[int, int]:
    """Start Serve with the ModelService gRPC proxy; returns (grpc port, http port).

    Port 0 picks a free port. Ray must already be initialised (``ray.init``). Serve gives
    its proxy actor 60 s to come up; on a saturated machine it can miss that, so a failed
    start is shut down and tried again (``attempts`` in all), with fresh ports where they
    were picked here.
    """
    from ray import serve
    from ray.exceptions import GetTimeoutError, RayActorError
    from ray.serve.config import gRPCOptions

    from serving.ray_app.app import GRPC_SERVICER_FUNCTIONS

    for attempt in range(1, attempts + 1):
        grpc = grpc_port or free_port(host)
        http = http_port or free_port(host)
        try:
            serve.start(
                http_options={"host": host, "port": http},
                grpc_options=gRPCOptions(
                    port=grpc, grpc_servicer_functions=list(GRPC_SERVICER_FUNCTIONS)
                ),
            )
        except (GetTimeoutError, RayActorError) as exc:
            if attempt == attempts:
                raise
            logger.warning("Serve did not start (%s); trying again", type(exc).__name__)
            with contextlib.suppress(Exception):
                serve.shutdown()
            continue
        return grpc, http
    raise AssertionError("unreachable")


def deploy(
    model_args: Mapping[str, Any] | ModelAppArgs,
    *,
    app_name: str = DEFAULT_APP_NAME,
    load_args: Mapping[str, Any] | LoadAppArgs | None = None,
) -> None:
    """Deploy (or redeploy) the load and the model application; returns once both run."""
    from ray import serve

    from serving.ray_app.app import build_app, build_load_app

    settings = (
        model_args
        if isinstance(model_args, ModelAppArgs)
        else ModelAppArgs.model_validate(dict(model_args))
    )
    targets: list[Any] = []
    if settings.load_application != "-":
        load = (
            load_args.model_dump()
            if isinstance(load_args, LoadAppArgs)
            else {"app_name": app_name, **dict(load_args or {})}
        )
        board_app = settings.load_application or load_app_name(app_name)
        targets.append(
            serve.RunTarget(build_load_app(load), name=board_app, route_prefix=f"/{board_app}")
        )
    targets.append(serve.RunTarget(build_app(settings), name=app_name, route_prefix=f"/{app_name}"))
    serve.run_many(targets)


# --- actor deaths ------------------------------------------------------------------------

#: Death reasons of an actor whose process crashed or was killed from outside, as opposed
#: to one that Serve or Ray stopped on purpose (RAY_KILL, OUT_OF_SCOPE, OWNER_DIED, ...).
CRASH_REASONS = frozenset({"WORKER_DIED", "NODE_DIED"})


def worker_log(pid: int, logs_dir: str | None = None) -> str:
    """The stderr log of the Ray worker process ``pid`` ("" when not found). Python's
    faulthandler (on in Ray workers) writes a crash's stack there."""
    if not pid:
        return ""
    if logs_dir is None:
        logs_dir = _logs_dir()
    for folder in (logs_dir, os.path.join(logs_dir, "old")):
        for pattern in (f"worker-*-{pid}.err", f"worker-*-{pid}.out"):
            found = sorted(glob.glob(os.path.join(folder, pattern)))
            if found:
                return found[-1]
    return ""


def _logs_dir() -> str:
    with contextlib.suppress(Exception):
        from ray._private import worker

        node = worker._global_node
        if node is not None:
            return str(node.get_logs_dir_path())
    return "/tmp/ray/session_latest/logs"


def actor_deaths(seen: set[str]) -> list[dict[str, Any]]:
    """Actors of this Ray instance that crashed and are not in ``seen`` yet (added to it).

    Reads the GCS actor table (``ray._private.state``: no dashboard needed), so it works in
    the driver of a local instance started with ``include_dashboard=False``.
    """
    from ray._private import state

    found = []
    for actor_id, info in (state.actors(actor_state_name="DEAD") or {}).items():
        if actor_id in seen:
            continue
        seen.add(actor_id)
        cause = info.get("DeathCause")
        reason, message = _death_reason(cause)
        if reason not in CRASH_REASONS:
            continue
        pid = int(info.get("Pid") or 0)
        found.append(
            {
                "actor_id": actor_id,
                "class_name": info.get("ActorClassName", ""),
                "name": info.get("Name", ""),
                "pid": pid,
                "reason": reason,
                "message": message,
                "log": worker_log(pid),
            }
        )
    return found


def _death_reason(cause: Any) -> tuple[str, str]:
    """(reason, Ray's message) of an ``ActorDeathCause`` proto."""
    if cause is None:
        return "", ""
    which = cause.WhichOneof("context")
    if which == "actor_died_error_context":
        ctx = cause.actor_died_error_context
        reason = ctx.DESCRIPTOR.fields_by_name["reason"].enum_type.values_by_number[ctx.reason]
        return reason.name, _first_sentences(ctx.error_message)
    if which == "oom_context":
        return "OUT_OF_MEMORY", _first_sentences(cause.oom_context.error_message)
    return (which or "").upper(), ""


def _first_sentences(message: str, limit: int = 300) -> str:
    """Ray's death messages go on with pages of possible causes: keep the facts."""
    for boilerplate in (" Some common causes include", " There are some potential root causes"):
        message = message.split(boilerplate)[0]
    head = message.strip()
    return head if len(head) <= limit else head[: limit - 3] + "..."


def watch_actor_deaths(
    report: Callable[[dict[str, Any]], None], stop: threading.Event, interval_s: float = 0.5
) -> threading.Thread:
    """A daemon thread that calls ``report`` for each crashed actor until ``stop`` is set."""

    def run() -> None:
        seen: set[str] = set()
        failures = 0
        while not stop.wait(interval_s):
            try:
                deaths = actor_deaths(seen)
            except Exception as exc:  # the GCS is going away, or a Ray without this API
                failures += 1
                if failures == 3:
                    logger.warning("cannot read the Ray actor table: %s", exc)
                continue
            failures = 0
            for death in deaths:
                if not stop.is_set():
                    report(death)

    thread = threading.Thread(target=run, name="actor-deaths", daemon=True)
    thread.start()
    return thread


# --- command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serving.ray_app",
        description=(
            "Run the GPU tier's Ray Serve applications (ModelService over Serve's gRPC proxy) "
            "in a local Ray instance. Prints 'READY <grpc port>' on stdout once serving; "
            "stops on SIGTERM/SIGINT."
        ),
    )
    p.add_argument("--engine", choices=("llamacpp", "scripted", "vllm"), default="llamacpp")
    p.add_argument(
        "--engine-options",
        default="{}",
        help='engine keyword arguments as JSON, e.g. \'{"n_ctx": 1024, "n_threads": 2}\'',
    )
    p.add_argument("--name", default=DEFAULT_APP_NAME, help="application name (default: gpu)")
    p.add_argument("--model-id", default="", help="model id reported by Info")
    p.add_argument("--model-version", default="", help="model version reported by Info")
    p.add_argument("--model-family", default="", help="model family reported by Info")
    p.add_argument("--replicas", type=int, default=1, help="replicas (default: 1)")
    p.add_argument("--num-cpus", type=float, default=0.5, help="CPUs per replica (default: 0.5)")
    p.add_argument(
        "--max-ongoing-requests",
        type=int,
        default=8,
        help="requests one replica accepts at once (default: 8)",
    )
    p.add_argument("--grpc-port", type=int, default=0, help="gRPC proxy port; 0 = a free one")
    p.add_argument("--http-port", type=int, default=0, help="HTTP proxy port; 0 = a free one")
    p.add_argument(
        "--ray-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)"
    )
    p.add_argument("--log-level", default="WARNING", help="logging level (default: WARNING)")
    return p


def model_args_from(ns: argparse.Namespace) -> ModelAppArgs:
    try:
        engine_options = json.loads(ns.engine_options)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--engine-options: not valid JSON: {exc}") from None
    if not isinstance(engine_options, dict):
        raise ValueError("--engine-options: must be a JSON object")
    return ModelAppArgs.model_validate(
        {
            "engine": ns.engine,
            "engine_options": engine_options,
            "model": {"id": ns.model_id, "version": ns.model_version, "family": ns.model_family},
            "deployment": {
                "num_replicas": ns.replicas,
                "max_ongoing_requests": ns.max_ongoing_requests,
                "ray_actor_options": {"num_cpus": ns.num_cpus},
            },
        }
    )


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    logging.basicConfig(level=ns.log_level.upper(), stream=sys.stderr)
    try:
        settings = model_args_from(ns)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError: names the field
        print(f"serving.ray_app: {exc}", file=sys.stderr)
        return 2
    import ray
    from ray import serve

    stop = threading.Event()
    ray.init(num_cpus=ns.ray_cpus, include_dashboard=False, log_to_driver=False)
    # After ray.init: Ray's core installs a handler that aborts the process on SIGTERM
    # (no serve.shutdown, Ray's agents left running); this one stops it in order.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stdout = threading.Lock()

    def say(line: str) -> None:
        with stdout:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def actor_died(death: dict[str, Any]) -> None:
        logger.error(
            "Ray actor %s (pid %s) died: %s %s; log: %s",
            death["class_name"],
            death["pid"],
            death["reason"],
            death["message"],
            death["log"] or "-",
        )
        say("ACTOR_DIED " + json.dumps(death))

    watching = threading.Event()
    watcher = watch_actor_deaths(actor_died, watching)
    try:
        grpc_port, _ = start_serve(ns.grpc_port, ns.http_port)
        deploy(settings, app_name=ns.name)
        say(f"READY {grpc_port}")
        stop.wait()
    finally:
        watching.set()  # Serve's shutdown stops actors on purpose
        watcher.join(timeout=2.0)
        serve.shutdown()
        ray.shutdown()
    return 0
