"""End to end: a real Prometheus scrapes ``axis-exporter serve`` (gunicorn, 2 workers) while pushes arrive.

The scraped totals must equal what the receiver answered, whichever worker served the push or the
scrape, and must survive a SIGKILLed worker (gunicorn respawns it; its counts stay in the aggregate).
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import multiprocess

from exporter.influxd_bridge import LocalInflux
from exporter.processes import wait_until
from grafana.build_dashboards import quiet_threshold, seconds_since_last_push
from tests.faultkit import DROPPED_CONNECTION_WARNINGS, collect_dropped_connections
from tests.promserver import LocalPrometheus, Result, sample_value, scrape_job
from tests.serveprocess import ExporterFactory, ExporterProcess
from tests.support import payload

JOB_SELECTOR = 'job="axis-exporter"'

# A worker is SIGKILLed mid-run: connections to it are cut (see tests/faultkit.py).
pytestmark = DROPPED_CONNECTION_WARNINGS
_collect = pytest.fixture(autouse=True)(collect_dropped_connections)

ALERTS = Path(__file__).resolve().parent.parent / "prometheus" / "alerts.yml"


@dataclass(frozen=True)
class FakeSensor:
    """A sensor sending ``per_push`` counting intervals of ``interval`` seconds in each push."""

    name: str
    serial: str
    interval: int
    per_push: int

    def push(self, index: int, base: int) -> dict[str, Any]:
        """The ``index``-th push of this sensor, intervals starting ``base`` (unix s); -1: test connection."""
        document = payload("test-connection")
        document["sensor"].update(name=self.name, serial=self.serial)
        if index < 0:
            return document
        start = base + index * self.interval * self.per_push
        measurements = []
        for n in range(self.per_push):
            frm, to = start + n * self.interval, start + (n + 1) * self.interval
            measurements.append(
                {
                    "kind": "people-counts",
                    "utcFrom": _iso(frm),
                    "utcTo": _iso(to),
                    "items": [{"direction": "in", "count": index % 7}, {"direction": "out", "count": n}],
                }
            )
        document["data"] = {"utcFrom": _iso(start), "utcTo": _iso(start + self.interval * self.per_push)}
        document["data"]["measurements"] = measurements
        document["utcSent"] = _iso(start + self.interval * self.per_push + 5)
        return document

    def points(self, index: int) -> int:
        """Points of the ``index``-th push: people_count (in + out per interval) and sensor_push."""
        return 1 if index < 0 else 2 * self.per_push + 1

    def intervals(self, index: int) -> int:
        """Counting intervals in the ``index``-th push."""
        return 0 if index < 0 else self.per_push


def _iso(unix: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


MINUTE = FakeSensor("entrance", "ACCC00000001", 60, 1)
QUARTER = FakeSensor("backdoor", "ACCC00000015", 60, 15)  # one-minute intervals, sent every 15 minutes


@dataclass
class Sent:
    """What the receiver answered, as a device would see it; ``lost_*``: pushes cut off by the kill."""

    results: Counter[str] = field(default_factory=Counter)
    points: int = 0
    intervals: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    lost_points: int = 0
    lost_intervals: Counter[str] = field(default_factory=Counter)

    def __add__(self, other: Sent) -> Sent:
        return Sent(
            self.results + other.results,
            self.points + other.points,
            self.intervals + other.intervals,
            self.failed + other.failed,
            self.lost_points + other.lost_points,
            self.lost_intervals + other.lost_intervals,
        )


def _send(
    url: str,
    jobs: list[tuple[FakeSensor, int]],
    base: int,
    threads: int = 6,
    after: tuple[int, Callable[[], None]] | None = None,
) -> Sent:
    """Push concurrently, one connection per push (so gunicorn spreads them over the workers).

    ``after=(n, action)`` runs ``action`` once, as soon as ``n`` pushes were answered.
    """
    done = itertools.count(1)

    def one(job: tuple[FakeSensor, int]) -> str | None:
        sensor, index = job
        try:
            response = requests.post(f"{url}/push", json=sensor.push(index, base), timeout=30)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            return None  # the worker died under this request: the device would re-send
        finally:
            if after is not None and next(done) == after[0]:
                after[1]()
        assert response.status_code == 200, response.text
        return str(response.json()["status"])

    sent = Sent()
    with ThreadPoolExecutor(threads) as pool:
        for (sensor, index), status in zip(jobs, pool.map(one, jobs), strict=True):
            if status is None:
                sent.failed += 1
                sent.lost_points += sensor.points(index)
                sent.lost_intervals[sensor.serial] += sensor.intervals(index)
                continue
            sent.results[status] += 1
            sent.points += sensor.points(index)
            sent.intervals[sensor.serial] += sensor.intervals(index)
    return sent


def _pushes_by_pid(directory: Path) -> dict[int, float]:
    """Pushes each process recorded in its own multiprocess file (pid -> count), for processes that took
    any (the admin process never does)."""
    counts: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        families = multiprocess.MultiProcessCollector.merge([str(path)], accumulate=True)  # type: ignore[no-untyped-call]
        counts[int(path.stem.split("_")[1])] = sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "axis_exporter_pushes_total"
        )
    return {pid: count for pid, count in counts.items() if count > 0}


def _scraped(prom: LocalPrometheus, promql: str) -> float | None:
    return sample_value(prom.query(promql))


def _equals(expected: float) -> Any:
    def check(result: Result) -> bool:
        return sample_value(result) == expected

    return check


def _wait_for_respawn(server: ExporterProcess, dead: int, workers: int, metrics_dir: Path) -> list[int]:
    """Wait until gunicorn replaced ``dead`` and every worker has loaded the app (its metric files exist)."""

    def respawned() -> list[int] | None:
        pids = server.worker_pids()
        loaded = all((metrics_dir / f"counter_{pid}.db").exists() for pid in pids)
        return pids if len(pids) == workers and dead not in pids and loaded else None

    return wait_until(
        respawned,
        20,
        lambda: f"gunicorn to respawn the killed worker: {server.worker_pids()}\n{server.log()}",
        interval=0.1,
    )


def test_prometheus_sees_the_totals_of_all_workers_even_after_one_is_killed(
    exporter_server: ExporterFactory, influx: LocalInflux, bucket: str, tmp_path: Path
) -> None:
    server = exporter_server(workers=2)
    metrics_dir = Path(server.env["PROMETHEUS_MULTIPROC_DIR"])
    base = int(time.time()) // 3600 * 3600 - 48 * 3600
    with LocalPrometheus(
        tmp_path / "prometheus",
        [scrape_job("axis-exporter", f"127.0.0.1:{server.admin_port}")],
        rule_files=[ALERTS],
    ) as prom:
        prom.wait_until('up{job="axis-exporter"}', _equals(1))
        # Phase 1: test connections, then both sensors push (the 1-minute sensor 15 times as often).
        first = _send(server.url, [(MINUTE, -1), (QUARTER, -1)], base, threads=1)
        jobs = [(MINUTE, i) for i in range(30)] + [(QUARTER, i) for i in range(2)]
        phase1 = _send(server.url, jobs, base)
        by_pid = _pushes_by_pid(metrics_dir)
        victim = max(by_pid, key=lambda pid: by_pid[pid])
        assert victim in server.worker_pids() and by_pid[victim] > 0, by_pid

        # Phase 2: pushes keep arriving while the busiest worker is SIGKILLed.
        jobs = [(MINUTE, i) for i in range(30, 70)] + [(QUARTER, i) for i in range(2, 4)]
        phase2 = _send(server.url, jobs, base, 3, after=(10, lambda: os.kill(victim, signal.SIGKILL)))
        pids = _wait_for_respawn(server, victim, 2, metrics_dir)
        phase3 = _send(server.url, [(MINUTE, i) for i in range(70, 80)], base)
        assert _pushes_by_pid(metrics_dir).get(victim, 0) > 0, "the dead worker's counts are still on disk"
        # gunicorn's child_exit hook dropped only the dead worker's live gauge (influxdb_up).
        assert not (metrics_dir / f"gauge_livemostrecent_{victim}.db").exists()
        assert (metrics_dir / f"gauge_max_{victim}.db").exists(), "only live gauges go"
        assert len([pid for pid, n in _pushes_by_pid(metrics_dir).items() if n > 0]) >= 2

        sent = first + phase1 + phase2 + phase3
        results = sent.results
        assert results["test_connection"] == 2
        assert results["ok"] == 30 + 2 + 10 + len(jobs) - sent.failed

        # Prometheus' latest scrape (served by either worker) shows exactly what was answered 200. A push
        # whose worker died under it got no answer (the device re-sends it); it may have been counted.
        ok = 'sum(axis_exporter_pushes_total{job="axis-exporter", result="ok"})'
        value = sample_value(prom.wait_until(ok, lambda r: (sample_value(r) or 0) >= results["ok"]))
        assert value is not None and results["ok"] <= value <= results["ok"] + sent.failed
        scraped_points = _scraped(prom, 'sum(axis_exporter_points_written_total{job="axis-exporter"})')
        assert scraped_points is not None
        assert sent.points <= scraped_points <= sent.points + sent.lost_points
        for sensor in (MINUTE, QUARTER):
            selector = f'{{job="axis-exporter", serial="{sensor.serial}"}}'
            scraped = _scraped(prom, f"axis_exporter_sensor_intervals_total{selector}")
            names = prom.query(f"axis_exporter_sensor_name_timestamp_seconds{selector}")
            assert [result["metric"]["sensor"] for result in names] == [sensor.name]
            expected = sent.intervals[sensor.serial]
            assert scraped is not None
            assert expected <= scraped <= expected + sent.lost_intervals[sensor.serial], sensor
        if sent.failed == 0:
            assert (value, scraped_points) == (results["ok"], sent.points)
        assert _scraped(prom, 'axis_exporter_pushes_total{result="test_connection"}') == 2
        for sensor in (MINUTE, QUARTER):
            selector = f'{{job="axis-exporter", serial="{sensor.serial}"}}'
            assert _scraped(prom, f"axis_exporter_sensor_push_interval_seconds{selector}") == (
                sensor.interval * sensor.per_push
            )
            last_push = _scraped(prom, f"axis_exporter_sensor_last_push_timestamp_seconds{selector}")
            assert last_push is not None and abs(last_push - time.time()) < 120
        # The killed worker's counts stayed in the aggregate: the counters never went backwards.
        resets = prom.query('resets(axis_exporter_pushes_total{job="axis-exporter"}[10m]) > 0')
        assert resets == [], resets
        handled = _scraped(prom, 'sum(axis_exporter_push_duration_seconds_count{job="axis-exporter"})')
        assert handled is not None and handled >= sum(results.values())
        assert _scraped(prom, 'axis_exporter_influxdb_up{job="axis-exporter"}') == 1
        build = prom.query('axis_exporter_build_info{job="axis-exporter"}')
        assert len(build) == 1 and build[0]["metric"]["version"], build
        # Every alert expression evaluates against the real metrics; none fires while pushes arrive.
        rules = [rule for group in prom.api("rules")["groups"] for rule in group["rules"]]
        assert len(rules) == 6 and all(rule["health"] in ("ok", "unknown") for rule in rules), rules
        for rule in rules:
            assert prom.query(rule["query"]) == [], rule["name"]
        (quiet_rule,) = [rule for rule in rules if rule["name"] == "AxisSensorNotPushing"]
        # The rule's two sides, as the dashboards and Grafana's rule write them (they share the numbers).
        since, threshold = seconds_since_last_push(JOB_SELECTOR), quiet_threshold(JOB_SELECTOR)
        assert "axis_exporter_sensor_last_push_timestamp_seconds" in quiet_rule["query"]
        ages = {r["metric"]["serial"]: float(r["value"][1]) for r in prom.query(since)}
        assert ages.keys() == {MINUTE.serial, QUARTER.serial} and max(ages.values()) < 120, ages
        limits = {r["metric"]["serial"]: float(r["value"][1]) for r in prom.query(threshold)}
        assert limits == {MINUTE.serial: 300, QUARTER.serial: 2700}

        # Every scrape agrees, whichever worker serves it (fresh connection each time).
        texts = {_ok_line(requests.get(f"{server.admin_url}/metrics", timeout=10).text) for _ in range(12)}
        assert texts == {f'axis_exporter_pushes_total{{result="ok"}} {value}'}, texts
    assert set(pids) <= set(server.worker_pids())
    (stored,) = influx.query(bucket, "SELECT COUNT(intervals) FROM sensor_push")
    assert stored["count"] >= results["ok"] + results["test_connection"]


def _ok_line(text: str) -> str:
    (line,) = [
        line for line in text.splitlines() if line.startswith('axis_exporter_pushes_total{result="ok"}')
    ]
    return line


def test_sensor_cap_holds_for_all_workers_together(exporter_server: ExporterFactory) -> None:
    server = exporter_server(workers=2, env={"AXIS_EXPORTER_MAX_SENSORS": "3"})
    metrics_dir = Path(server.env["PROMETHEUS_MULTIPROC_DIR"])
    serials = (f"ACCC8E00{n:04d}" for n in itertools.count())
    sent = 0

    def push(serial: str) -> int:
        document = payload("test-connection")
        document["sensor"].update(name=f"s-{serial}", serial=serial)
        return requests.post(f"{server.url}/push", json=document, timeout=30).status_code

    # New serials until every worker has seen more sensors than the cap (bounded: 30 batches of 8).
    with ThreadPoolExecutor(8) as pool:
        for _ in range(30):
            batch = list(pool.map(push, itertools.islice(serials, 8)))
            assert batch == [200] * 8, "capped sensors are still stored"
            sent += 8
            by_pid = _pushes_by_pid(metrics_dir)
            if len(by_pid) == 2 and min(by_pid.values()) > 3:
                break
        else:
            raise AssertionError(f"gunicorn did not spread 240 pushes over both workers: {by_pid}")
    lines = requests.get(f"{server.admin_url}/metrics", timeout=10).text.splitlines()
    tracked = [line for line in lines if line.startswith("axis_exporter_sensor_last_push")]
    assert len(tracked) == 3, tracked
    assert f"axis_exporter_untracked_sensor_pushes_total {sent - 3}.0" in lines
    assert "axis_exporter_sensors 3.0" in lines
