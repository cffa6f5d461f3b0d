"""Bench parts (e)-(g): receivers side by side, capacity per core, and what one pod needs.

(e) 1, 2 and 3 ``axis-exporter serve`` behind the round-robin balancer (bench/balancer.py), the same wrk
    load through it, alternating: pushes/s and the CPU every process spent per push. On one machine the
    receivers share its cores, so the point is the receivers' CPU per push: flat means they pay nothing
    for running side by side (they share nothing but InfluxDB).
(f) Capacity: the CPU one push costs the receiver (and InfluxDB) at a steady, fixed rate, with 1, 5 and
    15 one-minute measurements per push, i.e. counters sending every 1, 5 and 15 minutes; counters per
    core is the send interval divided by that CPU time.
(g) One pod's resources: memory (PSS of every process plus the tmpfs metrics directory) at rest, under
    load and with two 35 MB backfills at once, and how long a receiver stopped with SIGTERM takes to
    answer the 35 MB push it is storing and to exit.
"""

from __future__ import annotations

import datetime as dt
import http.client
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

from bench.balancer import Balancer
from bench.payloads import STEADY_START, push_body, steady_bodies
from exporter.influxd_bridge import LocalInflux
from exporter.processes import children, free_port, wait_until

if TYPE_CHECKING:  # bench.run imports this module; these are only its types
    from bench.run import Report, Server, Settings

LARGE_BODY = 4 * 2**20  # a bucket bound of axis_exporter_push_body_bytes; backfills are larger
INTERVALS = (1, 5, 15)
INSTANCES = (1, 2, 3)
FIXED_RATE = 300.0  # pushes/s for (e)'s and (f)'s fixed-rate runs: a third of one receiver's maximum


def large_bodies(admin_url: str) -> int:
    """Pushes over LARGE_BODY bytes a receiver has read in full, from its /metrics (0 if unreachable)."""
    try:
        with urllib.request.urlopen(f"{admin_url}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0
    count = below = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "axis_exporter_push_body_bytes":
            continue
        for sample in family.samples:
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_bucket") and float(sample.labels["le"]) == LARGE_BODY:
                below = sample.value
    return int(count - below)


def counter_totals(admin_url: str) -> tuple[float, float]:
    """(pushes answered, InfluxDB write requests) so far, from a receiver's /metrics."""
    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    pushes = writes = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "axis_exporter_pushes_total":
                pushes += sample.value
            elif sample.name == "axis_exporter_influxdb_write_duration_seconds_count":
                writes += sample.value
    return pushes, writes


def interval_bodies(sensors: int, minutes: int, *, seed: int = 3) -> list[bytes]:
    """One push per sensor holding exactly ``minutes`` one-minute measurements (3D counters)."""
    start = STEADY_START + dt.timedelta(days=10)
    return [push_body(sensor, start, minutes, seed=seed) for sensor in range(sensors)]


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (a gunicorn master: its workers and the admin process)."""
    return [pid, *children(pid)]


def pss_kb(pids: list[int]) -> int:
    """Proportional set size of ``pids`` together: shared pages counted once, as a cgroup counts them."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def dir_kb(path: Path) -> int:
    """Bytes of the files under ``path`` (the metrics directory lives on the pod's /tmp tmpfs), in kB."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) // 1024


@dataclass
class Receiver:
    """One ``axis-exporter serve`` started by the bench (the Server of bench/run.py, with its env)."""

    server: Server
    metrics_dir: Path
    admin_port: int

    @property
    def port(self) -> int:
        """Push listener port."""
        return self.server.port

    @property
    def pid(self) -> int:
        """The gunicorn master."""
        return self.server.process.pid

    @property
    def admin_url(self) -> str:
        """The admin listener."""
        return f"http://127.0.0.1:{self.admin_port}"


def start_receiver(base: Path, name: str, env: dict[str, str], workers: int) -> Receiver:
    """``axis-exporter serve`` with its own metrics directory and admin port."""
    from bench.run import Server

    metrics_dir = base / f"metrics-{name}"
    admin_port = free_port()
    own_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    args = ["-m", "exporter", "serve", "--admin-bind", f"127.0.0.1:{admin_port}"]
    server = Server(args, own_env, base / f"{name}.log", workers)
    return Receiver(server, metrics_dir, admin_port)


# ---------------------------------------------------------------- (e) instances side by side


@dataclass(frozen=True)
class Layout:
    """How many receivers, with how many gunicorn workers each."""

    receivers: int
    workers: int

    @property
    def name(self) -> str:
        """E.g. "2 receivers x 1 worker"."""
        plural = "s" if self.receivers > 1 else ""
        return f"{self.receivers} receiver{plural} x {self.workers} worker{'s' if self.workers > 1 else ''}"


def layouts(workers: int) -> list[Layout]:
    """1, 2 and 3 receivers of ``workers`` workers, and (for 2 workers) 2 receivers of 1: the same worker
    processes as one receiver, split over two, which isolates the cost of a receiver from that of a worker."""
    found = [Layout(count, workers) for count in INSTANCES]
    if workers == 2:
        found.insert(1, Layout(2, 1))
    return found


@dataclass
class LayoutRun:
    """One wrk run through the balancer in front of one layout."""

    layout: Layout
    rate: float
    cpu_ms: dict[str, float] = field(default_factory=dict)
    pushes_per_write: float = 0.0
    fixed_ms: float = 0.0  # receivers' CPU per push at FIXED_RATE
    fixed_per_write: float = 0.0

    @property
    def receiver_ms(self) -> float:
        """CPU per push of the receivers' processes (masters, workers, admin processes)."""
        return self.cpu_ms["receivers"]


def measure_instances(
    influx: LocalInflux,
    env: dict[str, str],
    base: Path,
    bodies_file: Path,
    settings: Settings,
    report: Report,
    progress: Callable[[str], None],
) -> None:
    """(e): the same wrk load through each layout's balancer, alternating, best round of each."""
    from bench.run import (
        LoadResult,
        Row,
        cpu_seconds,
        fixed_rate_load,
        measured_load,
        storage_pids,
        wrk_load,
    )

    plans = layouts(settings.workers)
    bodies = bodies_file.read_bytes().splitlines()
    fixed_rate = FIXED_RATE / 4 if settings.quick else FIXED_RATE
    with ExitStack() as stack:
        started: dict[Layout, list[Receiver]] = {}
        balancers: dict[Layout, Balancer] = {}
        for index, layout in enumerate(plans):
            # A layout reuses the receivers of a smaller one with the same workers: all run meanwhile.
            same = [found for other, found in started.items() if other.workers == layout.workers]
            receivers = max(same, key=len, default=[])[: layout.receivers]
            while len(receivers) < layout.receivers:
                name = f"receiver-{layout.workers}w-{len(receivers)}"
                receiver = start_receiver(base, name, env, layout.workers)
                stack.callback(receiver.server.stop)
                receivers.append(receiver)
            started[layout] = receivers
            directory = base / f"balancer-{index}"
            directory.mkdir()
            balancers[layout] = stack.enter_context(Balancer(directory, [r.port for r in receivers]))
        storage = storage_pids(influx)
        seconds, connections = settings.steady_seconds, settings.connections
        for layout in plans:  # warm every receiver and balancer up
            wrk_load(balancers[layout].port, bodies_file, min(2.0, seconds), connections)
        runs: dict[Layout, list[LayoutRun]] = {layout: [] for layout in plans}
        for round_number in range(settings.repeat):
            for layout in plans:
                progress(f"(e) round {round_number + 1}: {layout.name} behind the balancer ...")
                receivers = started[layout]
                groups = {
                    "receivers": [pid for r in receivers for pid in process_tree(r.pid)],
                    **storage,
                    "balancer": balancers[layout].pids(),
                }
                port = balancers[layout].port

                def load(port: int = port) -> LoadResult:
                    return wrk_load(port, bodies_file, seconds, connections)

                before = [counter_totals(r.admin_url) for r in receivers]
                result = measured_load(load, groups)
                after = [counter_totals(r.admin_url) for r in receivers]
                if result.failures:
                    raise RuntimeError(f"{result.failures} pushes failed through {layout.name}")
                pushes = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
                writes = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
                # The same receivers at a fixed, modest rate: few pushes share a write in any layout.
                pids = groups["receivers"]
                cpu_before = cpu_seconds(pids)
                before = [counter_totals(r.admin_url) for r in receivers]
                fixed = fixed_rate_load(port, bodies, fixed_rate, seconds)
                after = [counter_totals(r.admin_url) for r in receivers]
                if fixed.failures:
                    raise RuntimeError(
                        f"{fixed.failures} pushes failed at a fixed rate through {layout.name}"
                    )
                fixed_pushes = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
                fixed_writes = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
                fixed_ms = (cpu_seconds(pids) - cpu_before) / max(fixed_pushes, 1) * 1000
                runs[layout].append(
                    LayoutRun(
                        layout,
                        result.rate,
                        dict(result.cpu_ms),
                        pushes / max(writes, 1.0),
                        fixed_ms,
                        fixed_pushes / max(fixed_writes, 1.0),
                    )
                )
    best = {layout: max(found, key=lambda run: run.rate) for layout, found in runs.items()}
    for layout in plans:
        run = best[layout]
        spread = sorted(r.receiver_ms for r in runs[layout])
        rates = sorted(r.rate for r in runs[layout])
        key = f"{layout.receivers}x{layout.workers}"
        report.figures[f"layout_{key}_pushes_per_s"] = run.rate
        report.figures[f"layout_{key}_receiver_cpu_ms"] = run.receiver_ms
        report.figures[f"layout_{key}_total_cpu_ms"] = sum(run.cpu_ms.values())
        report.figures[f"layout_{key}_pushes_per_write"] = run.pushes_per_write
        fixed_spread = sorted(r.fixed_ms for r in runs[layout])
        report.figures[f"layout_{key}_fixed_rate_receiver_cpu_ms"] = fixed_spread[0]
        report.figures[f"layout_{key}_fixed_rate_pushes_per_write"] = run.fixed_per_write
        parts = " + ".join(f"{name} {value:.2f}" for name, value in run.cpu_ms.items())
        same_workers = layout.receivers * layout.workers == plans[0].receivers * plans[0].workers
        # Compared at the fixed rate, where about one push makes one write in every layout: at full load
        # the write batches (group commit) grow with the pushes a worker has in flight, which depends
        # on how the balancer spreads connections, not on what a receiver costs.
        ratio = fixed_spread[0] / min(r.fixed_ms for r in runs[plans[0]])
        if layout == plans[0]:
            goal, met = "(reference)", "-"
        elif same_workers:
            # The same worker processes, in more receivers: any difference is what a receiver costs.
            goal, met = f"<= 1.15 at {fixed_rate:.0f}/s (same workers)", "yes" if ratio <= 1.15 else "NO"
        else:
            goal, met = f"(context: {layout.receivers * layout.workers} workers on the same cores)", "-"
        report.rows.append(
            Row(
                f"(e) {layout.name} behind the balancer, {connections} connections",
                f"{run.rate:,.0f} pushes/s (rounds {rates[0]:,.0f}-{rates[-1]:,.0f}); receivers "
                f"{run.receiver_ms:.2f} ms CPU/push (rounds {spread[0]:.2f}-{spread[-1]:.2f}); "
                f"{run.pushes_per_write:.1f} pushes per InfluxDB write; at {fixed_rate:.0f} pushes/s: "
                f"receivers {fixed_spread[0]:.2f} ms CPU/push (rounds {fixed_spread[0]:.2f}-"
                f"{fixed_spread[-1]:.2f}), "
                f"{run.fixed_per_write:.1f} pushes per write",
                f"{sum(run.cpu_ms.values()):.2f} ms CPU/push in all at full load ({parts})",
                f"{ratio:.2f}",
                goal,
                met,
            )
        )


# ---------------------------------------------------------------- (f) capacity per core


def idle_cpu_per_second(pids: list[int], seconds: float) -> float:
    """CPU seconds per second ``pids`` spend with no push arriving (timers, the admin process...)."""
    from bench.run import cpu_seconds

    before = cpu_seconds(pids)
    time.sleep(seconds)
    return (cpu_seconds(pids) - before) / seconds


def measure_capacity(
    influx: LocalInflux,
    receiver: Receiver,
    settings: Settings,
    report: Report,
    progress: Callable[[str], None],
) -> None:
    """(f): CPU per push at a fixed rate for 1-, 5- and 15-minute pushes; counters per core.

    The CPU a receiver spends at rest (per second, measured apart) is taken off before dividing by the
    pushes: it is a cost per receiver, not per push, and at a modest rate it would dominate.
    """
    from bench.run import Row, cpu_seconds, fixed_rate_load, storage_pids

    rate = FIXED_RATE / 4 if settings.quick else FIXED_RATE
    storage = storage_pids(influx)
    storage_all = [pid for group in storage.values() for pid in group]
    pids = process_tree(receiver.pid)
    progress("(f) the receiver's and InfluxDB's CPU at rest ...")
    idle = idle_cpu_per_second(pids, max(2.0, settings.steady_seconds))
    idle_storage = idle_cpu_per_second(storage_all, max(2.0, settings.steady_seconds))
    report.figures["idle_receiver_cpu_per_s"] = idle
    for minutes in INTERVALS:
        bodies = interval_bodies(settings.sensors, minutes)
        receiver_ms: list[float] = []
        storage_ms: list[float] = []
        for round_number in range(settings.repeat):
            progress(f"(f) round {round_number + 1}: {minutes}-minute pushes at {rate:.0f}/s ...")
            before = (cpu_seconds(pids), cpu_seconds(storage_all))
            started = time.perf_counter()
            result = fixed_rate_load(receiver.port, bodies, rate, settings.steady_seconds)
            elapsed = time.perf_counter() - started
            if result.failures or set(process_tree(receiver.pid)) != set(pids):
                raise RuntimeError(
                    f"(f) {result.failures} pushes failed, or the receiver's processes changed"
                )
            done = max(1, result.requests)
            spent = cpu_seconds(pids) - before[0] - idle * elapsed
            stored = cpu_seconds(storage_all) - before[1] - idle_storage * elapsed
            receiver_ms.append(max(spent, 0.0) / done * 1000)
            storage_ms.append(max(stored, 0.0) / done * 1000)
        spent_ms = min(receiver_ms)  # the round least disturbed by other work on the machine
        stored_ms = min(storage_ms)
        seconds = minutes * 60
        per_core = seconds / (spent_ms / 1000)
        storage_per_core = seconds / (stored_ms / 1000)
        report.figures[f"capacity_{minutes}min_receiver_cpu_ms"] = spent_ms
        report.figures[f"capacity_{minutes}min_counters_per_core"] = per_core
        report.figures[f"capacity_{minutes}min_storage_cpu_ms"] = stored_ms
        report.rows.append(
            Row(
                f"(f) capacity, counters sending every {minutes} min ({minutes} measurement"
                f"{'s' if minutes > 1 else ''} per push, {rate:.0f} pushes/s offered)",
                f"{per_core:,.0f} counters per receiver core ({spent_ms:.2f} ms CPU/push, rounds "
                f"{min(receiver_ms):.2f}-{max(receiver_ms):.2f})",
                f"InfluxDB 1.6 + bridge {stored_ms:.2f} ms CPU/push: "
                f"{storage_per_core:,.0f} counters per core",
                "-",
                f"(context; at rest a receiver uses {idle * 1000:.0f} ms CPU/s)",
                "-",
            )
        )


# ---------------------------------------------------------------- (g) one pod's memory and drain


def post(port: int, body: bytes, answers: list[tuple[int, float]], started: float) -> None:
    """POST ``body`` and record (status, seconds since ``started``); 0 for no answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        connection.request("POST", "/push", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        answers.append((response.status, time.perf_counter() - started))
    except (OSError, http.client.HTTPException):
        answers.append((0, time.perf_counter() - started))
    finally:
        connection.close()


def measure_pod(
    influx: LocalInflux,
    env: dict[str, str],
    base: Path,
    settings: Settings,
    report: Report,
    progress: Callable[[str], None],
) -> None:
    """(g): memory at rest, under load and with two 35 MB backfills; the drain of a 35 MB push."""
    from bench.run import Row, fixed_rate_load

    days = 15 if settings.quick else 98  # one-minute 3D data: 15 days 5 MB (over LARGE_BODY), 98 days 35 MB
    big = [
        push_body(sensor, STEADY_START - dt.timedelta(days=days + 30), days * 24 * 60) for sensor in (0, 1)
    ]
    size_mb = len(big[0]) / 1e6
    bodies = steady_bodies(settings.sensors)
    receiver = start_receiver(base, "pod", env, settings.workers)
    try:
        time.sleep(1.0)
        rest = pss_kb(process_tree(receiver.pid)) + dir_kb(receiver.metrics_dir)
        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append(pss_kb(process_tree(receiver.pid)) + dir_kb(receiver.metrics_dir))
                time.sleep(0.05)

        progress(f"(g) memory: steady load, then two {size_mb:.0f} MB backfills at once ...")
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        load_seconds = max(2.0, settings.steady_seconds)
        fixed_rate_load(receiver.port, bodies, 167.0, load_seconds)
        steady = max(samples)
        answers: list[tuple[int, float]] = []
        started = time.perf_counter()
        threads = [
            threading.Thread(target=post, args=(receiver.port, body, answers, started)) for body in big
        ]
        for thread in threads:
            thread.start()
        fixed_rate_load(receiver.port, bodies, 167.0, load_seconds)
        for thread in threads:
            thread.join(timeout=300)
        stop.set()
        sampler.join()
        peak = max(samples)
        if [status for status, _ in answers] != [200, 200]:
            raise RuntimeError(f"(g) the two backfills were answered {answers}")
    finally:
        receiver.server.stop()
    report.figures.update(pod_rest_mb=rest / 1024, pod_steady_mb=steady / 1024, pod_peak_mb=peak / 1024)
    report.rows.append(
        Row(
            f"(g) one pod's memory, {settings.workers} workers: PSS of all processes + tmpfs metrics",
            f"peak {peak / 1024:,.0f} MB with two {size_mb:.0f} MB backfills during 167 pushes/s",
            f"at rest {rest / 1024:,.0f} MB; at 167 pushes/s {steady / 1024:,.0f} MB",
            "-",
            "(sizes the pod's memory request and limit)",
            "-",
        )
    )
    drains: list[tuple[float, float]] = []
    for round_number in range(settings.repeat):
        progress(f"(g) round {round_number + 1}: SIGTERM while a {size_mb:.0f} MB push is being stored ...")
        receiver = start_receiver(base, f"drain-{round_number}", env, settings.workers)
        answers = []
        started = time.perf_counter()
        thread = threading.Thread(target=post, args=(receiver.port, big[0], answers, started))
        thread.start()

        def read_or_answered(
            receiver: Receiver = receiver, answers: list[tuple[int, float]] = answers
        ) -> bool:
            return bool(answers) or large_bodies(receiver.admin_url) > 0

        try:
            wait_until(read_or_answered, 120, "the receiver to read the push", 0.01)
            if answers:
                raise RuntimeError(f"(g) the receiver never showed the push as read (answers {answers})")
            signalled = time.perf_counter()
            os.kill(receiver.pid, signal.SIGTERM)
            exit_code = receiver.server.process.wait(timeout=120)
            exited = time.perf_counter() - signalled
        finally:
            receiver.server.stop()  # nothing left to stop once it exited
        thread.join(timeout=120)
        if not answers or answers[0][0] != 200 or exit_code != 0:
            raise RuntimeError(f"(g) drain: answered {answers}, exit code {exit_code}")
        drains.append((answers[0][1] - (signalled - started), exited))
    answer_s = max(d[0] for d in drains)
    exit_s = max(d[1] for d in drains)
    report.figures.update(drain_answer_s=answer_s, drain_exit_s=exit_s)
    report.rows.append(
        Row(
            f"(g) SIGTERM while a {size_mb:.0f} MB push is being stored (body read, not yet answered)",
            f"answered 200 {answer_s:.1f} s and exited {exit_s:.1f} s after SIGTERM (worst of "
            f"{len(drains)}: {', '.join(f'{a:.1f}/{e:.1f}' for a, e in drains)})",
            "gunicorn's graceful timeout 30 s (exporter/server.py)",
            "-",
            "exit well within the pod's grace period",
            "yes" if exit_s < 30 else "NO",
        )
    )
