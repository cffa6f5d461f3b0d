"""The admin listener, plain HTTP for the internal network: the status page and what monitoring needs.

``GET /`` is the status page for the person commissioning cameras (``status``), ``/api/status`` the same
as JSON and ``/ca.pem`` the CA to upload to cameras; ``/metrics``, ``/readyz`` and ``/healthz`` are for
Prometheus and probes. It also takes ``POST /alerts``: where Grafana's alert notifications go until a
real destination is set, so that they are logged and counted rather than lost.

Cameras reach the push listener, often across the internet; it serves pushes and nothing else. What
operators and Prometheus need (per-sensor metrics name every camera) is served here instead, on another
address that ``serve`` binds to loopback unless told otherwise.

Under ``serve`` this runs in a process of its own, forked by the gunicorn master beside the workers
(``server.AdminProcess``). It reads the workers' metrics from the multiprocess directory, so it answers
the same whichever worker is busy, died or was recycled, and the master starts it again if it dies.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import signal
import socket
import socketserver
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import orjson
from flask import Flask, Response, render_template, request
from werkzeug.exceptions import HTTPException

from exporter.app import RETRY_AFTER, json_response
from exporter.config import Config
from exporter.deadletter import DeadLetterStore, Quotas
from exporter.influxread import InfluxReader
from exporter.logsafe import loggable
from exporter.metrics import Metrics, exposition
from exporter.pushlog import PushLog
from exporter.sensorsfile import SensorsFile
from exporter.stackcheck import ALERT_SINK_PATH
from exporter.status import ListenerInfo, StatusSource
from exporter.writer import InfluxWriter

log = logging.getLogger("exporter")

# A scrape or a probe sends a few hundred bytes: a client slower than this is not one of ours.
CLIENT_TIMEOUT_SECONDS = 10
# A Grafana notification is a few kB per alert; more is not one.
MAX_ALERT_BODY_BYTES = 1 << 20
ALERTS_LOGGED_PER_NOTIFICATION = 5
STATUS_REFRESH_SECONDS = 15


def create_admin_app(
    config: Config, *, metrics: Metrics, influx: InfluxWriter, status: StatusSource | None = None
) -> Flask:
    """The admin routes; ``influx`` answers whether InfluxDB is reachable (its check is cached 5 s).

    Without ``status`` (no push listener to describe), ``/`` and ``/api/status`` answer 404.
    """
    app = Flask("exporter.admin")
    app.config["MAX_CONTENT_LENGTH"] = MAX_ALERT_BODY_BYTES
    _register_filters(app)

    @app.get("/")
    def status_page() -> Response | tuple[str, int]:
        if status is None:
            return json_response(404, {"status": "error", "message": "no status page in this process"})
        report = status.report(host=request.host)
        html = render_template(
            "status.html",
            report=report,
            counts=report.state_counts(),
            refresh_seconds=STATUS_REFRESH_SECONDS,
        )
        return Response(html, mimetype="text/html", headers={"Cache-Control": "no-store"})

    @app.get("/api/status")
    def status_json() -> Response:
        if status is None:
            return json_response(404, {"status": "error", "message": "no status page in this process"})
        return json_response(200, status.report(host=request.host).as_dict(), {"Cache-Control": "no-store"})

    @app.get("/ca.pem")
    def ca_certificate() -> Response:
        pem = status.ca_pem() if status is not None else None
        if pem is None:
            return json_response(
                404,
                {
                    "status": "error",
                    "message": "no CA certificate: the push listener's certificate was not "
                    "made by `axis-exporter certs` (or it serves plain HTTP)",
                },
            )
        return Response(
            pem,
            mimetype="application/x-pem-file",
            headers={"Content-Disposition": 'attachment; filename="CA-cert.pem"'},
        )

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response(200, {"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        ready = influx.reachable()
        metrics.influxdb_up.set(1 if ready else 0)
        if ready:
            return json_response(200, {"status": "ready"})
        return json_response(
            503,
            {"status": "unavailable", "message": f"InfluxDB at {influx.config.shown_url} is not reachable"},
            RETRY_AFTER,
        )

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        # So that influxdb_up is current without pushes or probes (the check is cached for 5 s).
        metrics.influxdb_up.set(1 if influx.reachable() else 0)
        text, content_type = exposition(metrics, config.prometheus_multiproc_dir)
        return Response(text, content_type=content_type)

    @app.post(ALERT_SINK_PATH)
    def unrouted_alert() -> Response:
        metrics.unrouted_alert_notifications.inc()
        log.warning(
            "alert notification with no destination configured (it is only in this log): %s. Put your "
            "webhook URL in secrets/alert-webhook-url (docker compose) or edit Grafana's contact point",
            describe_notification(request.get_data(cache=False)),
        )
        return json_response(200, {"status": "logged"})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return json_response(exc.code or 500, {"status": "error", "message": exc.description or exc.name})

    return app


def _register_filters(app: Flask) -> None:
    """How the status page writes durations, times, sizes and answers."""

    @app.template_filter("duration")
    def duration(seconds: float | None) -> str:
        if seconds is None:
            return "-"
        seconds = int(seconds)
        if seconds < 120:
            return f"{seconds} s"
        if seconds < 7200:
            return f"{seconds // 60} min"
        if seconds < 2 * 86400:
            return f"{seconds // 3600} h {seconds % 3600 // 60} min"
        return f"{seconds // 86400} d {seconds % 86400 // 3600} h"

    @app.template_filter("utc")
    def utc(timestamp: float) -> str:
        return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

    @app.template_filter("size")
    def size(count: int) -> str:
        for unit in ("bytes", "KiB", "MiB"):
            if count < 1024:
                return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
            count //= 1024
        return f"{count:.1f} GiB"

    @app.template_filter("slug")
    def slug(text: str) -> str:
        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")

    @app.template_filter("code_class")
    def code_class(status: int) -> str:
        if status < 300:
            return "code-ok"
        return "code-busy" if status in (408, 503) else "code-bad"


class _QuietHandler(WSGIRequestHandler):
    """Answers without an access log line per scrape, and drops clients that stall."""

    timeout = CLIENT_TIMEOUT_SECONDS

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("admin %s: " + format, self.address_string(), *args)


class AdminHTTPServer(socketserver.ThreadingMixIn, WSGIServer):
    """The stdlib's WSGI server (as prometheus-client's own ``start_http_server``), on a bound socket."""

    daemon_threads = True

    def __init__(self, listening: socket.socket, app: Flask) -> None:
        host, port = listening.getsockname()[:2]
        self.address_family = listening.family
        super().__init__((host, port), _QuietHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = listening
        # What server_bind would have set up, without binding again.
        self.server_name = host
        self.server_port = port
        self.setup_environ()
        self.set_app(app)


def describe_notification(body: bytes) -> str:
    """One line for a Grafana webhook notification: the status and summary of its first alerts."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"{len(body)} bytes that are not JSON"
    alerts = document.get("alerts") if isinstance(document, dict) else None
    if not isinstance(alerts, list) or not alerts:
        return "a notification without alerts"
    summaries = []
    for alert in alerts[:ALERTS_LOGGED_PER_NOTIFICATION]:
        alert = alert if isinstance(alert, dict) else {}
        annotations, labels = alert.get("annotations"), alert.get("labels")
        text = (annotations.get("summary") if isinstance(annotations, dict) else None) or (
            labels.get("alertname") if isinstance(labels, dict) else None
        )
        summaries.append(f"[{loggable(alert.get('status', '?'), 12)}] {loggable(text or 'an alert')}")
    more = len(alerts) - len(summaries)
    return "; ".join(summaries) + (f"; and {more} more" if more > 0 else "")


def run_admin_process(
    listening: socket.socket,
    config: Config,
    parent_pid: int,
    listener: ListenerInfo,
    sensors_file: SensorsFile | None = None,
) -> None:
    """Serve the admin routes until SIGTERM, or until the process that started this one is gone."""
    running = True

    def stop(signum: int, frame: object) -> None:
        nonlocal running
        running = False

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, stop)
    assert config.influx is not None, "serve always has an InfluxDB"
    labels_of = sensors_file.labels if sensors_file is not None else None
    metrics = Metrics(None, config.max_sensors, config.prometheus_multiproc_dir, labels_of=labels_of)
    influx = InfluxWriter(config.influx, config.write_chunk_lines)
    status = StatusSource(
        config,
        listener,
        sensors=metrics.sensors,
        push_log=PushLog(metrics.sensors.path),
        deadletter=DeadLetterStore(config.deadletter_dir, Quotas.from_total(config.deadletter_max_bytes)),
        reader=InfluxReader(config.influx),
        influx_reachable=influx.reachable,
        sensors_file=sensors_file,
    )
    app = create_admin_app(config, metrics=metrics, influx=influx, status=status)
    server = AdminHTTPServer(listening, app)
    server.timeout = 0.5  # how often handle_request returns to look at the flags below
    log.info(
        "admin listener on http://%s:%d (status page /, /api/status, /metrics, /readyz, /healthz)",
        *listening.getsockname()[:2],
    )
    try:
        while running and os.getppid() == parent_pid:
            server.handle_request()
    finally:
        server.server_close()
        influx.close()
