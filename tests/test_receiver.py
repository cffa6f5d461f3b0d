"""The receiver end to end: HTTP in, real InfluxDB out (Flask test client, real writer and database)."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from flask.testing import FlaskClient

from exporter.app import create_app
from exporter.config import Config, DeviceToken
from exporter.processes import wait_until
from tests.influxfaults import FaultableInflux
from tests.support import make_config, payload

SERIAL_3D = "ACCC8EF3D92E"


def counts(influx: FaultableInflux, bucket: str) -> dict[tuple[int, str], dict[str, Any]]:
    """people_count rows keyed by (unix time, direction)."""
    rows = influx.query(bucket, 'SELECT * FROM people_count GROUP BY "direction"')
    return {(row["time"], row["direction"]): row for row in rows}


def post(client: FlaskClient, document: object, **kwargs: Any) -> Any:
    """POST a push as JSON; return the response."""
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return client.post(kwargs.pop("path", "/push"), data=orjson.dumps(document), headers=headers, **kwargs)


def deadletter_files(config: Config) -> list[dict[str, Any]]:
    """The dead-letter store's entries, oldest first."""
    if not config.deadletter_dir.exists():
        return []
    return [json.loads(p.read_text()) for p in sorted(config.deadletter_dir.glob("*.json"))]


def test_sample_push_is_stored_one_point_per_item(
    client: FlaskClient, influx: FaultableInflux, bucket: str
) -> None:
    response = post(client, payload("sample-3d-object-data"))
    assert response.status_code == 200, response.json
    assert response.json == {"status": "ok", "intervals": 3, "points": 6, "rejected": 0}
    rows = counts(influx, bucket)
    assert len(rows) == 6
    first_in = rows[(1618305540, "in")]
    assert (first_in["count"], first_in["adults"]) == (3, 2)
    assert first_in["sensor"] == "axis-accc8ef3d92e"
    assert first_in["serial"] == SERIAL_3D
    assert first_in["kind"] == "people-counts"
    assert rows[(1618305660, "out")]["count"] == 2


def test_array_data_and_root_path_store_the_same_points(
    client: FlaskClient, influx: FaultableInflux, bucket: str
) -> None:
    assert post(client, payload("data-array"), path="/").status_code == 200
    rows = counts(influx, bucket)
    assert {key: row["count"] for key, row in rows.items()} == {
        (1618305540, "in"): 3,
        (1618305540, "out"): 1,
        (1618305600, "in"): 0,
        (1618305600, "out"): 4,
        (1618305660, "in"): 7,
        (1618305660, "out"): 2,
    }


def test_lowercase_timezone_key_and_2d_counter(
    client: FlaskClient, influx: FaultableInflux, bucket: str
) -> None:
    assert post(client, payload("timezone-lowercase-2d")).status_code == 200
    (push,) = influx.query(bucket, "SELECT * FROM sensor_push")
    assert push["timezone"] == "America/New_York"
    assert push["test"] is False
    assert push["intervals"] == 1
    rows = counts(influx, bucket)
    assert rows[(1636263900, "in")].get("adults") is None, "2D counters send no adults"


def test_null_and_empty_items_store_zero_for_both_directions(
    client: FlaskClient, influx: FaultableInflux, bucket: str
) -> None:
    assert post(client, payload("null-and-empty-items")).status_code == 200
    rows = counts(influx, bucket)
    assert {key: row["count"] for key, row in rows.items()} == {
        (1618275600, "in"): 0,
        (1618275600, "out"): 0,
        (1618275660, "in"): 0,
        (1618275660, "out"): 0,
    }


def test_item_order_does_not_matter(client: FlaskClient, influx: FaultableInflux, bucket: str) -> None:
    assert post(client, payload("reversed-items")).status_code == 200
    rows = counts(influx, bucket)
    assert rows[(1618305540, "in")]["count"] == 2
    assert rows[(1618305540, "out")]["count"] == 5


def test_test_connection_is_acknowledged_and_recorded(
    client: FlaskClient, influx: FaultableInflux, bucket: str
) -> None:
    response = post(client, payload("test-connection"))
    assert response.status_code == 200
    assert response.json["status"] == "test_connection"
    (push,) = influx.query(bucket, "SELECT * FROM sensor_push")
    assert push["test"] is True
    assert push["ip_address"] == "192.168.1.106"
    assert push["application"] == "AXIS 3D People Counter"
    assert push["time"] == 1618305744, "sensor_push is timestamped with utcSent"
    assert influx.query(bucket, "SELECT * FROM people_count") == []


def test_names_with_line_protocol_specials_come_back_intact(
    client: FlaskClient, influx: FaultableInflux, bucket: str
) -> None:
    assert post(client, payload("escaping")).status_code == 200
    rows = influx.query(bucket, "SELECT * FROM people_count WHERE \"sensor\" = 'Entrée, Main=Door 2'")
    assert len(rows) == 2
    assert {row["sensor"] for row in rows} == {"Entrée, Main=Door 2"}
    (push,) = influx.query(bucket, "SELECT * FROM sensor_push")
    assert push["ip_address"] == "10.0.0.13"
    assert push["application_version"] == '3.4.2 "beta"\\x'


def test_partial_corruption_stores_the_rest_and_keeps_the_bad_part(
    client: FlaskClient, config: Config, influx: FaultableInflux, bucket: str
) -> None:
    response = post(client, payload("partial-corruption"))
    assert response.status_code == 200, "a 4xx would make the device re-send the bad interval forever"
    assert response.json["status"] == "partial"
    assert response.json["rejected"] == 4
    rows = counts(influx, bucket)
    assert set(rows) == {(1618305720, "in"), (1618305720, "out")}
    (entry,) = deadletter_files(config)
    assert entry["serial"] == "B8A44F000001"
    reasons = [item["reason"] for item in entry["items"]]
    assert "count -3 is negative" in reasons
    assert entry["items"][0]["measurement"]["utcFrom"] == "not-a-time"


def test_resend_overwrites_instead_of_double_counting(
    client: FlaskClient, influx: FaultableInflux, bucket: str
) -> None:
    document = payload("sample-3d-object-data")
    for _ in range(3):
        assert post(client, document).status_code == 200
    totals = influx.query(bucket, 'SELECT SUM("count") AS total FROM people_count GROUP BY "direction"')
    assert {row["direction"]: row["total"] for row in totals} == {"in": 10, "out": 7}


def test_storage_outage_answers_503_then_stores_the_resend(
    client: FlaskClient, admin_client: FlaskClient, influx: FaultableInflux, bucket: str
) -> None:
    document = payload("sample-3d-object-data")
    influx.stop_bridge()
    try:
        response = post(client, document)
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        assert "re-send" in response.json["message"]
        assert admin_client.get("/readyz").status_code == 503
    finally:
        influx.start_bridge()
    assert influx.query(bucket, "SELECT * FROM people_count") == [], "nothing may be half-acknowledged"
    assert post(client, document).status_code == 200
    assert len(counts(influx, bucket)) == 6
    assert admin_client.get("/readyz").status_code == 200


def test_influxdb_rejecting_our_token_is_503(influx: FaultableInflux, bucket: str, tmp_path: Path) -> None:
    config = make_config(influx, bucket, tmp_path)
    assert config.influx is not None
    wrong = dataclasses.replace(config, influx=dataclasses.replace(config.influx, token="nope"))
    client = create_app(wrong).test_client()
    response = post(client, payload("sample-3d-object-data"))
    assert response.status_code == 503
    assert "401" in response.json["message"]


def test_device_token_is_required_when_configured(
    influx: FaultableInflux, bucket: str, tmp_path: Path
) -> None:
    config = make_config(influx, bucket, tmp_path, device_tokens=(DeviceToken("s3cret"),))
    client = create_app(config).test_client()
    document = payload("sample-3d-object-data")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        response = post(client, document, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert influx.query(bucket, "SELECT * FROM people_count") == []
    assert post(client, document, headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_token_bound_to_serials_cannot_push_for_another_device(
    influx: FaultableInflux, bucket: str, tmp_path: Path
) -> None:
    config = make_config(
        influx, bucket, tmp_path, device_tokens=(DeviceToken("cam1", frozenset({"B8A44F000001"})),)
    )
    client = create_app(config).test_client()
    auth = {"Authorization": "Bearer cam1"}
    response = post(client, payload("sample-3d-object-data"), headers=auth)
    assert response.status_code == 403
    assert influx.query(bucket, "SELECT * FROM people_count") == []
    assert post(client, payload("timezone-lowercase-2d"), headers=auth).status_code == 200


def test_body_over_the_limit_is_413(influx: FaultableInflux, bucket: str, tmp_path: Path) -> None:
    client = create_app(make_config(influx, bucket, tmp_path, max_body_bytes=1000)).test_client()
    document = payload("sample-3d-object-data")
    response = post(client, document)
    assert response.status_code == 413
    assert "AXIS_EXPORTER_MAX_BODY_BYTES" in response.json["message"]
    assert influx.query(bucket, "SELECT * FROM people_count") == []


def test_bad_bodies_get_400_with_a_reason_and_are_kept(client: FlaskClient, config: Config) -> None:
    response = client.post("/push", data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "not valid JSON" in response.get_data(as_text=True)
    response = post(client, {"apiName": "Axis Retail Data", "data": {"measurements": []}})
    assert response.status_code == 400
    assert "V0_4" in response.json["message"], "the answer names the protocol fix"
    kept = [json.loads(p.read_text()) for p in sorted((config.deadletter_dir / "junk").glob("*.json"))]
    assert [entry["body_sample"] for entry in kept[:1]] == ["{not json"], "a sample of junk is kept"
    assert kept[0]["body_bytes"] == 9 and len(kept[0]["body_sha256"]) == 64
    assert deadletter_files(config) == [], "junk is not data: it sits apart"


def test_wrong_content_type_and_method(client: FlaskClient) -> None:
    response = client.post("/push", data="a=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert "application/json" in response.get_data(as_text=True)
    response = client.get("/push")
    assert response.status_code == 405
    assert response.is_json


def test_other_protocol_version_is_stored(client: FlaskClient, influx: FaultableInflux, bucket: str) -> None:
    assert post(client, payload("other-api-version")).status_code == 200
    assert len(counts(influx, bucket)) == 2


def test_points_beyond_retention_are_kept_and_the_push_acknowledged(
    influx: FaultableInflux, tmp_path: Path
) -> None:
    influx.create_database("short_retention", retention="1h")
    config = make_config(influx, "short_retention", tmp_path, write_chunk_lines=4)
    client = create_app(config).test_client()
    document = copy.deepcopy(payload("sample-3d-object-data"))
    # The last interval is recent and fits the 1h retention; the older ones do not.
    now = datetime.datetime.now(datetime.UTC).replace(second=0, microsecond=0)
    document["data"]["measurements"][2]["utcFrom"] = now.isoformat().replace("+00:00", "Z")
    ends = now + datetime.timedelta(minutes=1)
    document["data"]["measurements"][2]["utcTo"] = ends.isoformat().replace("+00:00", "Z")
    document["utcSent"] = now.isoformat().replace("+00:00", "Z")
    response = post(client, document)
    assert response.status_code == 200, "a 503 would make the device loop on data InfluxDB never takes"
    assert response.json["status"] == "partial"
    assert response.json["rejected"] == 4
    rows = influx.query("short_retention", "SELECT * FROM people_count")
    assert len(rows) == 2
    (entry,) = deadletter_files(config)
    assert "retention" in entry["reason"]
    assert len(entry["items"]) == 4


def test_health_readiness_and_metrics(client: FlaskClient, admin_client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert admin_client.get("/healthz").status_code == 200
    assert admin_client.get("/readyz").status_code == 200
    post(client, payload("sample-3d-object-data"))
    post(client, {"no": "sensor"})
    text = admin_client.get("/metrics").get_data(as_text=True)
    assert 'axis_exporter_pushes_total{result="ok"} 1.0' in text
    assert 'axis_exporter_pushes_total{result="bad_request"} 1.0' in text
    assert "axis_exporter_points_written_total 7.0" in text
    assert 'axis_exporter_sensor_intervals_total{serial="ACCC8EF3D92E"} 3.0' in text
    assert "axis_exporter_influxdb_up 1.0" in text


def test_influxdb_failing_with_5xx_is_503(client: FlaskClient, influx: FaultableInflux, bucket: str) -> None:
    influx.stop_influxd()  # the bridge stays up and answers 502 Bad Gateway
    try:
        response = post(client, payload("sample-3d-object-data"))
        assert response.status_code == 503
        assert "502" in response.json["message"]
    finally:
        influx.start_influxd()
    assert post(client, payload("sample-3d-object-data")).status_code == 200
    assert len(counts(influx, bucket)) == 6


def test_influxdb_timing_out_is_503(influx: FaultableInflux, bucket: str, tmp_path: Path) -> None:
    config = make_config(influx, bucket, tmp_path)
    assert config.influx is not None
    quick = dataclasses.replace(config, influx=dataclasses.replace(config.influx, timeout_ms=500))
    client = create_app(quick).test_client()
    influx.pause_influxd()
    try:
        response = post(client, payload("sample-3d-object-data"))
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
    finally:
        influx.resume_influxd()


def test_large_push_is_written_in_chunks(influx: FaultableInflux, bucket: str, tmp_path: Path) -> None:
    client = create_app(make_config(influx, bucket, tmp_path, write_chunk_lines=7)).test_client()
    document = copy.deepcopy(payload("sample-3d-object-data"))
    template = document["data"]["measurements"][0]
    start = datetime.datetime(2021, 4, 13, tzinfo=datetime.UTC)
    document["data"]["measurements"] = [
        {**template, "utcFrom": (start + datetime.timedelta(minutes=i)).isoformat()} for i in range(100)
    ]
    response = post(client, document)
    assert response.status_code == 200
    assert response.json["points"] == 200
    totals = influx.query(bucket, 'SELECT SUM("count") AS total FROM people_count GROUP BY "direction"')
    assert {row["direction"]: row["total"] for row in totals} == {"in": 300, "out": 100}


def test_deeply_nested_body_over_http_is_400(client: FlaskClient) -> None:
    body = b'{"sensor": {"serial": "ACCC8E000001"}, "data": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = client.post("/push", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "nests too deeply" in response.get_data(as_text=True)


def test_full_deadletter_store_answers_503_so_the_device_keeps_the_data(
    influx: FaultableInflux, bucket: str, tmp_path: Path
) -> None:
    config = make_config(influx, bucket, tmp_path, deadletter_max_bytes=300)
    client = create_app(config).test_client()
    response = post(client, payload("partial-corruption"))
    assert response.status_code == 503
    assert "AXIS_EXPORTER_DEADLETTER_MAX_BYTES" in response.json["message"]
    assert deadletter_files(config) == []


def test_a_scrape_alone_keeps_influxdb_up_current(admin_client: FlaskClient, influx: FaultableInflux) -> None:
    text = admin_client.get("/metrics").get_data(as_text=True)
    assert "axis_exporter_influxdb_up 1.0" in text, "influxdb_up must not wait for a push or a probe"


def test_a_worker_holds_bodies_only_up_to_its_budget(
    influx: FaultableInflux, bucket: str, tmp_path: Path
) -> None:
    config = make_config(influx, bucket, tmp_path, max_inflight_body_bytes=1_000)
    client = create_app(config).test_client()
    response = post(client, payload("sample-3d-object-data"))  # 1.9 kB, more than the whole budget
    assert response.status_code == 503 and response.json["status"] == "error"
    assert "AXIS_EXPORTER_MAX_INFLIGHT_BYTES" in response.json["message"]
    assert response.headers["Retry-After"].isdigit()
    assert client.application.extensions["axis_exporter"].body_budget.held == 0, "given back"


def test_a_push_holds_its_body_budget_until_it_is_answered(
    influx: FaultableInflux, bucket: str, tmp_path: Path
) -> None:
    body = orjson.dumps(payload("sample-3d-object-data"))
    config = make_config(influx, bucket, tmp_path, max_inflight_body_bytes=len(body) + 100)
    assert config.influx is not None
    slow = dataclasses.replace(config, influx=dataclasses.replace(config.influx, timeout_ms=3000))
    app = create_app(slow)
    budget = app.extensions["axis_exporter"].body_budget
    answers: list[int] = []

    def push() -> None:
        answers.append(post(app.test_client(), payload("sample-3d-object-data")).status_code)

    influx.pause_influxd()
    try:
        first = threading.Thread(target=push)
        first.start()
        wait_until(lambda: budget.held > 0, 10, "the first push to hold its body in the budget")
        time.sleep(0.5)  # parsed and converted by now; its write hangs
        assert budget.held == len(body), "the budget was given back before the push was answered"
        second = post(app.test_client(), payload("sample-3d-object-data"))
        assert second.status_code == 503 and "AXIS_EXPORTER_MAX_INFLIGHT_BYTES" in second.json["message"]
    finally:
        influx.resume_influxd()
        first.join(timeout=30)
    assert answers == [200], "the first push is stored once influxd goes on"
    assert budget.held == 0, "given back once answered"
