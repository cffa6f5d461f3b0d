"""The last few hundred pushes, whatever their answer, across all workers: what the status page lists.

A camera that is set up wrong shows up here (401 wrong token, 403 token for another serial, 400 and its
reason, 503 and its cause) where its own web page only says that the push failed. The log is a table of
the shared runtime database (``statedb``), cut to ``keep`` rows on every write, so it stays bounded
whatever the traffic. Writing it never fails a push: the row is written after the answer was sent, and
a row that cannot be written (the database busy past its short timeout) is skipped.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from exporter import statedb

log = logging.getLogger(__name__)

DEFAULT_KEEP = 500
# What the page shows of a message: a 400's reason is one sentence, anything longer is cut.
MAX_MESSAGE_CHARS = 300

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pushes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    source_address TEXT NOT NULL,
    serial TEXT NOT NULL,
    status INTEGER NOT NULL,
    result TEXT NOT NULL,
    intervals INTEGER NOT NULL,
    points INTEGER NOT NULL,
    message TEXT NOT NULL
)
"""
_INSERT = """
INSERT INTO pushes (received_at, source_address, serial, status, result, intervals, points, message)
VALUES (:received_at, :source_address, :serial, :status, :result, :intervals, :points, :message)
"""


@dataclass(frozen=True)
class PushRecord:
    """One push as the status page shows it; ``serial`` is empty when the body could not be parsed."""

    received_at: float
    source_address: str
    serial: str
    status: int
    result: str
    intervals: int
    points: int
    message: str

    def as_dict(self) -> dict[str, Any]:
        """For JSON."""
        return asdict(self)


class PushLog:
    """The bounded push log in SQLite: ``path`` None keeps it in this process's memory."""

    def __init__(self, path: Path | None, keep: int = DEFAULT_KEEP) -> None:
        self.path = path
        self.keep = keep
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        # Opened on first use, so that each process (gunicorn forks after start-up) has its own.
        if self._connection is None:
            connection = statedb.connect(self.path)
            connection.execute(_SCHEMA)
            self._connection = connection
        return self._connection

    def record(self, push: PushRecord) -> None:
        """Add ``push`` and drop what is beyond the newest ``keep``; never raises for the database."""
        row = asdict(push)
        row["message"] = push.message[:MAX_MESSAGE_CHARS]
        try:
            with self._lock:
                connection = self._connect()
                connection.execute("BEGIN IMMEDIATE")
                try:
                    cursor = connection.execute(_INSERT, row)
                    oldest_kept = (cursor.lastrowid or 0) - self.keep + 1
                    connection.execute("DELETE FROM pushes WHERE id < ?", (oldest_kept,))
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            log.debug("push from %s not logged for the status page: %s", push.source_address, exc)

    def recent(self, limit: int | None = None) -> list[PushRecord]:
        """The newest pushes first (by arrival: two workers may finish in the other order), at most
        ``limit`` (default all that are kept)."""
        with self._lock:
            rows = (
                self._connect()
                .execute(
                    "SELECT received_at, source_address, serial, status, result, intervals, points, message "
                    "FROM pushes ORDER BY received_at DESC, id DESC LIMIT ?",
                    (limit if limit is not None else self.keep,),
                )
                .fetchall()
            )
        return [PushRecord(*row) for row in rows]

    def close(self) -> None:
        """Close this process's connection."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
