"""``axis-exporter serve`` under real gunicorn in a subprocess, on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3

from exporter.processes import ChildProcess, ProcessFailed, children

# The receiver's own settings: a test sets the ones it wants, none leak in from the caller's shell.
RECEIVER_SETTINGS = ("AXIS_EXPORTER_", "INFLUXDB_V2_", "PROMETHEUS_")


def clean_env() -> dict[str, str]:
    """This process's environment without any of the receiver's settings."""
    return {key: value for key, value in os.environ.items() if not key.startswith(RECEIVER_SETTINGS)}


@dataclass
class ExporterProcess:
    """``axis-exporter serve`` running under real gunicorn in a subprocess."""

    env: dict[str, str]
    args: list[str]
    log_path: Path
    port: int
    admin_port: int
    scheme: str = "http"
    process: ChildProcess | None = None

    @property
    def url(self) -> str:
        """Base URL of the receiver."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """Base URL of the admin listener (/metrics, /readyz, /healthz; always plain HTTP)."""
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def pid(self) -> int:
        """The gunicorn master's pid."""
        assert self.process is not None, "exporter not started"
        return self.process.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until both listeners' /healthz answer and every worker runs."""
        self.process = ChildProcess(
            [
                sys.executable,
                "-m",
                "exporter",
                "serve",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--admin-bind",
                f"127.0.0.1:{self.admin_port}",
                *self.args,
            ],
            self.log_path,
            name="exporter",
            env=self.env,
        )
        try:
            self.process.wait_ready(self._ready, timeout, interval=0.1)
        except ProcessFailed as exc:
            raise AssertionError(f"{exc.reason}:\n{self.log()}") from None

    def _ready(self) -> bool:
        with warnings.catch_warnings():
            # Only "is it up?": the TLS tests verify certificates themselves.
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            requests.get(f"{self.url}/healthz", timeout=1, verify=False)
        requests.get(f"{self.admin_url}/healthz", timeout=1)
        return len(self.worker_pids()) >= int(self.env.get("AXIS_EXPORTER_WORKERS", "1"))

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), then wait."""
        if self.process is not None:
            self.process.stop(timeout=30)

    def crash(self) -> None:
        """SIGKILL the master, its workers and the admin process at once, as a crashed container ends."""
        assert self.process is not None, "exporter not started"
        for pid in [*self.children(), self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def children(self) -> list[int]:
        """Pids of the master's children: the gunicorn workers and the admin process."""
        return children(self.pid)

    def admin_pid(self) -> int | None:
        """Pid of the admin process the master started last, if it still runs."""
        started = re.findall(r"admin process started \(pid (\d+)\)", self.log())
        if started and int(started[-1]) in self.children():
            return int(started[-1])
        return None

    def worker_pids(self) -> list[int]:
        """Pids of the gunicorn workers (the master's children but the admin process)."""
        admin = self.admin_pid()
        return [pid for pid in self.children() if pid != admin]

    def log(self) -> str:
        """Everything the exporter printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


ExporterFactory = Callable[..., ExporterProcess]
