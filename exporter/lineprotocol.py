"""InfluxDB line protocol for the receiver's two measurements (second precision): escaping, series, lines.

The output is byte-for-byte what influxdb-client's ``Point`` produces for the same data (tags and fields
sorted by key, same escaping); tests hold the two side by side. A leaf: it takes plain values and knows
nothing of pushes, JSON or InfluxDB's API (``convert`` composes it with the payload rules).
"""

from __future__ import annotations

from collections.abc import Mapping

PEOPLE_COUNT = "people_count"
SENSOR_PUSH = "sensor_push"

_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})


def escape_key(key: str) -> str:
    """Escape a measurement name, tag key or field key."""
    return key.translate(_ESCAPE_KEY)


def escape_tag_value(value: str) -> str:
    """Escape a tag value; a trailing backslash would escape the separator, so it gets a space."""
    escaped = value.translate(_ESCAPE_KEY)
    return escaped + " " if escaped.endswith("\\") else escaped


def escape_string_field(value: str) -> str:
    """Quote and escape a string field value."""
    return '"' + value.translate(_ESCAPE_STRING) + '"'


def format_float(value: float) -> str:
    """Format a float field the way influxdb-client does (no trailing '.0')."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def sensor_label(name: str, serial: str) -> str:
    """How dashboards list a sensor: its name and, so that no name can pass for another camera, its serial."""
    return f"{name} ({serial})"


def tag_set(tags: Mapping[str, str]) -> str:
    """``,key=value`` for each tag with a value, sorted by key like Point does (no empty tag values)."""
    pairs = ((key, escape_tag_value(tags[key])) for key in sorted(tags))
    return "".join(f",{escape_key(key)}={value}" for key, value in pairs if value)


def count_fields(count: int, adults: int | None, net: int, calendar: tuple[str, str]) -> str:
    """The fields of a ``people_count`` point, sorted by key: adults, count, the calendar's day_end, hour
    (``calendar[0]``, ending in a comma), net, then week_end, weekday (``calendar[1]``)."""
    counts = f"count={count}i" if adults is None else f"adults={adults}i,count={count}i"
    return f"{counts},{calendar[0]}net={net}i{calendar[1]}"


class PushLines:
    """The line protocol of one sensor's push; its tag prefixes are escaped once, not per item.

    ``labels`` (site, zone, ... from the sensors file) are tags of both measurements; ``zone_name`` is
    the ``tz`` tag of ``people_count``.
    """

    def __init__(
        self, name: str, serial: str, zone_name: str, labels: Mapping[str, str] | None = None
    ) -> None:
        self._sensor_tags = {"sensor": name, "serial": serial, **(labels or {})}
        self._zone_name = zone_name
        self._series: dict[tuple[str, str], str] = {}

    def series(self, direction: str, kind: str) -> str:
        """``people_count,<tags> `` of one direction and kind: a line is this, its fields, its time."""
        key = (direction, kind)
        series = self._series.get(key)
        if series is None:
            tags = {**self._sensor_tags, "direction": direction, "kind": kind, "tz": self._zone_name}
            series = PEOPLE_COUNT + tag_set(tags) + " "
            self._series[key] = series
        return series

    def sensor_push(
        self,
        *,
        application: str,
        application_version: str,
        ip_address: str,
        timezone: str,
        test: bool,
        intervals: int,
        timestamp: int,
    ) -> str:
        """The ``sensor_push`` point that records a push (and, written last, proves its data was stored)."""
        label = sensor_label(self._sensor_tags["sensor"], self._sensor_tags["serial"])
        fields = (
            f"application={escape_string_field(application)},"
            f"application_version={escape_string_field(application_version)},"
            f"intervals={intervals}i,"
            f"ip_address={escape_string_field(ip_address)},"
            f"sensor_label={escape_string_field(label)},"
            f"test={'true' if test else 'false'},"
            f"timezone={escape_string_field(timezone)}"
        )
        return f"{SENSOR_PUSH}{tag_set(self._sensor_tags)} {fields} {timestamp}"
