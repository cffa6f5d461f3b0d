"""Golden payloads: each folder under tests/payloads holds a push and what it must become."""

from __future__ import annotations

import orjson
import pytest

from exporter.payload import PayloadError, Rejected, iter_measurements, parse_push
from tests.support import PAYLOADS, converted_lines, reference_lines

VALID_CASES = sorted(p.name for p in PAYLOADS.iterdir() if (p / "expected.lp").exists())
ERROR_CASES = sorted(p.name for p in PAYLOADS.iterdir() if (p / "expected-error.txt").exists())
RECEIVED_AT = 0  # sensor_push falls back to the receive time only when utcSent is missing


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
    body = b'{"sensor": {"serial": "X"}, "data": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(PayloadError, match="nests too deeply"):
        parse_push(body)


def test_wrong_protocol_version_is_stored_with_a_warning_naming_the_fix() -> None:
    push = parse_push((PAYLOADS / "other-api-version" / "push.json").read_bytes())
    assert not push.protocol_matches
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
        ([{"direction": "in", "count": 2**63}], "too large"),
        ([{"direction": "in", "count": 1, "adults": -1}], "adults -1"),
        ("many", "expected an array"),
    ],
)
def test_invalid_items_reject_the_measurement(items: object, reason: str) -> None:
    body = (
        b'{"sensor": {"serial": "S"}, "data": {"measurements": [{"kind": "people-counts", '
        b'"utcFrom": "2021-04-13T09:19:00Z", "items": ' + orjson.dumps(items) + b"}]}}"
    )
    (result,) = list(iter_measurements(parse_push(body)))
    assert isinstance(result, Rejected), f"items {items!r} should be rejected"
    assert reason in result.reason
