"""Child processes for the demo: start, wait until ready, stop without leaving orphans.

Each child runs in its own session (the terminal's Ctrl-C reaches only the demo, which
stops the children in order) and, on Linux, asks the kernel to SIGTERM it when the demo
process dies (``PR_SET_PDEATHSIG``), so even a ``kill -9`` of the demo leaves nothing behind.
Output goes to a log file per child; :meth:`Child.log_tail` shows it when something fails.

A :class:`Watcher` notices at once when a child dies without being asked to stop (a
signal, or any exit before :meth:`Child.stop`) and reports one :class:`Death`: the child's
name, pid, how it ended (``died with SIGSEGV``, ``exited with status 3``) and its log.
Children run with ``PYTHONFAULTHANDLER=1``, so a Python child that crashes in native
code leaves its stack in that log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class ChildFailed(Exception):
    """A child exited or did not become ready in time; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Death:
    """A child (or a process a child runs, e.g. a Ray worker) that died unasked."""

    #: Who died: the child's name, or e.g. "gpu-pool's Ray actor ServeReplica:gpu:...".
    name: str
    pid: int | None
    #: How: "died with SIGSEGV", "exited with status 3", "died (WORKER_DIED): ...".
    how: str
    log_path: str
    #: The exit status (>= 0), or None.
    exit_status: int | None = None
    #: The signal's name ("SIGSEGV"), or None.
    signal: str | None = None
    #: The last lines of the log.
    log_tail: str = ""
    #: Anything else known (e.g. Ray's death cause), as it was reported.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str:
        """One line: ``edge-site-a (pid 12345) died with SIGSEGV; log: /path/to/log``."""
        pid = f" (pid {self.pid})" if self.pid is not None else ""
        return f"{self.name}{pid} {self.how}; log: {self.log_path or '-'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "how": self.how,
            "signal": self.signal,
            "exit_status": self.exit_status,
            "log": self.log_path,
            "log_tail": self.log_tail.splitlines(),
            "message": self.message,
            **self.extra,
        }


class ChildDied(ChildFailed):
    """A child died while the demo waited for it to become ready."""

    def __init__(self, death: Death) -> None:
        super().__init__(death.message)
        self.death = death


def describe_exit(returncode: int) -> tuple[str, str | None, int | None]:
    """(how, signal name, exit status) for a returncode as asyncio reports it (-N: signal N)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"died with {name}", name, None
    return f"exited with status {returncode}", None, returncode


# Runs as the child before the real program: asks for SIGTERM when the demo dies, gives up
# if the demo is already gone, then execs. PR_SET_PDEATHSIG survives the exec. (A
# ``preexec_fn`` would do this in Python inside a fork of the demo, which runs gRPC's
# threads and fork handlers: the child can crash before it execs.)
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    f"ctypes.CDLL(None, use_errno=True).prctl({_PR_SET_PDEATHSIG}, signal.SIGTERM, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def _dying_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` run so that the kernel SIGTERMs it when this process dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *argv]


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
        #: Set once stop() or kill_now() was called: an exit after that is not a death.
        self.stopping = False
        #: Called with each stdout line that is not the READY line (when stdout is a pipe).
        self.on_line: Callable[[bytes], None] | None = None

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
        # A crash in native code (llama.cpp, ggml) leaves the Python stack in the log.
        env.setdefault("PYTHONFAULTHANDLER", "1")
        self.proc = await asyncio.create_subprocess_exec(
            *_dying_with_parent(self.argv),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if stdout_pipe else log_file,
            stderr=log_file,
            start_new_session=True,
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
                raise ChildDied(self.death())
            with open(self.log_path, "ab") as f:
                f.write(line)
            if not line.startswith(prefix):
                self._line(line)
            else:
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
                self._line(line)

    def _line(self, line: bytes) -> None:
        if self.on_line is not None:
            try:
                self.on_line(line)
            except Exception:
                log.exception("%s: handling a line of its output failed", self.name)

    async def wait_ready_probe(
        self, probe: Callable[[], Awaitable[bool]], timeout_s: float
    ) -> None:
        """Poll ``probe()`` (an awaitable returning True when ready) until ready or exit."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                raise ChildDied(self.death())
            if await probe():
                return
            await asyncio.sleep(0.2)
        raise ChildFailed(f"{self.name} was not ready within {timeout_s:.0f} s")

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL; always reaps the process."""
        self.stopping = True
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
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 8) -> str:
        return log_tail(self.log_path, lines)

    def crash_tail(self) -> str:
        """What to show of the log when the child died: see :func:`crash_tail`."""
        return crash_tail(self.log_path)

    def death(self) -> Death:
        """How the (exited) child ended, with its log's last lines."""
        assert self.proc is not None and self.proc.returncode is not None
        how, sig, status = describe_exit(self.proc.returncode)
        return Death(
            self.name,
            self.proc.pid,
            how,
            str(self.log_path),
            exit_status=status,
            signal=sig,
            log_tail=self.crash_tail(),
        )

    async def flush_output(self, timeout_s: float = 1.0) -> None:
        """Let the copy of stdout into the log reach the end (after the child exited)."""
        if self._drain is not None and not self._drain.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._drain), timeout_s)


def _read_end(path: Path | str, size: int = 64 * 1024) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def log_tail(path: Path | str, lines: int = 8) -> str:
    """The last ``lines`` lines of a text file ("" when it cannot be read)."""
    return "\n".join(_read_end(path).strip().splitlines()[-lines:])


def crash_tail(path: Path | str, lines: int = 8, frames: int = 8) -> str:
    """The end of a crashed process's log, made to fit a few lines.

    When Python's faulthandler reported a fatal signal, its report lists every thread's
    stack (dozens of lines, mostly idle gRPC threads): keep the lines logged just before,
    the ``Fatal Python error`` line and the top ``frames`` frames of the thread that
    crashed. Otherwise the last ``lines`` lines.
    """
    text = _read_end(path).strip()
    all_lines = text.splitlines()
    fatal = max(
        (i for i, line in enumerate(all_lines) if line.startswith("Fatal Python error: ")),
        default=-1,
    )
    if fatal < 0:
        return "\n".join(all_lines[-lines:])
    before = [line for line in all_lines[max(0, fatal - 3) : fatal] if line.strip()]
    out = [*before, all_lines[fatal]]
    rest = all_lines[fatal + 1 :]
    # "Current thread 0x... (most recent call first):" with all threads, "Stack (most
    # recent call first):" with one.
    head = next(
        (i for i, line in enumerate(rest) if line.startswith(("Current thread ", "Stack ("))),
        -1,
    )
    if head >= 0:
        out.append(rest[head])
        for line in rest[head + 1 : head + 1 + frames]:
            if not line.startswith("  "):
                break
            out.append(line)
    return "\n".join(out)


class Watcher:
    """Reports the first child that dies without being asked to stop, at once.

    ``watch(child)`` after ``child.start()``; ``on_death`` is called once, with the first
    :class:`Death` (a child's, or one passed to :meth:`report`, e.g. a Ray actor's).
    """

    def __init__(self, on_death: Callable[[Death], None]) -> None:
        self._on_death = on_death
        self._tasks: set[asyncio.Task[None]] = set()
        self.first: Death | None = None
        self.closed = False

    def watch(self, child: Child) -> None:
        task = asyncio.get_running_loop().create_task(self._watch(child))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, child: Child) -> None:
        assert child.proc is not None
        await child.proc.wait()
        if child.stopping or self.closed:
            return
        await child.flush_output()
        if child.stopping or self.closed:
            return
        self.report(child.death())

    def report(self, death: Death) -> None:
        if self.closed or self.first is not None:
            return
        self.first = death
        log.error("%s", death.message)
        self._on_death(death)

    def close(self) -> None:
        """Stop watching (before stopping the children on purpose)."""
        self.closed = True
        for task in list(self._tasks):
            task.cancel()


#: What Python's faulthandler prints for each fatal signal ("Fatal Python error: ...").
_FAULTHANDLER = {
    "Segmentation fault": "SIGSEGV",
    "Aborted": "SIGABRT",
    "Bus error": "SIGBUS",
    "Floating-point exception": "SIGFPE",
    "Illegal instruction": "SIGILL",
}


def signal_in_log(text: str) -> str | None:
    """The fatal signal a Python process's faulthandler wrote into its log, if any."""
    for line in reversed(text.splitlines()):
        if line.startswith("Fatal Python error: "):
            return _FAULTHANDLER.get(line.removeprefix("Fatal Python error: ").strip())
    return None


def ray_actor_death(owner: str, report: dict[str, Any]) -> Death:
    """A :class:`Death` from an ``ACTOR_DIED <json>`` line of ``python -m serving.ray_app``
    (``owner``: the child that runs the Ray instance)."""
    pid = report.get("pid") or None
    log_path = str(report.get("log") or "")
    tail = crash_tail(log_path) if log_path else ""
    sig = signal_in_log(tail)
    reason = str(report.get("reason") or "died")
    how = f"died with {sig} ({reason})" if sig else f"died ({reason})"
    message = str(report.get("message") or "").rstrip(".")
    if message:
        how += f": {message}"
    what = report.get("class_name") or report.get("name") or report.get("actor_id") or "?"
    return Death(
        f"{owner}'s Ray actor {what}",
        int(pid) if pid else None,
        how,
        log_path,
        signal=sig,
        log_tail=tail,
        extra={"ray_actor": report},
    )
