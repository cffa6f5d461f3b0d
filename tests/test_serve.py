"""``axis-exporter serve``: real gunicorn workers, configuration errors, chunked bodies."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import orjson
import requests

from exporter.influxd_bridge import LocalInflux
from exporter.processes import free_port
from tests.serveprocess import ExporterFactory
from tests.support import payload


def test_serve_stores_pushes_and_logs_one_line_per_push(
    exporter_server: ExporterFactory, influx: LocalInflux, bucket: str
) -> None:
    server = exporter_server(workers=2)
    assert len(server.worker_pids()) == 2
    response = requests.post(f"{server.url}/push", json=payload("test-connection"), timeout=10)
    assert response.status_code == 200
    response = requests.post(f"{server.url}/push", json=payload("sample-3d-object-data"), timeout=10)
    assert response.status_code == 200, response.text
    assert len(influx.query(bucket, "SELECT * FROM people_count")) == 6
    assert requests.get(f"{server.admin_url}/readyz", timeout=5).status_code == 200
    log = server.log()
    assert "Connection from 127.0.0.1 established successfully" in log, "the socket's address"
    assert "reported address 192.168.1.106" in log
    assert "push sensor=axis-accc8ef3d92e serial=ACCC8EF3D92E intervals=3 points=6" in log
    assert "AXIS_EXPORTER_TOKENS is not set" in log, "running without device auth must be loud"


def test_chunked_body_over_the_limit_is_413_without_reading_it_all(
    exporter_server: ExporterFactory, influx: LocalInflux, bucket: str
) -> None:
    server = exporter_server(workers=1, env={"AXIS_EXPORTER_MAX_BODY_BYTES": "100000"})
    sent = 0

    def endless_body() -> Iterator[bytes]:
        # Bounded: stops on its own after 2 MB even if the server kept reading.
        nonlocal sent
        for _ in range(200):
            sent += 10_000
            yield b" " * 10_000

    response = requests.post(
        f"{server.url}/push",
        data=endless_body(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert "AXIS_EXPORTER_MAX_BODY_BYTES" in response.json()["message"]
    chunked = orjson.dumps(payload("sample-3d-object-data"))
    response = requests.post(
        f"{server.url}/push",
        data=iter([chunked[:100], chunked[100:]]),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, "a chunked body within the limit is fine"


def test_bad_configuration_stops_the_start_with_one_line_naming_the_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AXIS_EXPORTER_", "INFLUXDB_V2_"))}
    env.update(
        {
            "INFLUXDB_V2_URL": "http://127.0.0.1:9",
            "INFLUXDB_V2_BUCKET": "axis",
            "AXIS_EXPORTER_MAX_BODY_BYTES": "lots",
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == ["Error: configuration error: AXIS_EXPORTER_MAX_BODY_BYTES='lots' is not a whole number"]
    env.update({"AXIS_EXPORTER_MAX_BODY_BYTES": "1000", "INFLUXDB_V2_BUCKET": ""})
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert "INFLUXDB_V2_BUCKET" in result.stderr


def test_cli_import_leaves_prometheus_client_unloaded() -> None:
    """serve sets PROMETHEUS_MULTIPROC_DIR before prometheus_client is imported, or workers never share."""
    code = "import sys, exporter.cli; print('prometheus_client' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "False", "a module imported by exporter.cli imports prometheus_client"
    # Nor an HTTP client: gevent patches ssl and sockets in the workers, and cannot patch what the master
    # imported already (it warns "Monkey-patching ssl after ssl has already been imported").
    code = "import sys, exporter.cli; print('urllib3' in sys.modules, 'gevent' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "False False", "exporter.cli imports an HTTP client or gevent"


def test_a_client_trickling_its_body_is_cut_off_and_others_still_get_through(
    exporter_server: ExporterFactory, influx: LocalInflux, bucket: str
) -> None:
    server = exporter_server(workers=1, env={"AXIS_EXPORTER_CLIENT_TIMEOUT": "2"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(
            b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        started = time.monotonic()
        answer = b""
        for _ in range(40):  # bounded: at most ~20 s of trickling
            try:
                slow.sendall(b" ")
            except OSError:
                break
            readable, _, _ = select.select([slow], [], [], 0.5)
            if readable:
                answer = slow.recv(1000)
                break
        elapsed = time.monotonic() - started
        response = requests.post(f"{server.url}/push", json=payload("test-connection"), timeout=10)
        assert response.status_code == 200, "the other thread must still take pushes"
    assert answer.startswith(b"HTTP/1.1 408"), f"expected a 408 for the trickling client, got {answer[:80]!r}"
    assert elapsed < 6, f"the trickling client held its thread for {elapsed:.1f} s"


def test_serve_says_at_start_when_influxdb_does_not_answer(exporter_server: ExporterFactory) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    server = exporter_server(workers=1, env={"INFLUXDB_V2_URL": nowhere})
    assert f"InfluxDB at {nowhere} does not answer" in server.log()
    assert requests.get(f"{server.admin_url}/readyz", timeout=10).status_code == 503


def test_a_body_shorter_than_its_content_length_is_400_and_not_stored(
    exporter_server: ExporterFactory, influx: LocalInflux, bucket: str
) -> None:
    server = exporter_server(workers=1)
    body = orjson.dumps(payload("sample-3d-object-data"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as half:
        half.sendall(
            b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body) + 50}\r\n\r\n".encode()
            + body
        )
        half.shutdown(socket.SHUT_WR)
        answer = b""
        for _ in range(20):  # head and body may come in separate segments
            segment = half.recv(1000)
            answer += segment
            if not segment or answer.endswith(b"}"):
                break
    assert answer.startswith(b"HTTP/1.1 400"), f"a half-closed push must not be stored: {answer[:200]!r}"
    assert b"ended after" in answer
    assert influx.query(bucket, "SELECT * FROM people_count") == []
