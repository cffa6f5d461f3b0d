"""Every InfluxQL query of the dashboards runs against the real InfluxDB holding known pushes, and the key
panels (today's totals, people inside now, the per-sensor table) show the expected numbers.

Pushes go through the real receiver (Flask app, real writer) into the test harness's InfluxDB, so the
queries read exactly what production writes. Grafana's macros and variables are substituted the way
Grafana's InfluxDB data source does it (multi-value variables become an escaped regex alternation).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from flask.testing import FlaskClient

from exporter.app import create_app
from exporter.localdb import LocalInflux, LocalInfluxError
from tests.support import make_config

ROOT = Path(__file__).resolve().parent.parent
PEOPLE = ROOT / "grafana" / "dashboards" / "people-counting.json"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
TZ = "Europe/Stockholm"
SLOT = 15 * 60
DAYS_OF_DATA = 15


@dataclass(frozen=True)
class Sensor:
    """A simulated people counter."""

    name: str
    serial: str
    ip: str
    stops_before_today: bool = False


SENSORS = (
    Sensor("entrance-north", "ACCC8E000001", "10.1.0.11"),
    Sensor("Back door", "ACCC8E000002", "10.1.0.12"),  # a space and capitals: exercises the regex escaping
    Sensor("side.gate", "ACCC8E000003", "10.1.0.13", stops_before_today=True),  # quiet since yesterday noon
)


@dataclass(frozen=True)
class Point:
    """One stored count, as the receiver writes it (time = the measurement's utcFrom)."""

    sensor: str
    time: int
    direction: str
    count: int


@dataclass
class Dataset:
    """What was pushed, and the clock the test reads the dashboards at."""

    database: str
    now: int
    local_midnight: int
    points: list[Point]
    last_push: dict[str, int]

    def total(
        self, direction: str, start: int, end: int | None = None, sensors: set[str] | None = None
    ) -> int:
        """Sum of counts with start <= time (<= end) for the sensors."""
        return sum(
            p.count
            for p in self.points
            if p.direction == direction
            and p.time >= start
            and (end is None or p.time <= end)
            and (sensors is None or p.sensor in sensors)
        )


def iso(seconds: int, zone: ZoneInfo | None = None) -> str:
    """ISO 8601 as the device writes it: ...Z in UTC, naive local time otherwise."""
    if zone is None:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return datetime.fromtimestamp(seconds, zone).strftime("%Y-%m-%dT%H:%M:%S")


def counts_for(index: int, slot: int) -> tuple[int, int]:
    """Deterministic, varying in/out counts of sensor ``index`` in 15-minute slot ``slot``."""
    return 1 + (slot * 7 + index * 3) % 6, 1 + (slot * 5 + index) % 5


def make_pushes(now: int, local_midnight: int) -> tuple[list[dict[str, Any]], list[Point], dict[str, int]]:
    """Axis pushes of 15-minute measurements over the last DAYS_OF_DATA days, one push per day of data."""
    zone = ZoneInfo(TZ)
    first = (now - DAYS_OF_DATA * 86400) // SLOT * SLOT
    pushes: list[dict[str, Any]] = []
    points: list[Point] = []
    last_push: dict[str, int] = {}
    for index, sensor in enumerate(SENSORS):
        end = local_midnight - 12 * 3600 if sensor.stops_before_today else now - 60
        starts = list(range(first, end - SLOT + 1, SLOT))
        for chunk in (starts[i : i + 96] for i in range(0, len(starts), 96)):
            measurements = []
            for start in chunk:
                count_in, count_out = counts_for(index, start // SLOT)
                points += [
                    Point(sensor.name, start, "in", count_in),
                    Point(sensor.name, start, "out", count_out),
                ]
                measurements.append(
                    {
                        "kind": "people-counts",
                        "utcFrom": iso(start),
                        "utcTo": iso(start + SLOT),
                        "localFrom": iso(start, zone),
                        "localTo": iso(start + SLOT, zone),
                        "items": [
                            {"direction": "in", "count": count_in},
                            {"direction": "out", "count": count_out},
                        ],
                    }
                )
            sent = chunk[-1] + SLOT + 7
            last_push[sensor.name] = sent
            pushes.append(
                {
                    "apiName": "Axis Retail Data",
                    "apiVersion": "0.4",
                    "utcSent": iso(sent),
                    "localSent": iso(sent, zone),
                    "data": {
                        "utcFrom": iso(chunk[0]),
                        "utcTo": iso(chunk[-1] + SLOT),
                        "localFrom": iso(chunk[0], zone),
                        "localTo": iso(chunk[-1] + SLOT, zone),
                        "measurements": measurements,
                    },
                    "sensor": {
                        "application": "AXIS People Counter",
                        "applicationVersion": "2.3.1",
                        "timeZone": TZ,
                        "name": sensor.name,
                        "serial": sensor.serial,
                        "ipAddress": sensor.ip,
                    },
                }
            )
    return pushes, points, last_push


@pytest.fixture(scope="module")
def dataset(influx: LocalInflux, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """A database filled with DAYS_OF_DATA days of pushes from three sensors, through the real receiver."""
    database = f"g_{uuid.uuid4().hex[:12]}"
    influx.create_database(database)
    client: FlaskClient = create_app(
        make_config(influx, database, tmp_path_factory.mktemp("grafana"))
    ).test_client()
    now = int(time.time())
    local_midnight = int(
        datetime.fromtimestamp(now, ZoneInfo(TZ))
        .replace(hour=0, minute=0, second=0, microsecond=0)
        .timestamp()
    )
    pushes, points, last_push = make_pushes(now, local_midnight)
    for document in pushes:
        response = client.post(
            "/push", data=orjson.dumps(document), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 200, response.json
        assert response.json is not None and response.json["rejected"] == 0
    return Dataset(database, now, local_midnight, points, last_push)


# --- Grafana's side: variables, macros and the panels' queries ---------------------------------------
def regex_escape(value: str) -> str:
    """Escape a variable value for a /regex/ the way Grafana's InfluxDB data source does."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/-]", lambda m: "\\" + m.group(0), value)


@dataclass(frozen=True)
class View:
    """The dashboard's state: time range (unix ms) and variable values."""

    start_ms: int
    end_ms: int
    tz: str = TZ
    interval: str = "1h"
    sensors: tuple[str, ...] | None = None  # serials; None: "All"

    def interpolate(self, query: str) -> str:
        """The query with macros and variables replaced as Grafana would send it."""
        sensor = ".*" if self.sensors is None else "(" + "|".join(map(regex_escape, self.sensors)) + ")"
        replacements = {
            "$timeFilter": f"time >= {self.start_ms}ms and time <= {self.end_ms}ms",
            "${__from}": str(self.start_ms),
            "${__to}": str(self.end_ms),
            "$interval": self.interval,
            "$sensor": sensor,
            "$tz": self.tz,
        }
        for name, value in replacements.items():
            query = query.replace(name, value)
        assert "$" not in query.replace("$/", ""), f"unsubstituted variable in {query}"
        return query


def default_view(data: Dataset) -> View:
    """The dashboard's default: the last 7 days, all sensors."""
    return View(start_ms=(data.now - 7 * 86400) * 1000, end_ms=data.now * 1000)


def panels() -> dict[str, dict[str, Any]]:
    """People-counting panels by title."""
    return {panel["title"]: panel for panel in json.loads(PEOPLE.read_text(encoding="utf-8"))["panels"]}


def target(title: str, ref: str) -> str:
    """The InfluxQL of query ``ref`` of panel ``title``."""
    (found,) = [t for t in panels()[title]["targets"] if t["refId"] == ref]
    query: str = found["query"]
    return query


def variable(name: str) -> dict[str, Any]:
    """A people-counting template variable."""
    for candidate in json.loads(PEOPLE.read_text(encoding="utf-8"))["templating"]["list"]:
        if candidate["name"] == name:
            found: dict[str, Any] = candidate
            return found
    raise AssertionError(f"no variable {name}")


def influxql_queries() -> Iterator[tuple[str, str]]:
    """(id, query) of every InfluxQL target and InfluxDB variable query in every dashboard."""
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            for item in panel.get("targets", []):
                if item["datasource"]["type"] == "influxdb":
                    yield f"{path.stem}:{panel['title']}:{item['refId']}", item["query"]
        for var in dashboard["templating"]["list"]:
            if var["type"] == "query" and var["datasource"]["type"] == "influxdb":
                yield f"{path.stem}:${var['name']}", var["query"]


QUERIES = dict(influxql_queries())


def run(influx: LocalInflux, data: Dataset, query: str, view: View) -> list[dict[str, Any]]:
    """Rows of the interpolated query against the test database."""
    return influx.query(data.database, view.interpolate(query))


def last_by(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """The last row (by time) of each value of tag ``key``."""
    result: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["time"]):
        result[row[key]] = row
    return result


# --- tests ---------------------------------------------------------------------------------------------
def test_queries_were_found() -> None:
    assert len(QUERIES) >= 10
    assert "people-counting:$sensor" in QUERIES and "people-counting:$tz" in QUERIES


@pytest.mark.parametrize("query", QUERIES.values(), ids=QUERIES.keys())
def test_every_influxql_query_runs_and_returns_rows(
    influx: LocalInflux, dataset: Dataset, query: str
) -> None:
    rows = run(influx, dataset, query, default_view(dataset))
    assert rows, f"no rows for {query}"


def test_sensor_and_time_zone_variables_list_what_the_sensors_report(
    influx: LocalInflux, dataset: Dataset
) -> None:
    sensor = variable("sensor")
    rows = run(influx, dataset, sensor["query"], default_view(dataset))
    # Grafana takes the SELECTed field as the option, then the variable's regex (JavaScript named groups)
    # splits it into what the list shows (text) and what the queries get (value).
    regex = re.compile(sensor["regex"].strip("/").replace("(?<", "(?P<"))
    options = {m["value"]: m["text"] for m in (regex.fullmatch(row["last"]) for row in rows) if m}
    assert options == {s.serial: f"{s.name} ({s.serial})" for s in SENSORS}, rows
    zones = run(influx, dataset, variable("tz")["query"], default_view(dataset))
    # Grafana takes the value after the time column of a SELECT used as variable query.
    assert {row["last"] for row in zones} == {TZ}
    assert len(zones) == len(SENSORS)


def test_today_is_the_sensors_local_day(influx: LocalInflux, dataset: Dataset) -> None:
    rows = run(influx, dataset, target("Today", "A"), default_view(dataset))
    today = last_by(rows, "direction")
    assert set(today) == {"in", "out"}
    for direction, row in today.items():
        assert row["time"] == dataset.local_midnight, "the last bucket starts at local midnight"
        assert row["sum"] == dataset.total(direction, dataset.local_midnight)
    assert today["in"]["sum"] > 0


def test_people_inside_now_is_in_minus_out_since_local_midnight(
    influx: LocalInflux, dataset: Dataset
) -> None:
    view = default_view(dataset)
    panel = panels()["People inside now"]
    (math,) = [t for t in panel["targets"] if t["datasource"]["type"] == "__expr__"]
    assert math["expression"] == "$IN - $OUT"
    series = {ref: run(influx, dataset, target("People inside now", ref), view) for ref in ("IN", "OUT")}
    # Grafana's math expression joins the two series on time and subtracts; the stat shows the last value.
    outs = {row["time"]: row["sum"] for row in series["OUT"]}
    inside = [(row["time"], row["sum"] - outs[row["time"]]) for row in series["IN"]]
    last_time, last_value = max(inside)
    assert last_time == dataset.local_midnight
    expected = dataset.total("in", dataset.local_midnight) - dataset.total("out", dataset.local_midnight)
    assert last_value == expected


def test_sensor_table_shows_today_per_sensor_and_the_last_push(influx: LocalInflux, dataset: Dataset) -> None:
    view = default_view(dataset)
    title = "Sensors today"
    # One row per serial (the panel's merge joins the three on it); the name comes with the last push.
    ins = {row["serial"]: row["in_today"] for row in run(influx, dataset, target(title, "IN"), view)}
    outs = {row["serial"]: row["out_today"] for row in run(influx, dataset, target(title, "OUT"), view)}
    pushes = {row["serial"]: row for row in run(influx, dataset, target(title, "PUSH"), view)}
    assert set(ins) == set(outs) == set(pushes) == {s.serial for s in SENSORS}
    for sensor in SENSORS:
        expect_in = dataset.total("in", dataset.local_midnight, sensors={sensor.name})
        expect_out = dataset.total("out", dataset.local_midnight, sensors={sensor.name})
        assert (ins[sensor.serial], outs[sensor.serial]) == (expect_in, expect_out), sensor.name
        assert pushes[sensor.serial]["time"] == dataset.last_push[sensor.name]
        assert pushes[sensor.serial]["ip_address"] == sensor.ip
        assert pushes[sensor.serial]["sensor"] == f"{sensor.name} ({sensor.serial})"
    quiet = next(s.serial for s in SENSORS if s.stops_before_today)
    assert (ins[quiet], outs[quiet]) == (0, 0), "a sensor without counts today shows 0, not yesterday's total"


def test_selecting_sensors_narrows_every_total(influx: LocalInflux, dataset: Dataset) -> None:
    chosen = [s for s in SENSORS if s.name in ("Back door", "side.gate")]
    view = View(**{**default_view(dataset).__dict__, "sensors": tuple(s.serial for s in chosen)})
    today = last_by(run(influx, dataset, target("Today", "A"), view), "direction")
    names = {s.name for s in chosen}
    assert today["in"]["sum"] == dataset.total("in", dataset.local_midnight, sensors=names)
    rows = run(influx, dataset, target("Sensors today", "IN"), view)
    assert {row["serial"] for row in rows} == {s.serial for s in chosen}


def test_in_and_out_per_interval_add_up_for_every_interval_option(
    influx: LocalInflux, dataset: Dataset
) -> None:
    options = [value.strip() for value in variable("interval")["query"].split(",")]
    assert "1h" in options
    base = default_view(dataset)
    start, end = base.start_ms // 1000, base.end_ms // 1000
    for option in options:
        view = View(**{**base.__dict__, "interval": option})
        rows = run(influx, dataset, target("Visitors in and out per $interval", "A"), view)
        for direction in ("in", "out"):
            got = sum(row["sum"] for row in rows if row["direction"] == direction)
            assert got == dataset.total(direction, start, end), (option, direction)


def test_this_period_and_the_same_period_last_week(influx: LocalInflux, dataset: Dataset) -> None:
    view = View(start_ms=(dataset.now - 2 * 86400) * 1000, end_ms=dataset.now * 1000)
    title = "Visitors in: this period and the same period last week"
    (this_period,) = run(influx, dataset, target(title, "A"), view)
    (last_week,) = run(influx, dataset, target(title, "B"), view)
    week = 7 * 86400
    start, end = view.start_ms // 1000, view.end_ms // 1000
    assert this_period["sum"] == dataset.total("in", start, end)
    assert last_week["sum"] == dataset.total("in", start - week, end - week)
    assert last_week["sum"] > 0
    # The "same period last week" chart is the in/out chart with a 7-day panel time shift.
    assert panels()["Same period last week"]["timeShift"] == "7d"
    assert target("Same period last week", "A") == target("Visitors in and out per $interval", "A")


def test_hourly_series_for_hour_of_day_and_weekday_charts(influx: LocalInflux, dataset: Dataset) -> None:
    view = default_view(dataset)
    for title in ("Visitors in by hour of day", "Visitors in by day of week"):
        rows = run(influx, dataset, target(title, "A"), view)
        assert all(row["time"] % 3600 == 0 for row in rows), "one row per clock hour"
        assert sum(row["sum"] for row in rows) == dataset.total(
            "in", view.start_ms // 1000, view.end_ms // 1000
        )
        assert len(rows) >= 7 * 24


def test_without_a_reported_time_zone_days_fall_back_to_utc(influx: LocalInflux, dataset: Dataset) -> None:
    # Before any sensor reported its zone the variable is empty: tz('') must still be valid InfluxQL.
    view = View(**{**default_view(dataset).__dict__, "tz": ""})
    today = last_by(run(influx, dataset, target("Today", "A"), view), "direction")
    utc_midnight = dataset.now // 86400 * 86400
    assert today["in"]["time"] == utc_midnight
    assert today["in"]["sum"] == dataset.total("in", utc_midnight)


def test_a_broken_query_fails_loudly(influx: LocalInflux, dataset: Dataset) -> None:
    # The harness raises on InfluxQL errors, so "runs" above means InfluxDB accepted every query.
    with pytest.raises(LocalInfluxError):
        run(influx, dataset, 'SELECT sum("count") FROM "people_count" GROUP BY time(', default_view(dataset))


def test_the_local_day_boundary_is_what_the_device_calls_midnight(dataset: Dataset) -> None:
    local = datetime.fromtimestamp(dataset.local_midnight, ZoneInfo(TZ))
    assert (local.hour, local.minute) == (0, 0)
    assert timedelta(0) <= datetime.fromtimestamp(dataset.now, UTC) - local < timedelta(days=1)
