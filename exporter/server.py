"""Runs the app under gunicorn (several worker processes, each with a few threads)."""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

from exporter.config import Config
from exporter.metrics import SENSOR_MARKERS_DIR
from exporter.readdeadline import ReadDeadlineWatchdog

HEAD_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class ServerOptions:
    """How gunicorn listens and how many workers it runs."""

    bind: str = "0.0.0.0:8080"
    workers: int = 2
    threads: int = 4
    certfile: str | None = None
    keyfile: str | None = None
    # gunicorn's worker heartbeat (seconds); gthread workers answer it while their threads work.
    timeout: int = 120
    keepalive: int = 5


def reset_multiprocess_dir(directory: Path) -> None:
    """Remove the metric files of a previous run (before any worker forks), so counters restart at zero.

    Only what prometheus-client and the sensor cap put there is removed: the directory may be shared.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        path.unlink()
    shutil.rmtree(directory / SENSOR_MARKERS_DIR, ignore_errors=True)


def _child_exit(multiprocess_dir: Path | None, server: Any, worker: Any) -> None:
    """gunicorn hook in the master: drop a dead worker's live gauges; its counters stay in the aggregate.

    A worker's counter and histogram files are kept on purpose: deleting them would make the aggregated
    counters go backwards. Only ``live*`` gauges (influxdb_up) describe the process itself and go.
    """
    if multiprocess_dir is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, str(multiprocess_dir))  # type: ignore[no-untyped-call]


def deadline_worker_class(client_timeout_seconds: int) -> type[ThreadWorker]:
    """gunicorn's gthread worker, with a deadline on the TLS handshake and headers of each request.

    The app puts its own deadline on the body (and answers 408); before the app is called there is no
    one to answer, so a connection past its deadline is just closed.
    """

    class DeadlineThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn ships no type hints
        # A handshake and headers are a few hundred bytes: they get less time than a 35 MB body.
        watchdog = ReadDeadlineWatchdog(min(client_timeout_seconds, HEAD_TIMEOUT_SECONDS))

        def handle(self, conn: Any) -> Any:
            conn.axis_deadline = self.watchdog.start(lambda: conn.sock)
            try:
                return super().handle(conn)
            finally:
                self.watchdog.stop(conn.axis_deadline)

        def handle_request(self, req: Any, conn: Any) -> Any:
            self.watchdog.stop(conn.axis_deadline)  # headers are in; the body is the app's to time
            return super().handle_request(req, conn)

    return DeadlineThreadWorker


class GunicornServer(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    """A gunicorn application that builds one app per worker from an already validated config."""

    def __init__(self, config: Config, options: ServerOptions) -> None:
        self.config = config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        """Hand our options to gunicorn (its name for this hook; nothing is read from the environment)."""
        settings: dict[str, Any] = {
            "bind": [self.options.bind],
            "workers": self.options.workers,
            "threads": self.options.threads,
            "worker_class": deadline_worker_class(self.config.client_timeout_seconds),
            "timeout": self.options.timeout,
            "graceful_timeout": 30,
            "keepalive": self.options.keepalive,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": self.config.log_level.lower(),
            "proc_name": "axis-exporter",
            "child_exit": functools.partial(_child_exit, self.config.prometheus_multiproc_dir),
        }
        if self.options.certfile:
            settings["certfile"] = self.options.certfile
            settings["keyfile"] = self.options.keyfile
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn 24+ opens a control socket at a fixed path: two receivers on one host would clash.
            settings["control_socket_disable"] = True
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """Build the WSGI app inside the worker, after fork: its connections are its own."""
        from exporter.app import create_app

        return create_app(self.config)
