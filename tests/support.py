"""Helpers shared by tests: golden payloads, configurations, apps and the converter's lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Flask

from exporter.admin import create_admin_app
from exporter.config import Config, InfluxConfig, PushLimits
from exporter.convert import Converter, ParsedPush, convert_push
from exporter.influxd_bridge import LocalInflux
from exporter.payload import MAX_EPOCH_SECONDS, MeasurementError, parse_push, validate_measurement

PAYLOADS = Path(__file__).parent / "payloads"


def payload(case: str) -> dict[str, Any]:
    """A golden payload from tests/payloads/<case>/push.json, as a dict."""
    document: dict[str, Any] = json.loads((PAYLOADS / case / "push.json").read_text(encoding="utf-8"))
    return document


def make_config(influx: LocalInflux, bucket: str, tmp_path: Path, **overrides: Any) -> Config:
    """Receiver configuration pointing at ``bucket`` of the local InfluxDB."""
    settings: dict[str, Any] = {
        "influx": InfluxConfig(url=influx.url, org="-", token=influx.token, bucket=bucket, timeout_ms=5_000),
        "deadletter_dir": tmp_path / "deadletter",
        **overrides,
    }
    return Config(**settings)


def admin_app_for(app: Flask, config: Config) -> Flask:
    """The admin listener's app sharing ``app``'s metrics and InfluxDB client, as in one process."""
    receiver = app.extensions["axis_exporter"]
    return create_admin_app(config, metrics=receiver.metrics, influx=receiver.writer)


CHUNK = 7  # small, so that chunk boundaries fall everywhere


def converted_lines(
    body: bytes, *, split: bool, received_at: int = 0, now: float | None = None
) -> tuple[list[str], list[str]]:
    """Lines (sensor_push last) and rejection reasons from the receiver's converter."""
    converter = convert_push(
        bytearray(body), now=now, split_min_bytes=0 if split else 1 << 62, piece_bytes=300
    )
    chunks, conversion = converter.collect(received_at, CHUNK)
    lines: list[str] = []
    for chunk in chunks:
        assert len(chunk.text.split("\n") if chunk.text else []) == chunk.line_count, "counted right"
        lines.extend(chunk.lines())
    return lines, [rejected.reason for rejected in conversion.rejected]


def reference_lines(body: bytes, received_at: int = 0) -> tuple[list[str], list[str]]:
    """The same through parse_push -> validate_measurement -> the general path's lines, one measurement
    at a time (no fast path, no slicing)."""
    push = parse_push(body)
    converter = Converter(ParsedPush(push, None), PushLimits(), MAX_EPOCH_SECONDS)
    lines: list[str] = []
    reasons: list[str] = []
    intervals = 0
    for raw in push.raw_measurements:
        try:
            measurement = validate_measurement(raw, PushLimits(), MAX_EPOCH_SECONDS)
        except MeasurementError as exc:
            reasons.append(str(exc))
            continue
        intervals += 1
        lines.extend(converter.measurement_lines(measurement))
    sensor = push.sensor
    lines.append(
        converter.lines.sensor_push(
            application=sensor.application,
            application_version=sensor.application_version,
            ip_address=sensor.ip_address,
            timezone=sensor.timezone,
            test=push.test_connection,
            intervals=intervals,
            timestamp=push.utc_sent if push.utc_sent is not None else received_at,
        )
    )
    return lines, reasons
