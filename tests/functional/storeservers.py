"""Real servers for the session store tests: ``redis-server`` with an append-only file (so a
restart keeps what it accepted) and a single-threaded ``moto`` DynamoDB.

Import as ``from storeservers import RedisProcess, moto_dynamodb, redis_process``; pytest
collects the fixtures from the importing module.

Why moto runs single-threaded here: ``moto_server`` (awsenv.py) serves each request on its
own thread, and its TransactWriteItems is not isolated between threads: a cancelled
transaction restores a copy of the whole table taken when it began, undoing what other
threads committed meanwhile. DynamoDB serialises conflicting transactions; one request at
a time gives the same guarantee, so the concurrency tests test the store, not moto.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from testkit import wait_until_sync

_SERIAL_MOTO = """
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app,
)
app = DomainDispatcherApplication(create_backend_app)
run_simple(sys.argv[1], int(sys.argv[2]), app, threaded=False,
           request_handler=MotoRequestHandler)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RedisProcess:
    """One ``redis-server`` on a fixed port and data directory: start, stop (SIGTERM: it
    writes its append-only file and exits), start again, pause (SIGSTOP) and resume."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server not found: apt-get install redis-server (make system-deps)")
        self.exe = exe
        self.port = free_port()
        self.dir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.dir / "redis.log"
        proc = subprocess.Popen(
            [
                self.exe,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.dir),
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "always",
            ],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )  # fmt: skip
        self.proc = proc

        def accepting() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"redis-server exited: {log.read_text(errors='replace')[-2000:]}")
            with socket.create_connection(("127.0.0.1", self.port), 1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")

        wait_until_sync(accepting, f"redis-server on port {self.port}", timeout_s=20)

    def stop(self) -> None:
        if self.proc is not None:
            self.resume()
            _stop(self.proc)
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)


@pytest.fixture(scope="module")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A shared ``redis-server`` for the module (tests use their own key prefix)."""
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A ``redis-server`` for one test (outages: it is paused, stopped, started again)."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisProcess(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def moto_dynamodb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's DynamoDB on a free port, one request at a time (module doc); yields its URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERIAL_MOTO, "127.0.0.1", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        if proc.poll() is not None:
            err = log_path.read_text(errors="replace")
            pytest.fail(f"moto exited with {proc.returncode}: {err[-2000:]}")
        return httpx.get(f"{url}/moto-api/", timeout=2).status_code < 500

    try:
        wait_until_sync(answering, f"moto to answer on {url}", timeout_s=60, every_s=0.2)
        yield url
    finally:
        _stop(proc)
        log.close()
