"""Child processes for the demo: start, wait until ready, stop without leaving orphans.

Each child runs in its own session (the terminal's Ctrl-C reaches only the demo, which
stops the children in order) and, on Linux, asks the kernel to SIGTERM it when the demo
process dies (``PR_SET_PDEATHSIG``), so even a ``kill -9`` of the demo leaves nothing behind.
Output goes to a log file per child; :meth:`Child.log_tail` shows it when something fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class ChildFailed(Exception):
    """A child exited or did not become ready in time; the message says which and why."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for servers that cannot report the one they bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Child:
    """One child process with its log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self._log_file: object = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, *, stdout_pipe: bool = False) -> None:
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_file = log_file
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if stdout_pipe else log_file,
            stderr=log_file,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env=env,
        )
        log.info("started %s pid=%d: %s", self.name, self.proc.pid, " ".join(self.argv))

    async def wait_ready_line(self, timeout_s: float, prefix: bytes = b"READY ") -> int:
        """Read stdout until ``READY <port>``; then copy the rest of stdout to the log."""
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildFailed(f"{self.name} did not report READY within {timeout_s:.0f} s")
            try:
                line = await asyncio.wait_for(stdout.readline(), left)
            except TimeoutError:
                continue
            if not line:
                await self.proc.wait()
                raise ChildFailed(f"{self.name} exited with code {self.proc.returncode}")
            with open(self.log_path, "ab") as f:
                f.write(line)
            if line.startswith(prefix):
                try:
                    self.port = int(line[len(prefix) :].split()[0])
                except (ValueError, IndexError):
                    raise ChildFailed(f"{self.name} printed a bad READY line: {line!r}") from None
                self._drain = asyncio.get_running_loop().create_task(self._copy_stdout())
                return self.port

    async def _copy_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path, "ab") as f:
            while line := await self.proc.stdout.readline():
                f.write(line)
                f.flush()

    async def wait_ready_probe(
        self, probe: Callable[[], Awaitable[bool]], timeout_s: float
    ) -> None:
        """Poll ``probe()`` (an awaitable returning True when ready) until ready or exit."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                assert self.proc is not None
                raise ChildFailed(f"{self.name} exited with code {self.proc.returncode}")
            if await probe():
                return
            await asyncio.sleep(0.2)
        raise ChildFailed(f"{self.name} was not ready within {timeout_s:.0f} s")

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL; always reaps the process."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                log.warning("%s did not stop within %.1f s: killing it", self.name, grace_s)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._drain
            self._drain = None
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None

    def kill_now(self) -> None:
        """Last resort outside the event loop: SIGKILL if still running."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])
