"""The sensors file: golden good and bad files, live reloads, and SIGHUP to a real ``serve``.

Golden files: ``tests/sensorsfiles/good/<case>.yaml`` with the mapping expected in ``<case>.json``, and
``tests/sensorsfiles/bad/<case>.yaml`` with the exact message expected in ``<case>.error`` (the file's
path written as its name). A new case is a new pair of files.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from exporter.config import DEFAULT_SERIAL_PATTERN
from exporter.processes import wait_until
from exporter.sensorsfile import (
    LABEL_KEYS,
    MAX_SHOWN,
    SensorsFile,
    SensorsFileError,
    format_sensors_file,
    load_sensors_file,
    touch_reload_marker,
)
from tests.serveprocess import ExporterFactory, ExporterProcess

GOLDEN = Path(__file__).parent / "sensorsfiles"
PATTERN = re.compile(DEFAULT_SERIAL_PATTERN)
LOGGER = "exporter.sensorsfile"


def cases(kind: str) -> list[str]:
    """Names of the golden files of one kind (good or bad)."""
    return sorted(path.stem for path in (GOLDEN / kind).glob("*.yaml"))


@pytest.mark.parametrize("case", cases("good"))
def test_a_good_file_gives_its_mapping(case: str) -> None:
    path = GOLDEN / "good" / f"{case}.yaml"
    expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert load_sensors_file(path, PATTERN) == expected


@pytest.mark.parametrize("case", cases("bad"))
def test_a_bad_file_is_refused_naming_line_and_rule(case: str) -> None:
    path = GOLDEN / "bad" / f"{case}.yaml"
    expected = path.with_suffix(".error").read_text(encoding="utf-8").rstrip("\n")
    with pytest.raises(SensorsFileError) as refused:
        load_sensors_file(path, PATTERN)
    message = str(refused.value)
    assert message.startswith(f"{path}:"), f"the message does not start with the file's path: {message}"
    assert message.replace(str(path), path.name, 1) == expected


def test_every_golden_case_has_its_expectation() -> None:
    for kind, suffix in (("good", ".json"), ("bad", ".error")):
        for case in cases(kind):
            assert (GOLDEN / kind / f"{case}{suffix}").exists(), f"{kind}/{case}.yaml has no {case}{suffix}"
    assert len(cases("bad")) >= 30 and len(cases("good")) >= 3, "golden files went missing"


def test_a_message_shows_at_most_120_characters_of_a_bad_value(tmp_path: Path) -> None:
    huge, key = "x" * 100_000, "x" * 1000  # YAML keys are at most 1024 characters
    for text in (
        f"sensors:\n  ACCC8EF3D92E:\n    site: {huge}\n",
        f"sensors:\n  {key}:\n    site: a\n",
        f"sensors:\n  ACCC8EF3D92E:\n    {key}: a\n",
        f"{key}: 1\n",
        f"sensors:\n  ACCC8EF3D92E:\n    site: !{huge} a\n",
        f"sensors:\n  {huge}:\n    site: a\n",
    ):
        path = tmp_path / "sensors.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(SensorsFileError) as refused:
            load_sensors_file(path, PATTERN)
        message = str(refused.value)
        longest_run = max((len(run) for run in re.findall("x+", message)), default=0)
        assert longest_run <= MAX_SHOWN, f"{longest_run} characters of the value in: {message[:300]}"
        assert len(message) < 600, f"a message of {len(message)} characters"


def test_a_custom_serial_pattern_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "sensors.yaml"
    path.write_text("sensors:\n  door-7:\n    site: Depot\n", encoding="utf-8")
    assert load_sensors_file(path, re.compile("[A-Z]+-[0-9]+")) == {"DOOR-7": {"site": "Depot"}}
    with pytest.raises(SensorsFileError, match=r"'door-7' is not a serial \(pattern \[0-9A-F\]\{12\}"):
        load_sensors_file(path, PATTERN)
    with pytest.raises(SensorsFileError) as refused:
        load_sensors_file(tmp_path / "missing.yaml", PATTERN)
    assert str(refused.value).startswith(f"{tmp_path / 'missing.yaml'}: cannot read the sensors file (")


def test_labels_are_exactly_these_keys() -> None:
    assert LABEL_KEYS == ("site", "zone", "region", "building", "floor")


def test_a_written_file_reads_back_the_same(tmp_path: Path) -> None:
    assigned = {
        "ACCC8EF3D92E": {"site": "Store 12 Berlin", "zone": "Main entrance", "floor": "1"},
        "ACCC8E000002": {"site": "yes", "zone": "Garage: level -1", "floor": "01"},
        "ACCC8E000003": {"site": "# not a comment", "zone": "'quoted' \"twice\"", "region": "null"},
        "ACCC8E000004": {"site": "Zürich 東京", "building": "2024-05-01", "floor": "-1.5"},
    }
    path = tmp_path / "sensors.yaml"
    path.write_text(format_sensors_file(assigned, header="made by a test\nsecond line"), encoding="utf-8")
    assert path.read_text(encoding="utf-8").startswith("# made by a test\n# second line\nsensors:\n")
    assert load_sensors_file(path, PATTERN) == assigned
    with pytest.raises(ValueError, match="unknown label"):
        format_sensors_file({"ACCC8EF3D92E": {"timezone": "Europe/Berlin"}})


# --- SensorsFile: live reloads ---------------------------------------------------------------------------


class Clock:
    """A monotonic clock the test steps by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, sensors: dict[str, str], *, extra: str = "") -> None:
    """A sensors file giving each serial a site, written in place."""
    lines = ["sensors:"] + [f"  {serial}:\n    site: {site}" for serial, site in sensors.items()]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")


def replace(path: Path, text: str) -> None:
    """Write a new version the way editors and config tools do: a new file renamed over the old."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_no_file_means_no_labels() -> None:
    sensors = SensorsFile(None, PATTERN)
    assert sensors.path is None
    assert dict(sensors.labels("ACCC8EF3D92E")) == {} and dict(sensors.assigned()) == {}
    assert sensors.reload() is False
    assert sensors.watch() is None


def test_a_broken_file_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "sensors.yaml"
    path.write_text("sensors:\n  ACCC8EF3D92E:\n    color: red\n", encoding="utf-8")
    with pytest.raises(SensorsFileError, match=r"sensors\.yaml:3: unknown label 'color'"):
        SensorsFile(path, PATTERN)


def test_a_change_is_picked_up_at_most_once_per_check_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import exporter.sensorsfile as module

    caplog.set_level(logging.INFO, LOGGER)
    path = tmp_path / "sensors.yaml"
    write(path, {"ACCC8EF3D92E": "Store 12"})
    clock = Clock()
    sensors = SensorsFile(path, PATTERN, check_seconds=1.0, clock=clock)
    looks: list[Path | None] = []
    real_state = module._state

    def counted_state(looked_at: Path | None) -> tuple[int, int, int] | None:
        looks.append(looked_at)
        return real_state(looked_at)

    monkeypatch.setattr(module, "_state", counted_state)

    assert dict(sensors.labels("accc8ef3d92e")) == {"site": "Store 12"}, "looked up upper-cased"
    write(path, {"ACCC8EF3D92E": "Store 13", "ACCC8E000002": "Store 14"})
    for _ in range(1000):
        assert sensors.labels("ACCC8EF3D92E")["site"] == "Store 12", "reloaded before its check interval"
    assert looks == [], "the file was looked at within the check interval"

    clock.now += 1.0
    assert sensors.labels("ACCC8EF3D92E")["site"] == "Store 13"
    assert sensors.labels("ACCC8E000002")["site"] == "Store 14"
    assert len(looks) == 2, f"one stat of the file and one of the marker per check, not {looks}"
    assert f"sensors file {path} reloaded: 2 sensors" in caplog.messages
    clock.now += 1.0
    sensors.labels("ACCC8EF3D92E")
    assert caplog.messages.count(f"sensors file {path} reloaded: 2 sensors") == 1, (
        "an unchanged file reloaded"
    )


def test_a_failing_reload_keeps_the_previous_mapping_and_says_why_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    path = tmp_path / "sensors.yaml"
    marker = tmp_path / "reload"
    write(path, {"ACCC8EF3D92E": "Store 12"})
    clock = Clock()
    sensors = SensorsFile(path, PATTERN, reload_marker=marker, check_seconds=1.0, clock=clock)

    write(path, {"ACCC8EF3D92E": "Store 12"}, extra="  ACCC8E000002:\n    colour: red\n")
    for _ in range(5):
        clock.now += 1.0
        assert dict(sensors.labels("ACCC8EF3D92E")) == {"site": "Store 12"}
        assert dict(sensors.labels("ACCC8E000002")) == {}
    touch_reload_marker(marker)  # a SIGHUP with the file still broken: nothing new to say
    clock.now += 1.0
    sensors.labels("ACCC8EF3D92E")
    expected = (
        f"sensors file {path}: kept the previous 1 sensors because {path}:5: unknown label 'colour' "
        "for serial ACCC8E000002; the labels are site, zone, region, building, floor"
    )
    assert warnings_in(caplog) == [expected], "a broken version must be reported once, not on every check"

    write(path, {"ACCC8EF3D92E": "Store 12"}, extra="  ACCC8E000002:\n    zone: [a]\n")
    clock.now += 1.0
    sensors.labels("ACCC8EF3D92E")
    assert len(warnings_in(caplog)) == 2, "another broken version is reported again"
    assert "sensors.yaml:5: label zone of serial ACCC8E000002 is a list" in warnings_in(caplog)[1]

    assert sensors.reload() is False, "an explicit reload of a broken file"
    assert len(warnings_in(caplog)) == 3, "an explicit reload always says how it went"
    assert dict(sensors.assigned()) == {"ACCC8EF3D92E": {"site": "Store 12"}}

    write(path, {"ACCC8EF3D92E": "Store 12", "ACCC8E000002": "Store 14"})
    clock.now += 1.0
    assert sensors.labels("ACCC8E000002")["site"] == "Store 14"
    assert f"sensors file {path} reloaded: 2 sensors" in caplog.messages
    path.unlink()
    clock.now += 1.0
    assert sensors.labels("ACCC8E000002")["site"] == "Store 14", "a deleted file keeps the mapping"
    assert "cannot read the sensors file (No such file or directory)" in warnings_in(caplog)[-1]


def test_the_reload_marker_reloads_a_change_the_file_itself_does_not_show(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Same size, same inode and the old mtime (a tool that keeps times): only a SIGHUP can tell."""
    caplog.set_level(logging.INFO, LOGGER)
    path = tmp_path / "sensors.yaml"
    marker = tmp_path / "sensors-file.reload"
    write(path, {"ACCC8EF3D92E": "Store 12"})
    before = os.stat(path)
    clock = Clock()
    sensors = SensorsFile(path, PATTERN, reload_marker=marker, clock=clock)

    write(path, {"ACCC8EF3D92E": "Store 99"})
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_ino, after.st_mtime_ns) == (
        before.st_size,
        before.st_ino,
        before.st_mtime_ns,
    )
    clock.now += 5.0
    assert sensors.labels("ACCC8EF3D92E")["site"] == "Store 12", "nothing says the file changed"

    touch_reload_marker(marker)
    clock.now += 1.0
    assert sensors.labels("ACCC8EF3D92E")["site"] == "Store 99", "the marker did not make it reload"
    touch_reload_marker(marker)
    clock.now += 1.0
    sensors.labels("ACCC8EF3D92E")
    assert caplog.messages.count(f"sensors file {path} reloaded: 1 sensors") == 2, "each touch reloads"
    assert not list(tmp_path.glob(".sensors-file.reload.*")), "the marker's temporary file was left"


def test_a_forked_copy_starts_from_the_mapping_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker booting while the file is broken starts from the master's mapping."""
    caplog.set_level(logging.INFO, LOGGER)
    path = tmp_path / "sensors.yaml"
    write(path, {"ACCC8EF3D92E": "Store 12"})
    clock = Clock()
    master = SensorsFile(path, PATTERN, clock=clock)
    path.write_text("sensors: [broken\n", encoding="utf-8")
    worker = master.child(reload_marker=tmp_path / "marker")
    assert dict(worker.labels("ACCC8EF3D92E")) == {"site": "Store 12"}
    assert len(warnings_in(caplog)) == 1 and "sensors.yaml:2: not valid YAML" in warnings_in(caplog)[0]
    write(path, {"ACCC8EF3D92E": "Store 13"})
    clock.now += 1.0
    assert worker.labels("ACCC8EF3D92E")["site"] == "Store 13"
    assert master.assigned()["ACCC8EF3D92E"]["site"] == "Store 13", "the master follows the file too"


def test_concurrent_readers_see_one_version_or_the_next(tmp_path: Path) -> None:
    """Readers on many threads, a writer and explicit reloads: every answer is one whole version."""
    path = tmp_path / "sensors.yaml"
    serials = [f"ACCC8E{index:06X}" for index in range(50)]
    versions = [
        "sensors:\n" + "".join(f"  {serial}: {{site: Version {v}, zone: Z{v}}}\n" for serial in serials)
        for v in range(2)
    ]
    replace(path, versions[0])
    sensors = SensorsFile(path, PATTERN, check_seconds=0.0)
    stop = threading.Event()
    problems: list[str] = []

    def read() -> None:
        while not stop.is_set():
            time.sleep(0.0002)  # let the writer have the GIL now and then
            snapshot = sensors.assigned()
            sites = {labels["site"] for labels in snapshot.values()}
            if len(snapshot) != len(serials) or len(sites) != 1:
                problems.append(f"a mixed snapshot: {len(snapshot)} sensors, sites {sorted(sites)}")
            labels = sensors.labels(serials[17])
            if labels["zone"] != "Z" + labels["site"][-1]:
                problems.append(f"labels of two versions: {dict(labels)}")

    def rewrite() -> None:
        for round_ in range(100):
            replace(path, versions[round_ % 2])
            if round_ % 7 == 0:
                sensors.reload()

    readers = [threading.Thread(target=read) for _ in range(8)]
    writer = threading.Thread(target=rewrite)
    for thread in [*readers, writer]:
        thread.start()
    writer.join(timeout=60)
    stop.set()
    for thread in readers:
        thread.join(timeout=10)
    assert not writer.is_alive() and not any(t.is_alive() for t in readers), "a thread hung"
    assert problems == [], problems[:5]
    replace(path, versions[1])
    assert sensors.reload() is True
    assert sensors.labels(serials[0])["site"] == "Version 1"


def test_watch_reloads_without_being_asked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    path = tmp_path / "sensors.yaml"
    write(path, {"ACCC8EF3D92E": "Store 12"})
    sensors = SensorsFile(path, PATTERN, check_seconds=0.05)
    thread = sensors.watch()
    assert thread is not None
    try:
        replace(path, "sensors:\n  ACCC8EF3D92E: {site: Store 13}\n  ACCC8E000002: {site: Store 14}\n")
        wait_until(
            lambda: f"sensors file {path} reloaded: 2 sensors" in caplog.messages, 10, "the watcher's reload"
        )
    finally:
        sensors.close()
        thread.join(timeout=5)
    assert not thread.is_alive(), "close() did not stop the watcher"


# --- serve --------------------------------------------------------------------------------------------------


def serve_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AXIS_EXPORTER_", "INFLUXDB_V2_"))}
    return {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}


def test_serve_does_not_start_with_a_broken_file(tmp_path: Path) -> None:
    path = GOLDEN / "bad" / "unknown-label.yaml"
    expected = path.with_suffix(".error").read_text(encoding="utf-8").strip().replace(path.name, str(path))
    local_dir = tmp_path / "local"
    for how in (["--sensors-file", str(path)], []):
        env = serve_env(tmp_path)
        if not how:
            env["AXIS_EXPORTER_SENSORS_FILE"] = str(path)
        result = subprocess.run(
            [sys.executable, "-m", "exporter", "serve", "--local-dir", str(local_dir), *how],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, f"serve started with a broken sensors file ({how or 'env'})"
        assert result.stderr.strip().splitlines()[-1] == f"Error: {expected}"
        assert "Booting worker" not in result.stderr and not local_dir.exists(), "it started something"


SERIALS = ("ACCC8E0000A1", "ACCC8E0000A2", "ACCC8E0000A3")


def same_size_versions() -> tuple[bytes, bytes]:
    """Two sensors, then three, as files of exactly the same length."""
    three = "sensors:\n" + "".join(
        f"  {s}: {{site: Site {i}, zone: Entrance 1}}\n" for i, s in enumerate(SERIALS)
    )
    two = "sensors:\n" + "".join(
        f"  {s}: {{site: Site {i}, zone: Entrance 1}}\n" for i, s in enumerate(SERIALS[:2])
    )
    padding = len(three) - len(two) - 2
    return (two + "#" + "-" * padding + "\n").encode(), three.encode()


def reloads(server: ExporterProcess, text: str) -> dict[int, int]:
    """pid -> how many sensors-file lines holding ``text`` it logged."""
    found: dict[int, int] = {}
    for pid in re.findall(rf"\[(\d+)\] {re.escape(LOGGER)}: sensors file .*{re.escape(text)}", server.log()):
        found[int(pid)] = found.get(int(pid), 0) + 1
    return found


@pytest.fixture
def labelled_server(
    exporter_server: ExporterFactory, tmp_path: Path
) -> Iterator[tuple[ExporterProcess, Path]]:
    two, three = same_size_versions()
    assert len(two) == len(three)
    path = tmp_path / "sensors.yaml"
    path.write_bytes(two)
    server = exporter_server("--sensors-file", str(path), workers=2)
    yield server, path


def test_sighup_reloads_every_worker_without_restarting_it(
    labelled_server: tuple[ExporterProcess, Path],
) -> None:
    server, path = labelled_server
    workers, admin = sorted(server.worker_pids()), server.admin_pid()
    assert len(workers) == 2 and admin is not None, server.log()
    assert f"sensors file {path}: 2 sensors" in server.log()

    # A change that stat() cannot see (same size, inode and mtime): only the SIGHUP can make it count.
    before = os.stat(path)
    path.write_bytes(same_size_versions()[1])
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    time.sleep(2.5)  # more than two checks of every process
    assert reloads(server, "reloaded: 3 sensors") == {}, "a process reloaded a change it cannot have seen"

    os.kill(server.pid, signal.SIGHUP)
    everyone = {*workers, admin}
    wait_until(lambda: everyone <= set(reloads(server, "reloaded: 3 sensors")), 10, "every worker's reload")
    assert reloads(server, "reloaded: 3 sensors").get(server.pid) == 1, "the master's own reload"
    assert "Handling signal: hup" in server.log()
    assert sorted(server.worker_pids()) == workers and server.admin_pid() == admin, "processes restarted"
    assert server.log().count("Booting worker") == 2, "gunicorn replaced workers on SIGHUP"
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_a_broken_edit_keeps_every_process_on_the_last_good_file(
    labelled_server: tuple[ExporterProcess, Path],
) -> None:
    server, path = labelled_server
    workers, admin = sorted(server.worker_pids()), server.admin_pid()
    everyone = {*workers, admin, server.pid}
    path.write_text("sensors:\n  ACCC8E0000A1:\n    site: Site 1\n    store: 12\n", encoding="utf-8")
    rule = f"kept the previous 2 sensors because {path}:4: unknown label 'store' for serial ACCC8E0000A1"
    wait_until(
        lambda: everyone <= set(reloads(server, rule)), 10, "every process's warning about the broken file"
    )
    time.sleep(2.5)  # more checks of the same broken version
    assert reloads(server, rule) == dict.fromkeys(everyone, 1), "a broken version must be reported once each"

    os.kill(server.pid, signal.SIGHUP)
    wait_until(lambda: reloads(server, rule).get(server.pid) == 2, 10, "the master's answer to SIGHUP")
    time.sleep(2.5)
    assert reloads(server, rule) == {**dict.fromkeys(everyone, 1), server.pid: 2}, "workers reloaded again"
    assert sorted(server.worker_pids()) == workers, "a broken file made workers restart"

    # A worker that dies now boots with the last good mapping, and says the file is broken.
    os.kill(workers[0], signal.SIGKILL)
    wait_until(lambda: len(set(server.worker_pids()) - set(workers)) == 1, 10, "a new worker")
    (new,) = set(server.worker_pids()) - set(workers)
    wait_until(lambda: reloads(server, rule).get(new) == 1, 10, "the new worker's warning")
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200

    path.write_text("sensors:\n  ACCC8E0000A1: {site: Site 1}\n", encoding="utf-8")
    wait_until(
        lambda: {*everyone, new} - {workers[0]} <= set(reloads(server, "reloaded: 1 sensors")),
        10,
        "every process's reload of the fixed file, without a SIGHUP",
    )
