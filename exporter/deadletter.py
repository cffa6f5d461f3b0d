"""Dead-letter store: data the receiver could not put in InfluxDB is kept on disk, not dropped.

One JSON file per event, named so that ``ls`` sorts them by time. The directory is bounded in size;
when it is full the caller learns it (and answers 503 where the device can keep the data instead).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)


class DeadLetterFull(Exception):
    """The dead-letter directory reached its size limit (or cannot be written)."""


@dataclass(frozen=True)
class DeadLetterEntry:
    """What one file of the store holds."""

    reason: str
    serial: str
    remote_addr: str
    items: list[dict[str, Any]]
    raw_body: str | None = None


class DeadLetterStore:
    """Writes entries atomically into ``directory``, keeping the directory under ``max_bytes``."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def used_bytes(self) -> int:
        """Bytes the store holds now (computed from disk: several worker processes share it)."""
        try:
            with os.scandir(self.directory) as entries:
                return sum(e.stat().st_size for e in entries if e.is_file() and e.name.endswith(".json"))
        except FileNotFoundError:
            return 0

    def put(self, entry: DeadLetterEntry) -> int:
        """Store ``entry``; return the bytes written. Raise DeadLetterFull when it does not fit."""
        document = {
            "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "reason": entry.reason,
            "serial": entry.serial,
            "remote_addr": entry.remote_addr,
            "items": entry.items,
        }
        if entry.raw_body is not None:
            document["raw_body"] = entry.raw_body
        data = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        if self.used_bytes() + len(data) > self.max_bytes:
            raise DeadLetterFull(
                f"dead-letter store {self.directory} is full ({self.max_bytes} bytes): inspect and remove "
                "old files, or raise AXIS_EXPORTER_DEADLETTER_MAX_BYTES"
            )
        safe_serial = "".join(c for c in entry.serial if c.isalnum())[:32] or "unknown"
        now_ns = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ns // 1_000_000_000))
        name = f"{stamp}.{now_ns % 1_000_000_000:09d}Z-{safe_serial}-{uuid.uuid4().hex[:8]}.json"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary = self.directory / f".{name}.tmp"
            temporary.write_bytes(data)
            temporary.replace(self.directory / name)
        except OSError as exc:
            raise DeadLetterFull(f"cannot write to dead-letter store {self.directory}: {exc}") from exc
        log.warning("kept %d item(s) in dead-letter file %s: %s", len(entry.items), name, entry.reason)
        return len(data)
