"""The receiver's shared runtime database: one SQLite file that every process of one ``serve`` opens.

Workers write to it after pushes (the sensor registry, the push log) and the admin process reads it for
scrapes and the status page. It lives in the private runtime directory that ``serve`` makes (the
multiprocess metrics directory) and starts empty with each ``serve``: it is state, not data, and the
next pushes rebuild it. SQLite's locking keeps concurrent writers and a worker killed in the middle of
a write safe; WAL lets the admin process read while a worker writes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
