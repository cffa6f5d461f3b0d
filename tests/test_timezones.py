"""Daylight-saving changes and zones far from Europe: InfluxDB keeps exactly the UTC times the device sent.

A Stockholm counter's local clock runs 02:00-03:00 twice on 2021-10-31 (the change is at 01:00 UTC) and
skips 02:00-03:00 on 2021-03-28; Los Angeles repeats 01:00-02:00 on 2021-11-07 (09:00 UTC). One push
spans each change; every minute must be stored under its own utcFrom, none lost or merged.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from exporter.influxd_bridge import LocalInflux
from exporter.simulator import (
    HttpTransport,
    PushResult,
    SensorIdentity,
    SimulationConfig,
    TrafficProfile,
    run_simulation,
)
from tests.faultkit import assert_influx_matches_delivered, describe, stored_points
from tests.serveprocess import ExporterFactory

UTC = dt.UTC
# Open around the clock, so that the repeated night hour has people in it and a merge would show.
ALWAYS_OPEN = TrafficProfile(opening_hours=((0, 24 * 60),) * 7, null_share=0.0)
SENSORS = [
    SensorIdentity("entrance-stockholm", "ACCC8E0000A1", "Europe/Stockholm", "3d", "10.0.0.1"),
    SensorIdentity("entrance-los-angeles", "ACCC8E0000A2", "America/Los_Angeles", "2d", "10.0.0.2"),
    SensorIdentity("entrance-tokyo", "ACCC8E0000A3", "Asia/Tokyo", "3d", "10.0.0.3"),
    SensorIdentity("entrance-kathmandu", "ACCC8E0000A4", "Asia/Kathmandu", "2d", "10.0.0.4"),  # UTC+05:45
]


class RecordingTransport:
    """Delivers over HTTP and keeps every body sent, to compare InfluxDB with the exact bytes pushed."""

    def __init__(self, transport: HttpTransport) -> None:
        """Wrap `transport`."""
        self.transport = transport
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def push(self, body: bytes) -> PushResult:
        """Record, then deliver."""
        with self._lock:
            self.bodies.append(orjson.loads(body))
        return self.transport.push(body)

    def close(self) -> None:
        """Close the wrapped transport."""
        self.transport.close()


@dataclass(frozen=True)
class Change:
    """A window of four hours with a clock change of `zone` in it."""

    name: str
    window_end: dt.datetime
    zone: str
    local_repeats: int  # minutes whose local time appears twice in the window (negative: skipped)


CHANGES = [
    # The change is two hours before the end of each window.
    Change("eu-autumn", dt.datetime(2021, 10, 31, 3, 0, tzinfo=UTC), "Europe/Stockholm", 60),
    Change("eu-spring", dt.datetime(2021, 3, 28, 3, 0, tzinfo=UTC), "Europe/Stockholm", -60),
    Change("us-autumn", dt.datetime(2021, 11, 7, 11, 0, tzinfo=UTC), "America/Los_Angeles", 60),
]


@pytest.mark.parametrize("change", CHANGES, ids=[change.name for change in CHANGES])
def test_push_spanning_a_clock_change_is_stored_at_the_utc_times_sent(
    change: Change, exporter_server: ExporterFactory, influx: LocalInflux, bucket: str
) -> None:
    server = exporter_server(workers=1)
    config = SimulationConfig(
        url=f"{server.url}/push",
        sensors=SENSORS,
        interval_minutes=15,
        fast=True,
        start=change.window_end,
        backfill=dt.timedelta(hours=4),  # the history goes out in one push per sensor, across the change
        seed=31,
        traffic=ALWAYS_OPEN,
        retry_delay=0.1,
        drain=10.0,
        timeout=10.0,
    )
    recorder = RecordingTransport(HttpTransport(config.url, timeout=config.timeout))
    try:
        summary = run_simulation(config, transport=recorder)
    finally:
        recorder.close()
    assert summary.complete and summary.retries == 0, describe(summary)

    data_pushes = [body for body in recorder.bodies if "data" in body]
    assert len(data_pushes) == len(SENSORS), f"expected one push per sensor, got {len(data_pushes)}"
    sent: dict[tuple[str, int, str], int] = {}
    for body in data_pushes:
        serial, zone = body["sensor"]["serial"], body["sensor"]["timeZone"]
        measurements = body["data"]["measurements"]
        assert len(measurements) == 240, f"{serial}: the push should hold 4 h of minutes"
        local_counts = Counter(m["localFrom"] for m in measurements)
        repeated = sum(1 for count in local_counts.values() if count > 1)
        if zone == change.zone and change.local_repeats > 0:
            assert repeated == change.local_repeats, (
                f"{serial}: the push should repeat {change.local_repeats} local minutes, repeats {repeated}"
            )
        elif zone == change.zone:
            first = dt.datetime.fromisoformat(measurements[0]["localFrom"])
            last = dt.datetime.fromisoformat(measurements[-1]["localFrom"])
            span = (last - first).total_seconds() / 60 + 1
            assert span == 240 - change.local_repeats, f"{serial}: local time should skip an hour"
        else:
            assert repeated == 0, f"{serial} in {zone} has no clock change here but repeats local minutes"
        for measurement in measurements:
            moment = int(dt.datetime.fromisoformat(measurement["utcFrom"]).timestamp())
            for item in measurement["items"]:
                sent[(serial, moment, item["direction"])] = item["count"]

    changed = next(identity.serial for identity in SENSORS if identity.time_zone == change.zone)
    change_at = int((change.window_end - dt.timedelta(hours=2)).timestamp())
    around = [
        count
        for (serial, moment, _), count in sent.items()
        if serial == changed and change_at - 3600 <= moment < change_at + 3600
    ]
    assert sum(around) > 0, "nobody was counted around the change, so a merge of minutes would not show"

    points = stored_points(influx, bucket)
    stored = {key: int(row["count"]) for key, row in points.items()}
    assert len(sent) == len(SENSORS) * 240 * 2, "each minute of each sensor has an in and an out item"
    missing = sorted(set(sent) - set(stored))
    extra = sorted(set(stored) - set(sent))
    assert not missing and not extra, (
        f"InfluxDB times differ from the utcFrom sent: {len(missing)} missing (first {missing[:3]}), "
        f"{len(extra)} not sent (first {extra[:3]})"
    )
    wrong = {key: (stored[key], count) for key, count in sent.items() if stored[key] != count}
    assert not wrong, f"(stored, sent) counts differ at {dict(list(wrong.items())[:3])}"
    window_start = int((change.window_end - dt.timedelta(hours=4)).timestamp())
    for identity in SENSORS:
        times = sorted({moment for serial, moment, _ in stored if serial == identity.serial})
        assert times == list(range(window_start, int(change.window_end.timestamp()), 60)), (
            f"{identity.serial} ({identity.time_zone}): stored minutes are not the continuous UTC window"
        )
    assert_influx_matches_delivered(influx, bucket, summary, config)

    pushes = influx.query(bucket, 'SELECT "timezone", "test" FROM sensor_push GROUP BY "serial"')
    zones = {row["serial"]: row["timezone"] for row in pushes}
    assert zones == {identity.serial: identity.time_zone for identity in SENSORS}, (
        f"sensor_push time zones {zones} are not the ones the sensors reported"
    )
