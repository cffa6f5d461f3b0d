"""Fixtures that start real services on loopback: InfluxDB (+ its v2 write bridge) and the receiver."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from exporter.app import create_app
from exporter.config import Config
from exporter.influxd_bridge import LocalInflux
from exporter.processes import free_port
from tests.influxfaults import FaultableInflux
from tests.serveprocess import ExporterFactory, ExporterProcess, clean_env
from tests.statuskit import Commissioned, commission
from tests.support import admin_app_for, make_config


@pytest.fixture(scope="session")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultableInflux]:
    """A real influxd 1.x with the nginx v2-write bridge, for the whole test session."""
    with FaultableInflux(tmp_path_factory.mktemp("influxdb")) as local:
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


@pytest.fixture
def admin_client(app: Flask, config: Config) -> FlaskClient:
    """Flask test client for the admin routes of ``app`` (/metrics, /readyz, /healthz)."""
    return admin_app_for(app, config).test_client()


@pytest.fixture
def exporter_server(influx: LocalInflux, bucket: str, tmp_path: Path) -> Iterator[ExporterFactory]:
    """Factory: start ``axis-exporter serve`` against the test's bucket; stopped after the test."""
    started: list[ExporterProcess] = []

    def start(*args: str, workers: int = 2, env: dict[str, str] | None = None, **kw: Any) -> ExporterProcess:
        index = len(started)
        full_env = {
            **clean_env(),
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
