"""Three receivers behind a round-robin balancer lose nothing and count nothing twice.

Three ``axis-exporter serve`` on one InfluxDB bucket, nginx in front of them configured as the example
Ingress configures its controller (bench/balancer.py), and thousands of simulated counters pushing
through it in fast-forward. Mid-run one receiver is SIGKILLed (master, workers and admin process) and
started again on its port, and the receiver that is storing a large backfill is stopped with SIGTERM, as
Kubernetes stops a pod after its preStop hook: it must finish that push and answer 200 before it exits.
The run ends in the exact comparison of tests/test_faults.py: InfluxDB holds every minute the simulated
cameras were told was stored, once, with the counts they measured, and nothing else.

The default variant takes well under a minute on two cores; ``-m slow`` runs more counters for longer,
with two workers per receiver and a 90-day backfill (35 MB) as the push in flight.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.balancer import Balancer
from bench.scaling import large_bodies
from exporter.influxd_bridge import LocalInflux
from exporter.processes import wait_until
from exporter.simulator import SimulationConfig, Summary, make_identities, run_simulation
from tests.faultkit import (
    DROPPED_CONNECTION_WARNINGS,
    FAULT_START,
    FaultPlan,
    assert_influx_matches_delivered,
    collect_dropped_connections,
    describe,
    fault_config,
    total_intervals,
)
from tests.kube import ingress_settings
from tests.serveprocess import ExporterFactory, ExporterProcess

pytestmark = DROPPED_CONNECTION_WARNINGS
_collect = pytest.fixture(autouse=True)(collect_dropped_connections)

BACKFILL_SERIAL_PREFIX = "ACCC8F"  # the fleet's serials start ACCC8E


@dataclass(frozen=True)
class Scale:
    """How big a run is."""

    sensors: int
    duration: dt.timedelta
    backfill: dt.timedelta
    workers: int
    concurrency: int


SHORT = Scale(
    sensors=2_000,
    duration=dt.timedelta(minutes=30),
    backfill=dt.timedelta(days=30),
    workers=1,
    concurrency=32,
)
LONG = Scale(
    sensors=5_000, duration=dt.timedelta(hours=2), backfill=dt.timedelta(days=98), workers=2, concurrency=48
)


@dataclass
class Drain:
    """The SIGTERM during the backfill: which receiver held it, and how its stop went."""

    receiver: int | None = None
    seconds_to_exit: float | None = None
    exit_code: int | None = None
    errors: list[str] = field(default_factory=list)


def drain_the_backfill(receivers: list[ExporterProcess], drain: Drain, timeout: float = 90.0) -> None:
    """Wait until a receiver has read the backfill's body, then SIGTERM it and time its exit."""

    def holders() -> list[int]:
        return [index for index, server in enumerate(receivers) if large_bodies(server.admin_url) > 0]

    try:
        reading = wait_until(holders, timeout, "a receiver to read the backfill's body", 0.02)
    except TimeoutError as exc:
        drain.errors.append(str(exc))
        return
    drain.receiver = reading[0]
    server = receivers[reading[0]]
    process = server.process
    assert process is not None
    stopped = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        drain.exit_code = process.wait(timeout=45)
    except Exception as exc:  # reported by the test, not lost in a thread
        drain.errors.append(f"receiver {reading[0]} did not exit within 45 s of SIGTERM: {exc!r}")
        return
    drain.seconds_to_exit = time.monotonic() - stopped
    server.start()


def merged(fleet: Summary, backfill: Summary) -> Summary:
    """One summary of both runs (same seed and traffic model), for the exact comparison."""
    return dataclasses.replace(fleet, sensors=[*fleet.sensors, *backfill.sensors])


@pytest.fixture
def receivers(exporter_server: ExporterFactory, request: pytest.FixtureRequest) -> list[ExporterProcess]:
    """Three receivers on the test's bucket (workers per receiver from the test's Scale)."""
    scale: Scale = request.param
    return [exporter_server(workers=scale.workers, env={"INFLUXDB_V2_TIMEOUT": "30000"}) for _ in range(3)]


@pytest.fixture
def balancer(receivers: list[ExporterProcess], tmp_path: Path) -> Iterator[Balancer]:
    """nginx round robin in front of the receivers, with the example Ingress' limits."""
    settings = ingress_settings()
    base = tmp_path / "balancer"
    base.mkdir()
    with Balancer(
        base,
        [server.port for server in receivers],
        body_size=settings["proxy-body-size"],
        read_timeout=int(settings["proxy-read-timeout"]),
        send_timeout=int(settings["proxy-send-timeout"]),
        request_buffering=settings["proxy-request-buffering"] == "on",
    ) as started:
        yield started


def run_scale(
    scale: Scale,
    receivers: list[ExporterProcess],
    balancer: Balancer,
    influx: LocalInflux,
    bucket: str,
    deadletter: Path,
) -> None:
    """The scenario of the module docstring, ending in the exact comparison."""
    fleet_config = fault_config(
        balancer.url,
        sensors=make_identities(scale.sensors, flavour="2d", time_zones=["Europe/Stockholm", "Asia/Tokyo"]),
        duration=scale.duration,
        rate=None,
        concurrency=scale.concurrency,
        drain=60.0,
        timeout=60.0,
    )
    backfill_config = SimulationConfig(
        url=f"{balancer.url}/push",
        sensors=make_identities(1, serial_prefix=BACKFILL_SERIAL_PREFIX),
        interval_minutes=1,
        duration=dt.timedelta(0),
        backfill=scale.backfill,
        fast=True,
        start=FAULT_START + scale.duration,
        seed=fleet_config.seed,
        retry_delay=0.2,
        drain=60.0,
        timeout=120.0,
    )
    killed = receivers[0]
    drain = Drain()
    backfills: list[Summary] = []
    threads: list[threading.Thread] = []

    def start_backfill() -> None:
        for target, args in (
            (lambda: backfills.append(run_simulation(backfill_config)), ()),
            (drain_the_backfill, (receivers, drain)),
        ):
            thread = threading.Thread(target=target, args=args, daemon=True)
            threads.append(thread)
            thread.start()

    def kill_one() -> None:
        killed.crash()  # a crashed pod

    plan = FaultPlan([], total_intervals(fleet_config))
    plan.steps = [(0.2, kill_one), (0.2, plan.later(1.0, killed.start)), (0.35, start_backfill)]
    fleet = run_simulation(fleet_config, on_progress=plan, progress_every=0.05)
    plan.assert_all_fired()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(thread.is_alive() for thread in threads), "the backfill or its drain did not finish"
    assert not drain.errors, drain.errors
    assert backfills, "the backfill run returned nothing"
    backfill = backfills[0]

    # The SIGKILL was felt: pushes in flight there were cut (nginx answers 502) and sent again.
    assert fleet.retries > 0 and (fleet.non_200 or fleet.connection_errors), (
        f"killing a receiver mid-run never showed: {describe(fleet)}"
    )
    # The SIGTERM drained: the receiver holding the backfill finished it, answered 200 and exited 0.
    assert drain.exit_code == 0, f"receiver {drain.receiver} exited with {drain.exit_code} after SIGTERM"
    assert backfill.answers == {"200": 2} and backfill.retries == 0, (
        f"the backfill in flight at SIGTERM was not answered 200 at its first try: {describe(backfill)}"
    )
    wait_until(
        lambda: all(s.process is not None and s.process.poll() is None for s in receivers),
        30,
        "all three receivers running again",
    )

    both = merged(fleet, backfill)
    config = dataclasses.replace(fleet_config, sensors=[*fleet_config.sensors, *backfill_config.sensors])
    assert_influx_matches_delivered(influx, bucket, both, config)
    kept = (
        sorted(path.name for path in deadletter.rglob("*") if path.is_file()) if deadletter.exists() else []
    )
    assert not kept, f"valid pushes ended in the dead-letter store: {kept[:5]}"
    print(
        f"\nscale: {scale.sensors} counters, {fleet.pushes + backfill.pushes} pushes "
        f"in {fleet.wall_seconds:.1f} s, "
        f"{fleet.retries} re-sends, answers {fleet.answers}, connection errors {fleet.connection_errors}; "
        f"receiver {drain.receiver} drained a {scale.backfill.days}-day backfill and exited "
        f"{drain.seconds_to_exit:.1f} s after SIGTERM"
    )


@pytest.mark.parametrize("receivers", [SHORT], indirect=True, ids=["short"])
def test_three_receivers_behind_a_balancer_store_exactly_what_was_acknowledged(
    receivers: list[ExporterProcess], balancer: Balancer, influx: LocalInflux, bucket: str, tmp_path: Path
) -> None:
    run_scale(SHORT, receivers, balancer, influx, bucket, tmp_path / "deadletter")


@pytest.mark.slow
@pytest.mark.parametrize("receivers", [LONG], indirect=True, ids=["long"])
def test_three_receivers_longer_run_with_a_35_mb_backfill_in_flight(
    receivers: list[ExporterProcess], balancer: Balancer, influx: LocalInflux, bucket: str, tmp_path: Path
) -> None:
    run_scale(LONG, receivers, balancer, influx, bucket, tmp_path / "deadletter")
