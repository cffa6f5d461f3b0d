"""Helpers shared by tests: golden payloads and configurations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exporter.config import Config, InfluxConfig
from exporter.lineprotocol import PushLineBuilder, convert_push
from exporter.localdb import LocalInflux
from exporter.payload import Rejected, iter_measurements, parse_push

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


CHUNK = 7  # small, so that chunk boundaries fall everywhere


def converted_lines(
    body: bytes, *, split: bool, received_at: int = 0, now: float | None = None
) -> tuple[list[str], list[str]]:
    """Lines (sensor_push last) and rejection reasons from the receiver's converter."""
    converted = convert_push(
        bytearray(body), now=now, split_min_bytes=0 if split else 1 << 62, piece_bytes=300
    )
    lines: list[str] = []
    for chunk in converted.chunks(received_at, CHUNK):
        assert len(chunk.text.split("\n") if chunk.text else []) == chunk.line_count, "counted right"
        lines.extend(chunk.lines())
    return lines, [rejected.reason for rejected in converted.rejected]


def reference_lines(body: bytes, received_at: int = 0) -> tuple[list[str], list[str]]:
    """The same through parse_push -> iter_measurements -> PushLineBuilder, one measurement at a time."""
    push = parse_push(body)
    builder = PushLineBuilder(push)
    lines: list[str] = []
    reasons: list[str] = []
    intervals = 0
    for measurement in iter_measurements(push):
        if isinstance(measurement, Rejected):
            reasons.append(measurement.reason)
        else:
            intervals += 1
            lines.extend(builder.measurement_lines(measurement))
    lines.append(builder.sensor_push_line(intervals, received_at))
    return lines, reasons
