"""The people-counting dashboard's numbers, panel by panel, against the real InfluxDB holding known pushes.

Five sensors in three zones far apart (Stockholm, New York, Tokyo) and one without a zone push 15-minute
counts through the real receiver, over 16 days that hold both daylight-saving changes of autumn 2026
(Europe 25 October, the United States 1 November), with null and empty items and re-sent days; one
sensor moves from one site to another half-way (the sensors file changes and is reloaded). Each panel's
queries run as Grafana sends them (tests/grafana_frames.py: macros, variables) at dashboard times chosen
on both sides of each zone's midnight and on the 25-hour days, its transformations are applied, and the
result is compared with totals this module works out from the generated data on its own (zoneinfo, not
the receiver's exporter.localday).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from flask import Flask

from exporter.app import create_app
from exporter.influxd_bridge import LocalInflux, LocalInfluxError
from tests.grafana_frames import Frame, View, transform
from tests.support import make_config

ROOT = Path(__file__).resolve().parent.parent
PEOPLE = ROOT / "grafana" / "dashboards" / "people-counting.json"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
SLOT = 15 * 60
FIRST = int(dt.datetime(2026, 10, 19, tzinfo=dt.UTC).timestamp())
LAST = int(dt.datetime(2026, 11, 4, tzinfo=dt.UTC).timestamp())  # exclusive
MOVE = int(dt.datetime(2026, 10, 28, tzinfo=dt.UTC).timestamp())  # the Tokyo sensor changes site
WEEK = 7 * 86400


@dataclass(frozen=True)
class Sensor:
    """A simulated people counter and where the sensors file puts it."""

    name: str
    serial: str
    zone_name: str  # "" reports no time zone: the receiver then uses UTC
    site: str = ""
    zone: str = ""
    moved_to: str = ""  # the site it has from MOVE on
    out_heavy: bool = False  # more out than in: its site's "inside" goes below zero

    @property
    def tz(self) -> ZoneInfo:
        """The zone its days and hours are counted in."""
        return ZoneInfo(self.zone_name or "UTC")

    def site_at(self, moment: int) -> str:
        """Its site when data for ``moment`` was pushed (pushes go out in time order, a day at a time)."""
        return self.moved_to if self.moved_to and moment >= MOVE else self.site


SENSORS = (
    Sensor("north", "ACCC8E000001", "Europe/Stockholm", "Stockholm City", "Main entrance"),
    Sensor("Back door", "ACCC8E000002", "America/New_York", "New York 5th Ave", "Back door", out_heavy=True),
    Sensor("side.gate", "ACCC8E000003", "Europe/Stockholm", "Stockholm City", "Side gate"),
    Sensor("ginza", "ACCC8E000004", "Asia/Tokyo", "Tokyo Ginza", "Entrance", moved_to="Tokyo Shibuya"),
    Sensor("lobby", "ACCC8E000005", ""),  # not in the sensors file, no zone
)


@dataclass(frozen=True)
class Count:
    """One stored count: a sensor's interval starting at ``time`` in one direction."""

    sensor: Sensor
    time: int
    direction: str
    count: int
    site: str

    def local(self) -> dt.datetime:
        """Its start in the sensor's zone."""
        return dt.datetime.fromtimestamp(self.time, self.sensor.tz)


def counts_for(index: int, slot: int, out_heavy: bool) -> tuple[int, int]:
    """Deterministic, varying in/out counts of sensor ``index`` in 15-minute slot ``slot``."""
    count_in = 1 + (slot * 7 + index * 3) % 6
    return count_in, count_in + 2 if out_heavy else 1 + (slot * 5 + index) % 5


def items_for(index: int, slot: int, count_in: int, count_out: int) -> list[dict[str, Any]] | None:
    """The items as the device sends them: now and then null or empty (nobody passed: stored as 0)."""
    if index == 0 and slot % 37 == 0:
        return None
    if index == 1 and slot % 41 == 0:
        return []
    return [{"direction": "in", "count": count_in}, {"direction": "out", "count": count_out}]


def iso(seconds: int) -> str:
    """UTC in ISO 8601 as the device writes it."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_pushes(index: int, sensor: Sensor, day_start: int) -> tuple[dict[str, Any], list[Count]]:
    """One push holding a UTC day of 15-minute intervals, and what it stores."""
    measurements, stored = [], []
    for start in range(day_start, min(day_start + 86400, LAST), SLOT):
        slot = start // SLOT
        count_in, count_out = counts_for(index, slot, sensor.out_heavy)
        items = items_for(index, slot, count_in, count_out)
        if not items:
            count_in = count_out = 0
        measurements.append(
            {"kind": "people-counts", "utcFrom": iso(start), "utcTo": iso(start + SLOT), "items": items}
        )
        site = sensor.site_at(day_start)
        stored += [Count(sensor, start, "in", count_in, site), Count(sensor, start, "out", count_out, site)]
    document = {
        "apiName": "Axis Retail Data",
        "apiVersion": "0.4",
        "utcSent": iso(day_start + 86400),
        "data": {"measurements": measurements},
        "sensor": {
            "application": "AXIS People Counter",
            "applicationVersion": "2.3.1",
            "timeZone": sensor.zone_name,
            "name": sensor.name,
            "serial": sensor.serial,
            "ipAddress": f"10.1.0.{index + 11}",
        },
    }
    return document, stored


def sensors_file(moved: bool) -> str:
    """The sensors file before and after the Tokyo sensor moves."""
    lines = ["sensors:"]
    for sensor in SENSORS:
        if sensor.site:
            site = sensor.moved_to if moved and sensor.moved_to else sensor.site
            lines += [f"  {sensor.serial}:", f"    site: {site}", f"    zone: {sensor.zone}"]
    return "\n".join(lines) + "\n"


@dataclass
class Dataset:
    """What was stored, in which database."""

    database: str
    stored: list[Count]

    def total(self, direction: str, keep: Callable[[Count], bool]) -> int:
        """Sum of the stored counts in ``direction`` that ``keep`` selects."""
        return sum(c.count for c in self.stored if c.direction == direction and keep(c))


@pytest.fixture(scope="module")
def dataset(influx: LocalInflux, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """16 days from five sensors through the real receiver, each day re-sent once, the Tokyo one moved."""
    base = tmp_path_factory.mktemp("dashboards")
    database = f"g_{uuid.uuid4().hex[:12]}"
    influx.create_database(database)
    labels = base / "sensors.yml"
    labels.write_text(sensors_file(moved=False), encoding="utf-8")
    app: Flask = create_app(make_config(influx, database, base, sensors_file=labels))
    receiver = app.extensions["axis_exporter"]
    client = app.test_client()
    stored: list[Count] = []
    for day_start in range(FIRST, LAST, 86400):
        if day_start == MOVE:
            labels.write_text(sensors_file(moved=True), encoding="utf-8")
            assert receiver.sensors_file.reload(), "the changed sensors file did not load"
        for index, sensor in enumerate(SENSORS):
            document, counts = day_pushes(index, sensor, day_start)
            for _ in range(2):  # the device re-sends what it had no 200 for: never counted twice
                response = client.post(
                    "/push", data=orjson.dumps(document), headers={"Content-Type": "application/json"}
                )
                assert response.status_code == 200 and response.json is not None, response.data
                assert response.json["rejected"] == 0, response.json
            stored += counts
    return Dataset(database, stored)


# --- the panels, as Grafana runs them --------------------------------------------------------------
def dashboard() -> dict[str, Any]:
    return dict(json.loads(PEOPLE.read_text(encoding="utf-8")))


def panel(title: str) -> dict[str, Any]:
    (found,) = [p for p in dashboard()["panels"] if p["title"] == title]
    return dict(found)


def frames(influx: LocalInflux, data: Dataset, title: str, view: View) -> list[Frame]:
    """The panel's queries as Grafana sends them, their answers as frames, its transformations applied."""
    found = panel(title)
    result = [
        Frame.from_rows(target["refId"], influx.query(data.database, view.interpolate(target["query"])))
        for target in found["targets"]
    ]
    return transform(result, found.get("transformations", []))


def values(influx: LocalInflux, data: Dataset, title: str, view: View) -> dict[str, Any]:
    """A stat panel's value per query (one row each; no row: None, shown as the panel's noValue)."""
    shown: dict[str, Any] = {}
    for frame in frames(influx, data, title, view):
        rows = frame.rows()
        assert len(rows) <= 1, f"{title} {frame.ref}: a stat query gave {len(rows)} rows"
        value = [v for k, v in rows[0].items() if k != "Time"] if rows else [None]
        shown[frame.ref] = value[0]
    return shown


def at(moment: dt.datetime, days: int = 7, **variables: Any) -> View:
    """The dashboard with its range ending at ``moment`` (its default range: the last ``days`` days)."""
    end = int(moment.timestamp())
    return View(start_ms=(end - days * 86400) * 1000, end_ms=end * 1000, **variables)


# Dashboard times: on both sides of each zone's midnight, on the 25-hour days, after the move.
MOMENTS = {
    "Stockholm just after midnight": dt.datetime(2026, 10, 27, 0, 20, tzinfo=ZoneInfo("Europe/Stockholm")),
    "New York just before midnight": dt.datetime(2026, 10, 29, 23, 50, tzinfo=ZoneInfo("America/New_York")),
    "Tokyo just after midnight": dt.datetime(2026, 10, 30, 0, 10, tzinfo=ZoneInfo("Asia/Tokyo")),
    "end of Stockholm's 25-hour day": dt.datetime(2026, 10, 25, 23, 55, tzinfo=ZoneInfo("Europe/Stockholm")),
    "end of New York's 25-hour day": dt.datetime(2026, 11, 1, 23, 55, tzinfo=ZoneInfo("America/New_York")),
    "New York's DST morning": dt.datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")),
}


def counting_day(count: Count, end: int, weeks_back: int = 0) -> bool:
    """Whether ``count`` is in its sensor's local day that holds ``end``, no later than that moment (or
    the same ``weeks_back`` x 7 x 24 hours earlier: the dashboard's "same weekday last week", see
    test_last_week_is_seven_times_24_hours_back)."""
    moment = end - weeks_back * WEEK
    then = dt.datetime.fromtimestamp(moment, count.sensor.tz).date()
    return count.local().date() == then and count.time <= moment


def same_weekday_same_clock(count: Count, end: int) -> bool:
    """Last week's same weekday up to the same local clock time, worked out in local time."""
    local_end = dt.datetime.fromtimestamp(end, count.sensor.tz)
    day = local_end.date() - dt.timedelta(days=7)
    cutoff = dt.datetime.combine(day, local_end.time(), tzinfo=count.sensor.tz).timestamp()
    return count.local().date() == day and count.time <= cutoff


def counting_week(count: Count, end: int, weeks_back: int = 0) -> bool:
    """Whether ``count`` is in its sensor's local Monday-to-Sunday week that holds ``end`` (or earlier)."""
    moment = end - weeks_back * WEEK
    then = dt.datetime.fromtimestamp(moment, count.sensor.tz).date()
    day = count.local().date()
    return day.isocalendar()[:2] == then.isocalendar()[:2] and count.time <= moment


def moments() -> Iterator[tuple[str, View]]:
    for name, moment in MOMENTS.items():
        yield name, at(moment)


# --- tests ---------------------------------------------------------------------------------------
def influxql_queries() -> Iterator[tuple[str, str]]:
    """(id, query) of every InfluxQL target and InfluxDB variable query in every dashboard."""
    for path in DASHBOARDS:
        document = json.loads(path.read_text(encoding="utf-8"))
        for item in document["panels"]:
            for target in item.get("targets", []):
                if target["datasource"]["type"] == "influxdb":
                    yield f"{path.stem}:{item['title']}:{target['refId']}", target["query"]
        for var in document["templating"]["list"]:
            if var["type"] == "query" and var["datasource"]["type"] == "influxdb":
                yield f"{path.stem}:${var['name']}", var["query"]


QUERIES = dict(influxql_queries())
MIDDLE = at(dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC))


@pytest.mark.parametrize("query", QUERIES.values(), ids=QUERIES.keys())
def test_every_influxql_query_runs_and_returns_rows(
    influx: LocalInflux, dataset: Dataset, query: str
) -> None:
    assert influx.query(dataset.database, MIDDLE.interpolate(query)), f"no rows for {query}"


@pytest.mark.parametrize(("moment", "view"), list(moments()), ids=list(MOMENTS))
def test_today_is_each_sensors_own_local_day(
    influx: LocalInflux, dataset: Dataset, moment: str, view: View
) -> None:
    end = view.end_ms // 1000
    rows = frames(influx, dataset, "Today", view)[0].rows()
    shown = {row["direction"]: row["sum"] for row in rows}
    expected = {d: dataset.total(d, lambda c: counting_day(c, end)) for d in ("in", "out")}
    assert shown == expected, f"{moment}: Today shows {shown}, each sensor's own day holds {expected}"


def test_the_25_hour_days_are_whole(dataset: Dataset) -> None:
    """The model's days themselves: New York's 1 November and Stockholm's 25 October hold 100 intervals."""
    for name, serial in (
        ("end of New York's 25-hour day", "ACCC8E000002"),
        ("end of Stockholm's 25-hour day", "ACCC8E000001"),
    ):
        end = int(MOMENTS[name].timestamp())
        intervals = {c.time for c in dataset.stored if c.sensor.serial == serial and counting_day(c, end)}
        assert len(intervals) == 25 * 4, f"{name}: {len(intervals)} intervals"


@pytest.mark.parametrize(("moment", "view"), list(moments()), ids=list(MOMENTS))
def test_people_inside_is_in_minus_out_per_site_never_below_zero(
    influx: LocalInflux, dataset: Dataset, moment: str, view: View
) -> None:
    end = view.end_ms // 1000
    per_site: dict[str, int] = {}
    for count in dataset.stored:
        if counting_day(count, end):
            per_site[count.site] = per_site.get(count.site, 0) + (
                count.count if count.direction == "in" else -count.count
            )
    assert per_site["New York 5th Ave"] < 0, "the data must exercise a site with more out than in"
    expected = sum(max(0, inside) for inside in per_site.values())
    shown = values(influx, dataset, "People inside now", view)["A"] or 0
    assert shown == expected, f"{moment}: {shown} inside, per site {per_site}"


@pytest.mark.parametrize(("moment", "view"), list(moments()), ids=list(MOMENTS))
def test_today_and_the_same_weekday_last_week(
    influx: LocalInflux, dataset: Dataset, moment: str, view: View
) -> None:
    end = view.end_ms // 1000
    shown = values(influx, dataset, "Today and the same weekday last week", view)
    assert shown["A"] == dataset.total("in", lambda c: counting_day(c, end)), moment
    assert (shown["B"] or 0) == dataset.total("in", lambda c: counting_day(c, end, weeks_back=1)), moment


def test_last_week_is_seven_times_24_hours_back(influx: LocalInflux, dataset: Dataset) -> None:
    """In the week after a DST change, "the same weekday last week" is taken 7 x 24 hours back, which is
    one hour off the same local clock time (and, in a day's last hour, the neighbouring day). The
    README's dashboard section says so; this pins what the panel shows then."""
    moment = "Stockholm just after midnight"  # Tuesday 27 October 00:20, two days after the change
    end = int(MOMENTS[moment].timestamp())
    shown = values(influx, dataset, "Today and the same weekday last week", at(MOMENTS[moment]))["B"]
    stockholm = {"north", "side.gate"}
    exact = dataset.total("in", lambda c: same_weekday_same_clock(c, end) and c.sensor.name in stockholm)
    seven_days = dataset.total("in", lambda c: counting_day(c, end, 1) and c.sensor.name in stockholm)
    others = dataset.total("in", lambda c: counting_day(c, end, 1) and c.sensor.name not in stockholm)
    assert shown == seven_days + others
    assert seven_days != exact, "the data must show the DST week's one-hour shift"


@pytest.mark.parametrize(("moment", "view"), list(moments()), ids=list(MOMENTS))
def test_this_week_and_last_week_start_on_monday(
    influx: LocalInflux, dataset: Dataset, moment: str, view: View
) -> None:
    end = view.end_ms // 1000
    shown = values(influx, dataset, "This week and last week", view)
    assert shown["A"] == dataset.total("in", lambda c: counting_week(c, end)), moment
    assert (shown["B"] or 0) == dataset.total("in", lambda c: counting_week(c, end, weeks_back=1)), moment


@pytest.mark.parametrize(("moment", "view"), list(moments()), ids=list(MOMENTS))
def test_sites_today(influx: LocalInflux, dataset: Dataset, moment: str, view: View) -> None:
    end = view.end_ms // 1000
    (table,) = frames(influx, dataset, "Sites today", view)
    shown = {row["Site"]: row for row in table.rows()}
    for site in {c.site for c in dataset.stored if counting_day(c, end)}:
        row = shown[site]
        mine = at_site(site, lambda c: counting_day(c, end))
        assert row["In today"] == dataset.total("in", mine), (moment, site)
        assert row["Out today"] == dataset.total("out", mine), (moment, site)
        inside = dataset.total("in", mine) - dataset.total("out", mine)
        assert (row.get("Inside now") or 0) == max(0, inside), (moment, site)
        week = dataset.total("in", at_site(site, lambda c: counting_day(c, end, 1)))
        assert (row.get("In, same weekday last week") or 0) == week, (moment, site)


def at_site(site: str, keep: Callable[[Count], bool]) -> Callable[[Count], bool]:
    """``keep``, for the counts stored under ``site``."""
    return lambda count: count.site == site and keep(count)


def test_the_moved_sensor_counts_for_each_site_while_it_was_there(
    influx: LocalInflux, dataset: Dataset
) -> None:
    view = at(dt.datetime(2026, 11, 3, 23, tzinfo=dt.UTC), days=15)
    old = values(influx, dataset, "Today", View(**{**view.__dict__, "sites": ("Tokyo Ginza",)}))
    assert old["A"] is None, "after the move nothing of today belongs to the old site"
    start, end = view.start_ms // 1000, view.end_ms // 1000
    for site in ("Tokyo Ginza", "Tokyo Shibuya"):
        narrowed = View(**{**view.__dict__, "sites": (site,), "interval": "12h"})
        rows = influx.query(
            dataset.database, narrowed.interpolate(panel("Visitors in per site")["targets"][0]["query"])
        )
        expected = dataset.total("in", at_site(site, lambda c: start <= c.time <= end))
        assert sum(row["sum"] for row in rows) == expected > 0, site


def test_sensors_today(influx: LocalInflux, dataset: Dataset) -> None:
    view = at(MOMENTS["Tokyo just after midnight"])
    end = view.end_ms // 1000
    (table,) = frames(influx, dataset, "Sensors today", view)
    shown = {row["Serial"]: row for row in table.rows()}
    assert set(shown) == {s.serial for s in SENSORS}
    for sensor in SENSORS:
        row = shown[sensor.serial]
        mine = lambda c, sensor=sensor: c.sensor == sensor and counting_day(c, end)  # noqa: E731
        assert (row["In today"] or 0, row["Out today"] or 0) == (
            dataset.total("in", mine),
            dataset.total("out", mine),
        ), sensor
        assert row["Sensor"] == f"{sensor.name} ({sensor.serial})"
        assert (row["Site"] or "") == sensor.site_at(LAST), "its site as of its last push"


def hour_totals(data: Dataset, start: int, end: int, key: Callable[[Count], Any]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for count in data.stored:
        if count.direction == "in" and start <= count.time <= end:
            label = str(key(count))
            totals[label] = totals.get(label, 0) + count.count
    return totals


@pytest.mark.parametrize(
    ("title", "field", "key"),
    [
        ("Visitors in by hour of day", "hour", lambda c: c.local().hour),
        ("Visitors in by day of week", "weekday", lambda c: c.local().isoweekday()),
    ],
)
def test_folded_charts_use_each_sensors_own_hours_and_days(
    influx: LocalInflux, dataset: Dataset, title: str, field: str, key: Callable[[Count], Any]
) -> None:
    view = at(dt.datetime(2026, 11, 3, 12, tzinfo=dt.UTC), days=14)
    (frame,) = frames(influx, dataset, title, view)
    shown = {row[field]: row["visitors (sum)"] for row in frame.rows()}
    expected = hour_totals(dataset, view.start_ms // 1000, view.end_ms // 1000, key)
    assert shown == expected
    assert list(shown) == sorted(shown, key=int), "in order along the axis"


def test_the_busiest_hour(influx: LocalInflux, dataset: Dataset) -> None:
    view = at(dt.datetime(2026, 11, 3, 12, tzinfo=dt.UTC), days=14)
    totals = hour_totals(dataset, view.start_ms // 1000, view.end_ms // 1000, lambda c: c.local().hour)
    (frame,) = frames(influx, dataset, "Busiest hour", view)
    (row,) = frame.rows()
    assert row["visitors (sum)"] == max(totals.values()) == totals[str(row["hour"])], (row, totals)


def test_in_and_out_per_interval_add_up_for_every_interval_option(
    influx: LocalInflux, dataset: Dataset
) -> None:
    (interval,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "interval"]
    options = [value.strip() for value in interval["query"].split(",")]
    assert "1d" not in options and "7d" not in options, "days and weeks are folded in each sensor's zone"
    start, end = MIDDLE.start_ms // 1000, MIDDLE.end_ms // 1000
    for option in options:
        view = View(**{**MIDDLE.__dict__, "interval": option})
        rows = influx.query(
            dataset.database,
            view.interpolate(panel("Visitors in and out per $interval")["targets"][0]["query"]),
        )
        for direction in ("in", "out"):
            got = sum(row["sum"] for row in rows if row["direction"] == direction)
            assert got == dataset.total(direction, lambda c: start <= c.time <= end), (option, direction)


def test_site_zone_and_sensor_variables(influx: LocalInflux, dataset: Dataset) -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    sites = influx.query(dataset.database, MIDDLE.interpolate(variables["site"]["query"]))
    assert {row["value"] for row in sites} == {
        "Stockholm City",
        "New York 5th Ave",
        "Tokyo Ginza",
        "Tokyo Shibuya",
    }
    stockholm = View(**{**MIDDLE.__dict__, "sites": ("Stockholm City",)})
    zones = influx.query(dataset.database, stockholm.interpolate(variables["zone"]["query"]))
    assert {row["value"] for row in zones} == {"Main entrance", "Side gate"}
    rows = influx.query(dataset.database, stockholm.interpolate(variables["sensor"]["query"]))
    regex = re.compile(variables["sensor"]["regex"].strip("/").replace("(?<", "(?P<"))
    options = {m["value"]: m["text"] for m in (regex.fullmatch(row["last"]) for row in rows) if m}
    assert options == {s.serial: f"{s.name} ({s.serial})" for s in SENSORS if s.site == "Stockholm City"}


def test_selecting_a_site_narrows_today(influx: LocalInflux, dataset: Dataset) -> None:
    view = at(MOMENTS["Tokyo just after midnight"], sites=("Stockholm City",))
    end = view.end_ms // 1000
    shown = {row["direction"]: row["sum"] for row in frames(influx, dataset, "Today", view)[0].rows()}
    assert shown["in"] == dataset.total("in", lambda c: c.site == "Stockholm City" and counting_day(c, end))


def test_zones_and_sites_add_no_series_but_a_move(influx: LocalInflux, dataset: Dataset) -> None:
    """Cardinality: the tz, site and zone tags follow the serial, so a sensor and direction is one series;
    only the moved sensor has a second one per direction (its old site), and the calendar is fields."""
    series = influx.query(dataset.database, 'SHOW SERIES FROM "people_count"')
    assert len(series) == 2 * len(SENSORS) + 2, series


def test_a_broken_query_fails_loudly(influx: LocalInflux, dataset: Dataset) -> None:
    # The harness raises on InfluxQL errors, so "runs" above means InfluxDB accepted every query.
    with pytest.raises(LocalInfluxError):
        influx.query(dataset.database, 'SELECT sum("count") FROM "people_count" GROUP BY time(')
