"""Conversion of validated measurements into InfluxDB line protocol (second precision).

The output is byte-for-byte what influxdb-client's ``Point`` produces for the same data (tags and
fields sorted by key, same escaping); tests hold the two side by side.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from exporter.config import PushLimits
from exporter.localday import LocalCalendar
from exporter.payload import (
    DEFAULT_LIMITS,
    DIRECTIONS,
    KINDS,
    MAX_ITEMS,
    Measurement,
    MeasurementError,
    MeasurementSplitter,
    PayloadError,
    Push,
    Rejected,
    Unsplittable,
    bounded,
    check_measurement_count,
    parse_push,
    push_from_document,
    validate_measurement,
)
from exporter.writer import Chunk

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


def sensor_label(name: str, serial: str) -> str:
    """How dashboards list a sensor: its name and, so that no name can pass for another camera, its serial."""
    return f"{name} ({serial})"


def _tag(key: str, value: str) -> str:
    """``,key=value`` or nothing for an empty value (line protocol has no empty tag values)."""
    escaped = escape_tag_value(value)
    return f",{key}={escaped}" if escaped else ""


def _tags(tags: Mapping[str, str]) -> str:
    """``,key=value`` for each tag, sorted by key like Point does."""
    return "".join(_tag(key, tags[key]) for key in sorted(tags))


class PushLineBuilder:
    """Builds the line protocol for one push; tag prefixes are escaped once per push, not per item.

    ``labels`` (site, zone, ... from the sensors file) become tags of both measurements; the sensor's
    zone becomes the ``tz`` tag of ``people_count``, and its local calendar the fields of
    ``exporter.localday`` (``day_start_minutes`` after local midnight is when a counting day starts).
    """

    def __init__(
        self, push: Push, *, labels: Mapping[str, str] | None = None, day_start_minutes: int = 0
    ) -> None:
        sensor = push.sensor
        self.calendar = LocalCalendar(sensor.timezone, day_start_minutes)
        self._sensor_tags = {"sensor": sensor.name, "serial": sensor.serial, **(labels or {})}
        self._push = push
        self._kind_cache: dict[tuple[str, str], str] = {}

    def _series(self, direction: str, kind: str) -> str:
        key = (direction, kind)
        series = self._kind_cache.get(key)
        if series is None:
            tags = {**self._sensor_tags, "direction": direction, "kind": kind, "tz": self.calendar.zone_name}
            series = PEOPLE_COUNT + _tags(tags) + " "
            self._kind_cache[key] = series
        return series

    def measurement_lines(self, measurement: Measurement) -> list[str]:
        """One line per item of ``measurement``."""
        timestamp = measurement.utc_from
        before_net, after_net = self.calendar.fields(timestamp)
        lines = []
        for item in measurement.items:
            # Fields sorted by key, like Point: adults, count, day, day_end, hour, net, week_end, weekday.
            net = item.count if item.direction == "in" else -item.count
            counts = (
                f"count={item.count}i"
                if item.adults is None
                else f"adults={item.adults}i,count={item.count}i"
            )
            lines.append(
                f"{self._series(item.direction, measurement.kind)}{counts},{before_net}net={net}i{after_net} "
                f"{timestamp}"
            )
        return lines

    def sensor_push_line(self, intervals: int, received_at: int) -> str:
        """The ``sensor_push`` point that records this push (and proves its data was stored)."""
        assert self._push is not None, "built without a push"
        sensor = self._push.sensor
        fields = (
            f"application={escape_string_field(sensor.application)},"
            f"application_version={escape_string_field(sensor.application_version)},"
            f"intervals={intervals}i,"
            f"ip_address={escape_string_field(sensor.ip_address)},"
            f"sensor_label={escape_string_field(sensor_label(sensor.name, sensor.serial))},"
            f"test={'true' if self._push.test_connection else 'false'},"
            f"timezone={escape_string_field(sensor.timezone)}"
        )
        timestamp = self._push.utc_sent if self._push.utc_sent is not None else received_at
        return f"{SENSOR_PUSH}{_tags(self._sensor_tags)} {fields} {timestamp}"


class BatchResult:
    """What converting some raw measurements gave: line text, rejects and the span of the valid ones."""

    __slots__ = ("intervals", "lines", "max_to", "min_from", "rejected")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.rejected: list[Rejected] = []
        self.intervals = 0
        self.min_from: int | None = None
        self.max_to: int | None = None


_MAX_INT64 = 2**63 - 1
_MAX_EPOCH = _MAX_INT64 // 1_000_000_000
_fromisoformat = datetime.fromisoformat
_CACHE_LIMIT = 1000  # distinct (direction, kind) pairs remembered per push


class FastConverter:
    """Validates raw measurements and builds their lines in one pass, for the shapes devices send.

    Anything outside the common shape (extra attributes, floats, odd times, bad values) goes through
    ``validate_measurement`` and ``PushLineBuilder`` instead, so the output is always theirs. The work
    per measurement is bounded (at most ``MAX_ITEMS`` items are looked at), so conversion is linear in
    the body whatever it holds.
    """

    def __init__(self, builder: PushLineBuilder, limits: PushLimits, latest_end: int) -> None:
        self._builder = builder
        self._limits = limits
        self._latest_end = latest_end
        # (raw direction, raw kind) -> (canonical direction, series prefix ending in a space)
        self._series: dict[tuple[object, object], tuple[str, str] | None] = {}
        self._zero: dict[object, tuple[str, str] | None] = {}

    def _series_for(self, direction: object, kind: object) -> tuple[str, str] | None:
        key = (direction, kind)
        try:
            return self._series[key]
        except KeyError:
            pass
        found: tuple[str, str] | None = None
        if direction in DIRECTIONS and kind in KINDS:
            found = (direction, self._builder._series(direction, kind))
        if len(self._series) < _CACHE_LIMIT:
            self._series[key] = found
        return found

    def _zero_lines(self, kind: object) -> tuple[str, str] | None:
        try:
            return self._zero[kind]
        except KeyError:
            pass
        found: tuple[str, str] | None = None
        if kind in KINDS:
            found = (
                self._builder._series("in", kind) + "count=0i,",
                self._builder._series("out", kind) + "count=0i,",
            )
        if len(self._zero) < _CACHE_LIMIT:
            self._zero[kind] = found
        return found

    def convert(self, raws: Iterable[Any], result: BatchResult) -> None:
        """Append the lines of ``raws`` to ``result.lines``; invalid ones go to ``result.rejected``."""
        lines = result.lines
        append = lines.append
        series_cache = self._series
        series_for = self._series_for
        builder = self._builder
        prev_text: object = None
        prev_value = 0
        min_from = result.min_from
        max_to = result.max_to
        intervals = result.intervals
        max_count = self._limits.max_count
        latest_end = self._latest_end
        calendar_fields = builder.calendar.fields
        for raw in raws:
            start = len(lines)
            try:
                if type(raw) is not dict:
                    raise _Slow
                text = raw.get("utcFrom")
                # A measurement usually starts where the one before ended: parse that time once.
                utc_from = prev_value if text == prev_text and type(text) is str else _fast_utc(text)
                text = raw.get("utcTo")
                if text is None:
                    utc_to = utc_from
                else:
                    utc_to = _fast_utc(text)
                    prev_text, prev_value = text, utc_to
                if not utc_from <= utc_to <= latest_end:
                    raise _Slow
                before_net, after_net = calendar_fields(utc_from)
                kind = raw.get("kind")
                items = raw.get("items")
                if not items:
                    if items is not None and items != []:
                        raise _Slow
                    zero = self._zero_lines(kind)
                    if zero is None:
                        raise _Slow
                    append(f"{zero[0]}{before_net}net=0i{after_net} {utc_from}")
                    append(f"{zero[1]}{before_net}net=0i{after_net} {utc_from}")
                else:
                    if type(items) is not list or len(items) > MAX_ITEMS:
                        raise _Slow
                    seen: list[str] = []  # at most MAX_ITEMS long
                    for item in items:
                        if type(item) is not dict:
                            raise _Slow
                        direction = item.get("direction")
                        count = item.get("count")
                        if type(count) is not int or not 0 <= count <= max_count:
                            raise _Slow
                        key = (direction, kind)
                        series = series_cache[key] if key in series_cache else series_for(direction, kind)
                        if series is None or series[0] in seen:
                            raise _Slow
                        seen.append(series[0])
                        net = count if series[0] == "in" else -count
                        size = len(item)
                        if size == 2:
                            append(f"{series[1]}count={count}i,{before_net}net={net}i{after_net} {utc_from}")
                        elif size == 3:
                            adults = item.get("adults")
                            if type(adults) is not int or not 0 <= adults <= max_count:
                                raise _Slow
                            append(
                                f"{series[1]}adults={adults}i,count={count}i,"
                                f"{before_net}net={net}i{after_net} {utc_from}"
                            )
                        else:
                            raise _Slow
            except (_Slow, ValueError, TypeError, OverflowError, OSError):
                del lines[start:]
                try:
                    measurement = validate_measurement(raw, self._limits, latest_end)
                except MeasurementError as exc:
                    result.rejected.append(Rejected(str(exc), bounded(raw)))
                    continue
                lines.extend(builder.measurement_lines(measurement))
                utc_from, utc_to = measurement.utc_from, measurement.utc_to
            intervals += 1
            if min_from is None or utc_from < min_from:
                min_from = utc_from
            if max_to is None or utc_to > max_to:
                max_to = utc_to
        result.intervals = intervals
        result.min_from = min_from
        result.max_to = max_to


class _Slow(Exception):
    """Internal: this measurement needs the general path."""


def _fast_utc(text: object) -> int:
    """Unix seconds of an ISO time with an offset; _Slow for anything the general path should judge."""
    if type(text) is not str:
        raise _Slow
    moment = _fromisoformat(text)
    if moment.tzinfo is None:
        raise _Slow
    seconds = int(moment.timestamp())
    if not 0 < seconds <= _MAX_EPOCH:
        raise _Slow
    return seconds


# Bodies from this size on are parsed a slice at a time, to bound memory (and keep the slices in cache).
SPLIT_MIN_BYTES = 1 << 20
PIECE_BYTES = 1 << 16


class ParsedPush(NamedTuple):
    """A push whose envelope was checked; a large one's measurements come as slices, parsed on demand."""

    push: Push
    pieces: Iterator[list[Any]] | None


def parse_body(
    body: bytes | bytearray,
    limits: PushLimits = DEFAULT_LIMITS,
    *,
    split_min_bytes: int = SPLIT_MIN_BYTES,
    piece_bytes: int = PIECE_BYTES,
) -> ParsedPush:
    """Parse a push body and check its envelope; raise PayloadError as ``parse_push`` does.

    Work linear in the body and nothing more: the app checks the token against the serial before any
    measurement is validated or converted. A large body is parsed a slice at a time
    (``MeasurementSplitter``), which checks the whole push, so nothing is written for a bad one.
    """
    if len(body) >= split_min_bytes:
        splitter = MeasurementSplitter(body, piece_bytes)
        try:
            count = sum(len(piece) for piece in splitter.pieces())
            push = push_from_document(orjson.loads(splitter.envelope()), limits)
        except (Unsplittable, PayloadError, orjson.JSONDecodeError):
            pass  # parsed whole below, which also gives the error message a bad body deserves
        else:
            check_measurement_count(count, limits)
            return ParsedPush(push, splitter.replay())
    return ParsedPush(parse_push(body, limits), None)


class ConvertedPush:
    """A checked push and its line protocol in write-sized chunks, plus what could not be used.

    Small pushes are converted at once. A large push is converted slice by slice as ``chunks`` is
    iterated, so that InfluxDB stores one chunk while the next is built. ``rejected``, ``intervals``
    and ``span`` are complete once ``chunks`` is exhausted. ``latest_end`` is the latest interval end
    accepted (``PushLimits.latest_interval_end`` of the receive time).
    """

    def __init__(
        self,
        parsed: ParsedPush,
        limits: PushLimits,
        latest_end: int,
        *,
        labels: Mapping[str, str] | None = None,
        day_start_minutes: int = 0,
    ) -> None:
        self.push = parsed.push
        self.builder = PushLineBuilder(parsed.push, labels=labels, day_start_minutes=day_start_minutes)
        self._result = BatchResult()
        self._lines = self._result.lines  # where the converter appends
        self._converter = FastConverter(self.builder, limits, latest_end)
        self._pieces = parsed.pieces
        if parsed.pieces is None:
            self._converter.convert(parsed.push.raw_measurements, self._result)

    @property
    def rejected(self) -> list[Rejected]:
        """Measurements that failed validation."""
        return self._result.rejected

    @property
    def intervals(self) -> int:
        """Measurements stored."""
        return self._result.intervals

    @property
    def span(self) -> tuple[int, int] | None:
        """(earliest utcFrom, latest utcTo) of the stored measurements."""
        result = self._result
        if result.min_from is None or result.max_to is None:
            return None
        return result.min_from, result.max_to

    def chunks(self, received_at: int, chunk_lines: int) -> Iterator[Chunk]:
        """Chunks to write in order; the ``sensor_push`` line comes last, once the data is in."""
        lines = self._lines
        if self._pieces is not None:
            for piece in self._pieces:
                self._converter.convert(piece, self._result)
                while len(lines) >= chunk_lines:
                    yield Chunk("\n".join(lines[:chunk_lines]), chunk_lines)
                    del lines[:chunk_lines]
        else:
            while len(lines) >= chunk_lines:
                yield Chunk("\n".join(lines[:chunk_lines]), chunk_lines)
                del lines[:chunk_lines]
        # people_count lines hold no newline (tags and keys escape it, fields are numbers); the
        # sensor_push line may (string fields), so it is kept apart.
        last = self.builder.sensor_push_line(self._result.intervals, received_at)
        yield Chunk("\n".join(lines), len(lines), last)
        lines.clear()


def convert_push(
    body: bytes | bytearray,
    limits: PushLimits = DEFAULT_LIMITS,
    *,
    now: float | None = None,
    labels: Mapping[str, str] | None = None,
    day_start_minutes: int = 0,
    split_min_bytes: int = SPLIT_MIN_BYTES,
    piece_bytes: int = PIECE_BYTES,
) -> ConvertedPush:
    """Parse, check and convert a push in one call (``parse_body`` then ``ConvertedPush``).

    Without ``now`` no interval is too far in the future (for replaying stored pushes).
    """
    parsed = parse_body(body, limits, split_min_bytes=split_min_bytes, piece_bytes=piece_bytes)
    latest_end = _MAX_EPOCH if now is None else limits.latest_interval_end(now)
    return ConvertedPush(parsed, limits, latest_end, labels=labels, day_start_minutes=day_start_minutes)
