"""Fixtures that start real services on loopback: InfluxDB (+ its v2 write bridge) and the receiver."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from flask import Flask
from flask.testing import FlaskClient

from exporter.admin import create_admin_app
from exporter.app import create_app
from exporter.config import Config
from exporter.localdb import LocalInflux, free_port
from tests.statuskit import Commissioned, commission
from tests.support import make_config


@pytest.fixture(scope="session")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalInflux]:
    """A real influxd 1.x with the nginx v2-write bridge, for the whole test session."""
    with LocalInflux(tmp_path_factory.mktemp("influxdb")) as local:
        yield local


@pytest.fixture(scope="session")
def commissioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Commissioned]:
    """A receiver after an installer's first hour of traffic (tests.statuskit), for the status page tests."""
    yield from commission(tmp_path_factory.mktemp("commissioned"))


@pytest.fixture
def bucket(influx: LocalInflux) -> str:
    """A fresh, empty database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    influx.create_database(name)
    return name


@pytest.fixture
def config(influx: LocalInflux, bucket: str, tmp_path: Path) -> Config:
    """Default receiver configuration for one test (no device tokens)."""
    return make_config(influx, bucket, tmp_path)


@pytest.fixture
def app(config: Config) -> Flask:
    """The real app, writing to the test's bucket."""
    return create_app(config)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Flask test client for ``app``."""
    return app.test_client()


def admin_app_for(app: Flask, config: Config) -> Flask:
    """The admin listener's app sharing ``app``'s metrics and InfluxDB client, as in one process."""
    receiver = app.extensions["axis_exporter"]
    return create_admin_app(config, metrics=receiver.metrics, influx=receiver.writer)


@pytest.fixture
def admin_client(app: Flask, config: Config) -> FlaskClient:
    """Flask test client for the admin routes of ``app`` (/metrics, /readyz, /healthz)."""
    return admin_app_for(app, config).test_client()


@dataclass
class ExporterProcess:
    """``axis-exporter serve`` running under real gunicorn in a subprocess."""

    env: dict[str, str]
    args: list[str]
    log_path: Path
    port: int
    admin_port: int
    scheme: str = "http"
    process: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Base URL of the receiver."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """Base URL of the admin listener (/metrics, /readyz, /healthz; always plain HTTP)."""
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def pid(self) -> int:
        """The gunicorn master's pid."""
        assert self.process is not None, "exporter not started"
        return self.process.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until /healthz answers."""
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "exporter",
                    "serve",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--admin-bind",
                    f"127.0.0.1:{self.admin_port}",
                    *self.args,
                ],
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"exporter exited with {self.process.returncode}:\n{self.log()}")
            try:
                with warnings.catch_warnings():
                    # Only "is it up?": the TLS tests verify certificates themselves.
                    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                    requests.get(f"{self.url}/healthz", timeout=1, verify=False)
                requests.get(f"{self.admin_url}/healthz", timeout=1)
                if len(self.worker_pids()) >= int(self.env.get("AXIS_EXPORTER_WORKERS", "1")):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"exporter did not answer within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), then wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def children(self) -> list[int]:
        """Pids of the master's children: the gunicorn workers and the admin process."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def admin_pid(self) -> int | None:
        """Pid of the admin process the master started last, if it still runs."""
        started = re.findall(r"admin process started \(pid (\d+)\)", self.log())
        if started and int(started[-1]) in self.children():
            return int(started[-1])
        return None

    def worker_pids(self) -> list[int]:
        """Pids of the gunicorn workers (the master's children but the admin process)."""
        admin = self.admin_pid()
        return [pid for pid in self.children() if pid != admin]

    def log(self) -> str:
        """Everything the exporter printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


ExporterFactory = Callable[..., ExporterProcess]


@pytest.fixture
def exporter_server(influx: LocalInflux, bucket: str, tmp_path: Path) -> Iterator[ExporterFactory]:
    """Factory: start ``axis-exporter serve`` against the test's bucket; stopped after the test."""
    started: list[ExporterProcess] = []

    def start(*args: str, workers: int = 2, env: dict[str, str] | None = None, **kw: Any) -> ExporterProcess:
        base_env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AXIS_EXPORTER_", "INFLUXDB_V2_", "PROMETHEUS_"))
        }
        index = len(started)
        full_env = {
            **base_env,
            "INFLUXDB_V2_URL": influx.url,
            "INFLUXDB_V2_ORG": "-",
            "INFLUXDB_V2_TOKEN": influx.token,
            "INFLUXDB_V2_BUCKET": bucket,
            "AXIS_EXPORTER_WORKERS": str(workers),
            "AXIS_EXPORTER_DEADLETTER_DIR": str(tmp_path / "deadletter"),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"metrics-{index}"),
            **(env or {}),
        }
        server = ExporterProcess(
            env=full_env,
            args=list(args),
            log_path=tmp_path / f"exporter-{index}.log",
            port=free_port(),
            admin_port=free_port(),
            **kw,
        )
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()
