"""Dead-letter store: data the receiver could not put in InfluxDB is kept on disk, not dropped.

Two kinds of files, one JSON document per event, named so that ``ls`` sorts them by time:

- **Data** (``<time>-<serial>-<source>-<token>-<id>.json``): measurements that failed validation and
  points InfluxDB refused, kept whole (each measurement bounded in depth and size when it was parsed).
  A camera re-sends until it gets a 200, so when one of these cannot be kept the push is answered 503.
  Quotas make sure that only the client causing it sees that: a serial, a source address and a device
  token may each fill only their share of the store.
- **Junk** (``junk/<time>-<source>-<id>.json``): bodies answered 400, which can never be stored. Only a
  sample is kept (the first ``JUNK_SAMPLE_BYTES``, the size and a SHA-256), in a bounded folder of its
  own whose oldest files make room for new ones: junk never fills the store and never costs a 503.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from exporter.logsafe import loggable

log = logging.getLogger(__name__)

JUNK_DIR = "junk"
JUNK_SAMPLE_BYTES = 64 * 1024
# The junk folder's share of the store, and a bound on its file count (scanning stays cheap).
JUNK_SHARE = 16
MAX_JUNK_FILES = 1000
_DATA_NAME = re.compile(
    r"^\d{8}T\d{6}\.\d{9}Z-(?P<serial>[^-]*)-s(?P<source>[0-9a-f]+)-t(?P<token>[0-9a-f]*)-"
)


class DeadLetterFull(Exception):
    """The store, or this client's share of it, is full (or cannot be written)."""


@dataclass(frozen=True)
class Quotas:
    """Bytes the whole store, one serial, one source address and one device token may fill."""

    total: int
    per_serial: int
    per_source: int
    per_token: int

    @classmethod
    def from_total(cls, total: int) -> Quotas:
        """Shares of ``total``: a serial 1/16, a source address and a token 1/4 each."""
        return cls(total=total, per_serial=total // 16, per_source=total // 4, per_token=total // 4)


@dataclass(frozen=True)
class DeadLetterEntry:
    """What one data file holds; ``token_id`` is a token's fingerprint, never the token."""

    reason: str
    serial: str
    remote_addr: str
    items: list[dict[str, Any]]
    token_id: str = ""


def fingerprint(text: str) -> str:
    """8 hex digits identifying ``text`` (a source address or token) without revealing it."""
    return hashlib.sha256(text.encode()).hexdigest()[:8] if text else ""


class DeadLetterStore:
    """Writes entries atomically into ``directory``, within ``quotas``."""

    def __init__(self, directory: Path, quotas: Quotas | int) -> None:
        self.directory = directory
        self.quotas = quotas if isinstance(quotas, Quotas) else Quotas.from_total(quotas)

    @property
    def max_bytes(self) -> int:
        """The size bound of the whole store."""
        return self.quotas.total

    def used_bytes(self) -> int:
        """Bytes the store holds now, junk included (from disk: several worker processes share it)."""
        return self.usage()[1]

    def usage(self) -> tuple[int, int]:
        """Entries and bytes the store holds now, junk samples included."""
        files = self._files(self.directory) + self._files(self.directory / JUNK_DIR)
        return len(files), sum(size for _, size in files)

    def _junk_bytes(self) -> int:
        return sum(size for _, size in self._files(self.directory / JUNK_DIR))

    @staticmethod
    def _files(directory: Path) -> list[tuple[str, int]]:
        try:
            with os.scandir(directory) as entries:
                return [
                    (e.name, e.stat().st_size) for e in entries if e.is_file() and e.name.endswith(".json")
                ]
        except FileNotFoundError:
            return []

    def put(self, entry: DeadLetterEntry) -> int:
        """Store ``entry``; return the bytes written. Raise DeadLetterFull naming the quota it breaks."""
        document = {
            "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "reason": entry.reason,
            "serial": entry.serial,
            "remote_addr": entry.remote_addr,
            "items": entry.items,
        }
        data = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        serial = "".join(c for c in entry.serial if c.isalnum())[:32] or "unknown"
        source, token = fingerprint(entry.remote_addr) or "0", entry.token_id
        self._check_quotas(len(data), serial, source, token)
        name = f"{_stamp()}-{serial}-s{source}-t{token}-{uuid.uuid4().hex[:8]}.json"
        self._write(self.directory, name, data)
        log.warning(
            "kept %d item(s) from serial %s in dead-letter file %s: %s",
            len(entry.items),
            serial,
            name,
            loggable(entry.reason, 300),
        )
        return len(data)

    def _check_quotas(self, size: int, serial: str, source: str, token: str) -> None:
        used = {"total": self._junk_bytes(), "serial": 0, "source": 0, "token": 0}
        for name, file_size in self._files(self.directory):
            used["total"] += file_size
            match = _DATA_NAME.match(name)
            if match is None:
                continue
            used["serial"] += file_size if match["serial"] == serial else 0
            used["source"] += file_size if match["source"] == source else 0
            used["token"] += file_size if token and match["token"] == token else 0
        quotas = self.quotas
        limits = (
            ("total", quotas.total, f"the dead-letter store {self.directory} is full"),
            ("serial", quotas.per_serial, f"serial {serial} has filled its share of the dead-letter store"),
            ("source", quotas.per_source, "this address has filled its share of the dead-letter store"),
            ("token", quotas.per_token, "this device token has filled its share of the dead-letter store"),
        )
        for key, limit, message in limits:
            if used[key] + size > limit:
                raise DeadLetterFull(
                    f"{message} ({limit} bytes): inspect and remove the files there, or raise "
                    "AXIS_EXPORTER_DEADLETTER_MAX_BYTES"
                )

    def put_junk(self, reason: str, remote_addr: str, body: bytes | bytearray, content_type: str) -> int:
        """Keep a sample of a body answered 400; the oldest samples make room. Never raises."""
        document = {
            "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "reason": reason,
            "remote_addr": remote_addr,
            "content_type": content_type[:200],
            "body_bytes": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_sample": bytes(body[:JUNK_SAMPLE_BYTES]).decode("utf-8", "replace"),
        }
        data = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        folder = self.directory / JUNK_DIR
        try:
            self._make_room(folder, len(data))
            name = f"{_stamp()}-s{fingerprint(remote_addr) or '0'}-{uuid.uuid4().hex[:8]}.json"
            self._write(folder, name, data)
        except (OSError, DeadLetterFull) as exc:
            log.warning("sample of a rejected body not kept: %s", loggable(exc, 300))
            return 0
        return len(data)

    def _make_room(self, folder: Path, size: int) -> None:
        files = sorted(self._files(folder))
        budget = self.quotas.total // JUNK_SHARE
        total = sum(file_size for _, file_size in files)
        while files and (total + size > budget or len(files) >= MAX_JUNK_FILES):
            name, file_size = files.pop(0)
            (folder / name).unlink(missing_ok=True)
            total -= file_size

    @staticmethod
    def _write(folder: Path, name: str, data: bytes) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            temporary = folder / f".{name}.tmp"
            temporary.write_bytes(data)
            temporary.replace(folder / name)
        except OSError as exc:
            raise DeadLetterFull(f"cannot write to dead-letter store {folder}: {exc}") from exc


def _stamp() -> str:
    """UTC time to the nanosecond, as file names start: ``ls`` sorts them by time."""
    now_ns = time.time_ns()
    seconds = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ns // 1_000_000_000))
    return f"{seconds}.{now_ns % 1_000_000_000:09d}Z"
