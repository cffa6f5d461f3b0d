"""The two listeners of ``serve``: pushes on one (what cameras reach), metrics and probes on the other.

The admin listener runs in a process of its own beside gunicorn's workers; it must keep answering, with
the right totals, when workers die, and come back when it dies itself.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from flask import Flask

from exporter.cli import DEFAULT_ADMIN_BIND
from exporter.config import Config
from exporter.processes import free_port, wait_until
from tests.serveprocess import ExporterFactory, ExporterProcess
from tests.support import admin_app_for, payload


def ok_pushes(server: ExporterProcess) -> float:
    """``axis_exporter_pushes_total{result="ok"}`` as the admin listener reports it."""
    for line in requests.get(f"{server.admin_url}/metrics", timeout=10).text.splitlines():
        if line.startswith('axis_exporter_pushes_total{result="ok"}'):
            return float(line.split()[-1])
    raise AssertionError("no ok counter in /metrics")


def test_the_push_listener_serves_pushes_and_nothing_else(exporter_server: ExporterFactory) -> None:
    server = exporter_server(workers=1)
    for path in ("/metrics", "/readyz", "/status", "/api/status"):
        response = requests.get(f"{server.url}{path}", timeout=10)
        assert response.status_code == 404, f"{path} must not face the cameras: {response.status_code}"
    landing = requests.get(f"{server.url}/", timeout=10)
    assert landing.status_code == 200 and "Generic Data Push" in landing.text
    assert "serial" not in landing.text.lower(), "the landing text names no camera"
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    response = requests.post(f"{server.url}/push", json=payload("sample-3d-object-data"), timeout=10)
    assert response.status_code == 200, response.text

    assert requests.get(f"{server.admin_url}/healthz", timeout=10).status_code == 200
    assert requests.get(f"{server.admin_url}/readyz", timeout=10).status_code == 200
    metrics = requests.get(f"{server.admin_url}/metrics", timeout=10)
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert 'axis_exporter_sensor_intervals_total{serial="ACCC8EF3D92E"} 3.0' in (metrics.text)
    pushed = requests.post(f"{server.admin_url}/push", json=payload("sample-3d-object-data"), timeout=10)
    assert pushed.status_code in (404, 405), "the admin listener takes no pushes"


def test_the_admin_listener_outlives_workers_and_is_restarted_when_it_dies(
    exporter_server: ExporterFactory,
) -> None:
    server = exporter_server(workers=2)
    for _ in range(4):
        response = requests.post(f"{server.url}/push", json=payload("sample-3d-object-data"), timeout=10)
        assert response.status_code == 200
    assert ok_pushes(server) == 4
    for worker in server.worker_pids():
        os.kill(worker, signal.SIGKILL)
    # Straight after the kill: no worker may be alive, the admin listener answers all the same.
    assert ok_pushes(server) == 4, "dead workers' counts stay in the total"
    wait_until(lambda: len(server.worker_pids()) == 2, 30, "gunicorn to replace the killed workers")

    admin = server.admin_pid()
    assert admin is not None
    os.kill(admin, signal.SIGKILL)
    wait_until(
        lambda: server.admin_pid() not in (None, admin), 15, "the master to start the admin process again"
    )
    wait_until(lambda: _answers(f"{server.admin_url}/healthz"), 15, "the new admin process to answer")
    assert ok_pushes(server) == 4
    assert "admin process (pid" in server.log() and "exited" in server.log()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_stopping_serve_stops_the_admin_process_and_removes_its_temporary_metrics_dir(
    exporter_server: ExporterFactory, tmp_path: Path
) -> None:
    # Without PROMETHEUS_MULTIPROC_DIR, serve makes a private directory and must not leave it behind.
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    server = exporter_server(workers=2, env={"PROMETHEUS_MULTIPROC_DIR": "", "TMPDIR": str(temporary)})
    (directory,) = temporary.iterdir()
    assert directory.name.startswith("axis-exporter-metrics-") and any(directory.glob("*.db"))
    admin = server.admin_pid()
    assert admin is not None
    os.kill(server.worker_pids()[0], signal.SIGTERM)  # a worker leaving must not take the directory along
    wait_until(lambda: len(server.worker_pids()) == 2, 30, "gunicorn to replace the stopped worker")
    assert directory.is_dir(), "a worker's exit removed the master's metrics directory"
    server.stop()
    assert list(temporary.iterdir()) == [], "serve left its metrics directory behind"
    assert not Path(f"/proc/{admin}").exists(), "the admin process outlived serve"


def serve_once(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``serve`` expecting it to refuse to start; InfluxDB need not answer for that."""
    base = {
        "PATH": os.environ["PATH"],
        "INFLUXDB_V2_URL": f"http://127.0.0.1:{free_port()}",
        "INFLUXDB_V2_BUCKET": "axis",
    }
    return subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--bind", f"127.0.0.1:{free_port()}", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_taken_admin_port_stops_the_start_naming_the_option(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = serve_once(
            {"AXIS_EXPORTER_ADMIN_BIND": f"127.0.0.1:{port}", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
        )
    assert result.returncode != 0
    assert f"--admin-bind (AXIS_EXPORTER_ADMIN_BIND) 127.0.0.1:{port}: cannot listen there" in result.stderr


def test_the_default_admin_listener_is_on_loopback() -> None:
    host, _, port = DEFAULT_ADMIN_BIND.rpartition(":")
    # 9100-9999 is fully allocated; Prometheus' docs advise ports outside it, and 10464 has no entry.
    assert host == "127.0.0.1" and port == "10464"
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--help"], capture_output=True, text=True, check=True
    )
    assert f"[default: {DEFAULT_ADMIN_BIND}]" in " ".join(result.stdout.split())
    assert "AXIS_EXPORTER_ADMIN_BIND" in result.stdout


def test_an_unwritable_metrics_dir_stops_the_start_naming_the_variable(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = serve_once(
        {"PROMETHEUS_MULTIPROC_DIR": str(not_a_dir / "metrics")}, "--admin-bind", f"127.0.0.1:{free_port()}"
    )
    assert result.returncode != 0
    assert f"PROMETHEUS_MULTIPROC_DIR={not_a_dir / 'metrics'} is not writable" in result.stderr


GRAFANA_NOTIFICATION = {
    "receiver": "axis-operators",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "Sensor stopped pushing", "sensor": "entrance"},
            "annotations": {
                "summary": "Sensor entrance\n2026-12-01 INFO forged line (ACCC8EF3D92E) stopped pushing"
            },
        }
    ],
}


def test_alerts_without_a_destination_are_logged_escaped_and_counted(
    app: Flask, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = app.extensions["axis_exporter"].metrics
    assert metrics.registry is not None
    client = admin_app_for(app, config).test_client()
    with caplog.at_level(logging.WARNING, logger="exporter"):
        assert client.post("/alerts", json=GRAFANA_NOTIFICATION).status_code == 200
        assert client.post("/alerts", data=b"not json").status_code == 200
    assert metrics.registry.get_sample_value("axis_exporter_unrouted_alert_notifications_total") == 2
    (first, second) = [record.getMessage() for record in caplog.records]
    assert "no destination configured" in first and "secrets/alert-webhook-url" in first
    assert "[firing] Sensor entrance\\x0a2026-12-01 INFO forged line" in first, (
        "a newline cannot forge a line"
    )
    assert "\n" not in first
    assert "8 bytes that are not JSON" in second
    assert client.post("/alerts", data=b"x" * (2 << 20)).status_code == 413
