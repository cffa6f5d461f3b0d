"""The receiver's metrics in one process: names, help, buckets, the sensor cap, and the /readyz check."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from exporter.app import create_app
from exporter.config import Config
from exporter.metrics import (
    BODY_BYTES_BUCKETS,
    DURATION_BUCKETS,
    PUSH_RESULTS,
    Metrics,
    exposition,
)
from exporter.processes import wait_until
from exporter.sensors import SensorPush, SensorRegistry
from exporter.server import reset_multiprocess_dir
from exporter.statedb import DATABASE_FILE
from tests.influxfaults import FaultableInflux
from tests.support import admin_app_for, payload

# The metric families promised in CONTRACTS.md, with their types.
CONTRACT = {
    "axis_exporter_pushes": "counter",
    "axis_exporter_points_written": "counter",
    "axis_exporter_deadletter_measurements": "counter",
    "axis_exporter_deadletter_bytes": "counter",
    "axis_exporter_push_duration_seconds": "histogram",
    "axis_exporter_influxdb_write_duration_seconds": "histogram",
    "axis_exporter_push_body_bytes": "histogram",
    "axis_exporter_sensor_last_push_timestamp_seconds": "gauge",
    "axis_exporter_sensor_last_interval_end_timestamp_seconds": "gauge",
    "axis_exporter_sensor_push_interval_seconds": "gauge",
    "axis_exporter_sensor_intervals": "counter",
    "axis_exporter_sensor_name_timestamp_seconds": "gauge",
    "axis_exporter_sensors": "gauge",
    "axis_exporter_untracked_sensor_pushes": "counter",
    "axis_exporter_unrouted_alert_notifications": "counter",
    "axis_exporter_influxdb_up": "gauge",
    "axis_exporter_build_info": "gauge",
}


def _metrics(max_sensors: int = 10) -> Metrics:
    return Metrics(CollectorRegistry(auto_describe=True), max_sensors)


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    assert metrics.registry is not None
    return metrics.registry.get_sample_value(name, labels)


def test_metric_families_follow_the_contract_and_conventions() -> None:
    metrics = _metrics()
    assert metrics.registry is not None
    families = {family.name: family for family in metrics.registry.collect()}
    assert {name: family.type for name, family in families.items()} == CONTRACT
    for family in families.values():
        assert len(family.documentation) > 15, f"{family.name}: HELP text"
        if family.type == "histogram":
            assert family.name.endswith(("_seconds", "_bytes")), f"{family.name}: base unit suffix"
    results = {
        s.labels["result"] for s in families["axis_exporter_pushes"].samples if s.name.endswith("_total")
    }
    assert results >= {
        "ok",
        "test_connection",
        "partial",
        "bad_request",
        "unauthorized",
        "forbidden",
        "too_large",
        "storage_unavailable",
    }, "every result exists from the start at 0, so rate() and increase() see the first one"
    (build,) = families["axis_exporter_build_info"].samples
    assert build.value == 1
    assert set(build.labels) == {"version", "python_version", "influxdb_client_version"}
    assert "unknown" not in build.labels.values()


def test_buckets_cover_a_millisecond_to_a_minute_and_the_largest_body() -> None:
    assert DURATION_BUCKETS[0] == 0.001
    assert DURATION_BUCKETS[-1] == 60
    assert list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)
    assert BODY_BYTES_BUCKETS[0] <= 1024
    assert BODY_BYTES_BUCKETS[-1] >= Config(influx=None).max_body_bytes
    metrics = _metrics()
    metrics.push_duration.observe(0.0004)
    metrics.push_duration.observe(45)
    assert _value(metrics, "axis_exporter_push_duration_seconds_bucket", le="0.001") == 1
    assert _value(metrics, "axis_exporter_push_duration_seconds_bucket", le="30.0") == 1
    assert _value(metrics, "axis_exporter_push_duration_seconds_bucket", le="60.0") == 2


def sensor_push(
    serial: str, pushed_at: float, intervals: int, span: tuple[int, int] | None, name: str = "hall"
) -> SensorPush:
    """A stored push of sensor ``serial`` as the app records it."""
    return SensorPush(
        serial, name, "AXIS 3D People Counter", "10.5", "Europe/Stockholm", "", "", pushed_at, intervals, span
    )


def test_sensor_metrics_keep_the_newest_times_and_the_observed_interval() -> None:
    metrics = _metrics()
    serial = "ACCC8E000001"
    metrics.record_sensor_push(sensor_push(serial, 1_700_000_100.0, 1, (1_700_000_000, 1_700_000_060)))
    labels = {"serial": serial}
    assert _value(metrics, "axis_exporter_sensor_push_interval_seconds", **labels) == 60
    assert (
        _value(metrics, "axis_exporter_sensor_last_interval_end_timestamp_seconds", **labels) == 1_700_000_060
    )
    # A re-send after an outage covers hours: the interval is capped at the longest send interval (15 min).
    metrics.record_sensor_push(
        sensor_push("ACCC8E000001", 1_700_000_200.0, 240, (1_699_980_000, 1_700_000_060))
    )
    assert _value(metrics, "axis_exporter_sensor_push_interval_seconds", **labels) == 900
    assert _value(metrics, "axis_exporter_sensor_intervals_total", **labels) == 241
    assert _value(metrics, "axis_exporter_sensor_last_push_timestamp_seconds", **labels) == 1_700_000_200
    # A test connection (no intervals) updates only the last push time.
    metrics.record_sensor_push(sensor_push(serial, 1_700_000_300.0, 0, None))
    assert _value(metrics, "axis_exporter_sensor_last_push_timestamp_seconds", **labels) == 1_700_000_300
    assert _value(metrics, "axis_exporter_sensor_push_interval_seconds", **labels) == 900
    # A re-send of older intervals, stored later, moves neither time back.
    metrics.record_sensor_push(
        sensor_push("ACCC8E000001", 1_700_000_250.0, 5, (1_699_000_000, 1_699_000_300))
    )
    assert _value(metrics, "axis_exporter_sensor_last_push_timestamp_seconds", **labels) == 1_700_000_300
    assert (
        _value(metrics, "axis_exporter_sensor_last_interval_end_timestamp_seconds", **labels) == 1_700_000_060
    )


def test_a_sensor_is_its_serial_and_a_new_name_replaces_the_old_one() -> None:
    metrics = _metrics()
    metrics.record_sensor_push(sensor_push("ACCC8E000001", 1_000.0, 1, None, name="lobby"))
    metrics.record_sensor_push(sensor_push("ACCC8E000001", 2_000.0, 1, None, name="entrance"))
    text = exposition(metrics, None)[0].decode()
    assert text.count("axis_exporter_sensor_last_push_timestamp_seconds{") == 1
    name = 'axis_exporter_sensor_name_timestamp_seconds{sensor="entrance",serial="ACCC8E000001"'
    assert name + ',site="",zone=""} 2000.0' in text, "unassigned: empty site and zone, i.e. none"
    assert "lobby" not in text, "the old name leaves no series behind"


def test_the_name_series_carries_the_site_and_zone_of_the_sensors_file() -> None:
    labels = {"ACCC8E000001": {"site": "Store 12 Berlin", "zone": "Main entrance", "floor": "1"}}
    metrics = Metrics(
        CollectorRegistry(auto_describe=True), 10, labels_of=lambda serial: labels.get(serial, {})
    )
    metrics.record_sensor_push(sensor_push("ACCC8E000001", 2_000.0, 1, None, name="entrance"))
    text = exposition(metrics, None)[0].decode()
    expected = 'serial="ACCC8E000001",site="Store 12 Berlin",zone="Main entrance"} 2000.0'
    assert f'axis_exporter_sensor_name_timestamp_seconds{{sensor="entrance",{expected}' in text
    assert "floor" not in text, "only site and zone reach Prometheus"


def test_sensor_cap_stops_new_serials_but_counts_their_pushes_whatever_their_names() -> None:
    metrics = _metrics(max_sensors=2)
    for serial in ("ACCC8E000001", "ACCC8E000002", "ACCC8E0000F1", "ACCC8E0000F2", "ACCC8E000001"):
        metrics.record_sensor_push(sensor_push(serial, 1.0e9, 1, None, name=f"s-{serial}"))
    for index in range(50):  # a known serial under ever new names is still one sensor
        metrics.record_sensor_push(sensor_push("ACCC8E000002", 1.0e9, 0, None, name=f"fake-{index}"))
    text = exposition(metrics, None)[0].decode()
    assert text.count("axis_exporter_sensor_last_push_timestamp_seconds{") == 2
    assert "ACCC8E0000F" not in text
    assert _value(metrics, "axis_exporter_untracked_sensor_pushes_total") == 2
    assert _value(metrics, "axis_exporter_sensor_intervals_total", serial="ACCC8E000001") == 2
    assert _value(metrics, "axis_exporter_sensors") == 2


def test_sensor_registry_is_shared_by_processes_and_holds_its_cap(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_FILE
    worker_a, worker_b = SensorRegistry(path, 2), SensorRegistry(path, 2)
    assert worker_a.record(sensor_push("ACCC8E000001", 1.0, 1, None))
    assert worker_b.record(sensor_push("ACCC8E000002", 2.0, 1, None))
    assert not worker_a.record(sensor_push("ACCC8E0000F1", 3.0, 1, None)), "counts what other workers added"
    assert worker_b.record(sensor_push("ACCC8E000001", 4.0, 1, None)), "a known serial stays admitted"
    recycled = SensorRegistry(path, 2)
    assert [state.serial for state in recycled.sensors()] == ["ACCC8E000001", "ACCC8E000002"]
    assert recycled.sensors()[0].intervals_total == 2


def test_reset_removes_only_the_metric_files(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"x")
    (tmp_path / "gauge_livemostrecent_123.db").write_bytes(b"x")
    registry = SensorRegistry(tmp_path / DATABASE_FILE, 5)
    registry.record(sensor_push("ACCC8E000001", 1.0, 1, None))
    registry.close()
    (tmp_path / "not-ours.txt").write_text("keep")
    reset_multiprocess_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-ours.txt"]
    reset_multiprocess_dir(tmp_path / "new")
    assert (tmp_path / "new").is_dir()


def _pings(influx: FaultableInflux, bucket: str) -> int:
    """How many /ping requests influxd has answered so far (its own httpd statistics)."""
    return sum(int(row["pingReq"]) for row in influx.query(bucket, "SHOW STATS FOR 'httpd'"))


def test_readyz_is_a_short_cached_check(
    client: FlaskClient, admin_client: FlaskClient, influx: FaultableInflux, bucket: str, config: Config
) -> None:
    before = _pings(influx, bucket)
    started = time.monotonic()
    for _ in range(30):
        assert admin_client.get("/readyz").status_code == 200
    elapsed = time.monotonic() - started
    pings = _pings(influx, bucket) - before
    # One ping per 5 s at most (plus the first): never one InfluxDB round trip per probe.
    assert 1 <= pings <= 2 + int(elapsed / 5), (pings, elapsed)
    # A successful write counts as a check: no ping needed after it.
    assert client.post("/push", json=payload("sample-3d-object-data")).status_code == 200
    before = _pings(influx, bucket)
    assert admin_client.get("/readyz").status_code == 200
    assert _pings(influx, bucket) == before


def test_readyz_and_influxdb_up_follow_an_outage_without_any_push(
    influx: FaultableInflux, config: Config
) -> None:
    metrics = _metrics()
    client = admin_app_for(create_app(config, metrics=metrics), config).test_client()
    assert client.get("/readyz").status_code == 200
    assert _value(metrics, "axis_exporter_influxdb_up") == 1
    influx.stop_bridge()
    try:
        wait_until(lambda: client.get("/readyz").status_code != 200, 20, "/readyz to fail", interval=0.25)
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        assert "not reachable" in response.json["message"]  # type: ignore[index]
        assert _value(metrics, "axis_exporter_influxdb_up") == 0
    finally:
        influx.start_bridge()
    wait_until(
        lambda: client.get("/readyz").status_code == 200, 20, "/readyz to answer 200 again", interval=0.25
    )
    assert _value(metrics, "axis_exporter_influxdb_up") == 1


@pytest.mark.parametrize("limit", [1, 3])
def test_sensor_cap_in_the_app(influx: FaultableInflux, config: Config, limit: int) -> None:
    metrics = _metrics(max_sensors=limit)
    app = create_app(config, metrics=metrics)
    client = app.test_client()
    for index in range(4):
        document = payload("test-connection")
        document["sensor"]["serial"] = f"ACCC8E00000{index}"
        assert client.post("/push", json=document).status_code == 200
    text = admin_app_for(app, config).test_client().get("/metrics").get_data(as_text=True)
    assert text.count("axis_exporter_sensor_last_push_timestamp_seconds{") == limit
    assert _value(metrics, "axis_exporter_untracked_sensor_pushes_total") == 4 - limit


def test_scrape_refuses_a_multiprocess_dir_the_client_does_not_write_to(tmp_path: Path) -> None:
    # This test process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR: single-process values.
    with pytest.raises(RuntimeError, match="imported before PROMETHEUS_MULTIPROC_DIR"):
        exposition(_metrics(), tmp_path)


def test_every_result_the_app_counts_exists_from_the_start() -> None:
    source = (Path(__file__).resolve().parent.parent / "exporter" / "app.py").read_text(encoding="utf-8")
    counted = set(re.findall(r'PushError\(\s*\d{3},\s*"(\w+)"', source))
    counted |= set(re.findall(r'pushes\.labels\("(\w+)"\)', source))
    assert len(counted) >= 8, counted
    assert counted <= set(PUSH_RESULTS), f"add to PUSH_RESULTS: {sorted(counted - set(PUSH_RESULTS))}"
