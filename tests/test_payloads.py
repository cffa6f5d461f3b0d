"""Golden payloads: each folder under tests/payloads holds a push and what it must become."""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping

import orjson
import pytest

from exporter.config import PushLimits
from exporter.convert import convert_push, parse_body
from exporter.payload import (
    EXPECTED_API_NAME,
    EXPECTED_API_VERSION,
    MAX_EPOCH_SECONDS,
    MeasurementError,
    PayloadError,
    bounded,
    parse_push,
    validate_measurement,
)
from tests.support import PAYLOADS, converted_lines, reference_lines

VALID_CASES = sorted(p.name for p in PAYLOADS.iterdir() if (p / "expected.lp").exists())
ERROR_CASES = sorted(p.name for p in PAYLOADS.iterdir() if (p / "expected-error.txt").exists())
RECEIVED_AT = 0
CALENDAR_FIELDS = (
    "day_end",
    "hour",
    "week_end",
    "weekday",
)  # exporter.localday  # sensor_push falls back to the receive time only when utcSent is missing


def test_golden_cases_are_found() -> None:
    assert len(VALID_CASES) >= 10, f"golden cases missing under {PAYLOADS}: {VALID_CASES}"
    assert len(ERROR_CASES) >= 5, f"error cases missing under {PAYLOADS}: {ERROR_CASES}"


CONVERTERS = {
    "reference": lambda body: reference_lines(body, RECEIVED_AT),
    "fast": lambda body: converted_lines(body, split=False, received_at=RECEIVED_AT),
    "fast-sliced": lambda body: converted_lines(body, split=True, received_at=RECEIVED_AT),
}


@pytest.mark.parametrize("converter", sorted(CONVERTERS))
@pytest.mark.parametrize("case", VALID_CASES)
def test_push_converts_to_expected_line_protocol(case: str, converter: str) -> None:
    lines, reasons = CONVERTERS[converter]((PAYLOADS / case / "push.json").read_bytes())
    expected = (PAYLOADS / case / "expected.lp").read_text(encoding="utf-8").splitlines()
    assert lines == expected, f"{case}: the {converter} converter's line protocol differs from expected.lp"
    rejected_file = PAYLOADS / case / "expected-rejected.txt"
    expected_reasons = (
        rejected_file.read_text(encoding="utf-8").splitlines() if rejected_file.exists() else []
    )
    assert reasons == expected_reasons, f"{case}: {converter} rejected measurements differ"


@pytest.mark.parametrize("case", ERROR_CASES)
def test_bad_push_is_refused_with_a_clear_reason(case: str) -> None:
    expected = (PAYLOADS / case / "expected-error.txt").read_text(encoding="utf-8").strip()
    with pytest.raises(PayloadError) as excinfo:
        parse_push((PAYLOADS / case / "push.json").read_bytes())
    assert expected in str(excinfo.value), f"{case}: error {excinfo.value!s} does not mention {expected!r}"


def test_absurdly_deep_nesting_is_a_payload_error() -> None:
    body = b'{"sensor": {"serial": "ACCC8E000001"}, "data": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(PayloadError, match="nests too deeply"):
        parse_push(body)


def test_wrong_protocol_version_is_stored_with_a_warning_naming_the_fix() -> None:
    push = parse_push((PAYLOADS / "other-api-version" / "push.json").read_bytes())
    assert (push.api_name, push.api_version) != (EXPECTED_API_NAME, EXPECTED_API_VERSION)
    assert any("GenericHTTPPost0ProtocolVersion=V0_4" in warning for warning in push.warnings)


def test_missing_name_falls_back_to_serial() -> None:
    push = parse_push(b'{"sensor": {"serial": "ACCC8E000001"}}')
    assert push.sensor.name == "ACCC8E000001"
    assert push.test_connection
    assert any("Setup > Counter" in warning for warning in push.warnings)


@pytest.mark.parametrize(
    ("items", "reason"),
    [
        ([{"direction": "in", "count": 1}, {"direction": "in", "count": 2}], "more than once"),
        ([{"direction": "in", "count": True}], "not a whole number"),
        ([{"direction": "in"}], "has no count"),
        ([{"count": 1}], "direction"),
        ([{"direction": "in", "count": 2**63}], "AXIS_EXPORTER_MAX_COUNT"),
        ([{"direction": "in", "count": 10_001}], "AXIS_EXPORTER_MAX_COUNT 10000"),
        ([{"direction": "in", "count": 1, "adults": -1}], "adults -1"),
        ([{"direction": "north", "count": 1}], "not one V0_4 defines (in, out)"),
        ([{"direction": "In", "count": 1}], "not one V0_4 defines"),
        ([{"direction": d, "count": 1} for d in ("in", "out", "x")], "3 items; V0_4 has at most one"),
        ([{"direction": "in", "count": 1}] * 40_000, "40000 items"),
        ("many", "expected an array"),
    ],
)
def test_invalid_items_reject_the_measurement(items: object, reason: str) -> None:
    (raw,) = parse_push(push_with({"items": items})).raw_measurements
    with pytest.raises(MeasurementError) as rejected:
        validate_measurement(raw, PushLimits(), MAX_EPOCH_SECONDS)
    assert reason in str(rejected.value), f"items {items!r}: {rejected.value}"


SERIAL = "ACCC8E000001"


def push_with(measurement: Mapping[str, object], sensor: Mapping[str, object] | None = None) -> bytes:
    """A push of one measurement (kind, utcFrom and items defaulted) from a valid sensor."""
    full = {"kind": "people-counts", "utcFrom": "2021-04-13T09:19:00Z", "items": [], **measurement}
    document = {
        "sensor": {"serial": SERIAL, "name": "hall", **(sensor or {})},
        "data": {"measurements": [full]},
    }
    return orjson.dumps(document)


@pytest.mark.parametrize(
    ("measurement", "reason"),
    [
        ({"kind": "people-count"}, "kind 'people-count' is not one V0_4 defines"),
        ({"kind": "x" * 10_000}, "kind 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... is not one"),
        ({"utcFrom": "2021-04-13T09:20:00Z", "utcTo": "2021-04-13T09:19:00Z"}, "utcTo is before utcFrom"),
        (
            {"utcFrom": "2262-04-01T00:00:00Z", "utcTo": "2262-04-01T00:01:00Z"},
            "AXIS_EXPORTER_MAX_FUTURE_SKEW",
        ),
    ],
)
def test_measurements_outside_the_protocol_or_in_the_future_are_rejected(
    measurement: dict[str, object], reason: str
) -> None:
    now = 1_700_000_000
    lines, reasons = converted_lines(push_with(measurement), split=False, now=now)
    assert lines[:-1] == [], "nothing but the sensor_push line"
    (found,) = reasons
    assert reason in found, found


def test_an_interval_ending_within_the_skew_is_stored_one_beyond_it_is_not() -> None:
    limits = PushLimits(max_future_skew_seconds=600)
    now = 1_700_000_000
    ends = {"ok": now + 600, "late": now + 601}
    for label, end in ends.items():
        measurement = {
            "utcFrom": iso(end - 60),
            "utcTo": iso(end),
            "items": [{"direction": "in", "count": 1}],
        }
        _, conversion = convert_push(bytearray(push_with(measurement)), limits, now=now).collect(now, 100)
        assert (conversion.intervals, len(conversion.rejected)) == ((1, 0) if label == "ok" else (0, 1)), (
            label
        )


def iso(unix: int) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_extra_item_attributes_are_ignored_and_time_is_not_a_field() -> None:
    measurement = {"items": [{"direction": "in", "count": 2, "time": 5, "heightAvg": 170.5, "x": "y"}]}
    lines, reasons = converted_lines(push_with(measurement), split=False)
    assert reasons == []
    fields = dict(field.split("=") for field in lines[0].split(" ")[1].split(","))
    assert set(fields) == {"count", "net", *CALENDAR_FIELDS}, "only direction, count and adults are stored"
    assert fields["count"] == "2i"


@pytest.mark.parametrize(
    ("sensor", "message"),
    [
        ({"serial": "serial1"}, "is not an Axis serial"),
        ({"serial": "ACCC8E00000"}, "is not an Axis serial"),
        ({"serial": "ACCC8E0000011"}, "is not an Axis serial"),
        ({"serial": "ACCC8E00000\u0131"}, "is not an Axis serial"),  # dotless i, upper() gives I
        ({"name": "x" * 65}, "sensor.name has 65 characters; at most 64"),
        ({"name": "hall\nINFO forged"}, "control or format character U+000A"),
        ({"name": "hall\u202eevil"}, "U+202E"),
        ({"name": "\u001b[31mred"}, "U+001B"),
        ({"timeZone": "Europe/Stockholm; DROP"}, "is not a time zone name"),
        ({"ipAddress": "10.0.0.300"}, "is not an IP address"),
        ({"application": "a" * 65}, "sensor.application has 65 characters"),
    ],
)
def test_device_strings_that_break_the_rules_are_refused(sensor: dict[str, str], message: str) -> None:
    body = push_with({}, dict(sensor))
    with pytest.raises(PayloadError, match=re.escape(message)):
        parse_push(body)


def test_serials_are_upper_cased_so_one_device_is_one_serial() -> None:
    assert parse_push(push_with({}, {"serial": "accc8e000001"})).sensor.serial == SERIAL
    assert parse_push(push_with({}, {"serial": "Accc8E000001"})).sensor.serial == SERIAL


def test_a_looser_serial_pattern_can_be_configured() -> None:
    limits = PushLimits(serial_pattern=re.compile(r"[0-9A-Z]{6,20}"))
    assert parse_push(push_with({}, {"serial": "camera42"}), limits).sensor.serial == "CAMERA42"


def test_a_push_with_more_measurements_than_a_device_keeps_is_refused() -> None:
    limits = PushLimits(max_measurements=3)
    measurement = {"kind": "people-counts", "utcFrom": "2021-04-13T09:19:00Z", "items": None}
    document = {"sensor": {"serial": SERIAL}, "data": {"measurements": [measurement] * 4}}
    for split in (False, True):
        with pytest.raises(PayloadError, match="holds 4 measurements; at most 3"):
            parse_body(
                orjson.dumps(document), limits, split_min_bytes=0 if split else 1 << 62, piece_bytes=50
            )


def test_what_is_kept_of_a_rejected_measurement_is_bounded() -> None:
    deep: object = "bottom"
    for _ in range(300):
        deep = [deep]
    kept = bounded({"items": deep, "list": list(range(1000)), "text": "x" * 5000})
    assert isinstance(kept, dict)
    assert orjson.dumps(kept), "always serialisable"
    assert "<nested too deeply>" in orjson.dumps(kept).decode()
    assert kept["list"][-1] == "<936 more entries>"
    assert kept["text"].endswith("<5000 characters in all>")
