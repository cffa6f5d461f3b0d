"""Conversion of validated measurements into InfluxDB line protocol (second precision).

The output is byte-for-byte what influxdb-client's ``Point`` produces for the same data (tags and
fields sorted by key, same escaping); tests hold the two side by side.
"""

from __future__ import annotations

from collections.abc import Iterable

from exporter.payload import Measurement, Push

PEOPLE_COUNT = "people_count"
SENSOR_PUSH = "sensor_push"

_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})


def escape_key(key: str) -> str:
    """Escape a tag key or field key."""
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


def _tag(key: str, value: str) -> str:
    """``,key=value`` or nothing for an empty value (line protocol has no empty tag values)."""
    escaped = escape_tag_value(value)
    return f",{key}={escaped}" if escaped else ""


class PushLineBuilder:
    """Builds the line protocol for one push; tag prefixes are escaped once per push, not per item."""

    def __init__(self, push: Push) -> None:
        sensor = push.sensor
        # Tags are sorted by key like Point does: direction, kind, sensor, serial.
        self._sensor_tags = _tag("sensor", sensor.name) + _tag("serial", sensor.serial)
        self._push = push
        self._kind_cache: dict[tuple[str, str], str] = {}

    def _series(self, direction: str, kind: str) -> str:
        key = (direction, kind)
        series = self._kind_cache.get(key)
        if series is None:
            series = (
                PEOPLE_COUNT + _tag("direction", direction) + _tag("kind", kind) + self._sensor_tags + " "
            )
            self._kind_cache[key] = series
        return series

    def measurement_lines(self, measurement: Measurement) -> list[str]:
        """One line per item of ``measurement``."""
        timestamp = measurement.utc_from
        lines = []
        for item in measurement.items:
            if item.adults is None and not item.extra:
                field_set = f"count={item.count}i"
            else:
                field_set = self._field_set(item.count, item.adults, item.extra)
            lines.append(f"{self._series(item.direction, measurement.kind)}{field_set} {timestamp}")
        return lines

    @staticmethod
    def _field_set(count: int, adults: int | None, extra: tuple[tuple[str, float], ...]) -> str:
        # Sorted by raw key, like Point.
        fields = {"count": f"{count}i"}
        if adults is not None:
            fields["adults"] = f"{adults}i"
        for key, value in extra:
            fields[key] = format_float(value)
        return ",".join(f"{escape_key(key)}={fields[key]}" for key in sorted(fields))

    def sensor_push_line(self, intervals: int, received_at: int) -> str:
        """The ``sensor_push`` point that records this push (and proves its data was stored)."""
        sensor = self._push.sensor
        fields = (
            f"application={escape_string_field(sensor.application)},"
            f"application_version={escape_string_field(sensor.application_version)},"
            f"intervals={intervals}i,"
            f"ip_address={escape_string_field(sensor.ip_address)},"
            f"test={'true' if self._push.test_connection else 'false'},"
            f"timezone={escape_string_field(sensor.timezone)}"
        )
        timestamp = self._push.utc_sent if self._push.utc_sent is not None else received_at
        return f"{SENSOR_PUSH}{self._sensor_tags} {fields} {timestamp}"


def lines_for(push: Push, measurements: Iterable[Measurement]) -> list[str]:
    """All ``people_count`` lines of ``measurements`` (a convenience for tests and tools)."""
    builder = PushLineBuilder(push)
    return [line for measurement in measurements for line in builder.measurement_lines(measurement)]
