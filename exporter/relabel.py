"""``axis-exporter relabel``: give a serial's stored history the labels the sensors file gives it now.

In InfluxDB a point's tags are part of its identity: the same count written again with another site is a
second point, in another series, and both are counted. So a relabel, one day at a time:

1. reads the day's points of the serial (``people_count`` and ``sensor_push``) with their tags;
2. writes each point whose labels differ again, with the current labels (and, for history stored before
   the receiver wrote them, the ``tz`` tag and the local-calendar fields of ``exporter.localday``);
3. deletes the old series in that day with InfluxQL ``DELETE`` (tag equalities and a time range, which
   InfluxDB 1.x and 2.x take on ``/query``);
4. reads the day again and checks that every point is there once, under the new labels.

What this cannot make safe, and says: between steps 2 and 3 (a fraction of a second per day) a
dashboard that queries that day counts it twice; if the run stops there, the day stays doubled until the
same command runs again (it is idempotent: the rewrite writes the same points, the delete removes what is
left of the old ones). Step 4 catches a delete that InfluxDB reported but did not do (open InfluxDB 2.x
issues #24007, #26842) and stops with the day named. InfluxDB 3 cannot delete points by tag at all; the
first ``DELETE`` fails and nothing is written.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from exporter.config import ConfigError, InfluxConfig, load_config
from exporter.influxread import InfluxReader, InfluxReadError
from exporter.lineprotocol import (
    PEOPLE_COUNT,
    SENSOR_PUSH,
    escape_key,
    escape_string_field,
    tag_set,
)
from exporter.localday import LocalCalendar
from exporter.sensorsfile import LABEL_KEYS, SensorsFile, SensorsFileError
from exporter.writer import Chunk, InfluxWriter, StorageUnavailable

DAY = 86400
CALENDAR_FIELDS = ("day_end", "hour", "week_end", "weekday")
LABELLED = (*LABEL_KEYS, "tz")


class RelabelError(Exception):
    """A relabel that stopped; the message says which day and what state it is in."""


@dataclass
class RelabelReport:
    """What a relabel did (or, dry, would do)."""

    days: int = 0
    points_rewritten: int = 0
    series_deleted: int = 0


@dataclass(frozen=True)
class Series:
    """One series of one day: its tags and its points (time first, then field values by column)."""

    measurement: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _field(value: object) -> str | None:
    """A field value as line protocol, None for a null (a field this point does not have)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return escape_string_field(str(value))


class Relabeller:
    """Relabels one serial through InfluxQL reads and deletes and the receiver's own writer."""

    def __init__(
        self,
        influx: InfluxConfig,
        serial: str,
        labels: Mapping[str, str],
        *,
        timezone: str = "",
        day_start_minutes: int = 0,
        dry_run: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.serial = serial
        self.labels = {key: value for key, value in labels.items() if value}
        self.timezone = timezone
        self.day_start_minutes = day_start_minutes
        self.dry_run = dry_run
        self.progress = progress or (lambda text: None)
        self.reader = InfluxReader(influx, timeout_seconds=60)
        self.writer = InfluxWriter(influx, 10_000)

    def close(self) -> None:
        """Release the writer's connections."""
        self.writer.close()

    def run(self, since: int, until: int) -> RelabelReport:
        """Relabel [since, until), a day at a time; RelabelError names the day where it stopped."""
        if not self.dry_run:
            self._check_deletes_work()
        report = RelabelReport()
        for start in range(since, until, DAY):
            end = min(start + DAY, until)
            rewritten, deleted = self._day(start, end)
            report.days += 1
            report.points_rewritten += rewritten
            report.series_deleted += deleted
            self.progress(
                f"{dt.datetime.fromtimestamp(start, dt.UTC):%Y-%m-%d}: {rewritten} points "
                f"{'to rewrite' if self.dry_run else 'rewritten'}, {deleted} old series"
            )
        return report

    def _check_deletes_work(self) -> None:
        """A DELETE of nothing (before 1970): InfluxDB 3 and read-only tokens fail here, before any write."""
        try:
            self.reader.results(
                [f'DELETE FROM "{PEOPLE_COUNT}" WHERE "serial" = {_quote(self.serial)} AND time < 0s']
            )
        except InfluxReadError as exc:
            raise RelabelError(
                f"InfluxDB does not take InfluxQL DELETE here ({exc}); nothing was changed. InfluxDB 3 "
                "cannot delete points by tag, and the token needs write access to the bucket"
            ) from None

    def _series(self, measurement: str, start: int, end: int) -> list[Series]:
        (result,) = self.reader.results(
            [
                f'SELECT * FROM "{measurement}" WHERE "serial" = {_quote(self.serial)} '
                f"AND time >= {start}s AND time < {end}s GROUP BY *"
            ]
        )
        return [
            Series(measurement, dict(found.get("tags") or {}), found["columns"], found["values"])
            for found in result.get("series", [])
        ]

    def _target_tags(self, series: Series, timezone: str) -> dict[str, str]:
        tags = {key: value for key, value in series.tags.items() if key not in LABELLED and value}
        tags.update(self.labels)
        if series.measurement == PEOPLE_COUNT:
            tags["tz"] = series.tags.get("tz") or LocalCalendar(timezone).zone_name
        return tags

    def _day(self, start: int, end: int) -> tuple[int, int]:
        """Relabel one day: (points rewritten, old series deleted)."""
        all_series = [s for m in (PEOPLE_COUNT, SENSOR_PUSH) for s in self._series(m, start, end)]
        timezone = self.timezone or self._timezone(all_series)
        lines: list[str] = []
        stale: list[Series] = []
        expected: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        for series in all_series:
            tags = self._target_tags(series, timezone)
            upgrade = series.measurement == PEOPLE_COUNT and "day_end" not in series.columns
            if tags == {k: v for k, v in series.tags.items() if v} and not upgrade:
                continue
            lines += self._lines(series, tags, timezone)
            if tags != {k: v for k, v in series.tags.items() if v}:
                stale.append(series)
            key = (series.measurement, tuple(sorted(tags.items())))
            expected[key] = expected.get(key, 0) + len(series.values)
        if self.dry_run or not lines:
            return len(lines), len(stale)
        day = f"{dt.datetime.fromtimestamp(start, dt.UTC):%Y-%m-%d}"
        self.writer.write_chunks(Chunk("\n".join(batch), len(batch)) for batch in _batches(lines, 10_000))
        if stale:
            self.reader.results([self._delete(series, start, end) for series in stale])
        left = {
            (s.measurement, tuple(sorted((k, v) for k, v in s.tags.items() if v))): len(s.values)
            for m in (PEOPLE_COUNT, SENSOR_PUSH)
            for s in self._series(m, start, end)
        }
        for series in stale:
            old = (series.measurement, tuple(sorted((k, v) for k, v in series.tags.items() if v)))
            if old in left:
                raise RelabelError(
                    f"{day}: InfluxDB kept {left[old]} points of the old series {dict(old[1])} after "
                    "deleting them, so that day now counts twice; run the same command again for that day"
                )
        for key, count in expected.items():
            if left.get(key, 0) < count:
                raise RelabelError(f"{day}: {left.get(key, 0)} of {count} rewritten points are in InfluxDB")
        return len(lines), len(stale)

    def _timezone(self, all_series: Iterable[Series]) -> str:
        """The serial's zone as its pushes reported it (for history stored without the tz tag)."""
        for series in all_series:
            if series.measurement == SENSOR_PUSH and "timezone" in series.columns:
                index = series.columns.index("timezone")
                for values in reversed(series.values):
                    if values[index]:
                        return str(values[index])
        return ""

    def _lines(self, series: Series, tags: Mapping[str, str], timezone: str) -> list[str]:
        prefix = escape_key(series.measurement) + tag_set(tags)
        calendar = LocalCalendar(tags.get("tz", timezone), self.day_start_minutes)
        lines = []
        for values in series.values:
            fields = dict(zip(series.columns[1:], values[1:], strict=True))
            if (
                series.measurement == PEOPLE_COUNT
                and fields.get("day_end") is None
                and fields.get("count") is not None
            ):
                day_end, hour, weekday, week_end = calendar.place(int(values[0]))
                count = int(fields["count"])
                fields.update(
                    day_end=day_end,
                    hour=hour,
                    weekday=weekday,
                    week_end=week_end,
                    net=count if tags.get("direction") == "in" else -count,
                )
            rendered = [
                f"{escape_key(name)}={text}"
                for name, value in sorted(fields.items())
                if name not in tags and (text := _field(value)) is not None
            ]
            lines.append(f"{prefix} {','.join(rendered)} {int(values[0])}")
        return lines

    def _delete(self, series: Series, start: int, end: int) -> str:
        """DELETE of exactly this series in the day: every tag it has, and '' for the labels it lacks."""
        conditions = [f'"{key}" = {_quote(value)}' for key, value in sorted(series.tags.items())]
        for key in LABELLED:
            if key not in series.tags:
                conditions.append(f"\"{key}\" = ''")
        where = " AND ".join(conditions)
        return f'DELETE FROM "{series.measurement}" WHERE {where} AND time >= {start}s AND time < {end}s'


def _batches(lines: list[str], size: int) -> Iterable[list[str]]:
    for index in range(0, len(lines), size):
        yield lines[index : index + size]


def _day(text: str, option: str) -> int:
    try:
        return int(dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC).timestamp())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a day as YYYY-MM-DD", param_hint=option) from None


@click.command("relabel")
@click.argument("serial")
@click.option("--since", required=True, help="First day to rewrite, YYYY-MM-DD (UTC).")
@click.option("--until", help="Day after the last one, YYYY-MM-DD (UTC). [default: tomorrow]")
@click.option(
    "--sensors-file",
    envvar="AXIS_EXPORTER_SENSORS_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The sensors file whose labels the history gets. [env AXIS_EXPORTER_SENSORS_FILE]",
)
@click.option("--dry-run", is_flag=True, help="Count what would change; write and delete nothing.")
def relabel_command(
    serial: str, since: str, until: str | None, sensors_file: Path | None, dry_run: bool
) -> None:
    """Rewrite SERIAL's stored points with the labels the sensors file gives it now.

    Reads INFLUXDB_V2_* like serve. Works a UTC day at a time: rewrite, delete the old series, check.
    Safe to run again; see the README ("When a sensor moves") for what it cannot make atomic.
    """
    try:
        config = load_config(os.environ)
        if config.influx is None:
            raise ConfigError(
                "INFLUXDB_V2_URL is not set: relabel works on the InfluxDB that serve writes to"
            )
        serial = serial.strip().upper()
        labels = SensorsFile(sensors_file or config.sensors_file, config.limits.serial_pattern).labels(serial)
    except (ConfigError, SensorsFileError) as exc:
        raise click.ClickException(str(exc)) from None
    start = _day(since, "--since")
    end = _day(until, "--until") if until else (int(dt.datetime.now(dt.UTC).timestamp()) // DAY + 1) * DAY
    if end <= start:
        raise click.BadParameter("must be after --since", param_hint="--until")
    shown = ", ".join(f"{key}={value}" for key, value in sorted(labels.items())) or "no labels (unassigned)"
    click.echo(f"relabel {serial}: {shown}, {since} to {dt.datetime.fromtimestamp(end, dt.UTC):%Y-%m-%d}")
    relabeller = Relabeller(
        config.influx,
        serial,
        labels,
        day_start_minutes=config.day_start_minutes,
        dry_run=dry_run,
        progress=lambda line: click.echo(f"  {line}"),
    )
    try:
        report = relabeller.run(start, end)
    except (RelabelError, InfluxReadError, StorageUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        relabeller.close()
    verb = "would rewrite" if dry_run else "rewrote"
    click.echo(
        f"{verb} {report.points_rewritten} points in {report.days} days; "
        f"{report.series_deleted} old series {'to delete' if dry_run else 'deleted'}"
    )
