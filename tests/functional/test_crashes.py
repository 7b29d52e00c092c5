"""A crashed model server says so (issue 11, item 3).

- The demo's child watcher (``hybrid_router_cli.demo.processes``): a real model server
  started the way ``hybrid-router demo`` starts it, killed with SIGSEGV / SIGKILL or exiting
  by itself, is reported at once with its name, pid, signal or exit status and log; a child
  stopped on purpose is not.
- The router: a backend whose process was killed shows the failure in ``ListBackends``
  (``last_error``, ``last_error_unix_ms``) and in ``hybrid-router backends``.
- The whole demo with the real model (``model``, ``slow``): a model server killed with
  SIGSEGV stops it within seconds with one ``error:`` line and exit code 1.
- The Ray Serve runner (``slow``): a replica's worker process killed with SIGSEGV is
  reported as an ``ACTOR_DIED`` line, which the demo's watcher turns into a death with the
  Ray worker's log.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hybrid_router.v1 import router_pb2 as rpb
from rtutil import collect, ms_backend, stub_for, user_request
from testkit import pid_alive

from hybrid_router_cli.demo.processes import (
    Child,
    ChildDied,
    Death,
    Watcher,
    ray_actor_death,
    signal_in_log,
)
from hybrid_router_cli.main import main
from serving.engines.scripted import ScriptedEngine

REPO = Path(__file__).resolve().parents[2]
#: A death must be reported this fast (it is event-driven: SIGCHLD, not a poll or timeout).
PROMPT_S = 5.0


def scripted_server_argv(name: str) -> list[str]:
    """``python -m serving.model_server`` as the demo runs it, over the scripted engine."""
    return [
        sys.executable,
        "-m",
        "serving.model_server",
        "--engine",
        "scripted",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--replica-id",
        f"demo-{name}",
        "--grace-s",
        "1",
        "--log-level",
        "WARNING",
    ]


async def start_child(name: str, argv: list[str], folder: Path) -> Child:
    child = Child(name, argv, folder / f"{name}.log")
    await child.start(stdout_pipe=True)
    return child


class Deaths:
    """A Watcher whose reports land in an asyncio queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Death] = asyncio.Queue()
        self.watcher = Watcher(self.queue.put_nowait)

    async def next(self, timeout_s: float = PROMPT_S) -> Death:
        return await asyncio.wait_for(self.queue.get(), timeout_s)


@pytest.fixture
async def children() -> AsyncIterator[list[Child]]:
    started: list[Child] = []
    yield started
    await asyncio.gather(*(c.stop(2.0) for c in started), return_exceptions=True)


# --- the demo's watcher -------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
async def test_a_killed_model_server_is_reported_with_name_pid_signal_and_log(
    sig, tmp_path, children
):
    child = await start_child("edge-site-a", scripted_server_argv("edge-site-a"), tmp_path)
    children.append(child)
    await child.wait_ready_line(60.0)
    deaths = Deaths()
    deaths.watcher.watch(child)
    assert child.pid is not None

    killed_at = time.monotonic()
    os.kill(child.pid, sig)
    death = await deaths.next()
    assert time.monotonic() - killed_at < PROMPT_S

    log = tmp_path / "edge-site-a.log"
    assert death.message == f"edge-site-a (pid {child.pid}) died with {sig.name}; log: {log}"
    assert (death.name, death.pid, death.signal, death.exit_status) == (
        "edge-site-a",
        child.pid,
        sig.name,
        None,
    )
    assert death.log_path == str(log) and log.exists()
    if sig == signal.SIGSEGV:
        # PYTHONFAULTHANDLER=1: the crashed server's Python stack is in its log.
        assert "Fatal Python error: Segmentation fault" in log.read_text()
        assert "Fatal Python error: Segmentation fault" in death.log_tail
    report = death.to_dict()
    assert report["signal"] == sig.name and report["pid"] == child.pid
    assert report["log"] == str(log) and report["message"] == death.message


async def test_an_exit_at_start_up_names_the_status_and_shows_the_log(tmp_path, children):
    argv = [
        sys.executable,
        "-c",
        "import sys; print('loading the model', flush=True); "
        "print('llama_model_load: error loading model', file=sys.stderr); sys.exit(3)",
    ]
    child = await start_child("gpu-pool", argv, tmp_path)
    children.append(child)
    deaths = Deaths()
    deaths.watcher.watch(child)
    started = time.monotonic()
    with pytest.raises(ChildDied) as info:
        await child.wait_ready_line(60.0)
    assert time.monotonic() - started < PROMPT_S
    log = tmp_path / "gpu-pool.log"
    expected = f"gpu-pool (pid {child.pid}) exited with status 3; log: {log}"
    assert str(info.value) == expected
    assert info.value.death.exit_status == 3 and info.value.death.signal is None
    tail = info.value.death.log_tail
    assert "loading the model" in tail and "error loading model" in tail
    # The watcher says the same.
    assert (await deaths.next()).message == expected


async def test_a_child_stopped_on_purpose_is_not_a_death(tmp_path, children):
    child = await start_child("hosted-api", scripted_server_argv("hosted-api"), tmp_path)
    children.append(child)
    await child.wait_ready_line(60.0)
    deaths = Deaths()
    deaths.watcher.watch(child)
    await child.stop(5.0)
    await asyncio.sleep(0.3)
    assert deaths.queue.empty() and deaths.watcher.first is None


async def test_only_the_first_death_is_reported(tmp_path, children):
    a = await start_child("a", scripted_server_argv("a"), tmp_path)
    b = await start_child("b", scripted_server_argv("b"), tmp_path)
    children += [a, b]
    await asyncio.gather(a.wait_ready_line(60.0), b.wait_ready_line(60.0))
    deaths = Deaths()
    deaths.watcher.watch(a)
    deaths.watcher.watch(b)
    assert a.pid is not None and b.pid is not None
    os.kill(a.pid, signal.SIGKILL)
    first = await deaths.next()
    os.kill(b.pid, signal.SIGKILL)
    await asyncio.sleep(0.5)
    assert first.name == "a" and deaths.watcher.first is first and deaths.queue.empty()


def test_a_ray_actor_report_becomes_a_death_with_the_worker_log(tmp_path):
    log = tmp_path / "worker-0123-01000000-4242.err"
    log.write_text(
        # faulthandler.enable(all_threads=False), as in Ray workers
        "Fatal Python error: Segmentation fault\n\nStack (most recent call first):\n"
        '  File "serving/engines/llamacpp.py", line 1 in decode\n'
    )
    death = ray_actor_death(
        "gpu-pool",
        {
            "actor_id": "ab12",
            "class_name": "ServeReplica:gpu:ModelDeployment",
            "pid": 4242,
            "reason": "WORKER_DIED",
            "message": "The actor is dead because its worker process has died.",
            "log": str(log),
        },
    )
    assert death.message == (
        "gpu-pool's Ray actor ServeReplica:gpu:ModelDeployment (pid 4242) died with SIGSEGV "
        "(WORKER_DIED): The actor is dead because its worker process has died; "
        f"log: {log}"
    )
    assert death.signal == "SIGSEGV" and "llamacpp.py" in death.log_tail
    assert signal_in_log("Fatal Python error: Aborted\n") == "SIGABRT"
    assert signal_in_log("all good\n") is None


# --- the router's last error per backend --------------------------------------------------


async def test_a_killed_backend_shows_its_last_error_in_list_backends_and_the_cli(
    tmp_path, children, model_server, start_router, channel_to, capsys
):
    edge = await start_child("edge-a", scripted_server_argv("edge-a"), tmp_path)
    children.append(edge)
    port = await edge.wait_ready_line(60.0)
    router = await start_router(
        [
            ms_backend("edge-a", "edge", f"127.0.0.1:{port}", cost={"edge_per_mtok_usd": 0.01}),
            ms_backend(
                "gpu-b",
                "gpu",
                await model_server(ScriptedEngine(reply_tokens=2)),
                cost={"gpu_hourly_usd": 1.0, "gpu_throughput_tokens_per_s": 100},
            ),
        ],
        # No load probe between the kill and the request: the request finds the failure.
        policy={"load_poll_interval_s": 3600},
    )
    stub = stub_for(channel_to(router))
    first = await collect(stub.Generate(user_request(max_output_tokens=2)))
    assert first[-1].usage.backend == "edge-a"
    status = {b.name: b for b in (await stub.ListBackends(rpb.ListBackendsRequest())).backends}
    assert status["edge-a"].last_error == "" and status["edge-a"].last_error_unix_ms == 0

    assert edge.pid is not None
    os.kill(edge.pid, signal.SIGKILL)
    assert edge.proc is not None
    await asyncio.wait_for(edge.proc.wait(), PROMPT_S)
    before_ms = time.time_ns() // 1_000_000
    events = await collect(stub.Generate(user_request(max_output_tokens=2)))
    assert events[-1].usage.backend == "gpu-b"  # failed over
    after_ms = time.time_ns() // 1_000_000

    status = {b.name: b for b in (await stub.ListBackends(rpb.ListBackendsRequest())).backends}
    dead = status["edge-a"]
    assert dead.last_error.startswith("UNAVAILABLE: "), dead.last_error
    assert str(port) in dead.last_error  # names the address that refused
    assert before_ms <= dead.last_error_unix_ms <= after_ms
    assert dead.failures == 1
    assert status["gpu-b"].last_error == "" and status["gpu-b"].last_error_unix_ms == 0

    address = f"127.0.0.1:{router.port}"
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["backends", "--address", address]) == 0
    out = capsys.readouterr().out
    assert "last" in out and "error" in out  # the column header
    row = next(line for line in out.splitlines() if "edge-a" in line and "model_service" in line)
    assert re.search(r"\d+(\.\d)? s ago", row), row
    note = next(line for line in out.splitlines() if line.startswith("edge-a: last error"))
    assert re.match(r"edge-a: last error \d+(\.\d)? s ago: UNAVAILABLE: ", note), note

    assert await asyncio.to_thread(main, ["backends", "--address", address, "--json"]) == 0
    by_name = {b["name"]: b for b in json.loads(capsys.readouterr().out)["backends"]}
    assert by_name["edge-a"]["last_error"] == dead.last_error
    assert by_name["edge-a"]["last_error_unix_ms"] == dead.last_error_unix_ms
    assert by_name["gpu-b"]["last_error"] == "" and by_name["gpu-b"]["last_error_unix_ms"] == 0


async def test_a_health_probe_that_starts_failing_is_the_last_error(
    tmp_path, children, start_router, channel_to
):
    edge = await start_child("edge-a", scripted_server_argv("edge-a"), tmp_path)
    children.append(edge)
    port = await edge.wait_ready_line(60.0)
    router = await start_router([ms_backend("edge-a", "edge", f"127.0.0.1:{port}")])
    stub = stub_for(channel_to(router))
    assert edge.pid is not None
    os.kill(edge.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while True:
        (status,) = (await stub.ListBackends(rpb.ListBackendsRequest())).backends
        if not status.healthy or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert not status.healthy
    assert status.last_error.startswith("load probe failed: "), status.last_error
    assert status.last_error_unix_ms > 0
    # A probe that keeps failing keeps the time it started failing.
    await asyncio.sleep(0.3)
    (again,) = (await stub.ListBackends(rpb.ListBackendsRequest())).backends
    assert again.last_error_unix_ms == status.last_error_unix_ms


# --- the whole demo, real model -----------------------------------------------------------


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(") ", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes()).replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not Path("/proc").exists(), reason="finds the demo's children in /proc")
async def test_the_demo_stops_at_once_when_a_model_server_dies():
    cli = Path(sys.executable).parent / "hybrid-router"
    proc = await asyncio.create_subprocess_exec(
        str(cli),
        "demo",
        "--json",
        "--no-ray",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "160"},
    )
    try:
        # The edge stand-in, once it is up (its READY line is read by the demo; give it
        # a few seconds after it appears so that it is loading or serving).
        edge = 0
        deadline = time.monotonic() + 120
        while not edge and time.monotonic() < deadline:
            edge = next((p for p in _children_of(proc.pid) if "demo-edge-site-a" in _cmdline(p)), 0)
            await asyncio.sleep(0.1)
        assert edge, "the demo did not start the edge stand-in"
        others = [p for p in _children_of(proc.pid) if p != edge]
        # Once the demo routes its first request (its router log says so): every child is
        # up and the edge's log has lines to show. A fixed wait was too short on a loaded
        # machine.
        while time.monotonic() < deadline and "router.requests request" not in _router_log(
            proc.pid
        ):
            await asyncio.sleep(0.1)
        assert _log_size(edge), "the edge stand-in wrote nothing to its log"
        killed_at = time.monotonic()
        os.kill(edge, signal.SIGSEGV)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        took = time.monotonic() - killed_at
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = err.decode()
    assert proc.returncode == 1, stderr
    line = next((x for x in stderr.splitlines() if x.startswith("error: ")), "")
    assert line, f"stderr: {stderr!r}\nstdout: {out.decode()[-3000:]}"
    m = re.fullmatch(r"error: edge-site-a \(pid (\d+)\) died with SIGSEGV; log: (\S+)", line)
    assert m, stderr
    assert int(m.group(1)) == edge
    log = Path(m.group(2))
    assert log.name == "edge-site-a.log" and log.exists()  # logs are kept on failure
    assert f"last lines of {log}:" in stderr
    # Promptly: the other stand-ins are stopped (SIGTERM) rather than waited for.
    assert took < 20, took
    report = json.loads(out)
    assert report["error"] == line.removeprefix("error: ")
    assert report["died"]["signal"] == "SIGSEGV" and report["died"]["pid"] == edge
    assert report["died"]["log"] == str(log)
    assert not [p for p in [edge, *others] if pid_alive(p)]


def _router_log(pid: int) -> str:
    """The text of the demo's router.log, found among ``pid``'s open files ("" if none)."""
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            target = os.readlink(fd)
            if target.endswith("/router.log"):
                return Path(target).read_text(errors="replace")
        except OSError:
            continue
    return ""


def _log_size(pid: int) -> int:
    """The size of the file ``pid``'s stderr goes to (0 if it cannot be read)."""
    try:
        return os.stat(os.readlink(f"/proc/{pid}/fd/2")).st_size
    except OSError:
        return 0


# --- Ray Serve: a replica's worker process dies -------------------------------------------


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = _children_of(todo.pop())
        out += kids
        todo += kids
    return out


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(not Path("/proc").exists(), reason="finds the Ray workers in /proc")
async def test_a_ray_replica_killed_with_sigsegv_is_reported_with_the_worker_log(
    tmp_path, children
):
    pytest.importorskip("ray")
    argv = [
        sys.executable,
        "-m",
        "serving.ray_app",
        "--engine",
        "scripted",
        "--replicas",
        "1",
        "--num-cpus",
        "0.5",
        "--ray-cpus",
        "2",
    ]
    child = Child("gpu-pool", argv, tmp_path / "gpu-pool.log")
    deaths = Deaths()

    def on_line(line: bytes) -> None:
        if line.startswith(b"ACTOR_DIED "):
            deaths.watcher.report(ray_actor_death("gpu-pool", json.loads(line[11:])))

    child.on_line = on_line
    await child.start(stdout_pipe=True)
    children.append(child)
    deaths.watcher.watch(child)
    await child.wait_ready_line(180.0)
    assert child.pid is not None
    replica = next(
        (p for p in _descendants(child.pid) if _cmdline(p).startswith("ray::ServeReplica:gpu:")),
        0,
    )
    assert replica, [(p, _cmdline(p)) for p in _descendants(child.pid)]
    os.kill(replica, signal.SIGSEGV)
    death = await deaths.next(timeout_s=15.0)
    assert death.name.startswith("gpu-pool's Ray actor ServeReplica:gpu:"), death.message
    assert death.pid == replica
    assert "WORKER_DIED" in death.how and "common causes" not in death.how
    assert death.log_path and Path(death.log_path).exists(), death.message
    assert death.signal == "SIGSEGV", death.log_tail
    assert child.running  # the Ray runner itself lives on; the demo decides to stop
