"""Deadlines for receiving a request, so a client that trickles bytes cannot hold a thread forever.

gunicorn reads TLS handshakes, headers and bodies from blocking sockets without a timeout. One watchdog
thread per worker process shuts the read side of a socket whose deadline passed: the blocked read
returns. The server uses it until a request's headers are in (the connection is then closed), the app
while it reads the body (the request is then answered 408 on the still-open write side).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator


class Deadline:
    """What a reader holds while it waits for bytes: whether the deadline cut the reading off."""

    def __init__(self, current_socket: Callable[[], object], expires_at: float) -> None:
        # A getter, not the socket: wrapping a socket in TLS moves its descriptor to a new object.
        self.current_socket = current_socket
        self.expires_at = expires_at
        self.expired = False


class ReadDeadlineWatchdog:
    """Shuts the read side of sockets whose body deadline passed; started lazily, after fork."""

    def __init__(self, timeout_seconds: float, check_every: float = 0.25) -> None:
        self.timeout_seconds = timeout_seconds
        self.check_every = check_every
        self._watched: set[Deadline] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, current_socket: Callable[[], object]) -> Deadline:
        """Start the clock for the socket that ``current_socket`` returns at expiry."""
        deadline = Deadline(current_socket, time.monotonic() + self.timeout_seconds)
        thread = None
        with self._lock:
            self._watched.add(deadline)
            current = self._thread
            # None yet, or started and gone; a thread being started (no ident yet) is left to start.
            if current is None or (current.ident is not None and not current.is_alive()):
                thread = self._thread = threading.Thread(target=self._run, name="read-deadline", daemon=True)
        if thread is not None:
            # Outside the lock: starting a thread waits for it, and under gevent that switches greenlets.
            thread.start()
        return deadline

    def stop(self, deadline: Deadline | None) -> None:
        """The awaited bytes arrived: stop watching."""
        if deadline is not None:
            with self._lock:
                self._watched.discard(deadline)

    @contextlib.contextmanager
    def watch(self, sock: object) -> Iterator[Deadline | None]:
        """Watch ``sock`` (the server's client socket, if it exposes one) for the duration of the block."""
        if not isinstance(sock, socket.socket):
            yield None  # not under gunicorn: nothing to cut off
            return
        deadline = self.start(lambda: sock)
        try:
            yield deadline
        finally:
            self.stop(deadline)

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
                sock = deadline.current_socket()
                if isinstance(sock, socket.socket):
                    # socket.socket's own shutdown: ssl.SSLSocket's would drop TLS, and the 408 with it.
                    # A socket closed meanwhile has no descriptor: shutdown fails, nothing else is hit.
                    with contextlib.suppress(OSError):
                        socket.socket.shutdown(sock, socket.SHUT_RD)
