"""A push body to chunks of line protocol: the one module that composes the conversion's stages.

``parse_body`` checks the envelope (``payload``), slicing a large body (``jsonslices``) so that only a
slice of its measurements is alive at a time. ``Converter`` then validates the measurements (``payload``'s
rules), places each in its sensor's calendar (``localday``), builds the lines (``lineprotocol``) and cuts
them into write-sized chunks. ``Converter.stream`` yields the chunks and, when it ends, returns a
``Conversion``: the rejected measurements, how many intervals were stored and their span. The stage
modules import none of each other; only this one knows them all, and the writer knows none of them.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from exporter.config import PushLimits
from exporter.jsonslices import MeasurementSplitter, Unsplittable
from exporter.lineprotocol import PushLines, count_fields
from exporter.localday import LocalCalendar
from exporter.payload import (
    DEFAULT_LIMITS,
    DIRECTIONS,
    KINDS,
    MAX_EPOCH_SECONDS,
    MAX_ITEMS,
    Measurement,
    MeasurementError,
    PayloadError,
    Push,
    Rejected,
    bounded,
    check_measurement_count,
    parse_push,
    push_from_document,
    validate_measurement,
)
from exporter.writer import Chunk

# Bodies from this size on are parsed a slice at a time, to bound memory (and keep the slices in cache).
SPLIT_MIN_BYTES = 1 << 20
PIECE_BYTES = 1 << 16
_CACHE_LIMIT = 1000  # distinct (direction, kind) pairs remembered per push
_fromisoformat = datetime.fromisoformat


class ParsedPush(NamedTuple):
    """A push whose envelope was checked; a large one's measurements come as slices, parsed on demand."""

    push: Push
    pieces: Iterator[list[Any]] | None

    @property
    def sliced(self) -> bool:
        """Whether the measurements are parsed slice by slice (a large body)."""
        return self.pieces is not None


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


@dataclass(frozen=True)
class Conversion:
    """What a conversion gave besides its lines, known once it has ended."""

    rejected: list[Rejected]
    intervals: int  # measurements stored
    span: tuple[int, int] | None  # earliest utcFrom, latest utcTo of the stored measurements


class _Tally:
    """The running counts of a conversion (internal: ``Conversion`` is what callers get)."""

    __slots__ = ("intervals", "max_to", "min_from", "rejected")

    def __init__(self) -> None:
        self.rejected: list[Rejected] = []
        self.intervals = 0
        self.min_from: int | None = None
        self.max_to: int | None = None

    def result(self) -> Conversion:
        span = None if self.min_from is None or self.max_to is None else (self.min_from, self.max_to)
        return Conversion(self.rejected, self.intervals, span)


class Converter:
    """Converts one checked push: validation and line building in one pass for the shapes devices send.

    Anything outside the common shape (extra attributes, floats, odd times, bad values) goes through
    ``validate_measurement`` and ``measurement_lines`` instead, so the output is always theirs. The work
    per measurement is bounded (at most ``MAX_ITEMS`` items are looked at), so conversion is linear in
    the body whatever it holds. ``latest_end`` is the latest interval end accepted.
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
        self.parsed = parsed
        self.push = parsed.push
        sensor = parsed.push.sensor
        self.calendar = LocalCalendar(sensor.timezone, day_start_minutes)
        self.lines = PushLines(sensor.name, sensor.serial, self.calendar.zone_name, labels)
        self._limits = limits
        self._latest_end = latest_end
        # (raw direction, raw kind) -> (canonical direction, series prefix ending in a space)
        self._series: dict[tuple[object, object], tuple[str, str] | None] = {}
        self._zero: dict[object, tuple[str, str] | None] = {}

    def stream(self, received_at: int, chunk_lines: int) -> Generator[Chunk, None, Conversion]:
        """Chunks to write in order, the ``sensor_push`` line last (once the data is in); returns the
        ``Conversion`` when it ends. A large push is converted slice by slice as it is iterated."""
        tally = _Tally()
        lines: list[str] = []
        pieces: Iterable[list[Any]] = self.parsed.pieces or (self.push.raw_measurements,)
        for piece in pieces:
            self._convert(piece, lines, tally)
            while len(lines) >= chunk_lines:
                yield Chunk("\n".join(lines[:chunk_lines]), chunk_lines)
                del lines[:chunk_lines]
        sensor = self.push.sensor
        # people_count lines hold no newline (tags and keys escape it, fields are numbers); the
        # sensor_push line may (string fields), so it is kept apart.
        last = self.lines.sensor_push(
            application=sensor.application,
            application_version=sensor.application_version,
            ip_address=sensor.ip_address,
            timezone=sensor.timezone,
            test=self.push.test_connection,
            intervals=tally.intervals,
            timestamp=self.push.utc_sent if self.push.utc_sent is not None else received_at,
        )
        yield Chunk("\n".join(lines), len(lines), last)
        return tally.result()

    def collect(self, received_at: int, chunk_lines: int) -> tuple[list[Chunk], Conversion]:
        """All chunks at once, and the ``Conversion``."""
        stream = self.stream(received_at, chunk_lines)
        chunks: list[Chunk] = []
        while True:
            try:
                chunks.append(next(stream))
            except StopIteration as end:
                conversion: Conversion = end.value
                return chunks, conversion

    def measurement_lines(self, measurement: Measurement) -> list[str]:
        """One line per item of a validated ``measurement`` (the general path)."""
        calendar = self.calendar.fields(measurement.utc_from)
        return [
            self.lines.series(item.direction, measurement.kind)
            + count_fields(
                item.count, item.adults, item.count if item.direction == "in" else -item.count, calendar
            )
            + f" {measurement.utc_from}"
            for item in measurement.items
        ]

    def _series_for(self, direction: object, kind: object) -> tuple[str, str] | None:
        key = (direction, kind)
        try:
            return self._series[key]
        except KeyError:
            pass
        found: tuple[str, str] | None = None
        if direction in DIRECTIONS and kind in KINDS:
            found = (direction, self.lines.series(direction, kind))
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
                self.lines.series("in", kind) + "count=0i,",
                self.lines.series("out", kind) + "count=0i,",
            )
        if len(self._zero) < _CACHE_LIMIT:
            self._zero[kind] = found
        return found

    def _convert(self, raws: Iterable[Any], lines: list[str], tally: _Tally) -> None:
        """Append the lines of ``raws`` to ``lines``; invalid ones go to ``tally.rejected``."""
        append = lines.append
        series_cache = self._series
        series_for = self._series_for
        calendar_fields = self.calendar.fields
        prev_text: object = None
        prev_value = 0
        min_from = tally.min_from
        max_to = tally.max_to
        intervals = tally.intervals
        max_count = self._limits.max_count
        latest_end = self._latest_end
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
                    tally.rejected.append(Rejected(str(exc), bounded(raw)))
                    continue
                lines.extend(self.measurement_lines(measurement))
                utc_from, utc_to = measurement.utc_from, measurement.utc_to
            intervals += 1
            if min_from is None or utc_from < min_from:
                min_from = utc_from
            if max_to is None or utc_to > max_to:
                max_to = utc_to
        tally.intervals = intervals
        tally.min_from = min_from
        tally.max_to = max_to


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
    if not 0 < seconds <= MAX_EPOCH_SECONDS:
        raise _Slow
    return seconds


def convert_push(
    body: bytes | bytearray,
    limits: PushLimits = DEFAULT_LIMITS,
    *,
    now: float | None = None,
    labels: Mapping[str, str] | None = None,
    day_start_minutes: int = 0,
    split_min_bytes: int = SPLIT_MIN_BYTES,
    piece_bytes: int = PIECE_BYTES,
) -> Converter:
    """Parse, check and prepare a push in one call (``parse_body`` then ``Converter``).

    Without ``now`` no interval is too far in the future (for replaying stored pushes).
    """
    parsed = parse_body(body, limits, split_min_bytes=split_min_bytes, piece_bytes=piece_bytes)
    latest_end = MAX_EPOCH_SECONDS if now is None else limits.latest_interval_end(now)
    return Converter(parsed, limits, latest_end, labels=labels, day_start_minutes=day_start_minutes)
