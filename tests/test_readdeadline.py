"""The body-read deadline cuts a blocked read off and leaves the write side usable."""

from __future__ import annotations

import socket
import time

from exporter.readdeadline import ReadDeadlineWatchdog


def test_blocked_read_returns_once_the_deadline_passes() -> None:
    server_side, client_side = socket.socketpair()
    with server_side, client_side:
        watchdog = ReadDeadlineWatchdog(timeout_seconds=0.5, check_every=0.05)
        started = time.monotonic()
        with watchdog.watch(server_side) as deadline:
            assert deadline is not None
            client_side.sendall(b"partial")
            assert server_side.recv(100) == b"partial"
            assert server_side.recv(100) == b"", "the watchdog should end the blocked read with EOF"
            assert deadline.expired
        assert time.monotonic() - started < 5, "the read was not cut off near its deadline"
        server_side.sendall(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        assert client_side.recv(100).startswith(b"HTTP/1.1 408"), "the answer must still get out"


def test_reads_finishing_in_time_are_left_alone() -> None:
    server_side, client_side = socket.socketpair()
    with server_side, client_side:
        watchdog = ReadDeadlineWatchdog(timeout_seconds=0.3, check_every=0.05)
        with watchdog.watch(server_side) as deadline:
            client_side.sendall(b"whole body")
            assert server_side.recv(100) == b"whole body"
        time.sleep(0.5)
        assert deadline is not None and not deadline.expired
        client_side.sendall(b"next request")
        assert server_side.recv(100) == b"next request", "a finished request's socket must stay open"


def test_without_a_server_socket_there_is_nothing_to_watch() -> None:
    watchdog = ReadDeadlineWatchdog(timeout_seconds=1)
    with watchdog.watch(None) as deadline:
        assert deadline is None
