"""The rules of an Axis Generic Data Push (protocol V0_4): the envelope, the sensor, each measurement.

``parse_push`` / ``push_from_document`` check the envelope and the sensor strings and give a ``Push``
whose raw measurements are checked one by one with ``validate_measurement`` (by ``convert``, which also
has a fast path for the shapes devices send). A leaf: it knows JSON documents and the protocol, not line
protocol or InfluxDB.
"""

from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from exporter.config import PushLimits

EXPECTED_API_NAME = "Axis Retail Data"
EXPECTED_API_VERSION = "0.4"

PROTOCOL_FIX = (
    "switch the device to push protocol V0_4: on AXIS P8815-2 3D People Counter set "
    '{"push_protocol_version": "V0_4"} (PATCH /a3dpc/api/settings); on AXIS People Counter set '
    "root.Tvpc.GenericHTTPPost0ProtocolVersion=V0_4 (param.cgi)"
)

# Largest value InfluxDB stores: int64 fields, and nanosecond timestamps before 2262.
_MAX_INT64 = 2**63 - 1
MAX_EPOCH_SECONDS = _MAX_INT64 // 1_000_000_000

# What protocol V0_4 defines (Axis' integration guide): items count people "in or out", and pushes carry
# measurements of one kind. Anything else is not from a camera, and would make series of its own.
DIRECTIONS = ("in", "out")
KINDS = ("people-counts",)
MAX_ITEMS = len(DIRECTIONS)
ITEM_ATTRIBUTES = ("direction", "count", "adults")  # others are ignored, never stored
# Device strings: a name as set under Setup > Counter, the rest as the firmware writes them.
MAX_NAME_LENGTH = 64
MAX_TEXT_LENGTH = 64
_TIME_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+\-/]{0,63}")
# Unicode categories no device name needs: controls, format characters (bidi overrides, zero-width),
# surrogates, private use, unassigned, line and paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# A rejected measurement is kept as it came, within bounds: deeper than this (JSON encoders stop at 254
# levels), longer lists and strings than these are cut, with a note saying so.
MAX_KEPT_DEPTH = 16
MAX_KEPT_ENTRIES = 64
MAX_KEPT_STRING = 1024


DEFAULT_LIMITS = PushLimits()


class PayloadError(ValueError):
    """The push as a whole cannot be used; the message says what is wrong and how to fix it."""


class MeasurementError(ValueError):
    """One measurement cannot be stored; the rest of the push still can."""


@dataclass(frozen=True)
class SensorInfo:
    """The ``sensor`` object of a push."""

    name: str
    serial: str
    application: str
    application_version: str
    timezone: str
    ip_address: str


@dataclass(frozen=True, slots=True)
class Item:
    """One direction of one measurement: ``count`` and, from the 3D counter, ``adults``."""

    direction: str
    count: int
    adults: int | None


class Measurement(NamedTuple):
    """One validated counting interval."""

    utc_from: int
    utc_to: int
    kind: str
    items: tuple[Item, ...]


class Rejected(NamedTuple):
    """A measurement that failed validation, kept as sent with the reason."""

    reason: str
    raw: object


_EMPTY_ITEMS = (Item("in", 0, None), Item("out", 0, None))


@dataclass(frozen=True)
class Push:
    """A parsed push: header, sensor and its raw measurement list (validated lazily, one by one)."""

    api_name: object
    api_version: object
    utc_sent: int | None
    sensor: SensorInfo
    raw_measurements: list[Any]
    test_connection: bool
    warnings: tuple[str, ...] = ()


def parse_utc(value: object) -> int:
    """Parse an ISO 8601 time as sent in ``utcFrom``/``utcSent`` into unix seconds (naive means UTC)."""
    if not isinstance(value, str):
        raise MeasurementError(f"time {shown(value)} is not a string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MeasurementError(f"time {shown(value)} is not an ISO 8601 date and time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    seconds = math.floor(parsed.timestamp())
    if not 0 <= seconds <= MAX_EPOCH_SECONDS:
        raise MeasurementError(f"time {shown(value)} is outside the range InfluxDB stores (1970-2262)")
    return seconds


def _text(obj: dict[str, Any], *keys: str) -> str:
    """First of ``keys`` present in ``obj`` as text ('' if none); numbers are accepted as text."""
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    return ""


def unprintable(text: str) -> tuple[str, str] | None:
    """The first character of ``text`` that no device string may hold (a control, format, surrogate,
    private-use, unassigned, line or paragraph separator character) and its Unicode category, or None."""
    for character in text:
        category = unicodedata.category(character)
        if category in _FORBIDDEN_CATEGORIES:
            return character, category
    return None


def _device_text(sensor: dict[str, Any], field: str, *keys: str, limit: int = MAX_TEXT_LENGTH) -> str:
    """A device string that keeps to the rules for device strings, or PayloadError naming the rule."""
    text = _text(sensor, *(keys or (field,)))
    if len(text) > limit:
        raise PayloadError(f"sensor.{field} has {len(text)} characters; at most {limit} are accepted")
    found = unprintable(text)
    if found is not None:
        raise PayloadError(
            f"sensor.{field} holds the control or format character U+{ord(found[0]):04X}: "
            "device strings are printable text"
        )
    return text


def normalize_serial(serial: str, pattern: re.Pattern[str]) -> str:
    """The serial as stored (upper case), or PayloadError if ``pattern`` refuses it."""
    normalized = serial.upper()
    if not normalized.isascii() or not pattern.fullmatch(normalized):
        shown = serial if len(serial) <= 40 else serial[:40] + "..."
        raise PayloadError(
            f"sensor.serial {shown!r} is not an Axis serial (12 hexadecimal digits, the device's MAC "
            f"address; pattern {pattern.pattern}); to accept other serials set AXIS_EXPORTER_SERIAL_PATTERN"
        )
    return normalized


def _parse_sensor(doc: dict[str, Any], limits: PushLimits) -> tuple[SensorInfo, list[str]]:
    sensor = doc.get("sensor")
    if not isinstance(sensor, dict):
        raise PayloadError(
            "the push has no 'sensor' object; is this an Axis Generic Data Push? If it is, " + PROTOCOL_FIX
        )
    serial = _text(sensor, "serial")
    if not serial:
        raise PayloadError("sensor.serial is missing or empty: the device's serial number identifies it")
    serial = normalize_serial(serial, limits.serial_pattern)
    name = _device_text(sensor, "name", limit=MAX_NAME_LENGTH)
    warnings = []
    if not name:
        # The guide asks for a device name (Setup > Counter); fall back so the data is still usable.
        warnings.append("sensor.name is empty: using the serial as name; set a name under Setup > Counter")
        name = serial
    timezone = _device_text(sensor, "timeZone", "timeZone", "timezone")
    if timezone and not _TIME_ZONE.fullmatch(timezone):
        raise PayloadError(f"sensor.timeZone {timezone!r} is not a time zone name such as Europe/Stockholm")
    ip_address = _device_text(sensor, "ipAddress")
    if ip_address:
        try:
            ipaddress.ip_address(ip_address)
        except ValueError:
            raise PayloadError(f"sensor.ipAddress {ip_address!r} is not an IP address") from None
    info = SensorInfo(
        name=name,
        serial=serial,
        application=_device_text(sensor, "application"),
        application_version=_device_text(sensor, "applicationVersion"),
        timezone=timezone,
        ip_address=ip_address,
    )
    return info, warnings


def _collect_measurements(data: object) -> list[Any]:
    """Measurements of ``data``, whether it is one object (sample code) or an array (field table)."""
    blocks = data if isinstance(data, list) else [data]
    measurements: list[Any] = []
    for index, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise PayloadError(f"data[{index}] is not an object; {PROTOCOL_FIX}")
        block_measurements = block.get("measurements")
        if block_measurements is None:
            continue
        if not isinstance(block_measurements, list):
            raise PayloadError(f"data measurements is not an array; {PROTOCOL_FIX}")
        measurements.extend(block_measurements)
    return measurements


def parse_push(body: bytes | bytearray, limits: PushLimits = DEFAULT_LIMITS) -> Push:
    """Parse and check the envelope of a push; its measurements are checked one by one later
    (``validate_measurement``)."""
    if not body or body.isspace():
        raise PayloadError("the body is empty: expected the JSON of an Axis Generic Data Push")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc):
            raise PayloadError("the JSON nests too deeply to be an Axis push") from None
        raise PayloadError(f"the body is not valid JSON ({exc})") from None
    push = push_from_document(doc, limits)
    check_measurement_count(len(push.raw_measurements), limits)
    return push


def check_measurement_count(count: int, limits: PushLimits) -> None:
    """PayloadError when a push holds more measurements than any device keeps."""
    if count > limits.max_measurements:
        raise PayloadError(
            f"the push holds {count} measurements; at most {limits.max_measurements} are accepted (a "
            "device keeps 90 days: 129,600 one-minute intervals)"
        )


def push_from_document(doc: object, limits: PushLimits = DEFAULT_LIMITS) -> Push:
    """Check the envelope of a parsed push (see ``parse_push``)."""
    if not isinstance(doc, dict):
        raise PayloadError(f"the body is JSON {type(doc).__name__}, expected an object (a push)")
    sensor, warnings = _parse_sensor(doc, limits)
    api_name, api_version = doc.get("apiName"), doc.get("apiVersion")
    if (api_name, api_version) != (EXPECTED_API_NAME, EXPECTED_API_VERSION):
        warnings.append(
            f"apiName/apiVersion is {api_name!r}/{api_version!r}, expected "
            f"{EXPECTED_API_NAME!r}/{EXPECTED_API_VERSION!r}: stored anyway; {PROTOCOL_FIX}"
        )
    data = doc.get("data")
    utc_sent: int | None
    try:
        utc_sent = parse_utc(doc["utcSent"]) if "utcSent" in doc else None
    except MeasurementError as exc:
        warnings.append(f"utcSent ignored: {exc}")
        utc_sent = None
    return Push(
        api_name=api_name,
        api_version=api_version,
        utc_sent=utc_sent,
        sensor=sensor,
        raw_measurements=[] if data is None else _collect_measurements(data),
        test_connection=data is None,
        warnings=tuple(warnings),
    )


def _count(item: dict[str, Any], key: str, limits: PushLimits) -> int:
    value = item[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MeasurementError(f"{key} {shown(value)} is not a whole number")
    if value < 0:
        raise MeasurementError(f"{key} {value} is negative")
    if value > limits.max_count:
        raise MeasurementError(
            f"{key} {value} is more than one door counts in an interval (AXIS_EXPORTER_MAX_COUNT "
            f"{limits.max_count})"
        )
    return value


def _item(raw: object, limits: PushLimits) -> Item:
    if not isinstance(raw, dict):
        raise MeasurementError(f"item {shown(raw)} is not an object")
    direction = raw.get("direction")
    if direction not in DIRECTIONS:
        raise MeasurementError(f"item direction {shown(direction)} is not one V0_4 defines (in, out)")
    if "count" not in raw:
        raise MeasurementError(f"item for direction {direction!r} has no count")
    count = _count(raw, "count", limits)
    adults = _count(raw, "adults", limits) if raw.get("adults") is not None else None
    return Item(direction, count, adults)


def validate_measurement(raw: object, limits: PushLimits, latest_end: int) -> Measurement:
    """Check one raw measurement; raise MeasurementError saying what is wrong.

    ``latest_end`` is the latest ``utcTo`` accepted now (``PushLimits.latest_interval_end``).
    """
    if not isinstance(raw, dict):
        raise MeasurementError(f"measurement is a JSON {type(raw).__name__}, expected an object")
    if "utcFrom" not in raw:
        raise MeasurementError("measurement has no utcFrom")
    utc_from = parse_utc(raw["utcFrom"])
    utc_to = parse_utc(raw["utcTo"]) if raw.get("utcTo") is not None else utc_from
    if utc_to < utc_from:
        raise MeasurementError("utcTo is before utcFrom")
    if utc_to > latest_end:
        raise MeasurementError(
            f"the interval ends {utc_to - latest_end + limits.max_future_skew_seconds} s after this "
            f"receiver's clock; at most AXIS_EXPORTER_MAX_FUTURE_SKEW {limits.max_future_skew_seconds} s "
            "is accepted (check the camera's time settings)"
        )
    kind = raw.get("kind")
    if kind not in KINDS:
        raise MeasurementError(f"measurement kind {shown(kind)} is not one V0_4 defines (people-counts)")
    raw_items = raw.get("items")
    if raw_items is None or raw_items == []:
        # No items means no traffic: store explicit zeros so it is not mistaken for missing data.
        return Measurement(utc_from, utc_to, kind, _EMPTY_ITEMS)
    if not isinstance(raw_items, list):
        raise MeasurementError(f"items is a JSON {type(raw_items).__name__}, expected an array or null")
    if len(raw_items) > MAX_ITEMS:
        raise MeasurementError(f"{len(raw_items)} items; V0_4 has at most one per direction (in, out)")
    items = tuple(_item(raw_item, limits) for raw_item in raw_items)
    if len({item.direction for item in items}) != len(items):
        raise MeasurementError("a direction appears more than once in items")
    return Measurement(utc_from, utc_to, kind, items)


def shown(value: object) -> str:
    """A client's value as a rejection reason shows it: its repr, at most 40 characters of it."""
    text = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def bounded(value: object, depth: int = MAX_KEPT_DEPTH) -> object:
    """``value`` cut to bounded depth, entries and string length, with notes where it was cut: what a
    rejected measurement is kept as, whatever a client sent."""
    if depth <= 0:
        return "<nested too deeply>"
    if isinstance(value, str) and len(value) > MAX_KEPT_STRING:
        return f"{value[:MAX_KEPT_STRING]}<{len(value)} characters in all>"
    if isinstance(value, dict):
        kept = {
            str(key)[:MAX_TEXT_LENGTH]: bounded(item, depth - 1)
            for key, item in list(value.items())[:MAX_KEPT_ENTRIES]
        }
        if len(value) > MAX_KEPT_ENTRIES:
            kept["<cut>"] = f"{len(value) - MAX_KEPT_ENTRIES} more entries"
        return kept
    if isinstance(value, list):
        items = [bounded(item, depth - 1) for item in value[:MAX_KEPT_ENTRIES]]
        if len(value) > MAX_KEPT_ENTRIES:
            items.append(f"<{len(value) - MAX_KEPT_ENTRIES} more entries>")
        return items
    return value
