"""The receiver's own Prometheus metrics, correct under several gunicorn worker processes.

Under ``axis-exporter serve`` prometheus-client runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR is
set before prometheus_client is first imported): every worker writes its values to files and each scrape
aggregates them with a fresh MultiProcessCollector. Without that directory (tests, ``flask run``) the
metrics live in the app's own registry. Per-sensor metrics come from the shared sensor registry
(``sensors``), one series per serial, read at scrape time.
"""

from __future__ import annotations

import logging
import os
import platform
import sqlite3
from collections.abc import Callable, Iterator, Mapping
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
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter import __version__
from exporter.sensors import SensorPush, SensorRegistry
from exporter.statedb import DATABASE_FILE

log = logging.getLogger(__name__)

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
    "busy",
    "internal_error",
)

# From 1 ms to 60 s: a one-minute push takes milliseconds, a 90-day backfill tens of seconds.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BODY_BYTES_BUCKETS = tuple(float(1024 * 4**n) for n in range(10))  # 1 KiB .. 256 MiB


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


class SensorCollector:
    """Per-sensor metrics, one series per serial, from the shared sensor registry at scrape time.

    The name is not a label of these (a renamed sensor would leave a series behind under its old name);
    ``axis_exporter_sensor_name_timestamp_seconds`` carries it, and the site and zone that the sensors
    file gives the serial (``labels_of``), valued with the time of the last push, so
    ``topk by (serial) (1, ...)`` finds a sensor's current name and site. One series per serial: the
    labels come from the file now, so they add no series to the cap.
    """

    def __init__(
        self, sensors: SensorRegistry, labels_of: Callable[[str], Mapping[str, str]] | None = None
    ) -> None:
        self.sensors = sensors
        self.labels_of = labels_of or (lambda serial: {})

    def collect(self) -> Iterator[Metric]:
        """The families, read from the registry now."""
        last_push = GaugeMetricFamily(
            f"{PREFIX}_sensor_last_push_timestamp_seconds",
            "Unix time of the last accepted push from the sensor.",
            labels=["serial"],
        )
        last_end = GaugeMetricFamily(
            f"{PREFIX}_sensor_last_interval_end_timestamp_seconds",
            "Unix time at which the newest counting interval received from the sensor ends (a re-send "
            "of older intervals does not move it back).",
            labels=["serial"],
        )
        interval = GaugeMetricFamily(
            f"{PREFIX}_sensor_push_interval_seconds",
            "Observed send interval of the sensor: the time its latest push covers, at most 900 s.",
            labels=["serial"],
        )
        intervals = CounterMetricFamily(
            f"{PREFIX}_sensor_intervals",
            "Counting intervals (measurements) received from the sensor and stored.",
            labels=["serial"],
        )
        name = GaugeMetricFamily(
            f"{PREFIX}_sensor_name_timestamp_seconds",
            "The sensor's name (label sensor) and its site and zone from the sensors file, valued with the "
            "unix time of its last push.",
            labels=["serial", "sensor", "site", "zone"],
        )
        states = self.sensors.sensors()
        for state in states:
            last_push.add_metric([state.serial], state.last_push)
            labels = self.labels_of(state.serial)
            name.add_metric(
                [state.serial, state.name, labels.get("site", ""), labels.get("zone", "")], state.last_push
            )
            intervals.add_metric([state.serial], state.intervals_total)
            if state.last_interval_end is not None:
                last_end.add_metric([state.serial], state.last_interval_end)
            if state.push_interval is not None:
                interval.add_metric([state.serial], state.push_interval)
        tracked = GaugeMetricFamily(
            f"{PREFIX}_sensors",
            "Sensors with per-sensor metrics (at most AXIS_EXPORTER_MAX_SENSORS).",
            value=len(states),
        )
        yield from (last_push, last_end, interval, intervals, name, tracked)


class Metrics:
    """All metrics of the receiver, created once per process and registered in ``registry``.

    ``shared_dir`` is the multiprocess directory when several workers share the metrics (see module doc);
    by default the one prometheus-client uses, if it runs in multiprocess mode.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None,
        max_sensors: int,
        shared_dir: Path | None = None,
        labels_of: Callable[[str], Mapping[str, str]] | None = None,
    ) -> None:
        self.registry = registry
        self.labels_of = labels_of
        self.max_sensors = max_sensors
        directory = shared_dir or client_multiprocess_dir()
        self.sensors = SensorRegistry(directory / DATABASE_FILE if directory else None, max_sensors)
        if registry is not None:
            registry.register(SensorCollector(self.sensors, labels_of))
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

    def record_sensor_push(self, push: SensorPush) -> None:
        """Per-sensor state of a stored push; a new sensor beyond the cap is only counted.

        The push is stored already: a registry that cannot be written costs its metrics, not its 200.
        """
        try:
            admitted = self.sensors.record(push)
        except sqlite3.Error as exc:
            log.warning("per-sensor state of %s not recorded: %s", push.serial, exc)
            return
        if not admitted:
            self.untracked_sensor_pushes.inc()


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
        registry.register(SensorCollector(metrics.sensors, metrics.labels_of))
        return generate_latest(registry), CONTENT_TYPE_LATEST
    assert metrics.registry is not None, "single-process metrics need a registry"
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST
