"""``serve`` without INFLUXDB_V2_URL: its own local InfluxDB; a second serve never shares it by accident."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from exporter.cli import LOCAL_BRIDGE_PORT, LOCAL_BUCKET, LOCAL_INFLUXD_PORT
from exporter.influxd_bridge import port_is_free
from exporter.processes import free_port
from tests.serveprocess import ExporterProcess, clean_env
from tests.support import payload

ROOT = Path(__file__).parent.parent
USING = re.compile(
    r"using a local InfluxDB \(influxd on 127\.0\.0\.1:(\d+), its write bridge on 127\.0\.0\.1:(\d+)\)"
)


def local_env() -> dict[str, str]:
    """The environment of a first run: no InfluxDB configured, one worker."""
    env = clean_env()
    env["AXIS_EXPORTER_WORKERS"] = "1"
    return env


class LocalServe(ExporterProcess):
    """A serve with its own local InfluxDB; knows that InfluxDB's ports from its log."""

    def influxd_port(self) -> int:
        """influxd's port, as the start-up line names it."""
        match = USING.search(self.log())
        assert match, f"serve did not say which local InfluxDB it uses:\n{self.log()}"
        return int(match.group(1))

    def bridge_port(self) -> int:
        """The write bridge's port, as the start-up line names it."""
        match = USING.search(self.log())
        assert match, f"serve did not say which local InfluxDB it uses:\n{self.log()}"
        return int(match.group(2))

    def stored(self, serial: str) -> int:
        """Rows of people_count from ``serial`` in this serve's local InfluxDB."""
        response = requests.get(
            f"http://127.0.0.1:{self.influxd_port()}/query",
            params={"db": LOCAL_BUCKET, "q": f"SELECT * FROM people_count WHERE serial = '{serial}'"},
            timeout=10,
        )
        response.raise_for_status()
        series = response.json()["results"][0].get("series", [])
        return sum(len(one["values"]) for one in series)


LocalServeFactory = Callable[[Path], LocalServe]


@pytest.fixture
def local_serve(tmp_path: Path) -> Iterator[LocalServeFactory]:
    """Factory: start ``serve`` (no INFLUXDB_V2_URL) with ``--local-dir``; all stopped after the test."""
    started: list[LocalServe] = []

    def start(local_dir: Path) -> LocalServe:
        server = LocalServe(
            env=local_env(),
            args=["--local-dir", str(local_dir)],
            log_path=tmp_path / f"serve-{len(started)}.log",
            port=free_port(),
            admin_port=free_port(),
        )
        started.append(server)
        server.start(timeout=60)
        return server

    yield start
    for server in started:
        server.stop()


def push(server: ExporterProcess, serial: str) -> requests.Response:
    """The 3D sample, as sensor ``serial``."""
    document = payload("sample-3d-object-data")
    document["sensor"]["serial"] = serial
    return requests.post(f"{server.url}/push", json=document, timeout=30)


def test_two_serves_in_different_folders_each_get_their_own_influxdb(
    local_serve: LocalServeFactory, tmp_path: Path
) -> None:
    preferred_free = port_is_free(LOCAL_INFLUXD_PORT) and port_is_free(LOCAL_BRIDGE_PORT)
    first = local_serve(tmp_path / "one")
    second = local_serve(tmp_path / "two")

    if preferred_free:
        assert (first.influxd_port(), first.bridge_port()) == (LOCAL_INFLUXD_PORT, LOCAL_BRIDGE_PORT), (
            f"the free preferred ports were not used:\n{first.log()}"
        )
    ports = {first.influxd_port(), first.bridge_port(), second.influxd_port(), second.bridge_port()}
    assert len(ports) == 4, f"two serves share a port of their InfluxDB:\n{first.log()}\n{second.log()}"
    for preferred, got in (
        (LOCAL_INFLUXD_PORT, second.influxd_port()),
        (LOCAL_BRIDGE_PORT, second.bridge_port()),
    ):
        assert (f"127.0.0.1:{preferred} is taken by" in second.log()) == (got != preferred), (
            f"the second serve does not say why it left {preferred}:\n{second.log()}"
        )

    assert push(first, "ACCC8E000001").status_code == 200, first.log()
    assert push(second, "ACCC8E000002").status_code == 200, second.log()
    assert (first.stored("ACCC8E000001"), first.stored("ACCC8E000002")) == (6, 0), "first's InfluxDB"
    assert (second.stored("ACCC8E000001"), second.stored("ACCC8E000002")) == (0, 6), "second's InfluxDB"

    first.stop()
    response = push(second, "ACCC8E000003")
    assert response.status_code == 200, f"the second depended on the first's InfluxDB: {response.text}"
    assert second.stored("ACCC8E000003") == 6


def test_a_second_serve_in_the_same_folder_refuses_and_says_what_to_do(
    local_serve: LocalServeFactory, tmp_path: Path
) -> None:
    first = local_serve(tmp_path / "shared")
    assert push(first, "ACCC8E000004").status_code == 200, first.log()

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "serve",
            "--bind",
            f"127.0.0.1:{free_port()}",
            "--admin-bind",
            f"127.0.0.1:{free_port()}",
            "--local-dir",
            str(tmp_path / "shared"),
        ],
        env=local_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1, f"the second serve did not refuse:\n{result.stderr}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, f"expected one Error line:\n{result.stderr}"
    error = errors[0]
    expected = [
        f"the local InfluxDB in {tmp_path / 'shared'} belongs to another serve: pid {first.pid} (",
        "Stop that one",
        "--local-dir",
        "INFLUXDB_V2_URL",
    ]
    assert all(part in error for part in expected), f"the refusal does not say what to do: {error}"

    assert push(first, "ACCC8E000005").status_code == 200, "the refused serve disturbed the first"
    assert first.stored("ACCC8E000005") == 6

    first.stop()
    again = local_serve(tmp_path / "shared")
    assert again.stored("ACCC8E000004") == 6, "the folder's data is not there after a restart"
    assert push(again, "ACCC8E000006").status_code == 200, again.log()


def test_the_same_folder_refuses_even_with_the_default_ports_taken(
    local_serve: LocalServeFactory, tmp_path: Path
) -> None:
    """./scripts/run twice: the lock's message, not a clash of the admin port."""
    first = local_serve(tmp_path / "shared")
    env = {**local_env(), "AXIS_EXPORTER_ADMIN_BIND": f"127.0.0.1:{first.admin_port}"}
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--bind", f"127.0.0.1:{first.port}"],
        env={**env, "AXIS_EXPORTER_LOCAL_DIR": str(tmp_path / "shared")},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "belongs to another serve" in result.stderr, f"not the lock's message:\n{result.stderr}"
