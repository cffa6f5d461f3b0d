"""The HTTP app: where a push enters, and the answer it gets.

This is the push listener, the one cameras reach: ``POST /push`` (or ``/``), ``GET /healthz`` and a
landing text on ``GET /``, nothing else. Metrics and readiness are on the admin listener (``admin``).

A push goes, in order: token check -> body read (bounded) -> ``convert.parse_body`` (parse, check the
envelope) -> token-for-serial check -> ``convert.Converter.stream`` (check measurements, build line
protocol, in chunks) -> ``writer.InfluxWriter.write_chunks`` -> dead-letter store for what could not be
stored -> 200. The answer is 200 only once InfluxDB confirmed the write. This is the only module that
knows every stage: each of them is handed what it needs and nothing else.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from flask import Flask, Response, request
from gunicorn.http.errors import ParseException
from prometheus_client import CollectorRegistry
from werkzeug.exceptions import HTTPException

from exporter.ahead import Ahead
from exporter.config import Config, ConfigError, DeviceToken, load_config
from exporter.convert import Conversion, Converter, ParsedPush, parse_body
from exporter.deadletter import DeadLetterEntry, DeadLetterFull, DeadLetterStore, Quotas
from exporter.logsafe import loggable
from exporter.metrics import Metrics
from exporter.payload import PayloadError, Push, Rejected
from exporter.pushlog import PushLog, PushRecord
from exporter.readdeadline import ReadDeadlineWatchdog
from exporter.sensors import SensorPush
from exporter.sensorsfile import SensorsFile
from exporter.writer import InfluxWriter, StorageUnavailable, WriteOutcome

log = logging.getLogger("exporter")

RETRY_AFTER_SECONDS = 30
RETRY_AFTER = {"Retry-After": str(RETRY_AFTER_SECONDS)}
_READ_CHUNK = 1 << 20
LANDING_TEXT = (
    "axis-exporter: the receiver of Axis people counters' Generic Data Push.\n"
    "Cameras POST their counts to /push (see the camera's Push Reporting settings).\n"
    "The status page (sensors, recent pushes, what to type into a camera) is on the admin listener\n"
    "(serve --admin-bind; http://127.0.0.1:10464/ unless configured otherwise), not here.\n"
    "Documentation: the README of axis-exporter.\n"
)
_ACCEPTED_TYPES = frozenset({"", "application/json", "text/json", "text/plain", "application/octet-stream"})


@dataclass
class PushError(Exception):
    """An expected failure answered with ``status``; ``result`` is the metrics label."""

    status: int
    result: str
    message: str
    headers: dict[str, str] | None = None


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """A JSON answer: the camera only reads the status code, people read the body."""
    return Response(orjson.dumps(body), status=status, mimetype="application/json", headers=headers)


@dataclass
class PushTrace:
    """What is known of the push being answered, for the push log: the serial once the body parsed."""

    serial: str = ""


class BodyBudget:
    """Bytes of request bodies this worker holds, bounded: event-driven, it may read hundreds at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        """Hold ``size`` more bytes if the budget has room."""
        with self._lock:
            if self.held + size > self.limit:
                return False
            self.held += size
            return True

    def give_back(self, size: int) -> None:
        """Release ``size`` bytes."""
        with self._lock:
            self.held -= size


class PushReceiver:
    """Takes one push from the request to InfluxDB; owns nothing but references to its dependencies."""

    def __init__(
        self,
        config: Config,
        writer: InfluxWriter,
        metrics: Metrics,
        deadletter: DeadLetterStore,
        push_log: PushLog,
        sensors_file: SensorsFile,
    ) -> None:
        self.config = config
        self.writer = writer
        self.metrics = metrics
        self.deadletter = deadletter
        self.push_log = push_log
        self.sensors_file = sensors_file
        self.read_deadline = ReadDeadlineWatchdog(config.client_timeout_seconds)
        self.body_budget = BodyBudget(config.max_inflight_body_bytes)

    def handle(self) -> Response:
        """Answer the current request; every path is counted by result."""
        started = time.perf_counter()
        arrived_at = time.time()
        trace = PushTrace()
        try:
            status, body = self._receive(trace)
            result = body["status"]
            response = json_response(status, body)
            message = body.get("message", "")
        except PushError as exc:
            status, body, result, message = exc.status, {}, exc.result, exc.message
            response = json_response(exc.status, {"status": "error", "message": exc.message}, exc.headers)
            level = logging.WARNING if exc.status != 503 else logging.ERROR
            log.log(
                level,
                "push from %s answered %d: %s",
                request.remote_addr,
                exc.status,
                loggable(exc.message, 400),
            )
        self.metrics.pushes.labels(result).inc()
        self.metrics.push_duration.observe(time.perf_counter() - started)
        record = PushRecord(
            received_at=arrived_at,
            source_address=request.remote_addr or "",
            serial=trace.serial,
            status=status,
            result=result,
            intervals=body.get("intervals", 0),
            points=body.get("points", 0),
            message=message,
        )
        # Once the answer is on its way: the status page's bookkeeping never delays a camera.
        response.call_on_close(functools.partial(self.push_log.record, record))
        return response

    def _authorize(self) -> DeviceToken | None:
        if not self.config.auth_required:
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        matched = None
        if scheme.lower() == "bearer" and presented:
            # Compare with every token so the time taken does not reveal which one nearly matched.
            for token in self.config.device_tokens:
                if hmac.compare_digest(token.token.encode(), presented.strip().encode()):
                    matched = token
        if matched is None:
            raise PushError(
                401,
                "unauthorized",
                "missing or wrong API token: enter the token in the device's push settings (API token)",
                {"WWW-Authenticate": 'Bearer realm="axis-exporter"'},
            )
        return matched

    def _read_body(self, body: bytearray) -> None:
        """Read the request's body into ``body``, within the size limit, the deadline and the budget."""
        limit = self.config.max_body_bytes
        too_large = PushError(
            413,
            "too_large",
            f"body larger than {limit} bytes: raise AXIS_EXPORTER_MAX_BODY_BYTES if this push is genuine",
        )
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        busy = PushError(
            503,
            "busy",
            "the receiver holds as many bodies as AXIS_EXPORTER_MAX_INFLIGHT_BYTES allows; try again",
            RETRY_AFTER,
        )
        too_slow = PushError(
            408,
            "client_timeout",
            f"the body did not arrive within {self.config.client_timeout_seconds} s "
            "(AXIS_EXPORTER_CLIENT_TIMEOUT)",
        )
        with self.read_deadline.watch(request.environ.get("gunicorn.socket")) as deadline:
            try:
                # Counted while reading, so a chunked body without Content-Length cannot exhaust memory.
                # One growing buffer: joining a list of chunks would hold the body twice at the end.
                while chunk := request.stream.read(_READ_CHUNK):
                    if len(body) + len(chunk) > limit:
                        raise too_large
                    if not self.body_budget.take(len(chunk)):
                        raise busy
                    body += chunk
            except (OSError, ParseException) as exc:
                if deadline is not None and deadline.expired:  # the cut-off read failed mid-chunk
                    raise too_slow from None
                # A body cut short or a broken chunked encoding: the client's fault, not ours.
                raise PushError(400, "bad_request", f"the request body could not be read: {exc!r}") from None
        if deadline is not None and deadline.expired:
            raise too_slow
        if request.content_length is not None and len(body) != request.content_length:
            # gunicorn ends the stream quietly when a client half-closes early: never store half a push.
            raise PushError(
                400,
                "bad_request",
                f"the body ended after {len(body)} of {request.content_length} bytes",
            )
        self.metrics.push_body_bytes.observe(len(body))

    def _keep(self, entry: DeadLetterEntry) -> None:
        """Store ``entry`` in the dead-letter store and count it; DeadLetterFull propagates."""
        written = self.deadletter.put(entry)
        self.metrics.deadletter_measurements.inc(max(len(entry.items), 1))
        self.metrics.deadletter_bytes.inc(written)

    def _receive(self, trace: PushTrace) -> tuple[int, dict[str, Any]]:
        token = self._authorize()
        if request.mimetype not in _ACCEPTED_TYPES and not request.mimetype.endswith("+json"):
            raise PushError(
                415,
                "unsupported_media_type",
                f"Content-Type {request.mimetype!r} is not accepted: send the push as application/json",
            )
        body = bytearray()
        held = 0
        try:
            try:
                self._read_body(body)
            finally:
                held = len(body)
            received_at = int(time.time())
            parsed = self._parse(body)
            # A body parsed whole is not needed any more; a sliced one lives on in its parser until
            # converted, which is why the budget is held until the push is answered.
            del body
            return self._convert_and_store(parsed, token, trace, received_at)
        finally:
            self.body_budget.give_back(held)

    def _parse(self, body: bytearray) -> ParsedPush:
        """The push in ``body``; 400 (and a sample of the body kept) when it is not one."""
        try:
            return parse_body(body, self.config.limits)
        except PayloadError as exc:
            self._keep_bad_body(body, str(exc))
            raise PushError(400, "bad_request", str(exc)) from None

    def _convert_and_store(
        self, parsed: ParsedPush, token: DeviceToken | None, trace: PushTrace, received_at: int
    ) -> tuple[int, dict[str, Any]]:
        push = parsed.push
        trace.serial = push.sensor.serial
        # Before any measurement is looked at: a token bound to other serials costs us nothing more.
        if token is not None and not token.allows(push.sensor.serial):
            raise PushError(
                403,
                "forbidden",
                f"this API token is not allowed to push for serial {push.sensor.serial!r}",
            )
        for warning in push.warnings:
            log.warning(
                "sensor %s (%s): %s", loggable(push.sensor.name), push.sensor.serial, loggable(warning, 400)
            )
        limits = self.config.limits
        converter = Converter(
            parsed,
            limits,
            limits.latest_interval_end(received_at),
            labels=self.sensors_file.labels(push.sensor.serial),
            day_start_minutes=self.config.day_start_minutes,
        )
        token_id = str(self.config.device_tokens.index(token)) if token is not None else ""
        return self._store(converter, received_at, token_id)

    def _keep_bad_body(self, body: bytearray, reason: str) -> None:
        """A sample of a body answered 400: it can never be stored, but someone may want to see it."""
        written = self.deadletter.put_junk(
            reason, request.remote_addr or "", body, request.content_type or ""
        )
        if written:
            self.metrics.deadletter_measurements.inc()
            self.metrics.deadletter_bytes.inc(written)

    def _write(self, converter: Converter, received_at: int) -> tuple[WriteOutcome, Conversion]:
        """Convert and write; the sensor_push line comes last, so that it implies the data before it."""
        chunk_lines = self.config.write_chunk_lines
        if not converter.parsed.sliced:
            chunks, conversion = converter.collect(received_at, chunk_lines)
            return self.writer.write_chunks(chunks), conversion
        # A large push: the next chunk is converted in another thread while InfluxDB stores this one.
        ahead = Ahead(converter.stream(received_at, chunk_lines))
        try:
            outcome = self.writer.write_chunks(ahead)
        finally:
            ahead.close()  # stops converting early if a write failed
        assert ahead.returned is not None, "the writer consumed every chunk"
        return outcome, ahead.returned

    def _store(self, converter: Converter, received_at: int, token_id: str) -> tuple[int, dict[str, Any]]:
        started = time.perf_counter()
        push = converter.push
        sensor = push.sensor
        try:
            outcome, conversion = self._write(converter, received_at)
            self.metrics.influxdb_up.set(1)
        except StorageUnavailable as exc:
            self.metrics.influxdb_up.set(0)
            raise PushError(
                503,
                "storage_unavailable",
                f"not stored, the device will re-send: {exc}",
                RETRY_AFTER,
            ) from None
        self.metrics.points_written.inc(outcome.written)
        try:
            self._keep_rejected(push, conversion.rejected, outcome.refused, token_id)
        except DeadLetterFull as exc:
            # The device keeps what we answer non-200 for; that beats dropping the data here.
            raise PushError(503, "storage_unavailable", str(exc), RETRY_AFTER) from None
        intervals = conversion.intervals
        self.metrics.record_sensor_push(
            SensorPush(
                serial=sensor.serial,
                name=sensor.name,
                application=sensor.application,
                application_version=sensor.application_version,
                timezone=sensor.timezone,
                ip_address=sensor.ip_address,
                source_address=request.remote_addr or "",
                pushed_at=received_at,
                intervals=intervals,
                span=conversion.span,
            )
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        if push.test_connection:
            # The address the connection came from; the one the camera reports may sit behind NAT.
            log.info(
                "Connection from %s established successfully (sensor %s, serial %s, reported address %s)",
                request.remote_addr,
                loggable(sensor.name),
                sensor.serial,
                sensor.ip_address or "none",
            )
            return 200, {"status": "test_connection", "message": "connection established", "points": 1}
        points = outcome.written - 1
        not_stored = len(conversion.rejected) + len(outcome.refused)
        log.info(
            "push sensor=%s serial=%s intervals=%d points=%d rejected=%d %.1f ms",
            loggable(sensor.name),
            sensor.serial,
            intervals,
            points,
            not_stored,
            elapsed_ms,
        )
        body: dict[str, Any] = {
            "status": "partial" if not_stored else "ok",
            "intervals": intervals,
            "points": points,
            "rejected": not_stored,
        }
        if not_stored:
            body["message"] = (
                f"{not_stored} measurement(s)/point(s) could not be stored and were kept in the "
                "dead-letter store; the rest is stored"
            )
        return 200, body

    def _keep_rejected(
        self, push: Push, rejected: list[Rejected], refused: list[tuple[str, str]], token_id: str
    ) -> None:
        common = {
            "serial": push.sensor.serial,
            "remote_addr": request.remote_addr or "",
            "token_id": token_id,
        }
        if rejected:
            reasons = sorted({r.reason for r in rejected})
            self._keep(
                DeadLetterEntry(
                    reason="invalid measurement(s): " + "; ".join(reasons[:10]),
                    items=[{"reason": r.reason, "measurement": r.raw} for r in rejected],
                    **common,
                )
            )
        if refused:
            self._keep(
                DeadLetterEntry(
                    reason="refused by InfluxDB: " + refused[0][1],
                    items=[{"reason": reason, "line": line} for line, reason in refused],
                    **common,
                )
            )


def create_app(
    config: Config | None = None,
    *,
    writer: InfluxWriter | None = None,
    metrics: Metrics | None = None,
    deadletter: DeadLetterStore | None = None,
    push_log: PushLog | None = None,
    sensors_file: SensorsFile | None = None,
) -> Flask:
    """Build the WSGI app; dependencies not given are made from ``config`` (default: the environment)."""
    if config is None:
        config = load_config(os.environ)
    if sensors_file is None:
        sensors_file = SensorsFile.from_config(config)  # SensorsFileError names the line and the rule
    if metrics is None:
        metrics = Metrics(
            CollectorRegistry(auto_describe=True),
            config.max_sensors,
            config.prometheus_multiproc_dir,
            labels_of=sensors_file.labels,
        )
    if writer is None:
        if config.influx is None:
            raise ConfigError(
                "INFLUXDB_V2_URL is not set: point it at InfluxDB (or run `axis-exporter serve`, which "
                "starts a local one)"
            )
        writer = InfluxWriter(
            config.influx, config.write_chunk_lines, metrics.influxdb_write_duration.observe
        )
    if deadletter is None:
        deadletter = DeadLetterStore(config.deadletter_dir, Quotas.from_total(config.deadletter_max_bytes))
    if push_log is None:
        push_log = PushLog(metrics.sensors.path)  # beside the sensor registry, in the runtime database
    receiver = PushReceiver(config, writer, metrics, deadletter, push_log, sensors_file)

    app = Flask("exporter")
    app.extensions["axis_exporter"] = receiver

    if not config.auth_required:
        log.warning(
            "AXIS_EXPORTER_TOKENS is not set: ANY client can push data. Set device tokens for production."
        )

    @app.post("/push")
    @app.post("/")
    def push() -> Response:
        return receiver.handle()

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response(200, {"status": "ok"})

    @app.get("/")
    def landing() -> Response:
        # Someone opening the push URL in a browser learns what answers; nothing here names a camera.
        return Response(LANDING_TEXT, mimetype="text/plain")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        return json_response(status, {"status": "error", "message": exc.description or exc.name})

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", loggable(request.method, 16), loggable(request.path))
        if request.method == "POST":
            metrics.pushes.labels("internal_error").inc()
        return json_response(500, {"status": "error", "message": "internal error; see the receiver's log"})

    return app
