"""A deadline for receiving a request body, so a client that trickles bytes cannot hold a thread forever.

gunicorn reads request bodies with blocking sockets and no timeout. One watchdog thread per worker
process shuts the read side of a socket whose deadline passed: the blocked read returns, and the
request is answered 408 on the still-open write side.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator


class BodyDeadline:
    """What the request handler holds while it reads: whether the deadline cut the body off."""

    def __init__(self, sock: socket.socket, expires_at: float) -> None:
        self.sock = sock
        self.expires_at = expires_at
        self.expired = False


class ReadDeadlineWatchdog:
    """Shuts the read side of sockets whose body deadline passed; started lazily, after fork."""

    def __init__(self, timeout_seconds: float, check_every: float = 0.25) -> None:
        self.timeout_seconds = timeout_seconds
        self.check_every = check_every
        self._watched: set[BodyDeadline] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, sock: object) -> Iterator[BodyDeadline | None]:
        """Watch ``sock`` (the server's client socket, if it exposes one) for the body's duration."""
        if not isinstance(sock, socket.socket):
            yield None  # not under gunicorn: nothing to cut off
            return
        deadline = BodyDeadline(sock, time.monotonic() + self.timeout_seconds)
        with self._lock:
            self._watched.add(deadline)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="body-deadline", daemon=True)
                self._thread.start()
        try:
            yield deadline
        finally:
            with self._lock:
                self._watched.discard(deadline)

    def _run(self) -> None:
        while True:
            time.sleep(self.check_every)
            now = time.monotonic()
            with self._lock:
                expired = [d for d in self._watched if d.expires_at <= now]
                for deadline in expired:
                    self._watched.discard(deadline)
                    deadline.expired = True
            for deadline in expired:
                # socket.socket's own shutdown: ssl.SSLSocket's would drop TLS and the 408 could not be sent.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(deadline.sock, socket.SHUT_RD)
