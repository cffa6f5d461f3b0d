"""The admin listener's status page and /api/status after a commissioning session (tests.statuskit):
real serve with two workers over HTTPS, real InfluxDB, traffic from the simulator and hand-made pushes."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import requests

from exporter.status import local_midnight, sensor_state
from tests.statuskit import (
    LATE_SERIAL,
    MIDNIGHT_SENSORS,
    NEVER_SEEN_SERIAL,
    SILENT_SERIAL,
    SIMULATED,
    SIMULATED_ZONES,
    SITES,
    TODAY_IN,
    TODAY_OUT,
    Commissioned,
)


def rows(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Sensor rows by serial."""
    return {row["serial"]: row for row in status["sensors"]}


def test_every_sensor_has_a_row_in_its_state(commissioned: Commissioned) -> None:
    sensors = rows(commissioned.status())
    expected = {
        **dict.fromkeys(SIMULATED, "receiving"),
        **{serial: "receiving" for _, serial, _ in MIDNIGHT_SENSORS},
        SILENT_SERIAL: "silent",
        LATE_SERIAL: "late",
        NEVER_SEEN_SERIAL: "not seen since start",
    }
    assert {serial: row["state"] for serial, row in sensors.items()} == expected
    first = sensors[SIMULATED[0]]
    assert first["name"] == "axis-accc8e000001"
    assert first["reported_address"] == "192.168.1.101", "the address the camera reports"
    assert first["source_address"] == "127.0.0.1", "the address it pushed from"
    assert first["application"] and first["application_version"]
    assert first["timezone"] == SIMULATED_ZONES[0]
    assert first["push_interval_seconds"] == 300
    assert first["last_push_age_seconds"] < 120
    assert first["last_push_local"].endswith(("CET", "CEST")), first["last_push_local"]


def test_sites_and_zones_come_from_the_sensors_file_and_the_rest_is_unassigned(
    commissioned: Commissioned,
) -> None:
    status = commissioned.status()
    sensors = rows(status)
    for serial, (site, zone) in SITES.items():
        assert (sensors[serial]["site"], sensors[serial]["zone"]) == (site, zone)
    assigned = set(SITES)
    assert status["unassigned"] == sorted(set(sensors) - assigned), "listed as unassigned"
    page = requests.get(f"{commissioned.admin_url}/", timeout=10).text
    assert "Store 12 Berlin" in page and "unassigned (not in the sensors file)" in page


def test_today_counts_start_at_each_sensors_own_local_midnight(commissioned: Commissioned) -> None:
    """Tokyo and New York cameras sent 23:59 yesterday, 00:00 and 00:01 today, local time: only the
    last two are today's, whatever the receiver's or the viewer's zone."""
    sensors = rows(commissioned.status())
    for zone, serial, _ in MIDNIGHT_SENSORS:
        row = sensors[serial]
        assert (row["today_in"], row["today_out"]) == (TODAY_IN, TODAY_OUT), f"{serial} in {zone}: {row}"
    for serial, zone in zip(SIMULATED, SIMULATED_ZONES, strict=True):
        midnight = dt.datetime.combine(
            dt.datetime.now(ZoneInfo(zone)).date(), dt.time(), tzinfo=ZoneInfo(zone)
        )
        found = commissioned.influx.query(
            commissioned.bucket,
            f'SELECT sum("count") FROM people_count WHERE "serial" = \'{serial}\' '
            f"AND time >= {int(midnight.timestamp())}s GROUP BY direction",
        )
        by_direction = {row["direction"]: row["sum"] for row in found}
        row = sensors[serial]
        assert (row["today_in"], row["today_out"]) == (by_direction.get("in", 0), by_direction.get("out", 0))


def test_rejected_pushes_are_listed_with_their_reason(commissioned: Commissioned) -> None:
    """A misconfigured camera can be diagnosed from the page alone."""
    answers = commissioned.answers
    assert {name: answer.status_code for name, answer in answers.items()} == {
        "wrong_token": 401,
        "other_serial": 403,
        "malformed": 400,
        "too_large": 413,
        "content_type": 415,
    }
    recent = commissioned.status()["recent_pushes"]
    by_status = {push["status"]: push for push in recent if push["status"] != 200}
    assert set(by_status) >= {401, 403, 400, 413, 415}, [p["status"] for p in recent]
    assert "API token" in by_status[401]["message"] and by_status[401]["serial"] == ""
    assert by_status[403]["serial"] == SIMULATED[0], "the serial is known once the body parsed"
    assert "not allowed" in by_status[403]["message"]
    assert by_status[400]["result"] == "bad_request" and by_status[400]["message"]
    assert "AXIS_EXPORTER_MAX_BODY_BYTES" in by_status[413]["message"]
    assert "application/json" in by_status[415]["message"]
    tests = [push for push in recent if push["result"] == "test_connection"]
    assert {push["serial"] for push in tests} == set(SIMULATED), "each camera's Test connection is listed"
    assert all(push["source_address"] == "127.0.0.1" for push in recent)


def test_a_sensor_row_shows_the_answer_to_its_last_push(commissioned: Commissioned) -> None:
    """Camera 1 last pushed with a token bound to another serial: its row says 403 and why."""
    row = rows(commissioned.status())[SIMULATED[0]]
    assert row["last_status"] == 403 and row["last_result"] == "forbidden", row
    assert SIMULATED[0] in row["last_message"]
    assert rows(commissioned.status())[SIMULATED[2]]["last_status"] == 200


def test_pushes_from_every_worker_are_listed(commissioned: Commissioned) -> None:
    """The push log is shared: it holds as many pushes as the workers' counters say were answered."""
    metrics = requests.get(f"{commissioned.admin_url}/metrics", timeout=10).text
    answered = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("axis_exporter_pushes_total{")
    )
    recent = commissioned.status()["recent_pushes"]
    assert 0 < len(recent) < 200, "this session stays below what the page shows"
    assert len(recent) == answered, f"{len(recent)} pushes listed, {answered} answered"
    times = [push["received_at"] for push in recent]
    assert times == sorted(times, reverse=True), "newest first"


def test_the_receiver_section_and_the_camera_settings(commissioned: Commissioned) -> None:
    status = commissioned.status()
    receiver, camera = status["receiver"], status["camera"]
    assert receiver["tls"] is True and receiver["workers"] == 2
    assert receiver["influxdb_reachable"] is True and receiver["influxdb_bucket"] == commissioned.bucket
    assert receiver["influxdb_url"] == commissioned.influx.url
    assert receiver["deadletter_entries"] >= 1, "the malformed body's sample is kept"
    assert receiver["uptime_seconds"] > 0
    assert camera["url"] == f"{commissioned.url}/push"
    assert camera["ca_fingerprint_sha256"] == commissioned.tls.ca_fingerprint_sha256
    ca = requests.get(f"{commissioned.admin_url}{camera['ca_download']}", timeout=10)
    assert ca.status_code == 200 and ca.content == commissioned.tls.ca_cert.read_bytes()
    assert "2 bound to serials" in camera["token_hint"]


def test_no_secret_is_ever_shown(commissioned: Commissioned) -> None:
    pages = [
        requests.get(f"{commissioned.admin_url}{path}", timeout=10).text
        for path in ("/", "/api/status", "/metrics")
    ]
    for secret in commissioned.secrets:
        assert all(secret not in page for page in pages), f"a secret ({secret[:6]}...) appears on a page"


def test_the_push_listener_does_not_serve_the_status_page(commissioned: Commissioned) -> None:
    verify = str(commissioned.tls.ca_cert)
    landing = requests.get(f"{commissioned.url}/", timeout=10, verify=verify)
    assert landing.headers["Content-Type"].startswith("text/plain")
    assert "status page" in landing.text
    assert NEVER_SEEN_SERIAL not in landing.text and SIMULATED[0] not in landing.text
    assert requests.get(f"{commissioned.url}/api/status", timeout=10, verify=verify).status_code == 404


def test_states_follow_the_missing_push_alerts_thresholds() -> None:
    """3 x the send interval, at least 300 s, 2700 s while unknown (prometheus/alerts.yml)."""
    assert sensor_state(59, 60) == "receiving"
    assert sensor_state(121, 60) == "late"
    assert sensor_state(299, 60) == "late" and sensor_state(301, 60) == "silent"
    assert sensor_state(960, 900) == "receiving" and sensor_state(961, 900) == "late"
    assert sensor_state(2700, 900) == "late" and sensor_state(2701, 900) == "silent"
    assert sensor_state(961, None) == "late" and sensor_state(2701, None) == "silent"


def test_local_midnight_on_a_daylight_saving_day() -> None:
    """1 November 2026, New York falls back at 02:00: the day has 25 hours, and starts at 04:00 UTC."""
    evening = dt.datetime(2026, 11, 1, 23, 30, tzinfo=ZoneInfo("America/New_York")).timestamp()
    midnight, zone = local_midnight("America/New_York", evening)
    assert zone == "America/New_York"
    assert dt.datetime.fromtimestamp(midnight, dt.UTC) == dt.datetime(2026, 11, 1, 4, 0, tzinfo=dt.UTC)
    assert evening - midnight == 24.5 * 3600
    assert local_midnight("Not/AZone", evening)[1] == "UTC"
