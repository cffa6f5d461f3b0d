"""Child processes on loopback for the local InfluxDB, the tests and the bench: start one with a log file,
wait until it answers (or fail as soon as it exits), stop it gracefully and then kill it."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s children (a gunicorn master's workers, nginx's worker); none once it ended."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def wait_until(
    check: Callable[[], T | None], timeout: float, what: str | Callable[[], str], interval: float = 0.05
) -> T:
    """``check()``'s first true result, polled every ``interval`` seconds; TimeoutError after ``timeout``
    seconds, saying it ``waited N s for <what>`` (``what`` may be a function, called only then)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g} s for {what if isinstance(what, str) else what()}")
        time.sleep(interval)


def log_tail(log_path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log, indented, for an error message."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {log_path}: {exc.strerror or exc})"
    tail = text[-4000:].splitlines()[-lines:]
    return "\n".join(f"  {line}" for line in tail) if tail else "  (empty)"


class ProcessFailed(RuntimeError):
    """A child process did not get ready: it ended, or it did not answer in time."""

    def __init__(self, process: ChildProcess, reason: str) -> None:
        super().__init__(f"{reason}; the end of its log {process.log_path}:\n{log_tail(process.log_path)}")
        self.reason = reason


class ProcessExited(ProcessFailed):
    """The child process ended before it was ready."""

    def __init__(self, process: ChildProcess, returncode: int) -> None:
        super().__init__(process, f"{process.name} (pid {process.pid}) exited with {returncode}")
        self.returncode = returncode


class ProcessNotReady(ProcessFailed):
    """The child process still runs but did not answer in time."""

    def __init__(self, process: ChildProcess, timeout: float) -> None:
        super().__init__(process, f"{process.name} (pid {process.pid}) did not answer within {timeout:g} s")


class ChildProcess(subprocess.Popen[bytes]):
    """A program run as a child process, its output (stdout and stderr) appended to ``log_path``."""

    def __init__(
        self,
        command: Sequence[str],
        log_path: Path,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.name = name or Path(command[0]).name
        self.log_path = log_path
        with log_path.open("ab") as log_file:
            super().__init__(
                list(command),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                pass_fds=tuple(pass_fds),
            )

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def children(self) -> list[int]:
        """The pids of its children while it runs."""
        return children(self.pid) if self.poll() is None else []

    def wait_ready(self, ready: Callable[[], bool], timeout: float, interval: float = 0.05) -> None:
        """Until ``ready()`` holds (an OSError from it, such as a refused connection, counts as not yet).

        ProcessExited as soon as the process ends; ProcessNotReady after ``timeout`` seconds (the process
        then still runs: stop it).
        """

        def answered() -> bool:
            returncode = self.poll()
            if returncode is not None:
                raise ProcessExited(self, returncode)
            try:
                return ready()
            except OSError:
                return False

        try:
            wait_until(answered, timeout, self.name, interval)
        except TimeoutError:
            raise ProcessNotReady(self, timeout) from None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (after SIGCONT: a paused process would not act on it), wait ``timeout`` seconds for it
        to end, then SIGKILL."""
        if self.poll() is not None:
            return
        self.send_signal(signal.SIGCONT)
        self.terminate()
        try:
            self.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
