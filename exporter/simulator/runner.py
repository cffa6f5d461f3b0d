"""Runs many emulated counters against one receiver with the device's delivery rules, and sums up."""

from __future__ import annotations

import datetime as dt
import heapq
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from exporter.simulator.device import (
    SensorIdentity,
    SimulatedSensor,
    Totals,
    connection_test_payload,
    utc_text,
)
from exporter.simulator.traffic import MINUTE, TrafficModel, TrafficProfile, floor_minute
from exporter.simulator.transport import HttpTransport, PushResult, PushTransport, RateLimiter

SEND_INTERVALS = (1, 5, 15)  # minutes; what the device's "Send interval" offers
Phase = Literal["test", "live", "drain", "done"]


@dataclass(frozen=True)
class SimulationConfig:
    """Everything a run needs; the CLI builds one, tests build their own."""

    url: str
    sensors: Sequence[SensorIdentity]
    interval_minutes: int = 5
    duration: dt.timedelta = dt.timedelta(0)
    backfill: dt.timedelta = dt.timedelta(0)
    fast: bool = False
    start: dt.datetime | None = None
    batch_minutes: int = 0
    seed: int = 0
    traffic: TrafficProfile = field(default_factory=TrafficProfile)
    token: str | None = None
    cacert: Path | None = None
    timeout: float = 30.0
    rate: float | None = None
    concurrency: int = 8
    retry_delay: float = 1.0
    drain: float = 10.0
    test_connection: bool = True

    def __post_init__(self) -> None:
        """Refuse settings a device cannot have or a bounded run cannot honour."""
        if self.interval_minutes not in SEND_INTERVALS:
            raise ValueError(f"send interval must be one of {SEND_INTERVALS} minutes")
        if not self.sensors:
            raise ValueError("at least one sensor")
        if len({sensor.serial for sensor in self.sensors}) != len(self.sensors):
            raise ValueError("sensor serials must be unique")
        if self.duration < dt.timedelta(0) or self.backfill < dt.timedelta(0):
            raise ValueError("duration and backfill cannot be negative")
        if self.batch_minutes < 0 or self.concurrency < 1 or self.retry_delay < 0 or self.drain < 0:
            raise ValueError("batch_minutes, retry_delay and drain must be >= 0, concurrency >= 1")
        if self.start is not None and (not self.fast or self.start.tzinfo is None):
            raise ValueError("start needs fast mode and a time zone (e.g. 2021-03-28T00:00:00Z)")


@dataclass
class SensorSummary:
    """What one sensor did and what the receiver acknowledged."""

    name: str
    serial: str
    flavour: str
    time_zone: str
    pushes: int = 0
    data_pushes: int = 0
    test_connection: str = "not sent"
    retries: int = 0
    resent_intervals: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    connection_errors: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    delivered: Totals = field(default_factory=Totals)
    pending: Totals = field(default_factory=Totals)
    delivered_from: str | None = None
    delivered_to: str | None = None
    # The sensors file's labels of this serial (site, zone, ...), when the sensors have sites.
    labels: dict[str, str] = field(default_factory=dict)

    def record(self, result: PushResult) -> None:
        """Count one push's outcome."""
        self.pushes += 1
        if result.status is not None:
            key = str(result.status)
            self.answers[key] = self.answers.get(key, 0) + 1
            if not result.acknowledged:
                self.last_error = f"HTTP {result.status}: {result.detail}"
        else:
            kind = result.error or "unknown"
            self.connection_errors[kind] = self.connection_errors.get(kind, 0) + 1
            self.last_error = f"{kind}: {result.detail}"

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {
            "name": self.name,
            "serial": self.serial,
            "flavour": self.flavour,
            "time_zone": self.time_zone,
            "labels": dict(self.labels),
            "pushes": self.pushes,
            "data_pushes": self.data_pushes,
            "test_connection": self.test_connection,
            "retries": self.retries,
            "resent_intervals": self.resent_intervals,
            "answers": dict(sorted(self.answers.items())),
            "connection_errors": dict(sorted(self.connection_errors.items())),
            "last_error": self.last_error,
            "delivered": self.delivered.as_dict(),
            "pending": self.pending.as_dict(),
            "delivered_from": self.delivered_from,
            "delivered_to": self.delivered_to,
        }


def _merge_counts(parts: Sequence[dict[str, int]]) -> dict[str, int]:
    """Sum several {key: count} dicts."""
    merged: dict[str, int] = {}
    for part in parts:
        for key, value in part.items():
            merged[key] = merged.get(key, 0) + value
    return dict(sorted(merged.items()))


@dataclass
class Summary:
    """Result of a run: per sensor and overall, delivered means acknowledged with 200."""

    url: str
    mode: str
    interval_minutes: int
    simulated_from: str
    simulated_to: str
    started_at: str
    wall_seconds: float
    interrupted: bool
    sensors: list[SensorSummary]

    @property
    def delivered(self) -> Totals:
        """Sums of everything acknowledged with 200."""
        totals = Totals()
        for sensor in self.sensors:
            totals.add(sensor.delivered)
        return totals

    @property
    def pending(self) -> Totals:
        """Sums of what was measured but never acknowledged."""
        totals = Totals()
        for sensor in self.sensors:
            totals.add(sensor.pending)
        return totals

    def by_site(self) -> dict[str, Totals]:
        """Delivered sums per site (the ``site`` label), sites in order of appearance; no site: left out."""
        sites: dict[str, Totals] = {}
        for sensor in self.sensors:
            site = sensor.labels.get("site")
            if site is not None:
                sites.setdefault(site, Totals()).add(sensor.delivered)
        return sites

    @property
    def pushes(self) -> int:
        """HTTP attempts, test connections included."""
        return sum(sensor.pushes for sensor in self.sensors)

    @property
    def retries(self) -> int:
        """Data pushes that re-sent at least one interval sent before."""
        return sum(sensor.retries for sensor in self.sensors)

    @property
    def answers(self) -> dict[str, int]:
        """HTTP status -> number of answers."""
        return _merge_counts([sensor.answers for sensor in self.sensors])

    @property
    def non_200(self) -> dict[str, int]:
        """Answers other than 200, by status."""
        return {status: count for status, count in self.answers.items() if status != "200"}

    @property
    def connection_errors(self) -> dict[str, int]:
        """Pushes without an HTTP answer, by kind (connect, tls, read_timeout, ...)."""
        return _merge_counts([sensor.connection_errors for sensor in self.sensors])

    @property
    def complete(self) -> bool:
        """Everything measured was delivered and every test connection got 200."""
        return self.pending.intervals == 0 and all(
            sensor.test_connection in ("200", "not sent") for sensor in self.sensors
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for --summary-json."""
        return {
            "url": self.url,
            "mode": self.mode,
            "interval_minutes": self.interval_minutes,
            "simulated_from": self.simulated_from,
            "simulated_to": self.simulated_to,
            "started_at": self.started_at,
            "wall_seconds": round(self.wall_seconds, 3),
            "interrupted": self.interrupted,
            "complete": self.complete,
            "pushes": self.pushes,
            "data_pushes": sum(sensor.data_pushes for sensor in self.sensors),
            "retries": self.retries,
            "resent_intervals": sum(sensor.resent_intervals for sensor in self.sensors),
            "answers": self.answers,
            "non_200": self.non_200,
            "connection_errors": self.connection_errors,
            "delivered": self.delivered.as_dict(),
            "pending": self.pending.as_dict(),
            "sites": {site: totals.as_dict() for site, totals in self.by_site().items()},
            "sensors": [sensor.as_dict() for sensor in self.sensors],
        }

    def to_json(self) -> bytes:
        """JSON text of `as_dict`."""
        return orjson.dumps(self.as_dict(), option=orjson.OPT_INDENT_2)


@dataclass(frozen=True)
class Progress:
    """A snapshot for progress displays (read while workers run, so approximate)."""

    wall_seconds: float
    sensors: int
    finished: int
    pushes: int
    failed_pushes: int
    delivered_intervals: int
    pending_intervals: int
    simulated_from: dt.datetime
    simulated_time: dt.datetime
    simulated_end: dt.datetime


@dataclass(frozen=True)
class _Next:
    """When a sensor wants to run again: simulated time, and whether to wait retry_delay first."""

    due: dt.datetime
    backoff: bool = False


def next_boundary(after: dt.datetime, interval_minutes: int) -> dt.datetime:
    """First send-interval boundary strictly after `after` (boundaries align to the UTC hour)."""
    step = interval_minutes * 60
    seconds = int(after.timestamp())
    return dt.datetime.fromtimestamp((seconds // step + 1) * step, dt.UTC)


class _SensorRun:
    """One sensor's schedule and delivery loop; only one worker thread holds it at a time."""

    def __init__(self, simulation: _Simulation, identity: SensorIdentity) -> None:
        """Set up the sensor with its undelivered history starting at connect time minus backfill."""
        self.simulation = simulation
        self.sensor = SimulatedSensor(
            identity, simulation.model, keep_from=simulation.connect_at - simulation.config.backfill
        )
        self.history_from = self.sensor.pending_from
        self.summary = SensorSummary(
            identity.name, identity.serial, identity.flavour, identity.time_zone, labels=identity.label_map
        )
        self.phase: Phase = "test" if simulation.config.test_connection else "live"
        # A device sends a few seconds after the interval boundary; spread sensors deterministically.
        self.push_delay = dt.timedelta(seconds=2 + zlib.crc32(identity.serial.encode()) % 10)
        self.last_sent: dt.datetime | None = None
        self.drain_deadline = 0.0

    def sent_at(self, now: dt.datetime) -> dt.datetime:
        """utcSent for a push now: whole seconds, strictly increasing per sensor."""
        moment = now.replace(microsecond=0)
        if self.last_sent is not None and moment <= self.last_sent:
            moment = self.last_sent + dt.timedelta(seconds=1)
        self.last_sent = moment
        return moment

    def step(self, now: dt.datetime) -> _Next | None:
        """Do what the device does at `now`; return when to come back, or None when finished."""
        simulation = self.simulation
        if simulation.stop.is_set():
            return None
        if self.phase == "test":
            self.phase = "live"
            if not self.send_test_connection(now):
                return None
            self.sensor.measure_until(min(now, simulation.end_at))
            # Stored history goes out right away, like a device that has just been given the URL.
            return _Next(now) if self.sensor.pending_minutes else self.schedule_tick(now)
        if self.phase == "drain" and time.monotonic() > self.drain_deadline:
            return None
        if self.phase == "live":
            self.sensor.measure_until(min(now, simulation.end_at))
        if self.sensor.pending_minutes == 0:
            return self.schedule_tick(now) if self.phase == "live" else None
        delivered = self.send_pending(now)
        if delivered is None:
            return None
        if delivered:
            if self.sensor.pending_minutes:
                return _Next(now)  # catching up in batches: next batch at once
            return self.schedule_tick(now) if self.phase == "live" else None
        if self.phase == "drain":
            return _Next(now, backoff=True)
        # The device tries again at its next send time, with everything since the last 200.
        return self.schedule_tick(now, backoff=simulation.config.fast)

    def schedule_tick(self, now: dt.datetime, *, backoff: bool = False) -> _Next | None:
        """Next send time within the run; past the end, drain what is left or finish."""
        config = self.simulation.config
        tick = next_boundary(now - self.push_delay, config.interval_minutes)
        if tick <= self.simulation.end_at:
            return _Next(tick + self.push_delay, backoff)
        if self.sensor.pending_minutes and config.drain > 0 and not self.simulation.stop.is_set():
            self.phase = "drain"
            self.drain_deadline = time.monotonic() + config.drain
            return _Next(now, backoff=True)
        self.phase = "done"
        return None

    def send_test_connection(self, now: dt.datetime) -> bool:
        """The 'Test connection' push; its outcome is reported but data pushes follow regardless."""
        simulation = self.simulation
        if not simulation.limiter.wait(simulation.stop):
            return False
        payload = connection_test_payload(self.sensor.identity, self.sent_at(simulation.clock(now)))
        result = simulation.transport.push(orjson.dumps(payload))
        self.summary.record(result)
        self.summary.test_connection = str(result.status) if result.status is not None else result.error or ""
        return True

    def send_pending(self, now: dt.datetime) -> bool | None:
        """Push everything since the last 200 (or the oldest batch of it); None when stopped."""
        simulation = self.simulation
        if not simulation.limiter.wait(simulation.stop):
            return None
        sensor = self.sensor
        end = sensor.batch_end(simulation.config.batch_minutes)
        already_sent = (min(end, sensor.sent_until) - sensor.pending_from) // MINUTE
        body, totals = sensor.encode_batch(end, self.sent_at(simulation.clock(now)))
        result = simulation.transport.push(body)
        self.summary.record(result)
        self.summary.data_pushes += 1
        if already_sent > 0:
            self.summary.retries += 1
            self.summary.resent_intervals += already_sent
        if result.acknowledged:
            sensor.acknowledge(end, totals)
            return True
        return False

    def finish_summary(self) -> SensorSummary:
        """Fill in the delivered and pending sums."""
        summary = self.summary
        summary.delivered = self.sensor.delivered
        summary.pending = self.sensor.pending_totals()
        if self.sensor.pending_from > self.history_from:
            summary.delivered_from = utc_text(self.history_from)
            summary.delivered_to = utc_text(self.sensor.pending_from)
        return summary


class _Simulation:
    """Shared state of a run: clock, transport, rate cap and the schedule of all sensors."""

    def __init__(
        self, config: SimulationConfig, transport: PushTransport | None, stop: threading.Event | None
    ) -> None:
        """Resolve the simulated period and build one run per sensor."""
        self.config = config
        self.model = TrafficModel(config.seed, config.traffic)
        now = dt.datetime.now(dt.UTC)
        if config.fast:
            self.connect_at = floor_minute(config.start or now - config.duration)
        else:
            self.connect_at = now
        self.end_at = self.connect_at + config.duration
        self.owns_transport = transport is None
        self.transport: PushTransport = transport or HttpTransport(
            config.url,
            token=config.token,
            cacert=config.cacert,
            timeout=config.timeout,
            pool_size=min(config.concurrency, len(config.sensors)),
        )
        self.limiter = RateLimiter(config.rate)
        self.stop = stop or threading.Event()
        self.runs = [_SensorRun(self, identity) for identity in config.sensors]
        # (wall not-before, simulated due, tie-breaker, due, run): fast mode orders by simulated time.
        self.queue: list[tuple[float, float, int, dt.datetime, _SensorRun]] = []
        self.sequence = 0
        self.active = 0
        self.finished = 0
        self.failure: BaseException | None = None
        self.condition = threading.Condition()
        self.all_idle = threading.Event()

    def clock(self, due: dt.datetime) -> dt.datetime:
        """The device's idea of now: the simulated time in fast mode, the wall clock otherwise."""
        return due if self.config.fast else dt.datetime.now(dt.UTC)

    def enqueue(self, run: _SensorRun, wanted: _Next) -> None:
        """Put a sensor back on the schedule (caller holds the condition)."""
        now = time.monotonic()
        if wanted.backoff:
            not_before = now + self.config.retry_delay
        elif self.config.fast:
            not_before = 0.0  # no sleeping: order by simulated time only, so sensors advance in step
        else:
            not_before = now + max(0.0, (wanted.due - dt.datetime.now(dt.UTC)).total_seconds())
        self.sequence += 1
        heapq.heappush(self.queue, (not_before, wanted.due.timestamp(), self.sequence, wanted.due, run))

    def take(self) -> tuple[_SensorRun, dt.datetime] | None:
        """Next sensor that is due, waiting for it; None when all are finished or the run stops."""
        with self.condition:
            while True:
                if self.stop.is_set():
                    self.all_idle.set()
                    return None
                if not self.queue:
                    if self.active == 0:
                        self.all_idle.set()
                        self.condition.notify_all()
                        return None
                    self.condition.wait(0.5)
                    continue
                delay = self.queue[0][0] - time.monotonic()
                if delay <= 0:
                    _, _, _, due, run = heapq.heappop(self.queue)
                    self.active += 1
                    return run, due
                self.condition.wait(min(delay, 0.5))

    def worker(self) -> None:
        """Thread body: run sensor steps until nothing is left."""
        while (taken := self.take()) is not None:
            run, due = taken
            wanted: _Next | None = None
            try:
                wanted = run.step(self.clock(due))
            except BaseException as exc:  # a bug, not a delivery problem: stop everything and re-raise
                self.failure = self.failure or exc
                self.stop.set()
            finally:
                with self.condition:
                    self.active -= 1
                    if wanted is not None:
                        self.enqueue(run, wanted)
                    else:
                        run.phase = "done"
                        self.finished += 1
                    self.condition.notify_all()

    def progress(self, started: float) -> Progress:
        """Snapshot for a progress display."""
        unfinished = [run for run in self.runs if run.phase != "done"]
        simulated = min((run.sensor.measured_until for run in unfinished), default=self.end_at)
        failed = sum(
            run.summary.pushes - run.summary.answers.get("200", 0) for run in self.runs
        )  # non-200 answers and connection errors
        return Progress(
            wall_seconds=time.monotonic() - started,
            sensors=len(self.runs),
            finished=self.finished,
            pushes=sum(run.summary.pushes for run in self.runs),
            failed_pushes=failed,
            delivered_intervals=sum(run.sensor.delivered.intervals for run in self.runs),
            pending_intervals=sum(run.sensor.pending_minutes for run in self.runs),
            simulated_from=floor_minute(self.connect_at - self.config.backfill),
            simulated_time=simulated,
            simulated_end=self.end_at,
        )

    def run(self, on_progress: Callable[[Progress], None] | None, progress_every: float) -> Summary:
        """Start the workers, report progress until they finish, and build the summary."""
        started = time.monotonic()
        started_at = dt.datetime.now(dt.UTC)
        with self.condition:
            for run in self.runs:
                self.enqueue(run, _Next(self.connect_at))
        threads = [
            threading.Thread(target=self.worker, name=f"simulate-{index}", daemon=True)
            for index in range(min(self.config.concurrency, len(self.runs)))
        ]
        for thread in threads:
            thread.start()
        try:
            while not self.all_idle.wait(progress_every):
                if on_progress is not None:
                    on_progress(self.progress(started))
            if on_progress is not None:
                on_progress(self.progress(started))
        except KeyboardInterrupt:
            self.stop.set()  # workers finish their current push (bounded by the timeout) and quit
        finally:
            with self.condition:
                self.condition.notify_all()
            for thread in threads:
                thread.join()
            if self.owns_transport:
                self.transport.close()
        if self.failure is not None:
            raise self.failure
        return Summary(
            url=self.config.url,
            mode="fast" if self.config.fast else "realtime",
            interval_minutes=self.config.interval_minutes,
            simulated_from=utc_text(floor_minute(self.connect_at - self.config.backfill)),
            simulated_to=utc_text(max(run.sensor.measured_until for run in self.runs)),
            started_at=utc_text(started_at),
            wall_seconds=time.monotonic() - started,
            interrupted=self.stop.is_set(),
            sensors=[run.finish_summary() for run in self.runs],
        )


def run_simulation(
    config: SimulationConfig,
    *,
    transport: PushTransport | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every: float = 2.0,
) -> Summary:
    """Run the configured sensors to the end of the period (plus drain time) and return what was delivered."""
    return _Simulation(config, transport, stop).run(on_progress, progress_every)
