"""Helpers shared by tests: golden payloads and configurations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exporter.config import Config, InfluxConfig
from exporter.localdb import LocalInflux

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
