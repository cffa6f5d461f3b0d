"""Helpers for the fault tests: simulator runs with faults injected mid-run, and exact InfluxDB checks."""

from __future__ import annotations

import datetime as dt
import gc
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from exporter.influxd_bridge import LocalInflux
from exporter.simulator import (
    Progress,
    PushResult,
    SimulatedSensor,
    SimulationConfig,
    Summary,
    TrafficModel,
    make_identities,
)

# CPython's http.client leaves a response's socket file open when the server hangs up before the status
# line (RemoteDisconnected), so urllib3 cannot really close that socket; the garbage cycle is collected
# later with a ResourceWarning, which pytest turns into an error in whatever test is running then. Tests
# that cut connections on purpose ignore exactly that warning and collect their garbage before they end.
DROPPED_CONNECTION_WARNINGS = [
    pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
]


def collect_dropped_connections() -> Iterator[None]:
    """Fixture body: after the test, collect the sockets of connections the faults cut (see above)."""
    yield
    gc.collect()


UTC = dt.UTC
FAULT_START = dt.datetime(2021, 4, 13, 6, 0, tzinfo=UTC)  # a Tuesday morning: the shop opens at 09:00 local
PointKey = tuple[str, int, str]  # (serial, unix time, direction)


def fault_config(url: str, **overrides: Any) -> SimulationConfig:
    """A fast-forward multi-sensor run, rate-capped so that a fault injected mid-run meets live traffic."""
    settings: dict[str, Any] = {
        "url": f"{url}/push",
        "sensors": make_identities(4, time_zones=["Europe/Stockholm", "America/New_York"]),
        "interval_minutes": 5,
        "duration": dt.timedelta(hours=6),
        "fast": True,
        "start": FAULT_START,
        "seed": 7,
        "rate": 60.0,
        "concurrency": 4,
        "retry_delay": 0.2,
        "drain": 30.0,
        "timeout": 15.0,
    }
    settings.update(overrides)
    return SimulationConfig(**settings)


def describe(summary: Summary) -> str:
    """The parts of a summary that explain a failed comparison."""
    return (
        f"complete={summary.complete} interrupted={summary.interrupted} pushes={summary.pushes} "
        f"retries={summary.retries} answers={summary.answers} connection_errors={summary.connection_errors} "
        f"delivered={summary.delivered.as_dict()} pending={summary.pending.as_dict()} "
        f"last_errors={[s.last_error for s in summary.sensors if s.last_error]}"
    )


def stored_points(influx: LocalInflux, bucket: str) -> dict[PointKey, dict[str, Any]]:
    """Every people_count point as {(serial, time, direction): fields}; fails on one key in two series."""
    rows = influx.query(bucket, 'SELECT "count", "adults" FROM people_count GROUP BY *')
    points: dict[PointKey, dict[str, Any]] = {}
    for row in rows:
        key = (str(row["serial"]), int(row["time"]), str(row["direction"]))
        assert key not in points, (
            f"point {key} is stored in two series (tags differ): {points[key]} and {row}"
        )
        points[key] = row
    return points


def sums_by_serial(points: dict[PointKey, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Totals per serial in the simulator's Totals terms, computed from stored points."""
    sums: dict[str, dict[str, int]] = {}
    for (serial, _, direction), row in points.items():
        entry = sums.setdefault(
            serial,
            {
                "intervals_in": 0,
                "intervals_out": 0,
                "count_in": 0,
                "count_out": 0,
                "adults_in": 0,
                "adults_out": 0,
            },
        )
        entry[f"intervals_{direction}"] += 1
        entry[f"count_{direction}"] += int(row["count"])
        entry[f"adults_{direction}"] += int(row.get("adults") or 0)
    return sums


def influx_aggregates(influx: LocalInflux, bucket: str) -> dict[tuple[str, str], tuple[int, int, int]]:
    """InfluxDB's own SUM("count"), COUNT("count") and SUM("adults") per (serial, direction)."""
    rows = influx.query(
        bucket,
        'SELECT SUM("count") AS c, COUNT("count") AS n, SUM("adults") AS a FROM people_count '
        'GROUP BY "serial", "direction"',
    )
    return {
        (str(row["serial"]), str(row["direction"])): (int(row["c"]), int(row["n"]), int(row["a"] or 0))
        for row in rows
    }


def assert_influx_matches_delivered(
    influx: LocalInflux, bucket: str, summary: Summary, config: SimulationConfig
) -> None:
    """A complete run: InfluxDB holds exactly what was delivered, every minute once, with its values."""
    assert summary.complete, (
        f"the run did not deliver everything, so totals cannot be exact: {describe(summary)}"
    )
    points = stored_points(influx, bucket)
    sums = sums_by_serial(points)
    assert set(sums) == {s.serial for s in summary.sensors}, (
        f"InfluxDB has serials {sorted(sums)}, the simulator delivered for "
        f"{[s.serial for s in summary.sensors]}"
    )
    for sensor in summary.sensors:
        delivered = sensor.delivered
        expected = {
            "intervals_in": delivered.intervals,
            "intervals_out": delivered.intervals,
            "count_in": delivered.count_in,
            "count_out": delivered.count_out,
            "adults_in": delivered.adults_in,
            "adults_out": delivered.adults_out,
        }
        assert sums[sensor.serial] == expected, (
            f"sensor {sensor.serial}: InfluxDB totals {sums[sensor.serial]} != delivered totals {expected} "
            f"({describe(summary)})"
        )
    aggregates = influx_aggregates(influx, bucket)
    expected_aggregates = {
        (sensor.serial, direction): (
            getattr(sensor.delivered, f"count_{direction}"),
            sensor.delivered.intervals,
            getattr(sensor.delivered, f"adults_{direction}"),
        )
        for sensor in summary.sensors
        for direction in ("in", "out")
    }
    assert aggregates == expected_aggregates, (
        f"InfluxQL SUM(count), COUNT(count), SUM(adults) per (serial, direction) {aggregates} != "
        f"delivered {expected_aggregates}"
    )
    total = summary.delivered
    assert len(points) == 2 * total.intervals, (
        f"InfluxDB holds {len(points)} people_count points, expected 2 per delivered interval = "
        f"{2 * total.intervals}: some interval is missing or stored twice"
    )
    assert_points_equal_model(points, summary, config)


def expected_points(summary: Summary, config: SimulationConfig) -> dict[PointKey, tuple[int, int | None]]:
    """What each delivered minute must look like in InfluxDB, regenerated from the simulator's model."""
    model = TrafficModel(config.seed, config.traffic)
    identities = {identity.serial: identity for identity in config.sensors}
    expected: dict[PointKey, tuple[int, int | None]] = {}
    for sensor in summary.sensors:
        if sensor.delivered_from is None or sensor.delivered_to is None:
            continue
        start = dt.datetime.fromisoformat(sensor.delivered_from)
        end = dt.datetime.fromisoformat(sensor.delivered_to)
        device = SimulatedSensor(identities[sensor.serial], model, keep_from=start)
        for minute in device.minutes(start, end):
            moment = int(minute.start.timestamp())
            if minute.items is None:
                for direction in ("in", "out"):
                    expected[(sensor.serial, moment, direction)] = (0, None)
                continue
            for item in minute.items:
                expected[(sensor.serial, moment, item.direction)] = (item.count, item.adults)
    return expected


def assert_points_equal_model(
    points: dict[PointKey, dict[str, Any]], summary: Summary, config: SimulationConfig
) -> None:
    """Point by point: the stored minutes are exactly the delivered ones, with the measured counts."""
    expected = expected_points(summary, config)
    stored = {key: (int(row["count"]), row.get("adults")) for key, row in points.items()}
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    assert not missing and not extra, (
        f"{len(missing)} delivered point(s) missing from InfluxDB (first {missing[:3]}), "
        f"{len(extra)} stored point(s) never delivered (first {extra[:3]})"
    )
    wrong = [(key, stored[key], value) for key, value in expected.items() if stored[key] != value]
    assert not wrong, (
        f"{len(wrong)} point(s) hold other values than measured, (key, stored, sent): {wrong[:3]}"
    )


@dataclass
class FaultPlan:
    """Runs fault actions from the simulator's progress hook once enough intervals were delivered."""

    steps: list[tuple[float, Callable[[], None]]]
    expected_intervals: int
    fired: list[str] = field(default_factory=list)
    fired_at: list[int] = field(default_factory=list)
    timers: list[threading.Timer] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def __call__(self, progress: Progress) -> None:
        """on_progress hook: fire every step whose share of the run has been delivered."""
        while self.steps and progress.delivered_intervals >= self.steps[0][0] * self.expected_intervals:
            _, action = self.steps.pop(0)
            self.fired.append(getattr(action, "__name__", repr(action)))
            self.fired_at.append(progress.delivered_intervals)
            action()

    def later(self, seconds: float, action: Callable[[], None]) -> Callable[[], None]:
        """A step running `action` on a timer thread after `seconds`, so the progress hook is not blocked."""

        def guarded() -> None:
            try:
                action()
            except BaseException as exc:  # reported by assert_all_fired, not lost in a thread
                self.errors.append(exc)

        def start_timer() -> None:
            timer = threading.Timer(seconds, guarded)
            timer.daemon = True
            self.timers.append(timer)
            timer.start()

        start_timer.__name__ = f"after {seconds} s: {getattr(action, '__name__', action)}"
        return start_timer

    def join(self, timeout: float = 60.0) -> None:
        """Wait for delayed actions (e.g. restarting InfluxDB) to finish."""
        for timer in self.timers:
            timer.join(timeout)

    def assert_all_fired(self) -> None:
        """Every fault really happened mid-run (else the test proves nothing)."""
        self.join()
        assert not self.errors, f"a fault action failed: {self.errors!r}"
        assert not self.steps, (
            f"the run ended before faults {[getattr(a, '__name__', a) for _, a in self.steps]} could fire; "
            f"fired {self.fired} at delivered intervals {self.fired_at}"
        )


def total_intervals(config: SimulationConfig) -> int:
    """Minutes the run will measure over all sensors."""
    minutes = int((config.duration + config.backfill).total_seconds() // 60)
    return minutes * len(config.sensors)


class AlternatingTransport:
    """Sends each push to the next of several receivers in turn (a DNS round robin or a load balancer)."""

    def __init__(self, transports: Sequence[Any]) -> None:
        """Rotate over `transports` (PushTransport objects)."""
        self._transports = list(transports)
        self._next = 0
        self._lock = threading.Lock()

    def push(self, body: bytes) -> PushResult:
        """Deliver through the next transport."""
        with self._lock:
            transport = self._transports[self._next % len(self._transports)]
            self._next += 1
        result: PushResult = transport.push(body)
        return result

    def close(self) -> None:
        """Close all transports."""
        for transport in self._transports:
            transport.close()
