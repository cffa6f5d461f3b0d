"""What the receiver knows about each sensor, shared by its processes and keyed by serial.

Per-sensor metrics come from here. A sensor is its serial, the one thing a device token is checked
against: the name is a label that the next push from that serial replaces, so a name cannot add a
sensor, and another camera's name cannot take over its numbers. At most ``max_sensors`` serials are
kept, counted over all workers together, so forged serials cannot grow the scrape without bound.

The rows are a table of the shared runtime database (``statedb``): each worker writes a sensor's row in
one short transaction after a push was stored, and the admin process reads the rows for each scrape and
for the status page. Without a directory (tests, a single process), the database lives in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from exporter import statedb

log = logging.getLogger(__name__)

# Devices send at most every 15 minutes: a push covering more is a re-send after an outage.
MAX_SEND_INTERVAL_SECONDS = 15 * 60
# When a sensor counts as quiet: the missing-push alerts (prometheus/alerts.yml, and Grafana's rule from
# grafana/build_dashboards.py, which imports these) and the status page use the same numbers.
QUIET_FACTOR = 3
QUIET_MIN_SECONDS = 300
QUIET_UNKNOWN_INTERVAL_SECONDS = QUIET_FACTOR * MAX_SEND_INTERVAL_SECONDS


def quiet_threshold(push_interval: int | None) -> int:
    """Seconds without a push after which a sensor counts as quiet (about three missed pushes)."""
    if push_interval is None:
        return QUIET_UNKNOWN_INTERVAL_SECONDS
    return max(QUIET_FACTOR * push_interval, QUIET_MIN_SECONDS)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sensors (
    serial TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    application TEXT NOT NULL,
    application_version TEXT NOT NULL,
    timezone TEXT NOT NULL,
    ip_address TEXT NOT NULL,
    source_address TEXT NOT NULL,
    last_push REAL NOT NULL,
    last_interval_end INTEGER,
    push_interval INTEGER,
    intervals_total INTEGER NOT NULL
)
"""
# Times only move forward: a re-send of older intervals, or pushes stored out of order by two workers,
# never move the last push or the last interval end back.
_UPSERT = """
INSERT INTO sensors (serial, name, application, application_version, timezone, ip_address, source_address,
                     last_push, last_interval_end, push_interval, intervals_total)
VALUES (:serial, :name, :application, :application_version, :timezone, :ip_address, :source_address,
        :last_push, :last_interval_end, :push_interval, :intervals)
ON CONFLICT (serial) DO UPDATE SET
    name = excluded.name,
    application = excluded.application,
    application_version = excluded.application_version,
    timezone = excluded.timezone,
    ip_address = excluded.ip_address,
    source_address = excluded.source_address,
    last_push = max(last_push, excluded.last_push),
    last_interval_end = CASE
        WHEN excluded.last_interval_end IS NULL THEN last_interval_end
        WHEN last_interval_end IS NULL THEN excluded.last_interval_end
        ELSE max(last_interval_end, excluded.last_interval_end) END,
    push_interval = coalesce(excluded.push_interval, push_interval),
    intervals_total = intervals_total + excluded.intervals_total
"""


@dataclass(frozen=True)
class SensorPush:
    """What one stored push tells about its sensor."""

    serial: str
    name: str
    application: str
    application_version: str
    timezone: str
    ip_address: str
    source_address: str
    pushed_at: float
    intervals: int
    span: tuple[int, int] | None  # earliest utcFrom, latest utcTo of the stored intervals


@dataclass(frozen=True)
class SensorState:
    """One sensor as the registry holds it."""

    serial: str
    name: str
    application: str
    application_version: str
    timezone: str
    ip_address: str
    source_address: str
    last_push: float
    last_interval_end: int | None
    push_interval: int | None
    intervals_total: int


class SensorRegistry:
    """Per-sensor state in SQLite: ``path`` None keeps it in this process's memory."""

    def __init__(self, path: Path | None, max_sensors: int) -> None:
        self.path = path
        self.max_sensors = max_sensors
        self._database = statedb.StateDatabase(path, _SCHEMA)

    def record(self, push: SensorPush) -> bool:
        """Keep what ``push`` says about its sensor; False when the sensor is new and the registry full."""
        interval = None
        last_end = None
        if push.span is not None:
            utc_from, last_end = push.span
            if last_end > utc_from:
                # A re-send after an outage spans hours; devices send at most every 15 minutes.
                interval = min(last_end - utc_from, MAX_SEND_INTERVAL_SECONDS)
        row = {
            "serial": push.serial,
            "name": push.name,
            "application": push.application,
            "application_version": push.application_version,
            "timezone": push.timezone,
            "ip_address": push.ip_address,
            "source_address": push.source_address,
            "last_push": push.pushed_at,
            "last_interval_end": last_end,
            "push_interval": interval,
            "intervals": push.intervals,
        }
        with self._database.transaction() as connection:
            known = connection.execute("SELECT 1 FROM sensors WHERE serial = ?", (push.serial,)).fetchone()
            if known is None:
                (count,) = connection.execute("SELECT count(*) FROM sensors").fetchone()
                if count >= self.max_sensors:
                    return False
            connection.execute(_UPSERT, row)
        return True

    def sensors(self) -> list[SensorState]:
        """Every sensor, by serial."""
        return [SensorState(*row) for row in self._database.query("SELECT * FROM sensors ORDER BY serial")]

    def close(self) -> None:
        """Close this process's connection."""
        self._database.close()
