"""The receiver's own Prometheus metrics, correct under several gunicorn worker processes.

Under ``axis-exporter serve`` prometheus-client runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR is
set before prometheus_client is first imported): every worker writes its values to files and each scrape
aggregates them with a fresh MultiProcessCollector. Without that directory (tests, ``flask run``) the
metrics live in the app's own registry.
"""

from __future__ import annotations

import hashlib
import os
import platform
import threading
from importlib import metadata
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from exporter import __version__

PREFIX = "axis_exporter"

PUSH_RESULTS = (
    "ok",
    "test_connection",
    "partial",
    "bad_request",
    "unauthorized",
    "forbidden",
    "too_large",
    "unsupported_media_type",
    "client_timeout",
    "storage_unavailable",
    "internal_error",
)

# From 1 ms to 60 s: a one-minute push takes milliseconds, a 90-day backfill tens of seconds.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MAX_SEND_INTERVAL_SECONDS = 15 * 60
BODY_BYTES_BUCKETS = tuple(float(1024 * 4**n) for n in range(10))  # 1 KiB .. 256 MiB
# Beside prometheus-client's *.db files (which the collector globs), one empty file per tracked sensor.
SENSOR_MARKERS_DIR = "tracked-sensors"


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def client_multiprocess_dir() -> Path | None:
    """The directory prometheus-client itself writes to when it runs in multiprocess mode, else None."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # read by prometheus-client at import
    return Path(directory) if directory else None


class SensorCap:
    """Admits at most ``limit`` distinct sensors; with ``shared_dir``, counted over all worker processes.

    Label values come from devices, so a flood of forged serials must not grow the series without bound.
    Each worker remembers what it admitted; across workers (and across a recycled worker) the admitted
    sensors are empty marker files in ``shared_dir``, so the cap holds for the aggregated scrape, not per
    process. Concurrent first pushes of new sensors in several workers may overshoot by a few at most.
    """

    def __init__(self, limit: int, shared_dir: Path | None = None) -> None:
        self.limit = limit
        self._markers = shared_dir / SENSOR_MARKERS_DIR if shared_dir is not None else None
        self._admitted: set[tuple[str, str]] = set()
        self._full = False
        self._lock = threading.Lock()
        if self._markers is not None:
            self._markers.mkdir(parents=True, exist_ok=True)

    def admit(self, sensor: str, serial: str) -> bool:
        """Whether per-sensor metrics may be recorded for this sensor."""
        key = (sensor, serial)
        with self._lock:
            if key in self._admitted:
                return True
            if self._markers is None:
                if len(self._admitted) >= self.limit:
                    return False
                self._admitted.add(key)
                return True
            marker = self._markers / hashlib.sha256(f"{sensor}\0{serial}".encode()).hexdigest()[:40]
            if not marker.exists():
                # Markers are never removed while the receiver runs: once full, always full.
                if self._full or sum(1 for _ in os.scandir(self._markers)) >= self.limit:
                    self._full = True
                    return False
                marker.touch()
            self._admitted.add(key)
            return True


class Metrics:
    """All metrics of the receiver, created once per process and registered in ``registry``.

    ``shared_dir`` is the multiprocess directory when several workers share the metrics (see module doc);
    by default the one prometheus-client uses, if it runs in multiprocess mode.
    """

    def __init__(
        self, registry: CollectorRegistry | None, max_sensors: int, shared_dir: Path | None = None
    ) -> None:
        self.registry = registry
        self.max_sensors = max_sensors
        self.sensor_cap = SensorCap(max_sensors, shared_dir or client_multiprocess_dir())
        reg = registry
        self.pushes = Counter(
            f"{PREFIX}_pushes", "Pushes received, by how they were answered.", ["result"], registry=reg
        )
        for result in PUSH_RESULTS:
            self.pushes.labels(result)
        self.points_written = Counter(
            f"{PREFIX}_points_written", "Points InfluxDB confirmed as written.", registry=reg
        )
        self.deadletter_measurements = Counter(
            f"{PREFIX}_deadletter_measurements",
            "Measurements or points kept in the dead-letter store instead of InfluxDB.",
            registry=reg,
        )
        self.deadletter_bytes = Counter(
            f"{PREFIX}_deadletter_bytes", "Bytes written to the dead-letter store.", registry=reg
        )
        self.push_duration = Histogram(
            f"{PREFIX}_push_duration_seconds",
            "Time from receiving a push to answering it.",
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.influxdb_write_duration = Histogram(
            f"{PREFIX}_influxdb_write_duration_seconds",
            "Time of one write request to InfluxDB.",
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.push_body_bytes = Histogram(
            f"{PREFIX}_push_body_bytes",
            "Size of push request bodies.",
            buckets=BODY_BYTES_BUCKETS,
            registry=reg,
        )
        sensor_labels = ["sensor", "serial"]
        self.sensor_last_push = Gauge(
            f"{PREFIX}_sensor_last_push_timestamp_seconds",
            "Unix time of the last accepted push from the sensor.",
            sensor_labels,
            registry=reg,
            multiprocess_mode="max",
        )
        self.sensor_last_interval_end = Gauge(
            f"{PREFIX}_sensor_last_interval_end_timestamp_seconds",
            "Unix time at which the newest counting interval received from the sensor ends.",
            sensor_labels,
            registry=reg,
            multiprocess_mode="max",
        )
        self.sensor_push_interval = Gauge(
            f"{PREFIX}_sensor_push_interval_seconds",
            "Observed send interval of the sensor: the time its latest push covers, at most 900 s.",
            sensor_labels,
            registry=reg,
            multiprocess_mode="mostrecent",
        )
        self.sensor_intervals = Counter(
            f"{PREFIX}_sensor_intervals",
            "Counting intervals (measurements) received from the sensor and stored.",
            sensor_labels,
            registry=reg,
        )
        self.untracked_sensor_pushes = Counter(
            f"{PREFIX}_untracked_sensor_pushes",
            "Pushes from sensors beyond AXIS_EXPORTER_MAX_SENSORS, stored but without per-sensor metrics.",
            registry=reg,
        )
        self.unrouted_alert_notifications = Counter(
            f"{PREFIX}_unrouted_alert_notifications",
            "Alert notifications that reached the admin listener's /alerts, the default when no "
            "destination is configured: they went to the receiver's log only.",
            registry=reg,
        )
        self.influxdb_up = Gauge(
            f"{PREFIX}_influxdb_up",
            "Whether InfluxDB answered the last check or write (1) or not (0).",
            registry=reg,
            multiprocess_mode="livemostrecent",
        )
        self.build_info = Gauge(
            f"{PREFIX}_build_info",
            "Version of the exporter and of what it runs on.",
            ["version", "python_version", "influxdb_client_version"],
            registry=reg,
            multiprocess_mode="max",
        )
        self.build_info.labels(
            __version__, platform.python_version(), _package_version("influxdb-client")
        ).set(1)

    def record_sensor_push(
        self, sensor: str, serial: str, pushed_at: float, intervals: int, span: tuple[int, int] | None
    ) -> None:
        """Per-sensor metrics of an accepted push; capped so forged serials cannot grow them unbounded."""
        if not self.sensor_cap.admit(sensor, serial):
            self.untracked_sensor_pushes.inc()
            return
        self.sensor_last_push.labels(sensor, serial).set(pushed_at)
        if intervals:
            self.sensor_intervals.labels(sensor, serial).inc(intervals)
        if span is not None:
            utc_from, utc_to = span
            self.sensor_last_interval_end.labels(sensor, serial).set(utc_to)
            if utc_to > utc_from:
                # A re-send after an outage spans hours; devices send at most every 15 minutes.
                interval = min(utc_to - utc_from, MAX_SEND_INTERVAL_SECONDS)
                self.sensor_push_interval.labels(sensor, serial).set(interval)


def exposition(metrics: Metrics, multiprocess_dir: Path | None) -> tuple[bytes, str]:
    """The text a scrape gets: all workers' values in multiprocess mode, else this registry's."""
    if multiprocess_dir is not None:
        if client_multiprocess_dir() is None:
            # Each worker would then count in its own memory and this scrape would show nothing of it.
            raise RuntimeError(
                "prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set: "
                "the workers' metrics are not shared; set it before anything imports prometheus_client"
            )
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    assert metrics.registry is not None, "single-process metrics need a registry"
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST
