"""`axis-exporter relabel` against the real InfluxDB: a moved sensor's history under its new site, history
from before the calendar fields upgraded, nothing counted twice, and a second run that changes nothing."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from exporter.app import create_app
from exporter.influxd_bridge import LocalInflux
from tests.support import make_config, payload

SERIAL = "ACCC8E0000C1"
OLD_SERIAL = "ACCC8E0000C2"
DAY0 = int(dt.datetime(2026, 10, 5, tzinfo=dt.UTC).timestamp())


def sensors_file(path: Path, site: str) -> Path:
    path.write_text(f"sensors:\n  {SERIAL}:\n    site: {site}\n    zone: Door\n", encoding="utf-8")
    return path


def two_days(serial: str) -> list[dict[str, Any]]:
    """Two pushes of a day each of 15-minute intervals, 3 in and 1 out each."""
    pushes = []
    for day in range(2):
        document = payload("sample-3d-object-data")
        document["sensor"].update(serial=serial, timeZone="Europe/Stockholm")
        measurements = []
        for start in range(DAY0 + day * 86400, DAY0 + (day + 1) * 86400, 900):
            measurements.append(
                {
                    "kind": "people-counts",
                    "utcFrom": f"{dt.datetime.fromtimestamp(start, dt.UTC):%Y-%m-%dT%H:%M:%SZ}",
                    "utcTo": f"{dt.datetime.fromtimestamp(start + 900, dt.UTC):%Y-%m-%dT%H:%M:%SZ}",
                    "items": [{"direction": "in", "count": 3}, {"direction": "out", "count": 1}],
                }
            )
        document["data"] = {"measurements": measurements}
        sent = DAY0 + (day + 1) * 86400 - 60  # within the day: relabel takes it with the day's counts
        document["utcSent"] = f"{dt.datetime.fromtimestamp(sent, dt.UTC):%Y-%m-%dT%H:%M:%SZ}"
        pushes.append(document)
    return pushes


def relabel(influx: LocalInflux, bucket: str, labels: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AXIS_EXPORTER_", "INFLUXDB_V2_"))},
        "INFLUXDB_V2_URL": influx.url,
        "INFLUXDB_V2_ORG": "-",
        "INFLUXDB_V2_TOKEN": influx.token,
        "INFLUXDB_V2_BUCKET": bucket,
        "AXIS_EXPORTER_SENSORS_FILE": str(labels),
    }
    return subprocess.run(
        [sys.executable, "-m", "exporter", "relabel", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def by_site(influx: LocalInflux, bucket: str, serial: str) -> dict[str, tuple[int, int]]:
    """(sum of count, number of points) per site tag of the serial's people_count."""
    rows = influx.query(
        bucket,
        f'SELECT sum("count"), count("count") FROM people_count WHERE serial = \'{serial}\' GROUP BY site',
    )
    return {row["site"]: (row["sum"], row["count"]) for row in rows}


def test_a_moved_sensors_history_goes_to_its_new_site_once(
    influx: LocalInflux, bucket: str, tmp_path: Path
) -> None:
    labels = sensors_file(tmp_path / "sensors.yml", "Old Store")
    client = create_app(make_config(influx, bucket, tmp_path, sensors_file=labels)).test_client()
    for document in two_days(SERIAL):
        assert (
            client.post("/push", data=orjson.dumps(document), content_type="application/json").status_code
            == 200
        )
    before = by_site(influx, bucket, SERIAL)
    assert before == {"Old Store": (2 * 96 * 4, 2 * 2 * 96)}

    sensors_file(labels, "New Store")
    dry = relabel(
        influx, bucket, labels, SERIAL, "--since", "2026-10-05", "--until", "2026-10-07", "--dry-run"
    )
    assert dry.returncode == 0, dry.stderr
    assert "would rewrite 386 points in 2 days" in dry.stdout, dry.stdout  # 384 counts + 2 sensor_push
    assert by_site(influx, bucket, SERIAL) == before, "a dry run changes nothing"

    done = relabel(influx, bucket, labels, SERIAL, "--since", "2026-10-05", "--until", "2026-10-07")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rewrote 386 points in 2 days" in done.stdout, done.stdout
    assert by_site(influx, bucket, SERIAL) == {"New Store": before["Old Store"]}, "every count once, new site"
    pushes = influx.query(
        bucket, f"SELECT count(\"intervals\") FROM sensor_push WHERE serial = '{SERIAL}' GROUP BY site"
    )
    assert {row["site"]: row["count"] for row in pushes} == {"New Store": 2}

    again = relabel(influx, bucket, labels, SERIAL, "--since", "2026-10-05", "--until", "2026-10-07")
    assert again.returncode == 0 and "rewrote 0 points" in again.stdout, again.stdout


def test_history_from_before_the_calendar_fields_gets_them(
    influx: LocalInflux, bucket: str, tmp_path: Path
) -> None:
    """Points written by an older receiver: no tz tag, no day/hour fields; the sensor was in Tokyo."""
    start = DAY0 + 15 * 3600  # 00:00 in Tokyo the next day
    lines = [
        f"people_count,direction=in,kind=people-counts,sensor=old,serial={OLD_SERIAL} count=4i {start}",
        f"people_count,direction=out,kind=people-counts,sensor=old,serial={OLD_SERIAL} count=1i {start}",
        f'sensor_push,sensor=old,serial={OLD_SERIAL} intervals=1i,timezone="Asia/Tokyo" {start + 60}',
    ]
    request = urllib.request.Request(
        f"{influx.url}/api/v2/write?bucket={bucket}&precision=s",
        data="\n".join(lines).encode(),
        headers={"Authorization": f"Token {influx.token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10):
        pass
    labels = sensors_file(tmp_path / "sensors.yml", "Somewhere")  # OLD_SERIAL is not in it
    done = relabel(influx, bucket, labels, OLD_SERIAL, "--since", "2026-10-05", "--until", "2026-10-07")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = influx.query(bucket, f"SELECT * FROM people_count WHERE serial = '{OLD_SERIAL}'")
    assert len(rows) == 2, rows
    tokyo = dt.datetime.fromtimestamp(start, ZoneInfo("Asia/Tokyo"))
    for row in rows:
        assert row["tz"] == "Asia/Tokyo"
        next_midnight = dt.datetime.combine(tokyo.date() + dt.timedelta(days=1), dt.time(), tokyo.tzinfo)
        assert (row["day_end"], row["hour"], row["weekday"]) == (
            int(next_midnight.timestamp()),
            tokyo.hour,
            tokyo.isoweekday(),
        )
        assert row["net"] == (4 if row["direction"] == "in" else -1)
        assert row.get("site") is None, "unassigned stays without a site"
