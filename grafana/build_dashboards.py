"""Generate the provisioned Grafana dashboards and the Grafana-managed alert rule.

Queries are defined once here, apart from the layout, so the dashboards and the alert rule share the
same "sensor went quiet" expressions. Run ``python grafana/build_dashboards.py`` after editing; the
output is committed and tests/test_grafana_generated.py fails when it is out of date.

InfluxQL is used (not Flux) so the people-counting dashboard works on InfluxDB 1.x, 2.x (through the
bucket's automatic DBRP mapping) and 3. Every query must also run on InfluxDB 1.6, which the tests use.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from exporter.sensors import QUIET_FACTOR, QUIET_MIN_SECONDS, QUIET_UNKNOWN_INTERVAL_SECONDS

GRAFANA_DIR = Path(__file__).resolve().parent
DASHBOARD_DIR = GRAFANA_DIR / "dashboards"
ALERT_RULES_FILE = GRAFANA_DIR / "provisioning" / "alerting" / "rules.yaml"

# Provisioned in grafana/provisioning/datasources/datasources.yaml.
INFLUXDB_UID = "axis-influxdb"
PROMETHEUS_UID = "axis-prometheus"
FOLDER_TITLE = "Axis people counting"
PEOPLE_DASHBOARD_UID = "axis-people-counting"
HEALTH_DASHBOARD_UID = "axis-receiver-health"
ALERT_RULE_UID = "axis-sensor-stopped-pushing"
JOB = "axis-exporter"
SCHEMA_VERSION = 39

# The two dashboards pick their data source through a variable whose default is the provisioned one,
# so a user with a second InfluxDB or Prometheus can switch without editing JSON.
INFLUX_DS = {"type": "influxdb", "uid": "${ds_influxdb}"}
PROM_DS = {"type": "prometheus", "uid": "${ds_prometheus}"}
EXPR_DS = {"type": "__expr__", "uid": "__expr__"}
GRAFANA_DS = {"type": "grafana", "uid": "-- Grafana --"}

# --- "sensor stopped pushing": shared by the health dashboard and the alert rule -------------------
# max_over_time/last_over_time over a week keep a sensor visible after an exporter restart (the gauges
# start empty until the sensor pushes again) and keep a silent sensor alerting instead of letting its
# series vanish, which Grafana would treat as resolved.
# The thresholds are the receiver's own (its status page uses them too): 3 x the send interval, at least
# 300 s, and before the interval is known (only a test connection so far) 3 x the longest one (15 min).
# prometheus/alerts.yml uses the same numbers.
QUIET_LOOKBACK = "7d"


# A sensor is its serial; its name comes from a series of its own whose value is the time of the last push
# under that name, so that topk picks the current one after a rename (prometheus/alerts.yml does the same).
def with_names(expr: str, selector: str) -> str:
    """PromQL: ``expr`` (one series per serial) with each sensor's current name as label ``sensor``."""
    names = f"axis_exporter_sensor_name_timestamp_seconds{{{selector}}}"
    current = f"0 * topk by (serial) (1, last_over_time({names}[{QUIET_LOOKBACK}])) + 1"
    return f"({expr}) * on (serial) group_left (sensor) ({current})"


def seconds_since_last_push(selector: str) -> str:
    """PromQL: seconds since each sensor's last accepted push, by serial and name."""
    last_push = f"axis_exporter_sensor_last_push_timestamp_seconds{{{selector}}}"
    return with_names(f"time() - max by (serial) (max_over_time({last_push}[{QUIET_LOOKBACK}]))", selector)


def quiet_threshold(selector: str) -> str:
    """PromQL: per sensor, how long a silence is tolerated (3 x its send interval, at least 5 min)."""
    interval = f"axis_exporter_sensor_push_interval_seconds{{{selector}}}"
    last_push = f"axis_exporter_sensor_last_push_timestamp_seconds{{{selector}}}"
    observed = (
        f"max by (serial) (clamp_min({QUIET_FACTOR} * last_over_time({interval}[{QUIET_LOOKBACK}]), "
        f"{QUIET_MIN_SECONDS}))"
    )
    # A sensor without an observed interval yet gets the threshold of the longest one.
    unknown = QUIET_UNKNOWN_INTERVAL_SECONDS
    fallback = f"max by (serial) (0 * max_over_time({last_push}[{QUIET_LOOKBACK}]) + {unknown})"
    return with_names(f"{observed} or {fallback}", selector)


# --- InfluxQL building blocks ---------------------------------------------------------------------
# Sensors are selected by serial: a name is whatever a pusher says, so it cannot stand for a camera.
SENSOR_MATCH = '"serial" =~ /^$sensor$/'
LOCAL_TZ = "tz('$tz')"
# A local day bucket that contains now: GROUP BY time(1d) with tz() aligns buckets to the sensor's local
# midnight, and "time >= now() - 1d" always includes the bucket that holds now (the last row).
SINCE_YESTERDAY = "time >= now() - 1d"
# The per-sensor table looks back a week so that a sensor with nothing today still gets a row (fill(0)
# only fills buckets of series that have points in the queried range).
SINCE_LAST_WEEK = "time >= now() - 7d"


def today_by(direction: str | None, group_by: str) -> str:
    """InfluxQL: per local-day totals of people_count since yesterday; the last row is today."""
    where = f"{SENSOR_MATCH} AND {SINCE_YESTERDAY}"
    if direction is not None:
        where = f"\"direction\" = '{direction}' AND {where}"
    return (
        f'SELECT sum("count") FROM "people_count" WHERE {where} '
        f"GROUP BY time(1d){group_by} fill(0) {LOCAL_TZ}"
    )


def today_per_sensor(direction: str) -> str:
    """InfluxQL: one row per sensor with its total for today (sensor's local day)."""
    inner = (
        f'SELECT sum("count") AS "total" FROM "people_count" '
        f"WHERE \"direction\" = '{direction}' AND {SENSOR_MATCH} AND {SINCE_LAST_WEEK} "
        f'GROUP BY time(1d), "serial" fill(0) {LOCAL_TZ}'
    )
    return f'SELECT last("total") AS "{direction}_today" FROM ({inner}) GROUP BY "serial"'


PER_INTERVAL = (
    f'SELECT sum("count") FROM "people_count" WHERE {SENSOR_MATCH} AND $timeFilter '
    f'GROUP BY time($interval), "direction" fill(0) {LOCAL_TZ}'
)
HOURLY_IN = (
    f'SELECT sum("count") FROM "people_count" WHERE "direction" = \'in\' AND {SENSOR_MATCH} '
    f"AND $timeFilter GROUP BY time(1h) fill(0)"
)
RANGE_TOTAL_IN = (
    f'SELECT sum("count") FROM "people_count" WHERE "direction" = \'in\' AND {SENSOR_MATCH} AND $timeFilter'
)
LAST_WEEK_TOTAL_IN = (
    f'SELECT sum("count") FROM "people_count" WHERE "direction" = \'in\' AND {SENSOR_MATCH} '
    "AND time >= ${__from}ms - 7d AND time <= ${__to}ms - 7d"
)
# The newest push per serial, as a raw point: two last() would make InfluxQL answer time 0.
LAST_PUSH = (
    'SELECT "sensor_label" AS "sensor", "ip_address" FROM "sensor_push" '
    f'WHERE {SENSOR_MATCH} GROUP BY "serial" ORDER BY time DESC LIMIT 1'
)
# "name (SERIAL)" per serial, newest first; the variable's regex makes the serial its value.
SENSOR_VALUES = 'SELECT last("sensor_label") FROM "sensor_push" WHERE time > now() - 90d GROUP BY "serial"'
SENSOR_REGEX = r"/^(?<text>.* \((?<value>[^()]+)\))$/"
TIMEZONE_VALUES = f'SELECT last("timezone") FROM "sensor_push" WHERE {SENSOR_MATCH} GROUP BY "serial"'


# --- panel helpers --------------------------------------------------------------------------------
class Layout:
    """Places panels left to right in rows of 24 columns and numbers them."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def place(self, panel: dict[str, Any], w: int, h: int) -> dict[str, Any]:
        """Give ``panel`` an id and a grid position; wrap to a new row when it does not fit."""
        if self.x + w > 24:
            self.newline()
        panel["id"] = self.next_id
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.next_id += 1
        self.x += w
        self.row_height = max(self.row_height, h)
        return panel

    def newline(self) -> None:
        """Start a new row below the tallest panel of the current one."""
        self.y += self.row_height
        self.x = 0
        self.row_height = 0


def influx_target(
    ref: str, query: str, *, alias: str = "", table: bool = False, hide: bool = False
) -> dict[str, Any]:
    """A raw InfluxQL query target."""
    target: dict[str, Any] = {
        "refId": ref,
        "datasource": INFLUX_DS,
        "query": query,
        "rawQuery": True,
        "resultFormat": "table" if table else "time_series",
    }
    if alias:
        target["alias"] = alias
    if hide:
        target["hide"] = True
    return target


def prom_target(
    ref: str, expr: str, legend: str = "", *, instant: bool = False, table: bool = False
) -> dict[str, Any]:
    """A PromQL query target."""
    target: dict[str, Any] = {
        "refId": ref,
        "datasource": PROM_DS,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
    }
    if table:
        target["format"] = "table"
    return target


def math_target(ref: str, expression: str) -> dict[str, Any]:
    """A server-side expression (Grafana SSE) doing math on other targets."""
    return {"refId": ref, "datasource": EXPR_DS, "type": "math", "expression": expression}


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    """Absolute thresholds from (color, value) pairs; the first value must be None (base)."""
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for color, value in steps]}


def stat(title: str, description: str, targets: list[dict[str, Any]], **defaults: Any) -> dict[str, Any]:
    """A stat panel showing the last value of each series."""
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": targets[0]["datasource"],
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "decimals": 0,
                "thresholds": thresholds(("blue", None)),
                "color": {"mode": "thresholds"},
                **defaults,
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "value_and_name",
            "wideLayout": True,
            "showPercentChange": False,
        },
    }


def timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    unit: str = "short",
    bars: bool = False,
    overrides: list[dict[str, Any]] | None = None,
    **defaults: Any,
) -> dict[str, Any]:
    """A time series panel (lines, or bars for counts per interval)."""
    custom: dict[str, Any] = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 70 if bars else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "none", "group": "A"},
        "axisSoftMin": 0,
    }
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": targets[0]["datasource"],
        "targets": targets,
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}, **defaults},
            "overrides": overrides or [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
    }


def by_ref(ref: str) -> dict[str, Any]:
    """Transformation filter: apply only to the frames of query ``ref``."""
    return {"id": "byRefId", "options": ref}


def datasource_variable(name: str, label: str, plugin: str, uid: str, title: str) -> dict[str, Any]:
    """A data source picker defaulting to the provisioned data source."""
    return {
        "type": "datasource",
        "name": name,
        "label": label,
        "query": plugin,
        "current": {"selected": True, "text": title, "value": uid},
        "hide": 0,
        "options": [],
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
        "description": f"Which {label} data source the panels query.",
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    tags: list[str],
    panels: list[dict[str, Any]],
    variables: list[Any],
    *,
    time_from: str,
    refresh: str,
) -> dict[str, Any]:
    """A complete dashboard document, ready for file provisioning."""
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": tags,
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "monday",
        "refresh": refresh,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "links": [
            {
                "type": "dashboards",
                "title": "Axis dashboards",
                "tags": ["axis-exporter"],
                "asDropdown": False,
                "includeVars": False,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": GRAFANA_DS,
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": variables},
        "panels": panels,
    }


# --- people counting ------------------------------------------------------------------------------
def people_counting() -> dict[str, Any]:
    """Store-facing dashboard: visitors in/out, today's totals, people inside, per-sensor table."""
    layout = Layout()
    panels: list[dict[str, Any]] = []
    # Series come sorted by direction, so the classic palette paints "in" green and "out" yellow.

    today = stat(
        "Today",
        "Visitors counted in and out since midnight in the sensor's time zone (the 'Time zone' variable).",
        [influx_target("A", today_by(None, ', "direction"'), alias="$tag_direction")],
    )
    panels.append(layout.place(today, 8, 5))

    inside = stat(
        "People inside now",
        "Visitors in minus visitors out since local midnight. Drifts when a sensor miscounts; it starts "
        "again from zero every night.",
        [
            influx_target("IN", today_by("in", ""), hide=True),
            influx_target("OUT", today_by("out", ""), hide=True),
            math_target("INSIDE", "$IN - $OUT"),
        ],
        displayName="Inside now",
    )
    panels.append(layout.place(inside, 6, 5))

    compare = stat(
        "Visitors in: this period and the same period last week",
        "Total visitors in over the selected time range, and over the same range seven days earlier.",
        [
            influx_target("A", RANGE_TOTAL_IN, alias="This period"),
            influx_target("B", LAST_WEEK_TOTAL_IN, alias="Same period last week"),
        ],
    )
    panels.append(layout.place(compare, 10, 5))
    layout.newline()

    per_interval = timeseries(
        "Visitors in and out per $interval",
        "Counts per aggregation interval (the 'Interval' variable), in and out side by side.",
        [influx_target("A", PER_INTERVAL, alias="$tag_direction")],
        bars=True,
        decimals=0,
    )
    panels.append(layout.place(per_interval, 24, 9))
    layout.newline()

    last_week = timeseries(
        "Same period last week",
        "The same chart shifted back seven days, for comparison.",
        [influx_target("A", PER_INTERVAL, alias="$tag_direction")],
        bars=True,
        decimals=0,
    )
    last_week["timeShift"] = "7d"
    panels.append(layout.place(last_week, 24, 7))
    layout.newline()

    table = {
        "type": "table",
        "title": "Sensors today",
        "description": "Per sensor that counted in the last 7 days: visitors in and out since local "
        "midnight, people inside, and its last push (with the address it pushed from).",
        "datasource": INFLUX_DS,
        "targets": [
            influx_target("IN", today_per_sensor("in"), table=True),
            influx_target("OUT", today_per_sensor("out"), table=True),
            influx_target("PUSH", LAST_PUSH, table=True),
        ],
        "transformations": [
            {"id": "organize", "filter": by_ref("IN"), "options": {"excludeByName": {"Time": True}}},
            {"id": "organize", "filter": by_ref("OUT"), "options": {"excludeByName": {"Time": True}}},
            {"id": "organize", "filter": by_ref("PUSH"), "options": {"renameByName": {"Time": "last_push"}}},
            {"id": "merge", "options": {}},
            {
                "id": "calculateField",
                "options": {
                    "mode": "binary",
                    "binary": {"left": "in_today", "operator": "-", "right": "out_today"},
                    "alias": "inside_now",
                    "replaceFields": False,
                },
            },
            {
                "id": "organize",
                "options": {
                    "indexByName": {
                        "sensor": 0,
                        "serial": 1,
                        "in_today": 2,
                        "out_today": 3,
                        "inside_now": 4,
                        "last_push": 5,
                        "ip_address": 6,
                    },
                    "renameByName": {
                        "sensor": "Sensor",
                        "serial": "Serial",
                        "in_today": "In today",
                        "out_today": "Out today",
                        "inside_now": "Inside now",
                        "last_push": "Last push",
                        "ip_address": "Pushed from",
                    },
                },
            },
        ],
        "fieldConfig": {"defaults": {"decimals": 0, "custom": {"align": "auto"}}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}},
    }
    panels.append(layout.place(table, 24, 7))
    layout.newline()

    for title, fmt, description in (
        (
            "Visitors in by hour of day",
            "HH:00",
            "Visitors in over the selected range, summed per hour of day.",
        ),
        ("Visitors in by day of week", "E ddd", "Visitors in over the selected range, summed per weekday."),
    ):
        chart = {
            "type": "barchart",
            "title": title,
            "description": description
            + " Hours and weekdays follow the dashboard's time zone (your browser by default), which "
            "InfluxQL cannot fold by itself.",
            "datasource": INFLUX_DS,
            "targets": [influx_target("A", HOURLY_IN, alias="in")],
            "transformations": [
                {
                    "id": "formatTime",
                    "options": {"timeField": "Time", "outputFormat": fmt, "useTimezone": True},
                },
                {
                    "id": "groupBy",
                    "options": {
                        "fields": {
                            "Time": {"aggregations": [], "operation": "groupby"},
                            "in": {"aggregations": ["sum"], "operation": "aggregate"},
                        }
                    },
                },
                {"id": "sortBy", "options": {"sort": [{"field": "Time", "desc": False}]}},
            ],
            "fieldConfig": {
                "defaults": {"decimals": 0, "color": {"mode": "fixed", "fixedColor": "green"}},
                "overrides": [],
            },
            "options": {
                "xField": "Time",
                "orientation": "vertical",
                "showValue": "never",
                "barWidth": 0.8,
                "groupWidth": 0.7,
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
                "tooltip": {"mode": "single", "sort": "none"},
            },
        }
        panels.append(layout.place(chart, 12, 8))

    variables = [
        datasource_variable("ds_influxdb", "InfluxDB", "influxdb", INFLUXDB_UID, "InfluxDB (axis)"),
        {
            "type": "query",
            "name": "sensor",
            "label": "Sensor",
            "description": "Sensors that the panels add up, listed by the name set on the camera and "
            "selected by serial (a name alone could be anyone's).",
            "datasource": INFLUX_DS,
            "query": SENSOR_VALUES,
            "definition": SENSOR_VALUES,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [],
            "refresh": 1,
            "regex": SENSOR_REGEX,
            "sort": 1,
            "hide": 0,
        },
        {
            "type": "interval",
            "name": "interval",
            "label": "Interval",
            "description": "Aggregation interval of the in/out chart.",
            "query": "15m,30m,1h,3h,6h,12h,1d,7d",
            "auto": False,
            "auto_count": 30,
            "auto_min": "15m",
            "current": {"selected": True, "text": "1h", "value": "1h"},
            "options": [],
            "refresh": 2,
            "hide": 0,
        },
        {
            "type": "query",
            "name": "tz",
            "label": "Time zone",
            "description": "Time zone that defines 'today' and the interval boundaries. Taken from what the "
            "selected sensors report (sensor.timeZone in each push); pick one if they differ.",
            "datasource": INFLUX_DS,
            "query": TIMEZONE_VALUES,
            "definition": TIMEZONE_VALUES,
            "multi": False,
            "includeAll": False,
            "options": [],
            "refresh": 1,
            "regex": "",
            "sort": 1,
            "hide": 0,
        },
    ]
    return dashboard(
        PEOPLE_DASHBOARD_UID,
        "Axis people counting",
        "Visitors counted by Axis people counters, as stored by axis-exporter in InfluxDB.",
        ["axis-exporter", "people-counting"],
        panels,
        variables,
        time_from="now-7d",
        refresh="5m",
    )


# --- receiver health ------------------------------------------------------------------------------
SELECTOR = 'job=~"$job", instance=~"$instance"'
RATE = "$__rate_interval"
REJECTED_RESULTS = "bad_request|unauthorized|forbidden|too_large|unsupported_media_type"


def receiver_health() -> dict[str, Any]:
    """Operator-facing dashboard on the receiver's own Prometheus metrics."""
    layout = Layout()
    panels: list[dict[str, Any]] = []
    up_mapping = [
        {
            "type": "value",
            "options": {
                "0": {"text": "Down", "color": "red", "index": 0},
                "1": {"text": "Up", "color": "green", "index": 1},
            },
        }
    ]
    influx_up = stat(
        "InfluxDB reachable",
        "Whether every receiver process could reach InfluxDB at its last write or check.",
        [prom_target("A", f"min(axis_exporter_influxdb_up{{{SELECTOR}}})", "InfluxDB")],
        mappings=up_mapping,
        thresholds=thresholds(("red", None), ("green", 1)),
    )
    panels.append(layout.place(influx_up, 4, 4))
    scrape_up = stat(
        "Receiver scraped",
        "Whether Prometheus could scrape every selected receiver instance.",
        [prom_target("A", f"min(up{{{SELECTOR}}})", "Receiver")],
        mappings=up_mapping,
        thresholds=thresholds(("red", None), ("green", 1)),
    )
    panels.append(layout.place(scrape_up, 4, 4))
    quiet = stat(
        "Quiet sensors",
        "Sensors whose last push is older than their alert threshold (see the table below).",
        [
            prom_target(
                "A",
                f"count(({seconds_since_last_push(SELECTOR)}) > ({quiet_threshold(SELECTOR)})) or vector(0)",
                "Quiet sensors",
            )
        ],
        thresholds=thresholds(("green", None), ("red", 1)),
    )
    panels.append(layout.place(quiet, 5, 4))
    untracked = stat(
        "Untracked sensor pushes",
        "Pushes in the selected range from sensors beyond AXIS_EXPORTER_MAX_SENSORS: stored, but without "
        "per-sensor metrics or alerts.",
        [
            prom_target(
                "A", f"sum(increase(axis_exporter_untracked_sensor_pushes_total{{{SELECTOR}}}[$__range]))"
            )
        ],
        thresholds=thresholds(("green", None), ("orange", 1)),
    )
    panels.append(layout.place(untracked, 5, 4))
    unrouted = stat(
        "Alert notifications without a destination",
        "Alert notifications Grafana sent in the selected range to the receiver's own /alerts, where they "
        "go until a destination is set: they are only in the receiver's log. Put your webhook URL in "
        "secrets/alert-webhook-url (docker compose) or edit the contact point in Grafana. 0 means none was "
        "sent to it, not that a destination is set.",
        [
            prom_target(
                "A",
                "sum(increase(axis_exporter_unrouted_alert_notifications_total"
                f"{{{SELECTOR}}}[$__range])) or vector(0)",
            )
        ],
        thresholds=thresholds(("green", None), ("red", 1)),
    )
    panels.append(layout.place(unrouted, 6, 4))
    layout.newline()

    panels.append(
        layout.place(
            timeseries(
                "Pushes per second by result",
                "How the receiver answered pushes: ok and test_connection are good; storage_unavailable "
                "means InfluxDB was down and the camera will retry.",
                [
                    prom_target(
                        "A",
                        f"sum by (result) (rate(axis_exporter_pushes_total{{{SELECTOR}}}[{RATE}]))",
                        "{{result}}",
                    )
                ],
                unit="reqps",
            ),
            12,
            8,
        )
    )
    panels.append(
        layout.place(
            timeseries(
                "Points written per second",
                "Points InfluxDB confirmed as written.",
                [
                    prom_target(
                        "A",
                        f"sum(rate(axis_exporter_points_written_total{{{SELECTOR}}}[{RATE}]))",
                        "points/s",
                    )
                ],
                unit="short",
            ),
            12,
            8,
        )
    )
    layout.newline()

    latency_targets = [
        prom_target(
            ref,
            f"histogram_quantile({q}, sum by (le) "
            f"(rate(axis_exporter_influxdb_write_duration_seconds_bucket{{{SELECTOR}}}[{RATE}])))",
            f"write p{int(q * 100)}",
        )
        for ref, q in (("A", 0.5), ("B", 0.9), ("C", 0.99))
    ]
    latency_targets.append(
        prom_target(
            "D",
            "histogram_quantile(0.99, sum by (le) "
            f"(rate(axis_exporter_push_duration_seconds_bucket{{{SELECTOR}}}[{RATE}])))",
            "whole push p99",
        )
    )
    panels.append(
        layout.place(
            timeseries(
                "InfluxDB write latency",
                "Percentiles of one write request to InfluxDB, and of handling a whole push.",
                latency_targets,
                unit="s",
            ),
            12,
            8,
        )
    )
    panels.append(
        layout.place(
            timeseries(
                "Rejected and dead-lettered input",
                "Pushes answered 4xx (fix on the camera side) and measurements kept in the dead-letter store "
                "instead of InfluxDB (inspect AXIS_EXPORTER_DEADLETTER_DIR).",
                [
                    prom_target(
                        "A",
                        "sum by (result) (rate(axis_exporter_pushes_total"
                        f'{{{SELECTOR}, result=~"{REJECTED_RESULTS}"}}[{RATE}]))',
                        "{{result}} pushes/s",
                    ),
                    prom_target(
                        "B",
                        f"sum(rate(axis_exporter_deadletter_measurements_total{{{SELECTOR}}}[{RATE}]))",
                        "dead-lettered measurements/s",
                    ),
                ],
                unit="short",
            ),
            12,
            8,
        )
    )
    layout.newline()

    silence = timeseries(
        "Silence per sensor, as a share of its alert threshold",
        "Per sensor, the time since its last accepted push divided by the threshold of the 'sensor stopped "
        f"pushing' alert ({QUIET_FACTOR} x the sensor's observed send interval, at least {QUIET_MIN_SECONDS} "
        "s). The alert fires above 100 % (red line); the table below shows the seconds.",
        [
            prom_target(
                "A",
                f"({seconds_since_last_push(SELECTOR)}) / on (serial) ({quiet_threshold(SELECTOR)})",
                "{{sensor}} ({{serial}})",
            )
        ],
        unit="percentunit",
        thresholds=thresholds(("green", None), ("red", 1)),
    )
    silence["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] = {"mode": "line+area"}
    silence["fieldConfig"]["defaults"]["custom"]["fillOpacity"] = 0
    panels.append(layout.place(silence, 24, 8))
    layout.newline()

    sensor_table = {
        "type": "table",
        "title": "Sensors",
        "description": "Last push, alert threshold and observed send interval per sensor, as Prometheus sees "
        "them now.",
        "datasource": PROM_DS,
        "targets": [
            prom_target("A", seconds_since_last_push(SELECTOR), instant=True, table=True),
            prom_target("B", quiet_threshold(SELECTOR), instant=True, table=True),
            prom_target(
                "C",
                with_names(
                    "max by (serial) (last_over_time("
                    f"axis_exporter_sensor_push_interval_seconds{{{SELECTOR}}}[{QUIET_LOOKBACK}]))",
                    SELECTOR,
                ),
                instant=True,
                table=True,
            ),
        ],
        "transformations": [
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "indexByName": {"sensor": 0, "serial": 1, "Value #A": 2, "Value #B": 3, "Value #C": 4},
                    "renameByName": {
                        "sensor": "Sensor",
                        "serial": "Serial",
                        "Value #A": "Since last push",
                        "Value #B": "Alert threshold",
                        "Value #C": "Send interval",
                    },
                },
            },
        ],
        "fieldConfig": {
            "defaults": {"unit": "s", "decimals": 0, "custom": {"align": "auto"}},
            "overrides": [],
        },
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}},
    }
    panels.append(layout.place(sensor_table, 12, 8))
    reachability = timeseries(
        "InfluxDB reachability over time",
        "1 while every receiver process reaches InfluxDB, 0 during an outage (pushes then get 503).",
        [prom_target("A", f"min(axis_exporter_influxdb_up{{{SELECTOR}}})", "InfluxDB up")],
        unit="none",
        min=0,
        max=1,
    )
    reachability["fieldConfig"]["defaults"]["custom"]["lineInterpolation"] = "stepAfter"
    panels.append(layout.place(reachability, 6, 8))
    deadletter_bytes = stat(
        "Dead-letter bytes written",
        "Bytes written to the dead-letter store in the selected range. Anything above zero needs a look: "
        "see AXIS_EXPORTER_DEADLETTER_DIR.",
        [
            prom_target(
                "A",
                f"sum(increase(axis_exporter_deadletter_bytes_total{{{SELECTOR}}}[$__range])) or vector(0)",
            )
        ],
        unit="bytes",
        thresholds=thresholds(("green", None), ("orange", 1)),
    )
    panels.append(layout.place(deadletter_bytes, 6, 8))

    build_query = "label_values(axis_exporter_build_info, job)"
    instance_query = 'label_values(axis_exporter_build_info{job=~"$job"}, instance)'
    variables = [
        datasource_variable("ds_prometheus", "Prometheus", "prometheus", PROMETHEUS_UID, "Prometheus (axis)"),
        {
            "type": "query",
            "name": "job",
            "label": "Job",
            "description": "Prometheus job that scrapes the receiver.",
            "datasource": PROM_DS,
            "query": build_query,
            "definition": build_query,
            "multi": False,
            "includeAll": False,
            "current": {"selected": True, "text": JOB, "value": JOB},
            "options": [],
            "refresh": 1,
            "regex": "",
            "sort": 1,
            "hide": 0,
        },
        {
            "type": "query",
            "name": "instance",
            "label": "Instance",
            "description": "Receiver instances to include.",
            "datasource": PROM_DS,
            "query": instance_query,
            "definition": instance_query,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [],
            "refresh": 2,
            "regex": "",
            "sort": 1,
            "hide": 0,
        },
    ]
    return dashboard(
        HEALTH_DASHBOARD_UID,
        "Axis exporter: receiver health",
        "The receiver's own metrics: pushes, writes to InfluxDB, rejected input and sensors that went quiet.",
        ["axis-exporter", "operations"],
        panels,
        variables,
        time_from="now-6h",
        refresh="1m",
    )


# --- Grafana-managed alert rule -------------------------------------------------------------------
def panel_id(dashboard: dict[str, Any], title: str) -> int:
    """The id of the panel called ``title`` (what an alert's __panelId__ links to)."""
    (found,) = [panel["id"] for panel in dashboard["panels"] if panel["title"] == title]
    return int(found)


def alert_rules() -> dict[str, Any]:
    """Provisioning document with the 'sensor stopped pushing' rule."""
    selector = f'job="{JOB}"'
    # Grafana refuses __dashboardUid__ without __panelId__ (SetDashboardAndPanelFromAnnotations).
    sensors_panel = panel_id(receiver_health(), "Sensors")

    def prom_query(ref: str, expr: str) -> dict[str, Any]:
        return {
            "refId": ref,
            "relativeTimeRange": {"from": 600, "to": 0},
            "datasourceUid": PROMETHEUS_UID,
            "model": {
                "refId": ref,
                "expr": expr,
                "instant": True,
                "range": False,
                "intervalMs": 60000,
                "maxDataPoints": 43200,
            },
        }

    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": "axis-sensors",
                "folder": FOLDER_TITLE,
                "interval": "1m",
                "rules": [
                    {
                        "uid": ALERT_RULE_UID,
                        "title": "Sensor stopped pushing",
                        "condition": "QUIET",
                        "data": [
                            prom_query("SINCE", seconds_since_last_push(selector)),
                            prom_query("THRESHOLD", quiet_threshold(selector)),
                            {
                                "refId": "QUIET",
                                "datasourceUid": "__expr__",
                                "model": {
                                    "refId": "QUIET",
                                    "type": "math",
                                    "expression": "$SINCE > $THRESHOLD",
                                    "datasource": EXPR_DS,
                                },
                            },
                        ],
                        "noDataState": "OK",
                        "execErrState": "Error",
                        "for": "2m",
                        "isPaused": False,
                        "labels": {"severity": "warning", "service": "axis-exporter"},
                        "annotations": {
                            "summary": "Sensor {{ $labels.sensor }} ({{ $labels.serial }}) stopped pushing",
                            "description": "No push from {{ $labels.sensor }} for "
                            "{{ humanizeDuration $values.SINCE.Value }}; the threshold is "
                            "{{ humanizeDuration $values.THRESHOLD.Value }} "
                            f"({QUIET_FACTOR} x its send interval, at least {QUIET_MIN_SECONDS} s). "
                            "Check the camera's power and network, and its Push Reporting settings "
                            "(URL, token).",
                            "__dashboardUid__": HEALTH_DASHBOARD_UID,
                            "__panelId__": str(sensors_panel),
                        },
                    }
                ],
            }
        ],
    }


# --- output ---------------------------------------------------------------------------------------
def rendered() -> dict[Path, str]:
    """Every generated file and its exact content."""
    files = {
        DASHBOARD_DIR / "people-counting.json": people_counting(),
        DASHBOARD_DIR / "receiver-health.json": receiver_health(),
    }
    out = {path: json.dumps(doc, indent=2, ensure_ascii=False) + "\n" for path, doc in files.items()}
    header = (
        "# Generated by grafana/build_dashboards.py: edit that file and run it, do not edit this one.\n"
        "# Grafana-managed rule: a sensor stopped pushing (per sensor; survives exporter restarts).\n"
    )
    out[ALERT_RULES_FILE] = header + yaml.safe_dump(
        alert_rules(), sort_keys=False, width=4096, allow_unicode=True
    )
    return out


def iter_changes() -> Iterator[Path]:
    """Generated files whose content on disk differs from what the generator produces."""
    for path, text in rendered().items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            yield path


def main() -> int:
    """Write the generated files; with --check only report files that are out of date."""
    if "--check" in sys.argv[1:]:
        stale = list(iter_changes())
        for path in stale:
            print(f"out of date: {path.relative_to(GRAFANA_DIR.parent)}")
        return 1 if stale else 0
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(GRAFANA_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
