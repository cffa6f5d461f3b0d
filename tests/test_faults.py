"""Faults mid-run: InfluxDB down or frozen, workers killed, the receiver restarted, two receivers.

Each test drives real gunicorn with the simulator (the device's re-send rules) and ends in an exact
comparison: InfluxDB holds every delivered minute once, with the values measured, and nothing else.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from exporter.processes import wait_until
from exporter.simulator import HttpTransport, Summary, make_identities, run_simulation
from tests.faultkit import (
    DROPPED_CONNECTION_WARNINGS,
    AlternatingTransport,
    FaultPlan,
    assert_influx_matches_delivered,
    collect_dropped_connections,
    describe,
    fault_config,
    total_intervals,
)
from tests.influxfaults import FaultableInflux
from tests.serveprocess import ExporterFactory, ExporterProcess

pytestmark = DROPPED_CONNECTION_WARNINGS
_collect = pytest.fixture(autouse=True)(collect_dropped_connections)


def answers(url: str) -> bool:
    """Whether something answers HTTP at `url`."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def restore_influx(influx: FaultableInflux) -> Iterator[FaultableInflux]:
    """The session's InfluxDB, made whole again after the test whatever the test did to it."""
    yield influx
    influx.resume_influxd()
    if not answers(f"{influx.influxd_url}/ping"):
        influx.start_influxd()
    if not answers(f"{influx.url}/ping"):
        influx.start_bridge()


def assert_saw(summary: Summary, *, statuses: frozenset[str] = frozenset(), errors: bool = False) -> None:
    """The fault was felt by the device: the given non-200 answers (and connection errors) occurred."""
    missing = statuses - set(summary.non_200)
    assert not missing, f"the fault never showed as HTTP {sorted(missing)}: {describe(summary)}"
    if errors:
        assert summary.connection_errors, f"the fault never cut a connection: {describe(summary)}"
    assert summary.retries > 0, f"nothing had to be re-sent, so the fault proved nothing: {describe(summary)}"


def test_influxdb_stopped_and_unreachable_mid_run_every_interval_stored_once(
    exporter_server: ExporterFactory, restore_influx: FaultableInflux, bucket: str
) -> None:
    """influxd stopped for 3 s, later the way to it (the bridge) gone for 2 s: 503s, re-sends, exact sums."""
    influx = restore_influx
    server = exporter_server(workers=2)
    config = fault_config(server.url)
    plan = FaultPlan([], total_intervals(config))
    plan.steps = [
        (0.25, influx.stop_influxd),
        (0.25, plan.later(3.0, influx.start_influxd)),
        (0.6, influx.stop_bridge),
        (0.6, plan.later(2.0, influx.start_bridge)),
    ]
    summary = run_simulation(config, on_progress=plan, progress_every=0.05)
    plan.assert_all_fired()
    assert_saw(summary, statuses=frozenset({"503"}))
    assert_influx_matches_delivered(influx, bucket, summary, config)


def test_influxdb_frozen_writes_time_out_and_land_late_without_double_counting(
    exporter_server: ExporterFactory, restore_influx: FaultableInflux, bucket: str
) -> None:
    """influxd frozen for 3 s with a 1 s write timeout: the receiver says 503 for writes InfluxDB then
    stores anyway when it wakes up; the device re-sends them, and each minute is still there once."""
    influx = restore_influx
    server = exporter_server(workers=2, env={"INFLUXDB_V2_TIMEOUT": "1000"})
    config = fault_config(server.url)
    plan = FaultPlan([], total_intervals(config))
    plan.steps = [(0.4, influx.pause_influxd), (0.4, plan.later(3.0, influx.resume_influxd))]
    summary = run_simulation(config, on_progress=plan, progress_every=0.05)
    plan.assert_all_fired()
    assert_saw(summary, statuses=frozenset({"503"}))
    assert_influx_matches_delivered(influx, bucket, summary, config)


def kill_workers(server: ExporterProcess, count: int | None = None) -> list[int]:
    """SIGKILL `count` workers (all by default); return their pids."""
    pids = server.worker_pids()
    assert pids, f"the exporter has no workers to kill:\n{server.log()[-2000:]}"
    victims = pids if count is None else pids[:count]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    return victims


def test_workers_sigkilled_mid_run_every_interval_stored_once(
    exporter_server: ExporterFactory, restore_influx: FaultableInflux, bucket: str
) -> None:
    """One worker killed at random, then every worker killed while its writes hang in a frozen InfluxDB."""
    influx = restore_influx
    server = exporter_server(workers=2)
    config = fault_config(server.url)
    killed: list[int] = []

    def kill_one() -> None:
        killed.extend(kill_workers(server, 1))

    def kill_all_during_writes() -> None:
        influx.pause_influxd()
        try:
            time.sleep(0.7)  # the simulator's pushes pile up in the workers, waiting for InfluxDB
            killed.extend(kill_workers(server))
        finally:
            influx.resume_influxd()

    plan = FaultPlan([(0.3, kill_one), (0.6, kill_all_during_writes)], total_intervals(config))
    summary = run_simulation(config, on_progress=plan, progress_every=0.05)
    plan.assert_all_fired()
    assert_saw(summary, errors=True)
    wait_until(lambda: len(server.worker_pids()) == 2, 30, "gunicorn to replace the killed workers")
    survivors = set(killed) & set(server.worker_pids())
    assert not survivors, f"workers {survivors} were SIGKILLed but are still listed"
    assert_influx_matches_delivered(influx, bucket, summary, config)


def test_exporter_restarted_and_crashed_mid_run_every_interval_stored_once(
    exporter_server: ExporterFactory, restore_influx: FaultableInflux, bucket: str
) -> None:
    """A graceful restart (SIGTERM, start again on the same port), then a crash (SIGKILL to master and
    workers) and a start: connection errors meanwhile, everything re-sent, exact totals."""
    influx = restore_influx
    server = exporter_server(workers=2)
    config = fault_config(server.url)

    def crash() -> None:
        plan.join()  # the restart must be complete (admin listener included) before the crash
        server.crash()

    plan = FaultPlan([], total_intervals(config))
    plan.steps = [
        (0.25, server.stop),
        (0.25, plan.later(1.0, server.start)),
        (0.6, crash),
        (0.6, plan.later(1.0, server.start)),
    ]
    summary = run_simulation(config, on_progress=plan, progress_every=0.05)
    plan.assert_all_fired()
    assert_saw(summary, errors=True)
    assert "connect" in summary.connection_errors, (
        f"pushes while the receiver was down should be refused connections: {describe(summary)}"
    )
    assert_influx_matches_delivered(influx, bucket, summary, config)


def test_two_receivers_on_one_bucket_take_the_same_resends(
    exporter_server: ExporterFactory, restore_influx: FaultableInflux, bucket: str
) -> None:
    """Two receivers on one bucket: one fleet alternates between them while one of them restarts, a second
    fleet with the same serials and data pushes everything again through the other: no double counts."""
    influx = restore_influx
    first = exporter_server(workers=1)
    second = exporter_server(workers=1)
    config = fault_config(first.url)
    twin_config = fault_config(second.url)
    alternating = AlternatingTransport(
        [HttpTransport(f"{receiver.url}/push", timeout=config.timeout) for receiver in (first, second)]
    )
    plan = FaultPlan([], total_intervals(config))
    plan.steps = [(0.3, first.stop), (0.3, plan.later(1.5, first.start))]
    twin: list[Summary] = []
    twin_thread = threading.Thread(target=lambda: twin.append(run_simulation(twin_config)), daemon=True)
    twin_thread.start()
    try:
        summary = run_simulation(config, transport=alternating, on_progress=plan, progress_every=0.05)
    finally:
        alternating.close()
        twin_thread.join(timeout=120)
    plan.assert_all_fired()
    assert twin, "the second fleet's run did not finish within 120 s"
    assert_saw(summary, errors=True)
    assert summary.delivered == twin[0].delivered, (
        f"the two fleets measured different data: {summary.delivered} vs {twin[0].delivered}"
    )
    assert_influx_matches_delivered(influx, bucket, summary, config)
    assert_influx_matches_delivered(influx, bucket, twin[0], twin_config)


@pytest.mark.slow
def test_soak_repeated_faults_over_a_day_of_one_minute_pushes(
    exporter_server: ExporterFactory, restore_influx: FaultableInflux, bucket: str
) -> None:
    """Long variant: 8 sensors, 1-minute pushes over a day, InfluxDB stopped, frozen and a worker killed."""
    influx = restore_influx
    server = exporter_server(workers=2, env={"INFLUXDB_V2_TIMEOUT": "1000"})
    config = fault_config(
        server.url,
        sensors=make_identities(8, flavour="2d", time_zones=["Europe/Stockholm", "Asia/Tokyo"]),
        interval_minutes=1,
        duration=dt.timedelta(hours=24),
        rate=150.0,
        concurrency=8,
    )

    def kill_one() -> None:
        kill_workers(server, 1)

    def kill_all() -> None:
        kill_workers(server)

    plan = FaultPlan([], total_intervals(config))
    plan.steps = [
        (0.1, influx.stop_influxd),
        (0.1, plan.later(4.0, influx.start_influxd)),
        (0.3, kill_one),
        (0.5, influx.pause_influxd),
        (0.5, plan.later(3.0, influx.resume_influxd)),
        (0.7, influx.stop_bridge),
        (0.7, plan.later(3.0, influx.start_bridge)),
        (0.85, kill_all),
    ]
    summary = run_simulation(config, on_progress=plan, progress_every=0.05)
    plan.assert_all_fired()
    assert_saw(summary, statuses=frozenset({"503"}), errors=True)
    assert_influx_matches_delivered(influx, bucket, summary, config)
