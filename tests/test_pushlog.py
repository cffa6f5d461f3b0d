"""The push log and the InfluxDB reads behind the status page: bounded and safe with several writer
processes and killed ones; errors from InfluxDB or its proxy in one line."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.config import InfluxConfig
from exporter.influxread import InfluxReader, InfluxReadError
from exporter.processes import wait_until
from exporter.pushlog import MAX_MESSAGE_CHARS, PushLog, PushRecord
from exporter.statedb import DATABASE_FILE
from tests.influxfaults import FaultableInflux

WRITERS = 4
PUSHES_PER_WRITER = 300
KEEP = 100


def record(worker: int, index: int, message: str = "") -> PushRecord:
    return PushRecord(
        received_at=time.time(),
        source_address=f"10.0.0.{worker}",
        serial=f"ACCC8E00000{worker}",
        status=200,
        result="ok",
        intervals=5,
        points=index,
        message=message,
    )


def write_pushes(path: Path, worker: int, count: int) -> None:
    """A worker process: its own connection, as gunicorn's forked workers have."""
    log = PushLog(path, keep=KEEP)
    for index in range(count):
        log.record(record(worker, index))
    log.close()


def test_writers_in_several_processes_share_one_bounded_log(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_FILE
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=write_pushes, args=(path, n, PUSHES_PER_WRITER)) for n in range(WRITERS)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
        assert process.exitcode == 0, f"a writer process exited with {process.exitcode}"
    recent = PushLog(path, keep=KEEP).recent()
    assert len(recent) == KEEP, f"{len(recent)} rows kept, the bound is {KEEP}"
    with sqlite3.connect(path) as connection:
        (rows,) = connection.execute("SELECT count(*) FROM pushes").fetchone()
    assert rows == KEEP, "the table itself stays bounded, not only what is read"
    assert max(push.points for push in recent) == PUSHES_PER_WRITER - 1, "the newest pushes are the ones kept"


def test_a_writer_killed_mid_stream_leaves_the_log_readable_and_writable(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_FILE
    context = multiprocessing.get_context("fork")
    victim = context.Process(target=write_pushes, args=(path, 9, 1_000_000))
    victim.start()
    wait_until(
        lambda: path.exists() and len(PushLog(path, keep=KEEP).recent()) >= KEEP,
        10,
        "the writer to start writing",
    )
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(timeout=10)
    survivor = PushLog(path, keep=KEEP)
    survivor.record(record(1, 42, "after the kill"))
    survivor.flush()
    recent = survivor.recent()
    assert recent[0].message == "after the kill" and len(recent) == KEEP


def test_messages_are_cut_and_a_locked_database_delays_rows_without_an_exception(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_FILE
    log = PushLog(path, keep=KEEP, flush_seconds=60)
    log.record(record(1, 0, "x" * 10_000))
    assert log.recent() == [], "record only queues: the push is not held up by the database"
    log.flush()
    assert len(log.recent()[0].message) == MAX_MESSAGE_CHARS
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        log.record(record(1, 1, "while locked"))
        started = time.monotonic()
        log.flush()  # must not raise
        assert time.monotonic() - started < 2, "a locked database must not hold the writer for long"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert log.recent()[0].message != "while locked"
    log.flush()
    assert log.recent()[0].message == "while locked", "the row waited for the next flush"
    assert log.latest_answers()["ACCC8E000001"].message == "while locked"


def test_each_serials_latest_answer_is_kept_however_busy_the_log(tmp_path: Path) -> None:
    log = PushLog(tmp_path / DATABASE_FILE, keep=10, keep_serials=50, flush_seconds=60)
    early = PushRecord(1000.0, "10.0.0.7", "ACCC8E0000F1", 403, "forbidden", 0, 0, "token for another serial")
    log.record(early)
    for index in range(100):
        log.record(PushRecord(2000.0 + index, "10.0.0.1", f"ACCC8E{index:06X}", 200, "ok", 5, 10, ""))
        log.flush()
    latest = log.latest_answers()
    assert len(log.recent()) == 10 and len(latest) == 50, "both tables stay bounded"
    assert "ACCC8E000063" in latest and "ACCC8E000000" not in latest, "the most recent serials are kept"
    stale = PushRecord(1500.0, "10.0.0.1", "ACCC8E000063", 503, "storage_unavailable", 0, 0, "late writer")
    log.record(stale)
    log.flush()
    assert log.latest_answers()["ACCC8E000063"].status == 200, "an older answer never replaces a newer one"


@pytest.fixture
def own_influx(tmp_path: Path) -> Iterator[FaultableInflux]:
    """An InfluxDB of this test's own: the test stops parts of it."""
    with FaultableInflux(tmp_path / "influxdb") as local:
        local.create_database("status")
        yield local


def test_a_token_without_read_access_is_named_in_one_line(own_influx: FaultableInflux) -> None:
    reader = InfluxReader(InfluxConfig(url=own_influx.url, org="-", token="write-only", bucket="status"))
    with pytest.raises(InfluxReadError) as raised:
        reader.query(['SELECT * FROM "people_count"'])
    message = str(raised.value)
    assert "401" in message and "read access" in message, message
    assert "\n" not in message and "<" not in message


def test_influxdb_down_behind_its_proxy_is_one_line_without_html(own_influx: FaultableInflux) -> None:
    reader = InfluxReader(InfluxConfig(url=own_influx.url, org="-", token=own_influx.token, bucket="status"))
    assert reader.query(['SELECT * FROM "people_count"']) == [[]]
    own_influx.stop_influxd()
    with pytest.raises(InfluxReadError) as raised:
        reader.query(['SELECT * FROM "people_count"'])
    message = str(raised.value)
    assert "502" in message and "proxy" in message, message
    assert "\n" not in message and "<" not in message and "nginx/" not in message
    own_influx.stop_bridge()
    with pytest.raises(InfluxReadError, match="did not answer"):
        reader.query(['SELECT * FROM "people_count"'])
