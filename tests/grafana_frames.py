"""What Grafana does to a panel's InfluxQL before and after InfluxDB answers, for the dashboard tests.

Before: macros and variables are replaced as Grafana 11.6 replaces them (``$timeFilter``, ``${__from}``,
``${__to}``, ``${__to:date:seconds}``, ``$interval``, multi-value variables as an escaped regex
alternation). After: a table-format answer becomes one frame (columns: Time, the GROUP BY tags, the
selected fields) and the panel's transformations run on the frames, for the transformations the
provisioned dashboards use. Each function names the Grafana source it mirrors.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]


def regex_escape(value: str) -> str:
    """A variable value inside /.../, escaped as the InfluxDB data source's ``interpolateQueryExpr`` does
    (public/app/plugins/datasource/influxdb/datasource.ts, via lodash-style escaping of regex specials)."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/-]", lambda m: "\\" + m.group(0), value)


def regex_value(values: tuple[str, ...] | None) -> str:
    """A multi-value variable: ``.*`` for All (the variables' allValue), else ``(a|b)``."""
    return ".*" if values is None else "(" + "|".join(map(regex_escape, values)) + ")"


@dataclass(frozen=True)
class View:
    """The dashboard's state: time range (unix ms) and variable values (None: "All")."""

    start_ms: int
    end_ms: int
    interval: str = "1h"
    sites: tuple[str, ...] | None = None
    zones: tuple[str, ...] | None = None
    sensors: tuple[str, ...] | None = None

    def interpolate(self, query: str) -> str:
        """The query as Grafana sends it to InfluxDB.

        ``$timeFilter`` as Grafana's backend renders it (``time >= Xms and time <= Yms``, the InfluxQL
        query builder under pkg/tsdb/influxdb/influxql/); ``${__from}``/``${__to}`` as epoch
        milliseconds and ``${__to:date:seconds}`` as ``Math.round(ms / 1000)``, as the frontend
        replaces them (grafana/scenes ``macros/timeMacros.ts`` and ``variables/interpolation/
        formatRegistry.ts``, date format "seconds").
        """
        replacements = {
            "$timeFilter": f"time >= {self.start_ms}ms and time <= {self.end_ms}ms",
            "${__from}": str(self.start_ms),
            "${__to:date:seconds}": str(round(self.end_ms / 1000)),
            "${__to}": str(self.end_ms),
            "$interval": self.interval,
            "$site": regex_value(self.sites),
            "$zone": regex_value(self.zones),
            "$sensor": regex_value(self.sensors),
        }
        for name, value in replacements.items():
            query = query.replace(name, value)
        assert "$" not in query.replace("$/", ""), f"unsubstituted variable in {query}"
        return query


@dataclass
class Frame:
    """One data frame: named columns of equal length, and the query it came from."""

    ref: str
    columns: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, ref: str, rows: list[Row]) -> Frame:
        """A table-format InfluxQL answer: Time first, then tags and fields as InfluxDB lists them."""
        names: list[str] = []
        for row in rows:
            for name in row:
                if name not in names:
                    names.append(name)
        names = ["Time" if name == "time" else name for name in names]
        frame = cls(ref, {name: [] for name in names})
        for row in rows:
            for name in names:
                frame.columns[name].append(row.get("time" if name == "Time" else name))
        return frame

    @property
    def length(self) -> int:
        """Rows."""
        return len(next(iter(self.columns.values()), []))

    def rows(self) -> list[Row]:
        """The frame as dicts."""
        return [
            {name: values[index] for name, values in self.columns.items()} for index in range(self.length)
        ]


def organize(frames: list[Frame], options: dict[str, Any]) -> list[Frame]:
    """``organize`` (@grafana/data 11.6 src/transformations/transformers/organize.ts):
    drop excluded fields, rename, order by indexByName."""
    excluded = options.get("excludeByName", {})
    renames = options.get("renameByName", {})
    order = options.get("indexByName", {})
    result = []
    for frame in frames:
        kept = [name for name in frame.columns if not excluded.get(name)]
        position = {name: index for index, name in enumerate(kept)}
        kept.sort(key=lambda name: order.get(name, len(order) + position[name]))
        result.append(Frame(frame.ref, {renames.get(name, name): frame.columns[name] for name in kept}))
    return result


def merge(frames: list[Frame], options: dict[str, Any]) -> list[Frame]:
    """``merge`` (@grafana/data 11.6 src/transformations/transformers/merge.ts): one table; rows of
    different frames whose values agree in every field the frames share are joined into one row, the rest
    stay rows of their own."""
    merged: list[Row] = []
    names: list[str] = []
    for frame in frames:
        for name in frame.columns:
            if name not in names:
                names.append(name)
        for row in frame.rows():
            for existing in merged:
                shared = [name for name in row if name in existing]
                if (
                    shared
                    and all(existing[name] == row[name] for name in shared)
                    and any(name not in existing for name in row)
                ):
                    existing.update(row)
                    break
            else:
                merged.append(dict(row))
    return [Frame.from_rows("merged", [{name: row.get(name) for name in names} for row in merged])]


def group_by(frames: list[Frame], options: dict[str, Any]) -> list[Frame]:
    """``groupBy`` (@grafana/data 11.6 src/transformations/transformers/groupBy.ts): rows grouped by the
    groupby fields (any type), in order of first appearance; each aggregated field becomes
    ``<name> (<calculation>)``."""
    fields = options["fields"]
    keys = [name for name, spec in fields.items() if spec["operation"] == "groupby"]
    aggregates = {
        name: spec["aggregations"] for name, spec in fields.items() if spec["operation"] == "aggregate"
    }
    result = []
    for frame in frames:
        groups: dict[tuple[Any, ...], list[Row]] = {}
        for row in frame.rows():
            groups.setdefault(tuple(row[key] for key in keys), []).append(row)
        rows = []
        for values, members in groups.items():
            out = dict(zip(keys, values, strict=True))
            for name, calcs in aggregates.items():
                for calc in calcs:
                    assert calc == "sum", f"only sum is emulated, not {calc}"
                    out[f"{name} ({calc})"] = sum(member[name] or 0 for member in members)
            rows.append(out)
        result.append(Frame.from_rows(frame.ref, rows))
    return result


def sort_by(frames: list[Frame], options: dict[str, Any]) -> list[Frame]:
    """``sortBy`` (@grafana/data 11.6 src/transformations/transformers/sortBy.ts): rows by the first
    field given, numbers numerically."""
    (spec,) = options["sort"]
    result = []
    for frame in frames:
        rows = sorted(frame.rows(), key=lambda row: row[spec["field"]], reverse=bool(spec.get("desc")))
        result.append(Frame.from_rows(frame.ref, rows))
    return result


def limit(frames: list[Frame], options: dict[str, Any]) -> list[Frame]:
    """``limit`` (@grafana/data 11.6 src/transformations/transformers/limit.ts): the first ``limitField``
    rows."""
    return [Frame.from_rows(frame.ref, frame.rows()[: int(options["limitField"])]) for frame in frames]


def convert_field_type(frames: list[Frame], options: dict[str, Any]) -> list[Frame]:
    """``convertFieldType`` (@grafana/data 11.6 src/transformations/transformers/convertFieldType.ts),
    number to string only (`${v}`; the field keeps its config and value mappings)."""
    for conversion in options["conversions"]:
        assert conversion["destinationType"] == "string", "only conversions to string are emulated"
        for frame in frames:
            name = conversion["targetField"]
            if name in frame.columns:
                frame.columns[name] = [None if value is None else str(value) for value in frame.columns[name]]
    return frames


TRANSFORMATIONS: dict[str, Callable[[list[Frame], dict[str, Any]], list[Frame]]] = {
    "organize": organize,
    "merge": merge,
    "groupBy": group_by,
    "sortBy": sort_by,
    "limit": limit,
    "convertFieldType": convert_field_type,
}


def transform(frames: list[Frame], transformations: list[dict[str, Any]]) -> list[Frame]:
    """The panel's transformations in order; ``filter: byRefId`` limits one to that query's frames."""
    for step in transformations:
        apply = TRANSFORMATIONS[step["id"]]
        target = step.get("filter")
        if target is None:
            frames = apply(frames, step["options"])
        else:
            assert target["id"] == "byRefId", target
            frames = [
                apply([frame], step["options"])[0] if frame.ref == target["options"] else frame
                for frame in frames
            ]
    return frames
