"""The benchmark: the receiver's data path next to the limits of what it stands on, in one run.

``python -m bench`` (about 12 minutes on 2 cores) or ``python -m bench --quick`` (seconds, a smoke run).
Everything runs on loopback: a private InfluxDB (exporter.influxd_bridge), ``axis-exporter serve`` under
gunicorn and a trivial Flask app under the same gunicorn settings. Ratios are what count: every figure is
measured next to its reference in the same run, alternating, best of ``--repeat`` rounds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import itertools
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from bench import scaling
from bench.payloads import STEADY_START, backfill_body, steady_bodies
from exporter.convert import convert_push
from exporter.influxd_bridge import LocalInflux
from exporter.processes import ChildProcess, ProcessFailed, children, free_port

HERE = Path(__file__).parent
CHUNK_LINES = 10_000
PRODUCTION_RATE = 10_000 / 60  # the store chain: 10,000 counters, one push a minute each
WORKERS = 2  # axis-exporter serve's defaults


@dataclass
class Settings:
    """What one run measures and for how long."""

    days: int
    repeat: int
    steady_seconds: float
    sensors: int
    connections: int
    chunk_lines: int
    quick: bool
    parts: str = "abcdefg"
    workers: int = WORKERS


@dataclass
class Row:
    """One line of the result table."""

    name: str
    value: str
    reference: str
    ratio: str
    goal: str
    met: str


@dataclass
class Report:
    """Everything measured, for the table and for ``--json``."""

    facts: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)


def _verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _command_version(command: list[str], pattern: str) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "-"
    found = re.search(pattern, result.stdout + result.stderr)
    return found.group(1) if found else "-"


def machine_facts() -> dict[str, Any]:
    """Cores, CPU and versions of everything measured."""
    cpu = "-"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "orjson": _version("orjson"),
        "flask": _version("flask"),
        "gunicorn": _version("gunicorn"),
        "influxdb-client": _version("influxdb-client"),
        "influxd": _command_version(["influxd", "version"], r"InfluxDB v?(\S+)"),
        "nginx": _command_version(["nginx", "-v"], r"nginx/(\S+)"),
        "wrk": _command_version(["wrk", "--version"], r"wrk (\S+)"),
    }


def best(times: list[float]) -> float:
    """The fastest round: the one least disturbed by other work on the machine."""
    return min(times)


# ---------------------------------------------------------------- (a) conversion, in-process


def measure_conversion(body: bytes, items: int, settings: Settings, report: Report) -> None:
    """Raw body bytes -> line protocol text, next to orjson merely parsing the same bytes."""
    parse_times: list[float] = []
    convert_times: list[float] = []
    for _ in range(settings.repeat):
        started = time.perf_counter()
        document = orjson.loads(body)
        parse_times.append(time.perf_counter() - started)
        del document
        buffer = bytearray(body)  # what the receiver holds after reading the request
        started = time.perf_counter()
        chunks, _ = convert_push(buffer).collect(0, settings.chunk_lines)
        lines = sum(chunk.line_count for chunk in chunks)
        convert_times.append(time.perf_counter() - started)
        assert lines == items, f"converted {lines} lines, expected {items}"
    parse_rate = items / best(parse_times)
    convert_rate = items / best(convert_times)
    ratio = convert_rate / parse_rate
    report.figures.update(parse_items_per_s=parse_rate, convert_items_per_s=convert_rate)
    report.rows.append(
        Row(
            f"(a) conversion, body -> line protocol ({items:,} items, {len(body) / 1e6:.1f} MB)",
            f"{convert_rate:,.0f} items/s",
            f"orjson.loads {parse_rate:,.0f} items/s",
            f"{ratio:.2f}",
            ">= 0.5",
            _verdict(ratio >= 0.5),
        )
    )


# ---------------------------------------------------------------- processes


class Server:
    """A gunicorn server (receiver or trivial app) in a subprocess on a free loopback port."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, workers: int) -> None:
        self.port = free_port()
        self.workers = workers
        self.log_path = log_path
        self.process = ChildProcess(
            [sys.executable, *args, "--bind", f"127.0.0.1:{self.port}"], log_path, name=log_path.stem, env=env
        )

        def ready() -> bool:
            status, _ = request("127.0.0.1", self.port, "GET", "/healthz", b"", {})
            return status == 200 and len(self.worker_pids()) >= self.workers

        try:
            self.process.wait_ready(ready, timeout=60, interval=0.1)
        except ProcessFailed as exc:
            raise RuntimeError(f"{args}: {exc}") from None

    def worker_pids(self) -> list[int]:
        """The gunicorn workers (children of the master)."""
        return self.process.children()

    def stop(self) -> None:
        """SIGTERM, then wait."""
        self.process.stop(timeout=30)


def request(
    host: str, port: int, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    """One request on a fresh connection; (status, body)."""
    connection = http.client.HTTPConnection(host, port, timeout=300)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak_rss(pid: int) -> None:
    """Start VmHWM (peak RSS) over from the current RSS (Linux: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


# ---------------------------------------------------------------- (b) and (d) backfill end to end


def receiver_env(
    influx: LocalInflux,
    bucket: str,
    base: Path,
    chunk_lines: int,
    workers: int = WORKERS,
) -> dict[str, str]:
    """Environment of ``axis-exporter serve`` against the private InfluxDB (production defaults)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AXIS_EXPORTER_", "INFLUXDB_V2_", "PROMETHEUS_"))
    }
    env.update(
        {
            "INFLUXDB_V2_URL": influx.url,
            "INFLUXDB_V2_ORG": "-",
            "INFLUXDB_V2_TOKEN": influx.token,
            "INFLUXDB_V2_BUCKET": bucket,
            "INFLUXDB_V2_TIMEOUT": "120000",
            "AXIS_EXPORTER_WORKERS": str(workers),
            "AXIS_EXPORTER_WRITE_CHUNK_LINES": str(chunk_lines),
            "AXIS_EXPORTER_DEADLETTER_DIR": str(base / "deadletter"),
            "PROMETHEUS_MULTIPROC_DIR": str(base / "metrics"),
        }
    )
    return env


def post_line_protocol(influx: LocalInflux, bucket: str, chunks: list[bytes]) -> float:
    """Seconds to POST ``chunks`` one after the other through the bridge, as the receiver's writer does."""
    port = int(influx.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Authorization": f"Token {influx.token}", "Content-Type": "text/plain; charset=utf-8"}
    path = f"/api/v2/write?bucket={bucket}&org=-&precision=s"
    started = time.perf_counter()
    try:
        for chunk in chunks:
            connection.request("POST", path, body=chunk, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            if response.status != 204:
                raise RuntimeError(f"InfluxDB answered {response.status}: {answer[:200]!r}")
    finally:
        connection.close()
    return time.perf_counter() - started


def measure_backfill(
    influx: LocalInflux,
    server: Server,
    bucket: str,
    body: bytes,
    items: int,
    settings: Settings,
    report: Report,
) -> None:
    """The backfill push through the receiver, next to its line protocol posted straight to InfluxDB."""
    converted, _ = convert_push(bytearray(body)).collect(0, settings.chunk_lines)
    chunks = [chunk.payload().encode() for chunk in converted]
    direct_bucket = bucket + "_direct"
    influx.create_database(direct_bucket)
    direct_times: list[float] = []
    receiver_times: list[float] = []
    peaks: list[tuple[int, int]] = []  # (rss before, peak) in kB of the worker that took the push
    headers = {"Content-Type": "application/json"}
    for _ in range(settings.repeat):
        direct_times.append(post_line_protocol(influx, direct_bucket, chunks))
        workers = server.worker_pids()
        before = {pid: _status_kb(pid, "VmRSS") for pid in workers}
        for pid in workers:
            reset_peak_rss(pid)
        started = time.perf_counter()
        status, answer = request("127.0.0.1", server.port, "POST", "/push", body, headers)
        receiver_times.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"receiver answered {status}: {answer[:300]!r}")
        points = orjson.loads(answer)["points"]
        if points != items:
            raise RuntimeError(f"receiver stored {points} points, expected {items}")
        growth = {pid: _status_kb(pid, "VmHWM") - before[pid] for pid in workers}
        busiest = max(growth, key=lambda pid: growth[pid])
        peaks.append((before[busiest], _status_kb(busiest, "VmHWM")))
    # The steady-state pushes lie months later (STEADY_START); count the backfill's span only.
    stored = influx.query(
        bucket, f"SELECT COUNT(count) FROM people_count WHERE time < '{STEADY_START:%Y-%m-%d}'"
    )
    assert stored and stored[0]["count"] == items, f"InfluxDB holds {stored}, expected {items} points"
    direct_rate = items / best(direct_times)
    receiver_rate = items / best(receiver_times)
    ratio = receiver_rate / direct_rate
    report.figures.update(
        backfill_items_per_s=receiver_rate,
        direct_items_per_s=direct_rate,
        backfill_seconds=best(receiver_times),
        direct_seconds=best(direct_times),
    )
    report.rows.append(
        Row(
            f"(b) backfill end to end through gunicorn into InfluxDB ({len(chunks)} writes)",
            f"{receiver_rate:,.0f} items/s ({best(receiver_times):.2f} s)",
            f"same lines POSTed to InfluxDB {direct_rate:,.0f} items/s ({best(direct_times):.2f} s)",
            f"{ratio:.2f}",
            ">= 0.5",
            _verdict(ratio >= 0.5),
        )
    )
    size_kb = len(body) / 1024
    growth_kb = max(peak - before for before, peak in peaks)
    peak_kb = max(peak for _, peak in peaks)
    idle_kb = min(before for before, _ in peaks)
    report.figures.update(
        rss_growth_x_body=growth_kb / size_kb, rss_peak_mb=peak_kb / 1024, rss_idle_mb=idle_kb / 1024
    )
    report.rows.append(
        Row(
            "(d) worker memory during the backfill push: peak RSS minus RSS before it",
            f"{growth_kb / 1024:,.0f} MB = {growth_kb / size_kb:.1f}x body",
            f"body {len(body) / 2**20:.0f} MB; peak RSS {peak_kb / 1024:,.0f} MB "
            f"(idle {idle_kb / 1024:,.0f} MB)",
            f"{growth_kb / size_kb:.1f}x",
            "<= 3x",
            _verdict(growth_kb / size_kb <= 3),
        )
    )


# ---------------------------------------------------------------- (c) steady state


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds that ``pids`` have used so far (an ended one counts 0)."""
    return sum(_cpu_seconds(pid) for pid in pids)


def storage_pids(influx: LocalInflux) -> dict[str, list[int]]:
    """influxd and the nginx bridge (master and workers) of ``influx``, found by their command lines."""
    found: dict[str, list[int]] = {"influxd": [], "nginx": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            name = (entry / "comm").read_text().strip()  # not the command line: its paths say "influxdb"
        except OSError:
            continue
        if str(influx.base_dir) not in command:
            continue
        pid = int(entry.name)
        if name == "influxd":
            found["influxd"].append(pid)
        elif name == "nginx":
            found["nginx"] += [pid, *children(pid)]
    return found


def measured_load(run: Callable[[], LoadResult], groups: dict[str, list[int]]) -> LoadResult:
    """``run`` with the CPU time each process group (and the load generator) spent per request."""
    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    requests = max(result.requests, 1)
    for name, pids in groups.items():
        spent = cpu_seconds(pids) - before[name]
        result.cpu_ms[name] = spent / requests * 1000
    load = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    result.cpu_ms["wrk"] = load / requests * 1000
    return result


def _cpu_text(cpu_ms: dict[str, float]) -> str:
    parts = " + ".join(f"{name} {value:.2f}" for name, value in cpu_ms.items())
    return f"{sum(cpu_ms.values()):.2f} ms CPU/push ({parts})"


@dataclass
class LoadResult:
    """Closed-loop (wrk) or open-loop (fixed rate) load on one server."""

    rate: float
    p50_ms: float
    p99_ms: float
    failures: int
    requests: int = 0
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU ms per request, by process group


def wrk_load(port: int, bodies_file: Path, seconds: float, connections: int) -> LoadResult:
    """As many pushes as ``connections`` keep-alive clients get answered in ``seconds`` (wrk)."""
    threads = min(2, connections)
    result = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(HERE / "steady.lua"),
            f"http://127.0.0.1:{port}/push",
            "--",
            str(bodies_file),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    found = re.search(r"WRK_JSON (\{.*\})", result.stdout)
    if found is None:
        raise RuntimeError(f"wrk failed: {result.stdout}\n{result.stderr}")
    summary = json.loads(found.group(1))
    return LoadResult(
        rate=summary["requests"] / (summary["duration_us"] / 1e6),
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        failures=summary["non_2xx"] + summary["errors"],
        requests=summary["requests"],
    )


def fixed_rate_load(port: int, bodies: list[bytes], rate: float, seconds: float) -> LoadResult:
    """Open loop: pushes sent on a fixed schedule; latency counted from when each was due.

    Bounded in time: a push not sent within 2 s after the schedule ends counts as failed (saturated).
    """
    total = max(1, int(rate * seconds))
    counter = itertools.count()
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    start = time.perf_counter() + 0.2
    give_up = start + seconds + 2.0
    headers = {"Content-Type": "application/json"}

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        failed = 0
        while (index := next(counter)) < total:
            due = start + index / rate
            now = time.perf_counter()
            if now > give_up:
                failed += 1
                continue
            if due > now:
                time.sleep(due - now)
            try:
                connection.request("POST", "/push", body=bodies[index % len(bodies)], headers=headers)
                response = connection.getresponse()
                response.read()
                failed += response.status != 200
            except (OSError, http.client.HTTPException):
                failed += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - due)
        connection.close()
        with lock:
            latencies.extend(mine)
            failures[0] += failed

    clients = [threading.Thread(target=client) for _ in range(32)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies) + [float("inf")] * failures[0]
    return LoadResult(
        rate=len(latencies) / elapsed,
        p50_ms=statistics.median(ordered) * 1000,
        p99_ms=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        failures=failures[0],
        requests=len(latencies),
    )


def _ms(value: float) -> str:
    return "saturated" if value == float("inf") else f"{value:.1f} ms"


def measure_steady(
    influx: LocalInflux,
    receiver: Server,
    trivial: Server,
    bodies: list[bytes],
    bodies_file: Path,
    settings: Settings,
    report: Report,
) -> None:
    """Sustained pushes/s and latency of the receiver next to the trivial app, then p99 at a fixed rate."""
    seconds, connections = settings.steady_seconds, settings.connections
    wrk_load(receiver.port, bodies_file, min(2.0, seconds), connections)  # warm both up
    wrk_load(trivial.port, bodies_file, min(2.0, seconds), connections)
    receiver_runs: list[LoadResult] = []
    trivial_runs: list[LoadResult] = []
    storage = storage_pids(influx)
    for _ in range(settings.repeat):
        trivial_runs.append(
            measured_load(
                lambda: wrk_load(trivial.port, bodies_file, seconds, connections),
                {"workers": trivial.worker_pids()},
            )
        )
        receiver_runs.append(
            measured_load(
                lambda: wrk_load(receiver.port, bodies_file, seconds, connections),
                {"workers": receiver.worker_pids(), **storage},
            )
        )
    receiver_best = max(receiver_runs, key=lambda run: run.rate)
    trivial_best = max(trivial_runs, key=lambda run: run.rate)
    failures = sum(run.failures for run in receiver_runs + trivial_runs)
    if failures:
        raise RuntimeError(f"{failures} pushes failed under steady load")
    ratio = receiver_best.rate / trivial_best.rate
    half_rate = trivial_best.rate / 2
    # Lightest first: a saturated run leaves InfluxDB and the workers busy for a while after it.
    at_production = fixed_rate_load(receiver.port, bodies, PRODUCTION_RATE, seconds)
    trivial_at_production = fixed_rate_load(trivial.port, bodies, PRODUCTION_RATE, seconds)
    at_own_half = fixed_rate_load(receiver.port, bodies, receiver_best.rate / 2, seconds)
    trivial_at_half = fixed_rate_load(trivial.port, bodies, half_rate, seconds)
    at_half = fixed_rate_load(receiver.port, bodies, half_rate, seconds)
    report.figures.update(
        p99_ms_at_production=at_production.p99_ms,
        steady_pushes_per_s=receiver_best.rate,
        trivial_pushes_per_s=trivial_best.rate,
        p99_ms_at_half_http=at_half.p99_ms,
        p99_ms_at_half_own=at_own_half.p99_ms,
    )
    report.rows.append(
        Row(
            f"(c) steady state: {len(bodies):,} sensors, 1-15 min per push, {connections} connections",
            f"{receiver_best.rate:,.0f} pushes/s, p50 {receiver_best.p50_ms:.1f} ms, "
            f"p99 {receiver_best.p99_ms:.1f} ms",
            f"trivial Flask app {trivial_best.rate:,.0f} pushes/s, p50 {trivial_best.p50_ms:.1f} ms, "
            f"p99 {trivial_best.p99_ms:.1f} ms",
            f"{ratio:.2f}",
            ">= 0.5",
            _verdict(ratio >= 0.5),
        )
    )
    receiver_cpu = sum(receiver_best.cpu_ms.values())
    trivial_cpu = sum(trivial_best.cpu_ms.values())
    report.figures.update(receiver_cpu_ms=receiver_cpu, trivial_cpu_ms=trivial_cpu)
    report.rows.append(
        Row(
            f"(c) why: CPU per push at full load, all processes on the {os.cpu_count()} cores",
            _cpu_text(receiver_best.cpu_ms),
            "trivial app " + _cpu_text(trivial_best.cpu_ms),
            f"{trivial_cpu / receiver_cpu:.2f}",
            "(explains the ratio above)",
            "-",
        )
    )
    report.rows.append(
        Row(
            f"(c) p99 at half the HTTP stack's rate ({half_rate:,.0f} pushes/s offered, fixed schedule)",
            f"p99 {_ms(at_half.p99_ms)}, p50 {_ms(at_half.p50_ms)} ({at_half.rate:,.0f}/s done"
            + (f", {at_half.failures:,} not answered in time)" if at_half.failures else ")")
            + f"; at half its own rate ({receiver_best.rate / 2:,.0f}/s): p99 {_ms(at_own_half.p99_ms)}",
            f"trivial app at {half_rate:,.0f}/s: p99 {_ms(trivial_at_half.p99_ms)} (load generator's floor)",
            "-",
            "< 50 ms",
            _verdict(at_half.p99_ms < 50),
        )
    )
    report.rows.append(
        Row(
            f"(c) for scale: {PRODUCTION_RATE:.0f} pushes/s offered (10,000 counters pushing every minute)",
            f"p99 {_ms(at_production.p99_ms)}, p50 {_ms(at_production.p50_ms)}",
            f"trivial app: p99 {_ms(trivial_at_production.p99_ms)}, p50 {_ms(trivial_at_production.p50_ms)}",
            "-",
            "(context)",
            "-",
        )
    )


# ---------------------------------------------------------------- the run


def table(report: Report) -> str:
    """The result as a Markdown table, with the machine above it."""
    facts = report.facts
    lines = [
        f"axis-exporter bench, {facts['date']}, {facts['cores']} cores ({facts['cpu']}), "
        f"mode {facts['mode']}",
        "versions: "
        + ", ".join(
            f"{key} {facts[key]}" for key in ("python", "orjson", "flask", "gunicorn", "influxdb-client")
        )
        + f", influxd {facts['influxd']}, nginx {facts['nginx']}, wrk {facts['wrk']}",
        f"settings: {facts['workers']} gunicorn workers (gevent), "
        f"write chunks of {facts['chunk_lines']:,} lines, best of {facts['repeat']} alternating rounds",
        "",
        "| measurement | receiver | reference (same run) | ratio | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row.name} | {row.value} | {row.reference} | {row.ratio} | {row.goal} | {row.met} |"
        for row in sorted(report.rows, key=lambda row: row.name[:3])  # (a) .. (d), stable
    ]
    return "\n".join(lines)


@contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="axis-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run(settings: Settings, keep: bool = False, progress: Callable[[str], None] = print) -> Report:
    """Run every measurement and return the report."""
    report = Report()
    report.facts = {
        **machine_facts(),
        "mode": "quick" if settings.quick else "full",
        "repeat": settings.repeat,
        "chunk_lines": settings.chunk_lines,
        "workers": settings.workers,
    }
    parts = settings.parts
    progress(f"building a {settings.days}-day one-minute backfill push ...")
    body = backfill_body(settings.days)
    items = settings.days * 24 * 60 * 2
    if "a" in parts:
        progress("(a) conversion in-process ...")
        measure_conversion(body, items, settings, report)
    with _workdir(keep) as base, ExitStack() as stack:
        influx = stack.enter_context(LocalInflux(base / "influxdb"))
        bucket = "bench"
        influx.create_database(bucket)
        env = receiver_env(influx, bucket, base, settings.chunk_lines, settings.workers)
        # Its admin listener on a free port too: the default one may belong to a receiver running here.
        serve = ["-m", "exporter", "serve", "--admin-bind", f"127.0.0.1:{free_port()}"]
        receiver = Server(serve, env, base / "receiver.log", settings.workers)
        stack.callback(receiver.stop)
        if "c" in parts:
            trivial = Server(
                [
                    "-m",
                    "bench.trivial",
                    "--workers",
                    str(settings.workers),
                ],
                env,
                base / "trivial.log",
                settings.workers,
            )
            bodies = steady_bodies(settings.sensors)
            bodies_file = base / "steady.jsonl"
            bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
            progress("(c) steady state ...")
            try:
                measure_steady(influx, receiver, trivial, bodies, bodies_file, settings, report)
            finally:
                trivial.stop()
        # After the steady state: InfluxDB compacts the backfill's shards for a while after it.
        if "b" in parts or "d" in parts:
            progress("(b)+(d) backfill through the receiver ...")
            measure_backfill(influx, receiver, bucket, body, items, settings, report)
        if any(part in parts for part in "efg"):
            receiver.stop()  # the parts below start their own receivers
            measure_scaling(influx, base, settings, report, progress)
    return report


def measure_scaling(
    influx: LocalInflux, base: Path, settings: Settings, report: Report, progress: Callable[[str], None]
) -> None:
    """(e) receivers side by side, (f) capacity per core, (g) a pod's memory and drain (bench/scaling.py)."""
    bucket = "scaling"  # apart from (b)'s, whose point count it checks
    influx.create_database(bucket)
    env = receiver_env(influx, bucket, base / "scaling", settings.chunk_lines, settings.workers)
    (base / "scaling").mkdir()
    if "e" in settings.parts:
        bodies_file = base / "scaling" / "steady.jsonl"
        bodies_file.write_bytes(b"\n".join(steady_bodies(settings.sensors)) + b"\n")
        progress("(e) 1, 2 and 3 receivers behind a round-robin balancer ...")
        scaling.measure_instances(influx, env, base / "scaling", bodies_file, settings, report, progress)
    if "f" in settings.parts:
        receiver = scaling.start_receiver(base / "scaling", "capacity", env, settings.workers)
        try:
            scaling.measure_capacity(influx, receiver, settings, report, progress)
        finally:
            receiver.server.stop()
    if "g" in settings.parts:
        scaling.measure_pod(influx, env, base / "scaling", settings, report, progress)


def main(argv: list[str] | None = None) -> int:
    """Command line entry: ``python -m bench [--quick]``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: small payloads, short loads (seconds)"
    )
    parser.add_argument("--repeat", type=int, help="rounds per measurement (default 3, quick 1)")
    parser.add_argument("--days", type=int, help="days of one-minute data in the backfill push (default 90)")
    parser.add_argument("--seconds", type=float, help="seconds per steady-state load run (default 10)")
    parser.add_argument("--chunk-lines", type=int, default=CHUNK_LINES, help="lines per InfluxDB write")
    parser.add_argument("--workers", type=int, default=WORKERS, help="gunicorn workers (both apps)")
    parser.add_argument("--only", default="abcdefg", help="measure only these parts, e.g. 'c' or 'efg'")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, database)")
    args = parser.parse_args(argv)
    settings = Settings(
        days=args.days or (5 if args.quick else 90),
        repeat=args.repeat or (1 if args.quick else 3),
        steady_seconds=args.seconds or (1.0 if args.quick else 10.0),
        sensors=200 if args.quick else 2_000,
        connections=16,
        chunk_lines=args.chunk_lines,
        quick=args.quick,
        parts=args.only,
        workers=args.workers,
    )
    report = run(settings, keep=args.keep, progress=lambda text: print(text, file=sys.stderr, flush=True))
    print(table(report))
    if args.json:
        args.json.write_bytes(
            orjson.dumps({"facts": report.facts, "figures": report.figures}, option=orjson.OPT_INDENT_2)
        )
    return 0
