"""The last few hundred pushes, whatever their answer, across all workers: what the status page lists.

A camera that is set up wrong shows up here (401 wrong token, 403 token for another serial, 400 and its
reason, 503 and its cause) where its own web page only says that the push failed. Two tables of the
shared runtime database (``statedb``) hold it: ``pushes``, cut to the newest ``keep`` rows, and
``latest_answers``, each serial's newest answer (so a sensor's row shows it however busy the receiver
is), cut to the ``keep_serials`` most recent serials. Both stay bounded whatever the traffic.

Writing it never slows a push: ``record`` only appends to this process's buffer, and the buffer is
written in one transaction every ``flush_seconds`` (a worker's event loop would otherwise take the
database lock for every push). A worker that is killed loses at most that much of the log; a database
that is busy past its short timeout keeps the rows for the next flush.
"""

from __future__ import annotations

import atexit
import logging
import sqlite3
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from exporter import statedb

log = logging.getLogger(__name__)

DEFAULT_KEEP = 500
DEFAULT_KEEP_SERIALS = 10_000
DEFAULT_FLUSH_SECONDS = 0.25
# What the page shows of a message: a 400's reason is one sentence, anything longer is cut.
MAX_MESSAGE_CHARS = 300

_COLUMNS = "received_at, source_address, serial, status, result, intervals, points, message"
_SCHEMA = f"""
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
);
CREATE TABLE IF NOT EXISTS latest_answers (
    serial TEXT PRIMARY KEY,
    {_COLUMNS.replace(", serial", "")}
);
"""
_INSERT = f"INSERT INTO pushes ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
# Two workers may write one serial's answers out of order: the newer one wins.
_LATEST = f"""
INSERT INTO latest_answers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (serial) DO UPDATE SET
    received_at = excluded.received_at, source_address = excluded.source_address,
    status = excluded.status, result = excluded.result, intervals = excluded.intervals,
    points = excluded.points, message = excluded.message
WHERE excluded.received_at >= latest_answers.received_at
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

    def row(self) -> tuple[Any, ...]:
        """The values in the tables' column order, the message cut."""
        return (
            self.received_at,
            self.source_address,
            self.serial,
            self.status,
            self.result,
            self.intervals,
            self.points,
            self.message[:MAX_MESSAGE_CHARS],
        )


class PushLog:
    """The bounded push log in SQLite: ``path`` None keeps it in this process's memory."""

    def __init__(
        self,
        path: Path | None,
        keep: int = DEFAULT_KEEP,
        *,
        keep_serials: int = DEFAULT_KEEP_SERIALS,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
    ) -> None:
        self.path = path
        self.keep = keep
        self.keep_serials = keep_serials
        self.flush_seconds = flush_seconds
        self._database = statedb.StateDatabase(path, _SCHEMA)
        self._pending: list[PushRecord] = []
        self._pending_lock = threading.Lock()
        self._timer: threading.Timer | None = None
        atexit.register(self.flush)  # a worker leaving normally writes what it still holds

    def record(self, push: PushRecord) -> None:
        """Queue ``push``; it is written within ``flush_seconds``."""
        with self._pending_lock:
            self._pending.append(push)
            del self._pending[: -self.keep]  # a database busy for long cannot grow the buffer
            if self._timer is None:
                # Under gevent (the workers) threading is patched: the timer is a greenlet.
                self._timer = threading.Timer(self.flush_seconds, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Write the queued pushes in one transaction; on a database error keep them for the next try."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
            self._timer = None
        if not pending:
            return
        rows = [push.row() for push in pending]
        try:
            with self._database.transaction() as connection:
                connection.executemany(_INSERT, rows)
                (newest,) = connection.execute("SELECT max(id) FROM pushes").fetchone()
                connection.execute("DELETE FROM pushes WHERE id <= ?", (newest - self.keep,))
                connection.executemany(_LATEST, [row for row in rows if row[2]])
                (serials,) = connection.execute("SELECT count(*) FROM latest_answers").fetchone()
                if serials > self.keep_serials:
                    connection.execute(
                        "DELETE FROM latest_answers WHERE serial NOT IN "
                        "(SELECT serial FROM latest_answers ORDER BY received_at DESC LIMIT ?)",
                        (self.keep_serials,),
                    )
        except sqlite3.Error as exc:
            log.debug("%d pushes not yet in the status page's log: %s", len(pending), exc)
            with self._pending_lock:
                self._pending[:0] = pending
                del self._pending[: -self.keep]

    def recent(self, limit: int | None = None) -> list[PushRecord]:
        """The newest pushes first (by arrival: two workers may finish in the other order), at most
        ``limit`` (default all that are kept)."""
        rows = self._database.query(
            f"SELECT {_COLUMNS} FROM pushes ORDER BY received_at DESC, id DESC LIMIT ?",
            (limit if limit is not None else self.keep,),
        )
        return [PushRecord(*row) for row in rows]

    def latest_answers(self) -> dict[str, PushRecord]:
        """Each serial's newest answer."""
        rows = self._database.query(f"SELECT {_COLUMNS} FROM latest_answers")
        return {row[2]: PushRecord(*row) for row in rows}

    def close(self) -> None:
        """Write what is queued and close this process's connection."""
        if self._timer is not None:
            self._timer.cancel()
        self.flush()
        self._database.close()
