"""The receiver's shared runtime database: one SQLite file that every process of one ``serve`` opens.

Workers write to it after pushes (the sensor registry, the push log) and the admin process reads it for
scrapes and the status page. It lives in the private runtime directory that ``serve`` makes (the
multiprocess metrics directory) and starts empty with each ``serve``: it is state, not data, and the
next pushes rebuild it. SQLite's locking keeps concurrent writers and a worker killed in the middle of
a write safe; WAL lets the admin process read while a worker writes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATABASE_FILE = "receiver-state.sqlite"
# A worker serves hundreds of connections in one event loop: a write that waits for the lock stalls
# them all, so it waits briefly and then gives up (what is lost is display state, never data).
BUSY_TIMEOUT_SECONDS = 0.2


def connect(path: Path | None) -> sqlite3.Connection:
    """A connection to the database at ``path``, in this process's memory when None."""
    target = str(path) if path is not None else ":memory:"
    connection = sqlite3.connect(
        target, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False, isolation_level=None
    )
    connection.execute("PRAGMA journal_mode=WAL")
    # Runtime state, rebuilt from the next pushes if lost: no need to wait for the disk.
    connection.execute("PRAGMA synchronous=OFF")
    return connection


class StateDatabase:
    """This process's connection to the shared database, opened on first use.

    gunicorn forks its workers after start-up, and an SQLite connection must not cross a fork: each
    process opens its own on first use. ``schema`` (statements separated by ``;``) runs on opening.
    """

    def __init__(self, path: Path | None, schema: str) -> None:
        self.path = path
        self.schema = schema
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = connect(self.path)
            connection.executescript(self.schema)
            self._connection = connection
        return self._connection

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken at once (BEGIN IMMEDIATE) so that it cannot fail half-way on a lock."""
        with self._lock:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        """The rows of one read."""
        with self._lock:
            return self._connect().execute(sql, parameters).fetchall()

    def close(self) -> None:
        """Close this process's connection."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
