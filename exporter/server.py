"""Runs the app under gunicorn: several event-driven (gevent) worker processes and the admin process."""

from __future__ import annotations

import errno
import functools
import logging
import os
import signal
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.workers.ggevent import GeventWorker

from exporter.config import Config
from exporter.readdeadline import ReadDeadlineWatchdog
from exporter.sensorsfile import SensorsFile, reload_marker_for, touch_reload_marker
from exporter.statedb import DATABASE_FILE
from exporter.status import ListenerInfo

log = logging.getLogger("exporter")

HEAD_TIMEOUT_SECONDS = 30
# TLS 1.2 with forward secrecy and authenticated encryption only (what Mozilla's "intermediate" profile
# allows, which every Axis OS release that pushes over HTTPS supports); TLS 1.3's suites all are.
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)
# An admin process that dies is started again, but not more often than this (a crash loop would spin).
ADMIN_RESPAWN_SECONDS = 5.0


@dataclass(frozen=True)
class ServerOptions:
    """How gunicorn listens and how many workers it runs."""

    bind: str = "0.0.0.0:8080"
    workers: int = 2
    certfile: str | None = None
    keyfile: str | None = None
    # gunicorn's worker heartbeat (seconds).
    timeout: int = 120
    worker_connections: int = 1000
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


def _ssl_context(config: Any, default_factory: Any) -> ssl.SSLContext:
    """gunicorn hook: its context (certificate, ciphers), never older than TLS 1.2, handshaking late.

    gevent's server wraps each accepted socket, handshake included, before the worker sees it; with
    the handshake deferred, the worker does it under the head deadline (gunicorn's base_async worker
    calls do_handshake itself when do_handshake_on_connect is off, its default).
    """
    context: ssl.SSLContext = default_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.__class__ = _deferred_handshake(type(context))
    return context


_DEFERRED: dict[type[ssl.SSLContext], type[ssl.SSLContext]] = {}


def _deferred_handshake(context_class: type[ssl.SSLContext]) -> type[ssl.SSLContext]:
    """``context_class`` (the standard or gevent's SSLContext) whose sockets handshake when asked to."""
    if context_class not in _DEFERRED:

        def wrap_socket(self: ssl.SSLContext, sock: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs["do_handshake_on_connect"] = False
            return context_class.wrap_socket(self, sock, *args, **kwargs)

        _DEFERRED[context_class] = type(
            "DeferredHandshakeContext", (context_class,), {"wrap_socket": wrap_socket}
        )
    return _DEFERRED[context_class]


def _post_fork(admin: AdminProcess | None, server: Any, worker: Any) -> None:
    """gunicorn hook in a new worker: the admin socket is the admin process's, not the worker's."""
    if admin is not None:
        admin.listening.close()


def deadline_worker_class(client_timeout_seconds: int) -> type[GeventWorker]:
    """gunicorn's gevent worker, with a deadline on the TLS handshake and headers of each request.

    Event-driven: a connection that is idle, trickles bytes or stalls its TLS handshake holds a
    greenlet, not one of a few threads, so such clients by the hundred do not delay real pushes. The
    deadline still closes them, so they cannot pile up either. The app puts its own deadline on the
    body (and answers 408); before the app is called there is no one to answer, so a connection past
    its deadline is just closed.
    """

    class DeadlineGeventWorker(GeventWorker):  # type: ignore[misc]  # gunicorn ships no type hints
        def patch(self) -> None:
            """Monkey-patch (gevent), then make what uses threading: its locks must be gevent's."""
            super().patch()
            # A handshake and headers are a few hundred bytes: they get less time than a 35 MB body.
            self.watchdog = ReadDeadlineWatchdog(min(client_timeout_seconds, HEAD_TIMEOUT_SECONDS))
            self._head_deadlines: dict[int, Any] = {}

        def handle(self, listener: Any, client: Any, addr: Any) -> None:
            deadline = self.watchdog.start(lambda: client)
            self._head_deadlines[id(client)] = deadline
            try:
                super().handle(listener, client, addr)
            finally:
                self.watchdog.stop(deadline)
                self._head_deadlines.pop(id(client), None)

        def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> None:
            # The headers are in; the body is the app's to time.
            self.watchdog.stop(self._head_deadlines.get(id(sock)))
            super().handle_request(listener_name, req, sock, addr)

    return DeadlineGeventWorker


class AdminProcess:
    """The admin listener's process: forked by the gunicorn master, reaped and restarted by it.

    It is not a gunicorn worker (it serves another socket, without TLS), so the master's worker
    bookkeeping does not see it; ``ReceiverArbiter`` calls the hooks below from the master's loop.
    """

    def __init__(self, listening: socket.socket, config: Config, listener: ListenerInfo) -> None:
        self.listening = listening
        self.config = config
        self.listener = listener
        self.pid = 0
        self._started_at = 0.0
        # In the admin process: its own copy of the master's sensors file, following reloads.
        self.sensors_file: SensorsFile | None = None

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
            self.sensors_file = arbiter.sensors_file.child(
                reload_marker=reload_marker_for(self.config.prometheus_multiproc_dir)
            )
            self.sensors_file.watch()
            from exporter.admin import run_admin_process

            run_admin_process(self.listening, self.config, arbiter.pid, self.listener, self.sensors_file)
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
    """gunicorn's master, which also keeps the admin process running beside the workers, and reloads
    the sensors file in every process on SIGHUP."""

    def __init__(self, app: GunicornServer) -> None:
        super().__init__(app)
        self.admin = app.admin
        self.sensors_file = app.sensors_file
        self.reload_marker = reload_marker_for(app.config.prometheus_multiproc_dir)

    def handle_hup(self) -> None:
        """SIGHUP: validate the sensors file here, then have every worker and the admin process reload it.

        This overrides gunicorn's ``Arbiter.handle_hup``, which ``Arbiter.run`` calls for a SIGHUP (its
        signal handler only queues the signal; the loop dispatches to ``handle_<name>``). Upstream it calls
        ``Arbiter.reload``: re-read gunicorn's settings and replace every worker by a new one, so a broken
        sensors file would then stop the new workers from booting, and pushes in flight would wait for
        the graceful shutdown. Here nothing restarts: gunicorn's settings are fixed in code (nothing to
        re-read) and its error log is stderr (nothing to reopen). The master loads the file, logs the
        outcome, and when it loaded replaces the reload marker in the runtime directory; each worker and
        the admin process look at the marker at least once a second (``SensorsFile.watch``) and reload.
        A broken file changes nothing: every process keeps its mapping.
        """
        if self.sensors_file.path is None:
            log.warning(
                "SIGHUP: no sensors file to reload (serve --sensors-file, AXIS_EXPORTER_SENSORS_FILE)"
            )
            return
        if not self.sensors_file.reload():  # logs: kept the previous N sensors because file:line: rule
            return
        if self.reload_marker is None:
            return
        try:
            touch_reload_marker(self.reload_marker)
        except OSError as exc:  # the master's loop must go on: workers still follow the file itself
            log.error(
                "SIGHUP: cannot write %s (%s): the workers reload only when the file itself changes",
                self.reload_marker,
                exc.strerror or exc,
            )

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
        # Follow the file here too: a worker started after an edit begins from the newest good mapping.
        self.sensors_file.check()

    def stop(self, graceful: bool = True) -> None:
        """Stop the admin process, then the workers as gunicorn does."""
        if self.admin is not None:
            self.admin.stop()
        super().stop(graceful)


class GunicornServer(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    """A gunicorn application that builds one app per worker from an already validated config."""

    def __init__(
        self,
        config: Config,
        options: ServerOptions,
        admin: AdminProcess | None = None,
        sensors_file: SensorsFile | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self.admin = admin
        # The master's, loaded and validated before gunicorn starts (no reload marker: the master writes
        # it); each worker and the admin process make their own copy after fork.
        self.sensors_file = (
            sensors_file
            if sensors_file is not None
            else SensorsFile(config.sensors_file, config.limits.serial_pattern)
        )
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
            "worker_class": deadline_worker_class(self.config.client_timeout_seconds),
            # Connections per worker: idle ones cost a greenlet; the head deadline closes them.
            "worker_connections": self.options.worker_connections,
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
            settings["ciphers"] = TLS12_CIPHERS
            settings["ssl_context"] = _ssl_context
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn 24+ opens a control socket at a fixed path: two receivers on one host would clash.
            settings["control_socket_disable"] = True
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """Build the WSGI app inside the worker, after fork: its connections are its own.

        The worker's sensors file starts from the master's mapping (so a file broken since cannot stop it
        from booting) and follows the file and the reload marker in a greenlet.
        """
        from exporter.app import create_app

        self.sensors_file = self.sensors_file.child(
            reload_marker=reload_marker_for(self.config.prometheus_multiproc_dir)
        )
        self.sensors_file.watch()
        return create_app(self.config, sensors_file=self.sensors_file)
