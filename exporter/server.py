"""Runs the app under gunicorn (several worker processes, each with a few threads)."""

from __future__ import annotations

import errno
import functools
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import ThreadWorker

from exporter.config import Config
from exporter.readdeadline import ReadDeadlineWatchdog
from exporter.sensors import DATABASE_FILE

log = logging.getLogger("exporter")

HEAD_TIMEOUT_SECONDS = 30
# An admin process that dies is started again, but not more often than this (a crash loop would spin).
ADMIN_RESPAWN_SECONDS = 5.0


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

    Only what prometheus-client and the sensor registry put there is removed: the directory may be
    shared.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for path in [*directory.glob("*.db"), *directory.glob(f"{DATABASE_FILE}*")]:
        path.unlink()


def _child_exit(multiprocess_dir: Path | None, server: Any, worker: Any) -> None:
    """gunicorn hook in the master: drop a dead worker's live gauges; its counters stay in the aggregate.

    A worker's counter and histogram files are kept on purpose: deleting them would make the aggregated
    counters go backwards. Only ``live*`` gauges (influxdb_up) describe the process itself and go.
    """
    _mark_dead(multiprocess_dir, worker.pid)


def _mark_dead(multiprocess_dir: Path | None, pid: int) -> None:
    if multiprocess_dir is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(multiprocess_dir))  # type: ignore[no-untyped-call]


def _post_fork(admin: AdminProcess | None, server: Any, worker: Any) -> None:
    """gunicorn hook in a new worker: the admin socket is the admin process's, not the worker's."""
    if admin is not None:
        admin.listening.close()


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


class AdminProcess:
    """The admin listener's process: forked by the gunicorn master, reaped and restarted by it.

    It is not a gunicorn worker (it serves another socket, without TLS), so the master's worker
    bookkeeping does not see it; ``ReceiverArbiter`` calls the hooks below from the master's loop.
    """

    def __init__(self, listening: socket.socket, config: Config) -> None:
        self.listening = listening
        self.config = config
        self.pid = 0
        self._started_at = 0.0

    def spawn(self, arbiter: Arbiter) -> None:
        """Fork the admin process (in the master; its loop is single-threaded, so fork is safe)."""
        self._started_at = time.monotonic()
        pid = os.fork()
        if pid:
            self.pid = pid
            log.info("admin process started (pid %d)", pid)
            return
        status = 0
        try:
            # The master's signal handlers and the push sockets are not this process's business.
            for signum in (*arbiter.SIGNALS, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            for listener in arbiter.LISTENERS:
                listener.close()
            from exporter.admin import run_admin_process

            run_admin_process(self.listening, self.config, arbiter.pid)
        except BaseException:
            log.exception("admin process failed")
            status = 1
        finally:
            sys.stderr.flush()
            os._exit(status)  # never return into the master's code

    def reap(self) -> None:
        """Collect the process if it exited (the master's own waitpid(-1) may have taken it already)."""
        if not self.pid:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, -1  # reaped by the master's loop: gone, status unknown
        if not pid:
            return
        log.error("admin process (pid %d) exited (status %d); it is started again", pid, status)
        self._forget(pid)

    def respawn_if_needed(self, arbiter: Arbiter) -> None:
        """Start the process again if it is gone, at most every ``ADMIN_RESPAWN_SECONDS``."""
        if not self.pid and time.monotonic() - self._started_at >= ADMIN_RESPAWN_SECONDS:
            self.spawn(arbiter)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; the socket stays open for a respawn."""
        if not self.pid:
            return
        pid = self.pid
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.ECHILD):
                raise
        self._forget(pid)

    def _forget(self, pid: int) -> None:
        self.pid = 0
        _mark_dead(self.config.prometheus_multiproc_dir, pid)


class ReceiverArbiter(Arbiter):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn's master, which also keeps the admin process running beside the workers."""

    def __init__(self, app: GunicornServer) -> None:
        super().__init__(app)
        self.admin = app.admin

    def start(self) -> None:
        """Listen and start the admin process once the push sockets exist."""
        super().start()
        if self.admin is not None:
            self.admin.spawn(self)

    def reap_workers(self) -> None:
        """Reap the admin process by its pid first: waitpid(-1) below would take it anonymously."""
        if self.admin is not None:
            self.admin.reap()
        super().reap_workers()

    def manage_workers(self) -> None:
        """Keep the workers and the admin process running (called about once a second)."""
        super().manage_workers()
        if self.admin is not None:
            self.admin.reap()
            self.admin.respawn_if_needed(self)

    def stop(self, graceful: bool = True) -> None:
        """Stop the admin process, then the workers as gunicorn does."""
        if self.admin is not None:
            self.admin.stop()
        super().stop(graceful)


class GunicornServer(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    """A gunicorn application that builds one app per worker from an already validated config."""

    def __init__(self, config: Config, options: ServerOptions, admin: AdminProcess | None = None) -> None:
        self.config = config
        self.options = options
        self.admin = admin
        super().__init__()

    def run(self) -> None:
        """Run the master loop (with the admin process) until gunicorn exits."""
        try:
            ReceiverArbiter(self).run()
        except RuntimeError as exc:
            print(f"\nError: {exc}\n", file=sys.stderr)
            sys.exit(1)

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
            "post_fork": functools.partial(_post_fork, self.admin),
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
