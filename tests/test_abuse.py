"""Hostile clients against the real ``serve`` and the real InfluxDB, each attack as it was reported.

Every test repeats one attack of the hostile-client review (its name says which) on loopback, with
bounded loops, and checks what must hold throughout: the receiver stays up and answers ``/healthz``
and a real camera's push within seconds (a liveness bound, not a speed measurement), nothing is
stored for another serial, and memory, metrics, log and dead-letter sizes stay within stated bounds.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from exporter.certs import issue_certificates
from exporter.influxd_bridge import LocalInflux
from tests.faultkit import DROPPED_CONNECTION_WARNINGS, collect_dropped_connections
from tests.serveprocess import ExporterFactory, ExporterProcess
from tests.support import payload

pytestmark = DROPPED_CONNECTION_WARNINGS
_collect = pytest.fixture(autouse=True)(collect_dropped_connections)

CAMERA, CAMERA_TOKEN = "ACCC8E000001", "camera-token-0123456789abcdef"
ATTACKER, ATTACKER_TOKEN = "ACCC8E0000AA", "attacker-token-0123456789abc"
TOKENS = f"{CAMERA_TOKEN}:{CAMERA},{ATTACKER_TOKEN}:{ATTACKER}"
LIVENESS_SECONDS = 5.0  # a real push and /healthz must be answered within this, whatever else goes on
CLIENT_TIMEOUT = 3
# Bounds stated in the README's Security section.
MAX_METRICS_BYTES = 64 * 1024
MAX_LOG_BYTES_PER_ATTACK_PUSH = 2_000
MAX_WORKER_PEAK_RSS_BYTES = 400 * 1024 * 1024  # measured: 200 MB for a 67 MB junk body


def push(
    server: ExporterProcess, document: dict[str, Any] | bytes, token: str, **kw: Any
) -> requests.Response:
    """POST a push with ``token``."""
    body = document if isinstance(document, bytes) else orjson.dumps(document)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    return requests.post(f"{server.url}/push", data=body, headers=headers, timeout=60, **kw)


def camera_push(minute: int = 0) -> dict[str, Any]:
    """The real camera's push: the guide's sample as serial CAMERA, shifted by ``minute`` minutes."""
    document = payload("sample-3d-object-data")
    document["sensor"].update(serial=CAMERA, name="lobby")
    for measurement in document["data"]["measurements"]:
        measurement["utcFrom"] = measurement["utcFrom"].replace("09:", f"{10 + minute % 10:02d}:")
        measurement["utcTo"] = measurement["utcTo"].replace("09:", f"{10 + minute % 10:02d}:")
    return document


def assert_alive(server: ExporterProcess, minute: int = 0, **kw: Any) -> None:
    """/healthz and a real camera's push are answered within LIVENESS_SECONDS."""
    started = time.monotonic()
    assert requests.get(f"{server.url}/healthz", timeout=LIVENESS_SECONDS, **kw).status_code == 200
    response = push(server, camera_push(minute), CAMERA_TOKEN, **kw)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert elapsed < LIVENESS_SECONDS, f"the real push took {elapsed:.1f} s"


def stored_serials(influx: LocalInflux, bucket: str) -> set[str]:
    """Serials with any point in the bucket."""
    return {
        row["value"]
        for row in influx.query(bucket, 'SHOW TAG VALUES FROM "people_count" WITH KEY = "serial"')
    }


def worker_peak_rss(server: ExporterProcess) -> int:
    """The largest peak resident size of the workers (bytes)."""
    peaks = []
    for pid in server.worker_pids():
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text()
            peaks.append(
                int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
            )
    return max(peaks) * 1024


@pytest.fixture
def guarded(exporter_server: ExporterFactory) -> ExporterProcess:
    """serve as documented for production: device tokens bound to serials, a short client timeout."""
    return exporter_server(
        workers=2, env={"AXIS_EXPORTER_TOKENS": TOKENS, "AXIS_EXPORTER_CLIENT_TIMEOUT": str(CLIENT_TIMEOUT)}
    )


def test_a_10_mb_sensor_name_no_longer_crash_loops_the_receiver(
    guarded: ExporterProcess, influx: LocalInflux, bucket: str
) -> None:
    """Attack 1 (critical): three pushes with a 10 MB name under a token bound to its own serial."""
    before = sorted(guarded.worker_pids())
    log_before = len(guarded.log())
    for _ in range(3):
        document = payload("sample-3d-object-data")
        document["sensor"].update(serial=ATTACKER, name="x" * 10_000_000)
        response = push(guarded, document, ATTACKER_TOKEN)
        assert response.status_code == 400 and "sensor.name has 10000000 characters" in response.text
    assert_alive(guarded)
    metrics = requests.get(f"{guarded.admin_url}/metrics", timeout=10).text
    assert len(metrics) < MAX_METRICS_BYTES, f"/metrics grew to {len(metrics)} bytes"
    assert len(guarded.log()) - log_before < 3 * MAX_LOG_BYTES_PER_ATTACK_PUSH + 1_000
    assert sorted(guarded.worker_pids()) == before, "no worker died"
    assert stored_serials(influx, bucket) == {CAMERA}
    runtime = Path(guarded.env["PROMETHEUS_MULTIPROC_DIR"])
    assert sum(f.stat().st_size for f in runtime.rglob("*") if f.is_file()) < 8 * 1024 * 1024


def test_dozens_of_idle_trickling_and_half_tls_connections_do_not_stall_real_pushes(
    exporter_server: ExporterFactory, tmp_path: Path
) -> None:
    """Attack 2 (high, no token needed): idle TCP connections, one-byte tricklers, partial TLS
    ClientHellos and, with a token, requests that stall their body; more than ten times the 8 threads
    the receiver used to have (2 workers x 4)."""
    issued = issue_certificates(tmp_path / "tls", ["127.0.0.1"])
    server = exporter_server(
        "--certfile",
        str(issued.server_cert),
        "--keyfile",
        str(issued.server_key),
        workers=2,
        scheme="https",
        env={"AXIS_EXPORTER_TOKENS": TOKENS, "AXIS_EXPORTER_CLIENT_TIMEOUT": str(CLIENT_TIMEOUT)},
    )
    verify = str(issued.ca_cert)
    with hostile_connections(server.port, idle=40, trickling=30, half_tls=30, stalled_bodies=20) as opened:
        assert opened >= 100
        for minute in range(3):
            assert_alive(server, minute, verify=verify)
            time.sleep(1)
    # The deadlines still hold: with everyone gone quiet, nothing is left open past them.
    assert_alive(server, 5, verify=verify)


@contextlib.contextmanager
def hostile_connections(
    port: int, *, idle: int, trickling: int, half_tls: int, stalled_bodies: int
) -> Iterator[int]:
    """Open the attack's connections (kept open, tricklers fed once a second by the caller's sleeps)."""
    sockets: list[socket.socket] = []
    partial_hello = bytes.fromhex("16030102000100") + os.urandom(40)  # a ClientHello cut short
    head = (
        b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + ATTACKER_TOKEN.encode() + b"\r\nContent-Length: 100000\r\n\r\n{"
    )
    try:
        for count, first in (
            (idle, b""),
            (trickling, b"P"),
            (half_tls, partial_hello),
            (stalled_bodies, b""),
        ):
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                if first:
                    sock.sendall(first)
                sockets.append(sock)
        for sock in sockets[-stalled_bodies:]:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            with contextlib.suppress(OSError):
                wrapped = context.wrap_socket(sock, server_hostname="127.0.0.1")
                wrapped.sendall(head)
                sockets.append(wrapped)
        yield len(sockets)
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


def test_many_distinct_directions_cost_linear_time_and_make_no_series(
    guarded: ExporterProcess, influx: LocalInflux, bucket: str
) -> None:
    """Attack 3 (high): 40k items with distinct directions in one measurement, and a 6.7 MB body of
    them, which took 15 s and 466 s and created 100k series."""
    measurement = {
        "kind": "people-counts",
        "utcFrom": "2021-04-13T09:19:00Z",
        "items": [{"direction": f"d{index}", "count": 1} for index in range(40_000)],
    }
    document = payload("sample-3d-object-data")
    document["sensor"]["serial"] = ATTACKER
    document["data"]["measurements"] = [measurement]
    started = time.monotonic()
    response = push(guarded, document, ATTACKER_TOKEN)
    assert response.status_code == 200 and response.json()["status"] == "partial"
    big = dict(document, data={"measurements": [measurement] * 8})  # 6.7 MB
    response = push(guarded, big, ATTACKER_TOKEN)
    assert response.status_code == 200 and response.json()["rejected"] == 8
    assert time.monotonic() - started < 2 * LIVENESS_SECONDS
    assert_alive(guarded)
    series = influx.query(bucket, 'SHOW SERIES FROM "people_count"')
    assert len(series) <= 2, f"{len(series)} series: only in and out of the real camera may exist"


def test_junk_cannot_fill_the_dead_letter_store_for_a_real_camera(
    exporter_server: ExporterFactory, influx: LocalInflux, bucket: str
) -> None:
    """Attack 4 (medium): junk bodies fill the 1 GiB store (a 67 MB body became 287 MB, 1.5 GB peak
    memory); a real camera's push with one bad measurement then got 503 on every try."""
    server = exporter_server(
        workers=2,
        env={"AXIS_EXPORTER_TOKENS": TOKENS, "AXIS_EXPORTER_DEADLETTER_MAX_BYTES": str(32 * 1024 * 1024)},
    )
    junk = b'{"sensor": {"serial": "' + ATTACKER.encode() + b'"}, "x": "' + b"y" * 67_000_000
    for _ in range(3):
        assert push(server, junk, ATTACKER_TOKEN).status_code == 400
    store = Path(server.env["AXIS_EXPORTER_DEADLETTER_DIR"])
    used = sum(f.stat().st_size for f in store.rglob("*.json"))
    assert used <= 32 * 1024 * 1024 // 16, f"junk took {used} bytes, more than its 16th"
    assert worker_peak_rss(server) < MAX_WORKER_PEAK_RSS_BYTES
    document = camera_push()
    document["data"]["measurements"][0]["items"][0]["count"] = -1
    response = push(server, document, CAMERA_TOKEN)
    assert response.status_code == 200 and response.json()["status"] == "partial", response.text
    assert_alive(server, 1)


def test_a_bound_token_cannot_falsify_another_cameras_numbers(
    guarded: ExporterProcess, influx: LocalInflux, bucket: str
) -> None:
    """Attack 5 (medium): the attacker's bound token pushes as name "lobby" with an int64 count, 2050
    fake names, look-alike serials, and an interval in year 2262."""
    assert push(guarded, camera_push(), CAMERA_TOKEN).status_code == 200
    before = influx.query(bucket, f"SELECT sum(\"count\") FROM people_count WHERE serial = '{CAMERA}'")
    document = camera_push()
    document["sensor"]["serial"] = ATTACKER
    document["data"]["measurements"][0]["items"][0]["count"] = 9223372036854775807
    response = push(guarded, document, ATTACKER_TOKEN)
    assert response.status_code == 200 and response.json()["rejected"] == 1
    for index in range(2050):
        if index % 205 == 0:
            fake = payload("test-connection")
            fake["sensor"].update(serial=ATTACKER, name=f"fake-{index}")
            assert push(guarded, fake, ATTACKER_TOKEN).status_code == 200
    for look_alike in ("accc8e000001", "Accc8E000001", "ACCC8E00000\u0131", "serial1"):
        fake = payload("test-connection")
        fake["sensor"]["serial"] = look_alike
        assert push(guarded, fake, ATTACKER_TOKEN).status_code in (400, 403), look_alike
    future = camera_push()
    future["sensor"]["serial"] = ATTACKER
    future["data"]["measurements"][0].update(utcFrom="2262-04-01T00:00:00Z", utcTo="2262-04-01T00:01:00Z")
    assert push(guarded, future, ATTACKER_TOKEN).json()["rejected"] == 1
    after = influx.query(bucket, f"SELECT sum(\"count\") FROM people_count WHERE serial = '{CAMERA}'")
    assert after == before, "the camera's numbers did not move"
    metrics = requests.get(f"{guarded.admin_url}/metrics", timeout=10).text
    tracked = [line for line in metrics.splitlines() if line.startswith("axis_exporter_sensor_last_push")]
    assert len(tracked) == 2, tracked
    ends = [
        line for line in metrics.splitlines() if line.startswith("axis_exporter_sensor_last_interval_end")
    ]
    assert all(float(line.split()[-1]) < 4e9 for line in ends), "no end in 2262"


def test_device_strings_cannot_forge_log_lines_or_flood_the_log(guarded: ExporterProcess) -> None:
    """Attack 6 (medium): newlines and ANSI escapes in a name forged log lines; a 10 MB name added
    50 MB of log."""
    log_before = len(guarded.log())
    for name in ("lobby\n2026-12-01 INFO push sensor=forged", "\x1b[2J\x1b[31mred", "z" * 10_000_000):
        document = payload("test-connection")
        document["sensor"].update(serial=ATTACKER, name=name)
        assert push(guarded, document, ATTACKER_TOKEN).status_code == 400
    added = guarded.log()[log_before:]
    assert "\x1b" not in added and "INFO push sensor=forged" not in added.replace("\\x0a", "")
    assert all(line.startswith(("20", "[20")) for line in added.splitlines() if line), "no forged line"
    assert len(added) < 3 * MAX_LOG_BYTES_PER_ATTACK_PUSH


def test_small_ones_nesting_extra_attributes_and_credentials(
    guarded: ExporterProcess, exporter_server: ExporterFactory, influx: LocalInflux, bucket: str
) -> None:
    """Attack 7 (low): a measurement nested 260 deep (a 500, kept nowhere), extra item attributes as
    fields (one named time silently dropped), credentials of the InfluxDB URL in /readyz and the log."""
    deep = b'{"a":' * 260 + b"1" + b"}" * 260
    body = (
        b'{"sensor": {"serial": "' + ATTACKER.encode() + b'"}, "data": {"measurements": [{"kind": '
        b'"people-counts", "utcFrom": "2021-04-13T09:19:00Z", "items": ' + deep + b"}]}}"
    )
    response = push(guarded, body, ATTACKER_TOKEN)
    assert response.status_code == 200 and response.json()["status"] == "partial"
    document = camera_push()
    document["data"]["measurements"][0]["items"][0].update(time=5, heightAvg=171.5)
    assert push(guarded, document, CAMERA_TOKEN).status_code == 200
    fields = {row["fieldKey"] for row in influx.query(bucket, 'SHOW FIELD KEYS FROM "people_count"')}
    # What the receiver stores itself (exporter.localday's calendar and net), and nothing a device named.
    assert fields == {"count", "adults", "net", "day_end", "hour", "weekday", "week_end"}, fields
    # InfluxDB 1.8's v2 API takes user:password; none of it may show (here nothing answers there).
    url = "http://reader:s3cret-password@127.0.0.1:9"
    server = exporter_server(workers=1, env={"INFLUXDB_V2_URL": url})
    ready = requests.get(f"{server.admin_url}/readyz", timeout=10)
    assert ready.status_code == 503 and "***@127.0.0.1:9" in ready.text
    assert "s3cret-password" not in ready.text and "s3cret-password" not in server.log()
