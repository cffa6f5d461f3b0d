"""The local InfluxDB is only ever the one we started: a locked directory, ports checked for ownership."""

from __future__ import annotations

import http.server
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from exporter.app import create_app
from exporter.influxd_bridge import (
    BRIDGE_PROBE,
    INSTANCE_HEADER,
    LocalInflux,
    LocalInfluxBusy,
    LocalInfluxError,
    port_is_free,
)
from exporter.processes import free_port, wait_until
from tests.influxfaults import FaultableInflux
from tests.support import make_config, payload


def write_point(influx: LocalInflux, bucket: str, line: str, token: str | None = None) -> requests.Response:
    """One line through the bridge's /api/v2/write, as influxdb-client sends it (with its token)."""
    return requests.post(
        f"{influx.url}/api/v2/write",
        params={"bucket": bucket, "org": "-", "precision": "s"},
        data=line,
        headers={"Authorization": f"Token {influx.token if token is None else token}"},
        timeout=10,
    )


@pytest.fixture
def started() -> Iterator[list[LocalInflux]]:
    """LocalInflux objects a test starts (append them); all closed after the test."""
    instances: list[LocalInflux] = []
    yield instances
    for instance in instances:
        instance.close()


class FakeInfluxHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET like influxd's /ping: the trap the old readiness check fell into."""

    def do_GET(self) -> None:
        """204 with influxd's version header."""
        self.send_response(204)
        self.send_header("X-Influxdb-Version", "1.6.7")
        self.send_header(INSTANCE_HEADER, "someone-else")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def impostor() -> Iterator[int]:
    """A port on which another process's server answers pings as influxd and a bridge would."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeInfluxHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_a_second_local_influx_in_the_same_directory_is_refused_and_names_the_holder(
    tmp_path: Path, started: list[LocalInflux]
) -> None:
    first = LocalInflux(tmp_path / "db")
    started.append(first.start())
    first.create_database("kept")
    assert write_point(first, "kept", "m v=1 1700000000").status_code == 204

    second = LocalInflux(tmp_path / "db")
    with pytest.raises(LocalInfluxBusy) as refused:
        second.start()
    assert f"pid {os.getpid()}" in refused.value.holder, f"the holder is not named: {refused.value}"
    assert second.influxd_pid is None and second.bridge_pid is None, "the refused one started processes"
    assert first.query("kept", "SELECT * FROM m"), "the refusal disturbed the first instance"

    first.close()
    third = LocalInflux(tmp_path / "db")
    started.append(third.start())
    assert [row["v"] for row in third.query("kept", "SELECT * FROM m")] == [1], "the data did not persist"


def test_preferred_ports_that_another_instance_holds_give_way_to_free_ones(
    tmp_path: Path, started: list[LocalInflux]
) -> None:
    first = LocalInflux(tmp_path / "a")
    started.append(first.start())
    second = LocalInflux(tmp_path / "b", preferred_ports=(first.influxd_port, first.bridge_port))
    started.append(second.start())

    assert {second.influxd_port, second.bridge_port}.isdisjoint({first.influxd_port, first.bridge_port})
    assert len(second.moved) == 2, f"the moves are not reported: {second.moved}"
    assert f"127.0.0.1:{first.influxd_port} is taken by pid {first.influxd_pid}" in second.moved[0]
    assert f"127.0.0.1:{first.bridge_port} is taken by pid {first.bridge_pid}" in second.moved[1]

    for instance in (first, second):
        instance.create_database("db")
    assert write_point(second, "db", "m v=2 1700000000").status_code == 204
    assert first.query("db", "SELECT * FROM m") == [], "the second wrote into the first's database"
    first.close()
    assert write_point(second, "db", "m v=3 1700000060").status_code == 204, "it depended on the first"
    assert [row["v"] for row in second.query("db", "SELECT * FROM m")] == [2, 3]


def test_preferred_ports_that_are_free_are_used(tmp_path: Path, started: list[LocalInflux]) -> None:
    wanted = (free_port(), free_port())
    local = LocalInflux(tmp_path / "db", preferred_ports=wanted)
    started.append(local.start())
    assert (local.influxd_port, local.bridge_port) == wanted
    assert local.moved == []


def test_a_fixed_port_answered_by_another_process_is_an_error_not_a_ready_influxdb(
    tmp_path: Path, impostor: int
) -> None:
    assert requests.get(f"http://127.0.0.1:{impostor}/ping", timeout=5).status_code == 204, "bad fake"
    local = LocalInflux(tmp_path / "db", influxd_port=impostor)
    with pytest.raises(LocalInfluxError) as failed:
        local.start()
    message = str(failed.value)
    assert f"before listening on 127.0.0.1:{impostor}: that port is taken by pid {os.getpid()}" in message, (
        f"the message does not say that the port is another process's: {message}"
    )
    assert "address already in use" in message, f"influxd's own log line is missing: {message}"
    assert local.influxd_pid is None, "influxd kept running after the failed start"
    assert port_is_free(local.bridge_port), "the bridge was started although influxd was not ours"


def test_a_fixed_bridge_port_answered_by_another_process_is_an_error(tmp_path: Path, impostor: int) -> None:
    local = LocalInflux(tmp_path / "db", bridge_port=impostor)
    with pytest.raises(LocalInfluxError) as failed:
        local.start()
    message = str(failed.value)
    assert message.startswith("nginx (pid "), message
    assert f"127.0.0.1:{impostor}: that port is taken by pid {os.getpid()}" in message, message
    assert "Address already in use" in message, f"nginx's own log line is missing: {message}"
    assert local.influxd_pid is None, "influxd was left running after the bridge failed"
    # The directory is free again.
    with LocalInflux(tmp_path / "db") as again:
        assert again.influxd_pid is not None


def test_a_preferred_port_answered_by_another_process_is_avoided(
    tmp_path: Path, impostor: int, started: list[LocalInflux]
) -> None:
    local = LocalInflux(tmp_path / "db", preferred_ports=(impostor, impostor))
    started.append(local.start())
    assert impostor not in (local.influxd_port, local.bridge_port)
    assert [f"127.0.0.1:{impostor} is taken by pid {os.getpid()}" in note for note in local.moved] == [
        True,
        True,
    ], local.moved
    response = requests.get(f"{local.url}{BRIDGE_PROBE}", timeout=5)
    assert response.headers[INSTANCE_HEADER] == local.instance, "the bridge does not say which instance it is"


def test_the_bridge_wants_the_token_for_queries_and_writes_but_not_for_ping(
    tmp_path: Path, started: list[LocalInflux]
) -> None:
    local = LocalInflux(tmp_path / "db", token="a-token")
    started.append(local.start())
    local.create_database("db")
    query = {"db": "db", "q": "SHOW MEASUREMENTS"}
    for headers in ({}, {"Authorization": "Token wrong"}, {"Authorization": "Bearer a-token"}):
        response = requests.get(f"{local.url}/query", params=query, headers=headers, timeout=10)
        assert response.status_code == 401, f"a query with {headers} was answered {response.status_code}"
        assert response.json() == {"code": "unauthorized", "message": "unauthorized access"}
    good = {"Authorization": "Token a-token"}
    response = requests.get(f"{local.url}/query", params=query, headers=good, timeout=10)
    assert response.status_code == 200 and "results" in response.json(), response.text
    assert (
        requests.post(f"{local.url}/write", params={"db": "db"}, data="m v=1", timeout=10).status_code == 401
    )
    assert requests.get(f"{local.url}/ping", timeout=10).status_code == 204, "ping must need no token"


def test_a_wrong_token_is_refused_on_writes(tmp_path: Path, started: list[LocalInflux]) -> None:
    local = LocalInflux(tmp_path / "db")
    started.append(local.start())
    local.create_database("db")
    assert write_point(local, "db", "m v=1 1700000000", token="wrong").status_code == 401
    assert local.query("db", "SELECT * FROM m") == []


LEAVE_BEHIND = """
import os, sys
from pathlib import Path
from exporter.influxd_bridge import LocalInflux
local = LocalInflux(Path(sys.argv[1])).start()
print(local.influxd_pid, local.bridge_pid, flush=True)
os.kill(os.getpid(), 9)
"""


def test_processes_a_killed_owner_left_behind_keep_the_directory_locked(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LEAVE_BEHIND, str(tmp_path / "db")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    influxd, nginx = (int(pid) for pid in result.stdout.split())
    try:
        with pytest.raises(LocalInfluxBusy) as refused:
            LocalInflux(tmp_path / "db").start()
        holder = refused.value.holder
        assert "is gone, but what it started still runs" in holder, holder
        assert f"influxd pid {influxd}" in holder and f"nginx pid {nginx}" in holder, holder
    finally:
        for pid in (nginx, influxd):
            os.kill(pid, signal.SIGTERM)
    wait_until(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in (influxd, nginx)),
        30,
        "influxd and nginx to exit",
    )
    with LocalInflux(tmp_path / "db") as again:
        assert again.influxd_pid is not None, "the directory stayed locked after its processes ended"


def test_a_502_from_the_real_bridge_is_one_line_without_html(
    tmp_path: Path, started: list[LocalInflux], caplog: pytest.LogCaptureFixture
) -> None:
    local = FaultableInflux(tmp_path / "db")
    started.append(local.start())
    local.create_database("db")
    client = create_app(make_config(local, "db", tmp_path)).test_client()
    local.stop_influxd()  # nginx stays up and answers 502 Bad Gateway with an HTML page
    raw = requests.post(
        f"{local.url}/api/v2/write", headers={"Authorization": f"Token {local.token}"}, timeout=10
    )
    assert raw.status_code == 502 and "<html>" in raw.text, "the bridge no longer answers an HTML 502"

    with caplog.at_level(logging.ERROR, logger="exporter"):
        response = client.post("/push", json=payload("sample-3d-object-data"))
    assert response.status_code == 503
    assert response.json is not None
    message = response.json["message"]
    assert message == (
        "not stored, the device will re-send: "
        "InfluxDB answered 502: Bad Gateway (an HTML page from a proxy in front of InfluxDB)"
    ), f"the camera's message is not a one-line summary: {message!r}"
    logged = [record.getMessage() for record in caplog.records if "answered 503" in record.getMessage()]
    assert len(logged) == 1, f"expected one log line for the 503, got {logged}"
    assert "\n" not in logged[0] and "<" not in logged[0], f"the log line carries markup: {logged[0]!r}"
    assert "Bad Gateway" in logged[0], logged[0]
