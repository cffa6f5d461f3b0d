"""The fast converter writes exactly what influxdb-client's Point and the reference path write."""

from __future__ import annotations

import datetime as dt
import json
import string
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

from bench.payloads import START, push_body
from exporter.config import DEFAULT_MAX_COUNT
from exporter.convert import convert_push
from exporter.payload import DIRECTIONS, KINDS, PayloadError, parse_push
from tests.support import converted_lines, reference_lines

# Device strings as the receiver accepts them (printable, 64 characters at most), escaping specials included.
printable = st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
names = st.text(alphabet=printable, min_size=1, max_size=20).filter(lambda text: text.strip() != "")
serials = st.from_regex(r"[0-9A-Fa-f]{12}", fullmatch=True)
simple_keys = st.text(alphabet=string.ascii_letters + ' ,=\\"é\n', min_size=1, max_size=8)
counts = st.integers(min_value=0, max_value=DEFAULT_MAX_COUNT)
extra_values = st.one_of(
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
)


@st.composite
def items(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Items with distinct directions, optional adults and extra attributes (which are not stored)."""
    directions = draw(st.lists(st.sampled_from(DIRECTIONS), min_size=1, max_size=2, unique=True))
    result = []
    for direction in directions:
        item: dict[str, Any] = {"direction": direction, "count": draw(counts)}
        if draw(st.booleans()):
            item["adults"] = draw(counts)
        extras = draw(
            st.dictionaries(
                simple_keys.filter(lambda key: key not in ("direction", "count", "adults")),
                extra_values,
                max_size=2,
            )
        )
        item.update(extras)
        result.append(item)
    return result


@st.composite
def pushes(draw: st.DrawFn) -> dict[str, Any]:
    """A push of a few one-minute measurements with random names and values."""
    kinds = KINDS
    first = draw(st.integers(min_value=1, max_value=4_000_000_000))
    measurements = []
    for index in range(draw(st.integers(min_value=1, max_value=5))):
        moment = first + 60 * index
        measurements.append(
            {
                "kind": draw(st.sampled_from(kinds)),
                "utcFrom": _utc(moment),
                "utcTo": _utc(moment + 60),
                "items": draw(st.one_of(st.none(), st.just([]), items())),
            }
        )
    return {
        "apiName": "Axis Retail Data",
        "apiVersion": "0.4",
        "utcSent": _utc(first + 3600),
        "data": {"measurements": measurements},
        "sensor": {
            "name": draw(names),
            "serial": draw(serials),
            "application": draw(st.text(alphabet=printable, max_size=10)),
            "ipAddress": draw(st.sampled_from(["", "10.0.0.1", "fe80::1"])),
            "timeZone": draw(st.sampled_from(ZONES)),
        },
    }


def _utc(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Zones far apart, with and without daylight saving, a half-hour and a quarter-hour offset, and none.
ZONES = ["Europe/Stockholm", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "Asia/Tokyo", ""]


def calendar_fields(seconds: int, zone_name: str) -> dict[str, int]:
    """The local calendar of an interval start, worked out directly (day start at midnight)."""
    zone = ZoneInfo(zone_name or "UTC")
    day = dt.datetime.fromtimestamp(seconds, zone).date()

    def starts(date: dt.date) -> int:
        return int(dt.datetime(date.year, date.month, date.day, tzinfo=zone).timestamp())

    return {
        "day_end": starts(day + dt.timedelta(days=1)),
        "hour": dt.datetime.fromtimestamp(seconds, zone).hour,
        "weekday": day.isoweekday(),
        "week_end": starts(day + dt.timedelta(days=8 - day.isoweekday())),
    }


def point_lines(document: dict[str, Any]) -> list[str]:
    """people_count lines as influxdb-client's Point writes them (the reference for escaping)."""
    sensor = document["sensor"]
    lines = []
    for measurement in document["data"]["measurements"]:
        seconds = int(dt.datetime.fromisoformat(measurement["utcFrom"]).timestamp())
        raw_items = measurement["items"] or [
            {"direction": "in", "count": 0},
            {"direction": "out", "count": 0},
        ]
        for item in raw_items:
            tags = {
                "direction": item["direction"].strip(),
                "kind": measurement["kind"].strip(),
                "sensor": sensor["name"].strip(),
                "serial": sensor["serial"].strip().upper(),
                "tz": sensor.get("timeZone") or "UTC",
            }
            net = item["count"] if item["direction"].strip() == "in" else -item["count"]
            fields = {
                "count": item["count"],
                "net": net,
                **calendar_fields(seconds, sensor.get("timeZone", "")),
            }
            if "adults" in item:
                fields["adults"] = item["adults"]
            point = Point.from_dict(
                {"measurement": "people_count", "tags": tags, "fields": fields, "time": seconds},
                write_precision=WritePrecision.S,  # type: ignore[arg-type]  # a str constant
            )
            lines.append(point.to_line_protocol())
    return lines


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pushes(), st.booleans())
def test_fast_converter_writes_what_point_writes(document: dict[str, Any], split: bool) -> None:
    body = orjson.dumps(document)
    lines, reasons = converted_lines(body, split=split)
    assert reasons == []
    assert lines[:-1] == point_lines(document)
    assert (lines, reasons) == reference_lines(body)


def _odd_document() -> dict[str, Any]:
    """A device-shaped push with every kind of oddity the fast path hands to the general one."""
    document: dict[str, Any] = orjson.loads(push_body(3, START, 400))
    measurements = document["data"]["measurements"]
    measurements[5]["items"][0]["heightAvg"] = 171.5
    measurements[6]["items"] = None
    measurements[7]["utcFrom"] = "not-a-time"
    measurements[8]["items"][0]["count"] = -1
    measurements[9]["kind"] = " k\u0000x "
    measurements[10]["items"].append({"direction": "in", "count": 1})
    measurements[11] = 5
    measurements[12]["items"] = []
    measurements[13]["utcFrom"] = "2021-01-01T00:00:00"
    measurements[14]["utcTo"] = None
    measurements[15]["items"][0]["count"] = 3.0
    measurements[16]["items"] = {"direction": "in"}
    measurements[17]["utcFrom"] = "2021-01-01T00:00:00.5+01:00"
    measurements[18]["items"][1]["direction"] = " out "
    measurements[19]["items"][1]["adults"] = None
    measurements[20]["items"][1]["count"] = True
    measurements[21]["utcTo"] = "1969-12-31T23:59:59Z"
    measurements[22]["kind"] = ""
    document["sensor"]["name"] = 'Entrée, "Main"=Door 2\\'
    return document


def _variants() -> dict[str, bytes]:
    document = _odd_document()
    measurements = document["data"]["measurements"]
    rest = {key: value for key, value in document.items() if key != "sensor"}
    items_first = [
        {"items": m.get("items"), **{k: v for k, v in m.items() if k != "items"}}
        if isinstance(m, dict)
        else m
        for m in measurements
    ]
    return {
        "compact": orjson.dumps(document),
        "pretty": json.dumps(document, indent=2).encode(),
        "sensor-first": orjson.dumps({"sensor": document["sensor"], **rest}),
        "array-data": orjson.dumps(
            {
                **document,
                "data": [{"measurements": measurements[:150]}, {}, {"measurements": measurements[150:]}],
            }
        ),
        "items-first": orjson.dumps({**document, "data": {"measurements": items_first}}),
        "string-with-brackets": orjson.dumps(
            {**document, "data": {"measurements": [*measurements, {"kind": "]}]},{", "items": None}]}}
        ),
        "duplicate-data-key": orjson.dumps(document)[:-1] + b',"data":{"measurements":[]}}',
        "test-connection": orjson.dumps(rest | {"sensor": document["sensor"], "data": None}),
    }


@pytest.mark.parametrize("variant", sorted(_variants()))
def test_sliced_parsing_gives_what_a_whole_parse_gives(variant: str) -> None:
    body = _variants()[variant]
    expected = reference_lines(body, received_at=1)
    assert converted_lines(body, split=True, received_at=1) == expected
    assert converted_lines(body, split=False, received_at=1) == expected


@pytest.mark.parametrize(
    "body",
    [
        orjson.dumps(_odd_document())[:-5],
        orjson.dumps(_odd_document()["data"]["measurements"]),
        orjson.dumps(_odd_document()).replace(b'"sensor":{', b'"sensor":{"serial":"","x":{', 1) + b"}",
        b"  ",
    ],
)
def test_bad_bodies_fail_the_same_way_sliced_or_whole(body: bytes) -> None:
    with pytest.raises(PayloadError) as whole:
        parse_push(body)
    with pytest.raises(PayloadError) as sliced:
        convert_push(bytearray(body), split_min_bytes=0, piece_bytes=300)
    assert str(sliced.value) == str(whole.value)
