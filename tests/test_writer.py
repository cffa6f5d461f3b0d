"""The fast paths against the real InfluxDB: a sliced backfill written while converted, and group commit."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson

from bench.payloads import START, backfill_body, push_body
from exporter.app import create_app
from exporter.convert import SPLIT_MIN_BYTES
from tests.influxfaults import FaultableInflux
from tests.support import make_config


def test_large_push_is_sliced_written_in_chunks_and_complete(
    influx: FaultableInflux, bucket: str, tmp_path: Path
) -> None:
    body = backfill_body(days=5)
    assert len(body) > SPLIT_MIN_BYTES, "the push must take the sliced path"
    client = create_app(make_config(influx, bucket, tmp_path, write_chunk_lines=997)).test_client()
    response = client.post("/push", data=body, content_type="application/json")
    assert response.status_code == 200, response.json
    assert response.json == {"status": "ok", "intervals": 7200, "points": 14400, "rejected": 0}
    (row,) = influx.query(bucket, "SELECT COUNT(count) AS n, SUM(count) AS total FROM people_count")
    assert row["n"] == 14400
    assert row["total"] == sum(item["count"] for item in _items(body))
    (push,) = influx.query(bucket, "SELECT * FROM sensor_push")
    assert push["intervals"] == 7200


def _items(body: bytes) -> list[dict[str, Any]]:
    document = orjson.loads(body)
    return [item for measurement in document["data"]["measurements"] for item in measurement["items"]]


def test_concurrent_small_pushes_each_get_their_own_confirmation(
    influx: FaultableInflux, bucket: str, tmp_path: Path
) -> None:
    app = create_app(make_config(influx, bucket, tmp_path))
    bodies = [push_body(sensor, START, 1 + sensor % 15) for sensor in range(64)]
    answers: dict[int, tuple[int, int]] = {}

    def send(first: int) -> None:
        client = app.test_client()
        for sensor in range(first, len(bodies), 8):
            response = client.post("/push", data=bodies[sensor], content_type="application/json")
            answer = response.get_json()
            answers[sensor] = (response.status_code, answer["points"])

    threads = [threading.Thread(target=send, args=(first,)) for first in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {sensor: (200, 2 * (1 + sensor % 15)) for sensor in range(64)}
    rows = influx.query(bucket, 'SELECT COUNT(count) AS n FROM people_count GROUP BY "serial"')
    assert len(rows) == 64
    assert sum(row["n"] for row in rows) == sum(2 * (1 + sensor % 15) for sensor in range(64))


def test_large_push_during_an_outage_is_503_and_leaves_no_helper_thread(
    influx: FaultableInflux, bucket: str, tmp_path: Path
) -> None:
    client = create_app(make_config(influx, bucket, tmp_path, write_chunk_lines=500)).test_client()
    influx.stop_bridge()
    try:
        response = client.post("/push", data=backfill_body(days=5), content_type="application/json")
    finally:
        influx.start_bridge()
    assert response.status_code == 503
    assert [t.name for t in threading.enumerate() if t.name == "axis-exporter-convert"] == []
