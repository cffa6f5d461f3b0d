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
# Which store to call: the site and zone come with the name (with_names), when the sensors file has them.
QUIET_SUMMARY = (
    "Sensor {{ $labels.sensor }} ({{ $labels.serial }}){{ if $labels.site }} at {{ $labels.site }}"
    "{{ if $labels.zone }}, {{ $labels.zone }}{{ end }}{{ end }} stopped pushing"
)


# A sensor is its serial; its name comes from a series of its own whose value is the time of the last push
# under that name, so that topk picks the current one after a rename (prometheus/alerts.yml does the same).
def with_names(expr: str, selector: str) -> str:
    """PromQL: ``expr`` (one series per serial) with each sensor's current name and, from the receiver's
    sensors file, its site and zone as labels ``sensor``, ``site``, ``zone``."""
    names = f"axis_exporter_sensor_name_timestamp_seconds{{{selector}}}"
    current = f"0 * topk by (serial) (1, last_over_time({names}[{QUIET_LOOKBACK}])) + 1"
    return f"({expr}) * on (serial) group_left (sensor, site, zone) ({current})"


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
# Sensors are selected by site, zone and serial: a name is whatever a pusher says, so it cannot stand for a
# camera. A sensor without a site or zone has those tags empty, which /^.*$/ ("All") matches.
FILTERS = '"site" =~ /^$site$/ AND "zone" =~ /^$zone$/ AND "serial" =~ /^$sensor$/'
# Local days, hours and weeks are each sensor's own: the receiver stores, with every count, where its
# interval falls in its sensor's calendar (exporter.localday: day, day_end, hour, weekday, week_end), so
# no query applies one tz() to sensors in several zones. "Today" is the counting day that holds the end of
# the dashboard's range: the points whose day_end is still ahead of it.
RANGE_END = "${__to}ms"
RANGE_END_SECONDS = "${__to:date:seconds}"
DAY = 86400
WEEK = 7 * DAY


def current(period: str, weeks_back: int = 0) -> str:
    """InfluxQL condition: the counting ``period`` ("day" or "week") that holds the range end, or the one
    ``weeks_back`` weeks earlier (seven days of 24 hours earlier: see the README on DST weeks)."""
    span_days = 2 if period == "day" else 9  # a counting day lasts at most 25 hours, a week 169
    shift = weeks_back * WEEK
    end = f"{RANGE_END} - {shift}s" if shift else RANGE_END
    ahead = f"{RANGE_END_SECONDS} - {shift}" if shift else RANGE_END_SECONDS
    # >=: Grafana rounds ${__to:date:seconds}, so a range ending at midnight ("Today") ends on the second
    # at which that day's counts end.
    return f'time > {end} - {span_days}d AND time <= {end} AND "{period}_end" >= {ahead}'


def counts(where: str, group_by: str = "", select: str = 'sum("count")') -> str:
    """InfluxQL over people_count for the selected sensors."""
    query = f'SELECT {select} FROM "people_count" WHERE {FILTERS} AND {where}'
    return f"{query} GROUP BY {group_by}" if group_by else query


def visitors(direction: str, where: str, group_by: str = "", name: str = "") -> str:
    """InfluxQL: visitors going ``direction`` ("in" or "out") where ``where`` holds, summed (as column
    ``name``) per ``group_by``."""
    return counts(
        f"\"direction\" = '{direction}' AND {where}",
        group_by,
        f'sum("count") AS "{name}"' if name else 'sum("count")',
    )


def inside_now(group_by: str = "") -> str:
    """People inside: in minus out (the ``net`` field) per site since its counting day started, a site
    below zero counted as zero (a miscount, not negative people); sensors without a site make one."""
    per_site = counts(current("day"), '"site"', 'sum("net") AS "inside"')
    query = f'SELECT sum("inside") AS "inside" FROM ({per_site}) WHERE "inside" > 0'
    return f"{query} GROUP BY {group_by}" if group_by else query


# Hour of day, weekday and day: folded by Grafana's groupBy over quarter hours of each zone (a zone's
# hour, weekday and day are the same for all its points within a quarter hour of UTC).
def folded(field: str, direction: str = "in") -> str:
    """Visitors per ``field`` value (hour, weekday, day) over the range, as rows to fold."""
    return counts(
        f"\"direction\" = '{direction}' AND $timeFilter",
        'time(15m), "tz" fill(none)',
        f'sum("count") AS "visitors", max("{field}") AS "{field}"',
    )


PER_INTERVAL = counts("$timeFilter", 'time($interval), "direction" fill(0)')
PER_SITE = visitors("in", "$timeFilter", 'time($interval), "site" fill(0)')
# The newest push per serial, as a raw point: two last() would make InfluxQL answer time 0.
LAST_PUSH = (
    'SELECT "sensor_label" AS "sensor", "ip_address", "site", "zone" FROM "sensor_push" '
    f'WHERE {FILTERS} GROUP BY "serial" ORDER BY time DESC LIMIT 1'
)
# "name (SERIAL)" per serial, newest first; the variable's regex makes the serial its value.
SENSOR_VALUES = (
    'SELECT last("sensor_label") FROM "sensor_push" WHERE time > now() - 90d '
    'AND "site" =~ /^$site$/ AND "zone" =~ /^$zone$/ GROUP BY "serial"'
)
SENSOR_REGEX = r"/^(?<text>.* \((?<value>[^()]+)\))$/"
SITE_VALUES = 'SHOW TAG VALUES FROM "people_count" WITH KEY = "site"'
ZONE_VALUES = 'SHOW TAG VALUES FROM "people_count" WITH KEY = "zone" WHERE "site" =~ /^$site$/'
HOUR_NAMES = {str(hour): f"{hour:02d}:00" for hour in range(24)}
WEEKDAY_NAMES = {"1": "Mon", "2": "Tue", "3": "Wed", "4": "Thu", "5": "Fri", "6": "Sat", "7": "Sun"}


# --- panel helpers --------------------------------------------------------------------------------
GRID_COLUMNS = 24


class Layout:
    """Collects a dashboard's panels row by row, giving each its place on the grid and its id in order."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.y = 0

    def row(self, height: int, *panels: tuple[dict[str, Any], int]) -> None:
        """Add ``panels``, each as (panel, width), left to right in a row ``height`` units tall."""
        widths = [width for _, width in panels]
        if sum(widths) > GRID_COLUMNS:
            raise ValueError(f"a row is {GRID_COLUMNS} columns wide, not {' + '.join(map(str, widths))}")
        x = 0
        for panel, width in panels:
            panel["id"] = len(self.panels) + 1
            panel["gridPos"] = {"h": height, "w": width, "x": x, "y": self.y}
            self.panels.append(panel)
            x += width
        self.y += height


def influx_target(ref: str, query: str, *, alias: str = "", table: bool = False) -> dict[str, Any]:
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


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    """Absolute thresholds from (color, value) pairs; the first value must be None (base)."""
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for color, value in steps]}


def value_names(names: dict[str, str]) -> list[dict[str, Any]]:
    """Value mappings that show each value in ``names`` as its text."""
    return [{"type": "value", "options": {value: {"text": text} for value, text in names.items()}}]


def by_ref(ref: str) -> dict[str, Any]:
    """Transformation filter: apply only to the frames of query ``ref``."""
    return {"id": "byRefId", "options": ref}


def columns(names: dict[str, str], **options: Any) -> dict[str, Any]:
    """Transformation: put the columns in the order of ``names`` and title them with its values."""
    return {
        "id": "organize",
        "options": {
            **options,
            "indexByName": {name: index for index, name in enumerate(names)},
            "renameByName": names,
        },
    }


def stat(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    fields: str = "",
    text_mode: str = "value_and_name",
    transformations: list[dict[str, Any]] | None = None,
    **defaults: Any,
) -> dict[str, Any]:
    """A stat panel showing the last value of each series (of the ``fields`` matched, if given)."""
    panel = {
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
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": fields, "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": text_mode,
            "wideLayout": True,
            "showPercentChange": False,
        },
    }
    if transformations:
        panel["transformations"] = transformations
    return panel


def timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    unit: str = "short",
    bars: bool = False,
    style: dict[str, Any] | None = None,
    time_shift: str = "",
    **defaults: Any,
) -> dict[str, Any]:
    """A time series panel (lines, or bars for counts per interval); ``style`` overrides how it draws."""
    custom: dict[str, Any] = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 70 if bars else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "none", "group": "A"},
        "axisSoftMin": 0,
        **(style or {}),
    }
    panel = {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": targets[0]["datasource"],
        "targets": targets,
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}, **defaults},
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
    }
    if time_shift:
        panel["timeShift"] = time_shift
    return panel


def table(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    transformations: list[dict[str, Any]],
    **defaults: Any,
) -> dict[str, Any]:
    """A table of table-format queries that ``transformations`` join into one."""
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": targets[0]["datasource"],
        "targets": targets,
        "transformations": transformations,
        "fieldConfig": {"defaults": {**defaults, "custom": {"align": "auto"}}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}},
    }


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


def query_variable(
    name: str,
    label: str,
    description: str,
    datasource: dict[str, str],
    query: str,
    *,
    single: str = "",
    refresh: int = 1,
    regex: str = "",
) -> dict[str, Any]:
    """A variable whose values ``query`` lists: any of them, "All" by default, or with ``single`` only one,
    that one by default. ``refresh`` 1 lists them when the dashboard loads, 2 when its time range changes."""
    choice: dict[str, Any] = (
        {
            "multi": False,
            "includeAll": False,
            "current": {"selected": True, "text": single, "value": single},
        }
        if single
        else {
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        }
    )
    return {
        "type": "query",
        "name": name,
        "label": label,
        "description": description,
        "datasource": datasource,
        "query": query,
        "definition": query,
        **choice,
        "options": [],
        "refresh": refresh,
        "regex": regex,
        "sort": 1,
        "hide": 0,
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
ZONE_NOTE = " Each sensor's visitors count in its own time zone, so sensors in several zones add up right."


def fold(field: str) -> list[dict[str, Any]]:
    """Grafana transformations: sum ``visitors`` per value of ``field``, in ascending order of it."""
    return [
        {
            "id": "groupBy",
            "options": {
                "fields": {
                    field: {"aggregations": [], "operation": "groupby"},
                    "visitors": {"aggregations": ["sum"], "operation": "aggregate"},
                }
            },
        },
        {"id": "sortBy", "options": {"sort": [{"field": field, "desc": False}]}},
    ]


def folded_chart(title: str, description: str, field: str, names: dict[str, str] | None) -> dict[str, Any]:
    """A bar chart of visitors in per ``field`` (hour, weekday, day) over the range, in each sensor's zone."""
    return {
        "type": "barchart",
        "title": title,
        "description": description + ZONE_NOTE,
        "datasource": INFLUX_DS,
        "targets": [influx_target("A", folded(field), table=True)],
        "transformations": [
            *fold(field),
            {
                "id": "convertFieldType",
                "options": {"conversions": [{"targetField": field, "destinationType": "string"}]},
            },
        ],
        "fieldConfig": {
            "defaults": {"decimals": 0, "color": {"mode": "fixed", "fixedColor": "green"}},
            "overrides": [
                {
                    "matcher": {"id": "byName", "options": field},
                    "properties": [{"id": "mappings", "value": value_names(names) if names else []}],
                }
            ],
        },
        "options": {
            "xField": field,
            "orientation": "vertical",
            "showValue": "never",
            "barWidth": 0.8,
            "groupWidth": 0.7,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
            "tooltip": {"mode": "single", "sort": "none"},
        },
    }


def merged_table(
    title: str,
    description: str,
    queries: dict[str, str],
    names: dict[str, str],
    *,
    times: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A table joining InfluxQL ``queries`` (by refId) on their tag columns, ordered and titled by ``names``.
    A query's time column is dropped, unless ``times`` names the column it becomes."""
    times = times or {}
    keep_or_drop_time = [
        {
            "id": "organize",
            "filter": by_ref(ref),
            "options": {"renameByName": {"Time": times[ref]}}
            if ref in times
            else {"excludeByName": {"Time": True}},
        }
        for ref in queries
    ]
    return table(
        title,
        description,
        [influx_target(ref, query, table=True) for ref, query in queries.items()],
        [*keep_or_drop_time, {"id": "merge", "options": {}}, columns(names)],
        decimals=0,
        noValue="0",
    )


def people_counting() -> dict[str, Any]:
    """Store-facing dashboard: visitors today and this week, people inside, sites, sensors, hours."""
    today = stat(
        "Today",
        "Visitors counted in and out since each sensor's counting day started (its local midnight, or "
        "the receiver's AXIS_EXPORTER_DAY_START), in its own time zone.",
        [influx_target("A", counts(current("day"), '"direction"'), alias="$tag_direction")],
    )
    inside = stat(
        "People inside now",
        "Visitors in minus visitors out since the counting day started, added up per site (the sensors "
        "file); a site below zero counts as zero. Sensors without a site count as one site.",
        [influx_target("A", inside_now(), alias="Inside now")],
        noValue="0",
    )
    day_vs_week = stat(
        "Today and the same weekday last week",
        "Visitors in so far today, and on the same weekday a week ago up to the same time of day.",
        [
            influx_target("A", visitors("in", current("day")), alias="Today"),
            influx_target("B", visitors("in", current("day", 1)), alias="Same weekday last week"),
        ],
        noValue="0",
    )
    week_vs_week = stat(
        "This week and last week",
        "Visitors in so far this week (Monday to Sunday, in each sensor's zone), and last week up to the "
        "same time.",
        [
            influx_target("A", visitors("in", current("week")), alias="This week"),
            influx_target("B", visitors("in", current("week", 1)), alias="Last week"),
        ],
        noValue="0",
    )
    per_interval = timeseries(
        "Visitors in and out per $interval",
        "Counts per aggregation interval (the 'Interval' variable), in and out side by side.",
        [influx_target("A", PER_INTERVAL, alias="$tag_direction")],
        bars=True,
        decimals=0,
    )
    last_week = timeseries(
        "Same period last week",
        "The same chart shifted back seven days, for comparison.",
        [influx_target("A", PER_INTERVAL, alias="$tag_direction")],
        bars=True,
        time_shift="7d",
        decimals=0,
    )
    sites = merged_table(
        "Sites today",
        "Per site (the sensors file's 'site'; sensors without one under an empty site): visitors in and "
        "out since the counting day started, people inside (never below zero), and visitors in on the "
        "same weekday last week up to the same time.",
        {
            "IN": visitors("in", current("day"), '"site"', "in_today"),
            "OUT": visitors("out", current("day"), '"site"', "out_today"),
            "INSIDE": inside_now('"site"'),
            "WEEK": visitors("in", current("day", 1), '"site"', "in_last_week"),
        },
        {
            "site": "Site",
            "in_today": "In today",
            "out_today": "Out today",
            "inside": "Inside now",
            "in_last_week": "In, same weekday last week",
        },
    )
    per_site = timeseries(
        "Visitors in per site",
        "Visitors in per aggregation interval, one line per site, to compare sites.",
        [influx_target("A", PER_SITE, alias="$tag_site")],
        decimals=0,
    )
    sensors = merged_table(
        "Sensors today",
        "Per sensor: its site and zone (as of its last push), visitors in and out since its counting day "
        "started, and its last push (with the address it pushed from).",
        {
            "IN": visitors("in", current("day"), '"serial"', "in_today"),
            "OUT": visitors("out", current("day"), '"serial"', "out_today"),
            "PUSH": LAST_PUSH,
        },
        {
            "sensor": "Sensor",
            "serial": "Serial",
            "site": "Site",
            "zone": "Zone",
            "in_today": "In today",
            "out_today": "Out today",
            "last_push": "Last push",
            "ip_address": "Pushed from",
        },
        times={"PUSH": "last_push"},
    )
    by_hour = folded_chart(
        "Visitors in by hour of day",
        "Visitors in over the selected range, per local clock hour.",
        "hour",
        HOUR_NAMES,
    )
    by_weekday = folded_chart(
        "Visitors in by day of week",
        "Visitors in over the selected range, per weekday of the counting day.",
        "weekday",
        WEEKDAY_NAMES,
    )
    busiest = stat(
        "Busiest hour",
        "The local clock hour with the most visitors in over the selected range, in each sensor's zone.",
        [influx_target("A", folded("hour"), table=True)],
        fields="/^hour$/",
        text_mode="value",
        transformations=[
            *fold("hour"),
            {"id": "sortBy", "options": {"sort": [{"field": "visitors (sum)", "desc": True}]}},
            {"id": "limit", "options": {"limitField": 1}},
        ],
        mappings=value_names(HOUR_NAMES),
    )

    layout = Layout()
    layout.row(5, (today, 6), (inside, 5), (day_vs_week, 7), (week_vs_week, 6))
    layout.row(9, (per_interval, 24))
    layout.row(7, (last_week, 24))
    layout.row(8, (sites, 14), (per_site, 10))
    layout.row(7, (sensors, 24))
    layout.row(8, (by_hour, 9), (by_weekday, 9), (busiest, 6))

    variables = [
        datasource_variable("ds_influxdb", "InfluxDB", "influxdb", INFLUXDB_UID, "InfluxDB (axis)"),
        query_variable("site", "Site", "Sites from the receiver's sensors file.", INFLUX_DS, SITE_VALUES),
        query_variable("zone", "Zone", "Zones of the selected sites.", INFLUX_DS, ZONE_VALUES),
        query_variable(
            "sensor",
            "Sensor",
            "Sensors that the panels add up, listed by the name set on the camera and selected by serial (a "
            "name alone could be anyone's).",
            INFLUX_DS,
            SENSOR_VALUES,
            regex=SENSOR_REGEX,
        ),
        {
            "type": "interval",
            "name": "interval",
            "label": "Interval",
            "description": "Aggregation interval of the charts over time (days and weeks: see the charts "
            "folded by each sensor's calendar).",
            "query": "15m,30m,1h,3h,6h,12h",
            "auto": False,
            "auto_count": 30,
            "auto_min": "15m",
            "current": {"selected": True, "text": "1h", "value": "1h"},
            "options": [],
            "refresh": 2,
            "hide": 0,
        },
    ]
    return dashboard(
        PEOPLE_DASHBOARD_UID,
        "Axis people counting",
        "Visitors counted by Axis people counters, as stored by axis-exporter in InfluxDB.",
        ["axis-exporter", "people-counting"],
        layout.panels,
        variables,
        time_from="now-7d",
        refresh="5m",
    )


# --- receiver health ------------------------------------------------------------------------------
SELECTOR = 'job=~"$job", instance=~"$instance"'
RATE = "$__rate_interval"
REJECTED_RESULTS = "bad_request|unauthorized|forbidden|too_large|unsupported_media_type"
UP_NAMES = [
    {
        "type": "value",
        "options": {
            "0": {"text": "Down", "color": "red", "index": 0},
            "1": {"text": "Up", "color": "green", "index": 1},
        },
    }
]


def receiver_health() -> dict[str, Any]:
    """Operator-facing dashboard on the receiver's own Prometheus metrics."""
    influx_up = stat(
        "InfluxDB reachable",
        "Whether every receiver process could reach InfluxDB at its last write or check.",
        [prom_target("A", f"min(axis_exporter_influxdb_up{{{SELECTOR}}})", "InfluxDB")],
        mappings=UP_NAMES,
        thresholds=thresholds(("red", None), ("green", 1)),
    )
    scrape_up = stat(
        "Receiver scraped",
        "Whether Prometheus could scrape every selected receiver instance.",
        [prom_target("A", f"min(up{{{SELECTOR}}})", "Receiver")],
        mappings=UP_NAMES,
        thresholds=thresholds(("red", None), ("green", 1)),
    )
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
    pushes = timeseries(
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
    )
    points = timeseries(
        "Points written per second",
        "Points InfluxDB confirmed as written.",
        [
            prom_target(
                "A", f"sum(rate(axis_exporter_points_written_total{{{SELECTOR}}}[{RATE}]))", "points/s"
            )
        ],
    )
    latency = timeseries(
        "InfluxDB write latency",
        "Percentiles of one write request to InfluxDB, and of handling a whole push.",
        [
            *(
                prom_target(
                    ref,
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate(axis_exporter_influxdb_write_duration_seconds_bucket{{{SELECTOR}}}[{RATE}])))",
                    f"write p{int(q * 100)}",
                )
                for ref, q in (("A", 0.5), ("B", 0.9), ("C", 0.99))
            ),
            prom_target(
                "D",
                "histogram_quantile(0.99, sum by (le) "
                f"(rate(axis_exporter_push_duration_seconds_bucket{{{SELECTOR}}}[{RATE}])))",
                "whole push p99",
            ),
        ],
        unit="s",
    )
    rejected = timeseries(
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
    )
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
        style={"fillOpacity": 0, "thresholdsStyle": {"mode": "line+area"}},
        thresholds=thresholds(("green", None), ("red", 1)),
    )
    send_interval = with_names(
        "max by (serial) (last_over_time("
        f"axis_exporter_sensor_push_interval_seconds{{{SELECTOR}}}[{QUIET_LOOKBACK}]))",
        SELECTOR,
    )
    sensors = table(
        "Sensors",
        "Last push, alert threshold and observed send interval per sensor, as Prometheus sees them now.",
        [
            prom_target(ref, expr, instant=True, table=True)
            for ref, expr in (
                ("A", seconds_since_last_push(SELECTOR)),
                ("B", quiet_threshold(SELECTOR)),
                ("C", send_interval),
            )
        ],
        [
            {"id": "merge", "options": {}},
            columns(
                {
                    "sensor": "Sensor",
                    "serial": "Serial",
                    "Value #A": "Since last push",
                    "Value #B": "Alert threshold",
                    "Value #C": "Send interval",
                },
                excludeByName={"Time": True},
            ),
        ],
        unit="s",
        decimals=0,
    )
    reachability = timeseries(
        "InfluxDB reachability over time",
        "1 while every receiver process reaches InfluxDB, 0 during an outage (pushes then get 503).",
        [prom_target("A", f"min(axis_exporter_influxdb_up{{{SELECTOR}}})", "InfluxDB up")],
        unit="none",
        style={"lineInterpolation": "stepAfter"},
        min=0,
        max=1,
    )
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

    layout = Layout()
    layout.row(4, (influx_up, 4), (scrape_up, 4), (quiet, 5), (untracked, 5), (unrouted, 6))
    layout.row(8, (pushes, 12), (points, 12))
    layout.row(8, (latency, 12), (rejected, 12))
    layout.row(8, (silence, 24))
    layout.row(8, (sensors, 12), (reachability, 6), (deadletter_bytes, 6))

    variables = [
        datasource_variable("ds_prometheus", "Prometheus", "prometheus", PROMETHEUS_UID, "Prometheus (axis)"),
        query_variable(
            "job",
            "Job",
            "Prometheus job that scrapes the receiver.",
            PROM_DS,
            "label_values(axis_exporter_build_info, job)",
            single=JOB,
        ),
        query_variable(
            "instance",
            "Instance",
            "Receiver instances to include.",
            PROM_DS,
            'label_values(axis_exporter_build_info{job=~"$job"}, instance)',
            refresh=2,
        ),
    ]
    return dashboard(
        HEALTH_DASHBOARD_UID,
        "Axis exporter: receiver health",
        "The receiver's own metrics: pushes, writes to InfluxDB, rejected input and sensors that went quiet.",
        ["axis-exporter", "operations"],
        layout.panels,
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
                            "summary": QUIET_SUMMARY,
                            "description": "No push from {{ $labels.sensor }}{{ if $labels.site }} at "
                            "{{ $labels.site }}{{ end }} for "
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
