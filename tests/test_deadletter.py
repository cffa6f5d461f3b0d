"""The dead-letter store: data kept whole within quotas per serial, source and token; junk as samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from exporter.config import Config
from exporter.deadletter import (
    JUNK_DIR,
    JUNK_SAMPLE_BYTES,
    DeadLetterEntry,
    DeadLetterFull,
    DeadLetterStore,
    Quotas,
)

ITEM = {"reason": "count 20000 is more than one door counts", "measurement": {"padding": "x" * 900}}


def entry(serial: str, source: str = "10.0.0.1", token: str = "") -> DeadLetterEntry:
    """About 1 kB of rejected data."""
    return DeadLetterEntry("invalid measurement(s)", serial, source, [ITEM], token_id=token)


def test_a_serial_filling_its_share_does_not_stop_another_camera(tmp_path: Path) -> None:
    quotas = Quotas(total=100_000, per_serial=5_000, per_source=100_000, per_token=100_000)
    store = DeadLetterStore(tmp_path, quotas)
    with pytest.raises(DeadLetterFull, match="serial ACCC8E0000F1 has filled its share"):
        for _ in range(10):
            store.put(entry("ACCC8E0000F1"))
    assert store.put(entry("ACCC8E000001")) > 0, "another serial still has room"


@pytest.mark.parametrize(("key", "message"), [("source", "this address"), ("token", "this device token")])
def test_a_source_or_token_filling_its_share_does_not_stop_others(
    tmp_path: Path, key: str, message: str
) -> None:
    shares = {"per_source": 100_000, "per_token": 100_000, f"per_{key}": 8_000}
    store = DeadLetterStore(tmp_path, Quotas(total=100_000, per_serial=100_000, **shares))
    with pytest.raises(DeadLetterFull, match=message):
        for index in range(20):  # ever new serials, from one address with one token
            store.put(entry(f"ACCC8E0000{index:02X}", source="10.6.6.6", token="3"))
    other = {"source": ("10.0.0.2", "3"), "token": ("10.6.6.6", "4")}[key]
    assert store.put(entry("ACCC8E000001", source=other[0], token=other[1])) > 0


def test_the_whole_store_has_a_bound_too(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path, Quotas(4_000, per_serial=4_000, per_source=4_000, per_token=4_000))
    with pytest.raises(DeadLetterFull, match=r"dead-letter store .* is full"):
        for index in range(10):
            store.put(entry(f"ACCC8E0000{index:02X}", source=f"10.0.0.{index}"))
    assert store.used_bytes() <= 4_000


def test_junk_is_kept_as_bounded_samples_that_never_fill_the_store(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path, Quotas.from_total(1_600_000))  # junk may use a 16th: 100 kB
    body = b"{" + b"x" * 10_000_000
    for _ in range(5):
        assert store.put_junk("the body is not valid JSON", "10.6.6.6", body, "application/json") > 0
    samples = sorted((tmp_path / JUNK_DIR).glob("*.json"))
    assert 1 <= len(samples) <= 2, "the oldest samples made room"
    kept = json.loads(samples[-1].read_text())
    assert kept["body_bytes"] == len(body) and len(kept["body_sample"]) == JUNK_SAMPLE_BYTES
    assert store.used_bytes() <= 100_000 + 1_000
    assert store.put(entry("ACCC8E000001")) > 0, "junk left the data its room"


def test_a_measurement_nested_260_deep_is_kept_not_a_500(client: FlaskClient, config: Config) -> None:
    deep = b'{"a":' * 260 + b"1" + b"}" * 260  # deeper than JSON encoders write (254)
    body = (
        b'{"sensor": {"serial": "ACCC8E000001", "name": "hall"}, "data": {"measurements": [{"kind": '
        b'"people-counts", "utcFrom": "2021-04-13T09:19:00Z", "items": ' + deep + b"}]}}"
    )
    response = client.post("/push", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200 and response.json is not None and response.json["status"] == "partial"
    (kept,) = [json.loads(p.read_text()) for p in config.deadletter_dir.glob("*.json")]
    assert "<nested too deeply>" in json.dumps(kept["items"])
