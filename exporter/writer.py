"""The InfluxDB writer: synchronous, chunked writes that tell stored, refused and unavailable apart."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from exporter.config import InfluxConfig

log = logging.getLogger(__name__)

# InfluxDB answers these when it will never take the points (bad point, beyond retention): retrying the
# same points cannot succeed, so they go to the dead-letter store. Everything else means "not now".
_REFUSED_STATUSES = frozenset({400, 422})
_DROPPED = re.compile(r"dropped=(\d+)")


class Chunk(NamedTuple):
    """One write: ``line_count`` newline-free lines in ``text``, then ``last`` (strings may hold newlines)."""

    text: str
    line_count: int
    last: str | None = None

    def payload(self) -> str:
        """The request body."""
        if self.last is None:
            return self.text
        return f"{self.text}\n{self.last}" if self.text else self.last

    def lines(self) -> list[str]:
        """The lines one by one (to find those InfluxDB refuses)."""
        lines = self.text.split("\n") if self.text else []
        return [*lines, self.last] if self.last is not None else lines


class StorageUnavailable(Exception):
    """InfluxDB is unreachable, timed out, failed or rejected our credentials: nothing is confirmed."""


@dataclass
class WriteOutcome:
    """What InfluxDB confirmed: ``written`` lines stored, ``refused`` lines with InfluxDB's reason."""

    written: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)

    def add(self, other: WriteOutcome) -> None:
        """Merge another outcome into this one."""
        self.written += other.written
        self.refused.extend(other.refused)


def _error_message(exc: ApiException) -> str:
    """InfluxDB's own error text from a failed write (v1 says "error", v2 says "message")."""
    body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body or "")
    match = re.search(r'"(?:message|error)"\s*:\s*"((?:[^"\\]|\\.)*)"', body)
    text = match.group(1) if match else (body.strip() or str(exc.reason))
    return f"InfluxDB answered {exc.status}: {text}"


class InfluxWriter:
    """Writes line protocol to one bucket and returns only once InfluxDB confirmed (or refused) it."""

    def __init__(
        self,
        config: InfluxConfig,
        chunk_lines: int,
        observe_write_seconds: Callable[[float], None] | None = None,
        pool_size: int = 16,
    ) -> None:
        self.config = config
        self.chunk_lines = chunk_lines
        self._observe = observe_write_seconds
        self._client = InfluxDBClient(
            url=config.url,
            token=config.token,
            org=config.org,
            timeout=config.timeout_ms,
            connection_pool_maxsize=pool_size,
        )
        # SYNCHRONOUS: the default batching mode acknowledges nothing, and a 200 must mean stored.
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._reachable: bool | None = None
        self._checked_at = 0.0

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()  # type: ignore[no-untyped-call]  # the client has no type hints

    def ping(self) -> bool:
        """Whether InfluxDB answers at all."""
        try:
            reachable = bool(self._client.ping())
        except Exception:  # the client raises whatever urllib3 raises; any failure means "not reachable"
            reachable = False
        self._note_reachable(reachable)
        return reachable

    def reachable(self, max_age_seconds: float = 5.0) -> bool:
        """Reachability from the last write or ping, refreshed by a ping when older than ``max_age``."""
        if self._reachable is None or time.monotonic() - self._checked_at > max_age_seconds:
            return self.ping()
        return self._reachable

    def _note_reachable(self, reachable: bool) -> None:
        self._reachable = reachable
        self._checked_at = time.monotonic()

    def write(self, lines: Sequence[str]) -> WriteOutcome:
        """Write ``lines`` in chunks; raise StorageUnavailable if any chunk could not be confirmed."""
        outcome = WriteOutcome()
        for start in range(0, len(lines), self.chunk_lines):
            outcome.add(self._write_or_split(lines[start : start + self.chunk_lines]))
        return outcome

    def write_chunks(self, chunks: Iterable[Chunk]) -> WriteOutcome:
        """Write prepared chunks in order; raise StorageUnavailable as ``write`` does."""
        outcome = WriteOutcome()
        for chunk in chunks:
            try:
                self._post(chunk.payload())
            except ApiException:
                outcome.add(self._write_or_split(chunk.lines()))
            else:
                outcome.written += chunk.line_count + (chunk.last is not None)
        return outcome

    def _post(self, lines: Sequence[str] | str) -> None:
        started = time.perf_counter()
        try:
            self._write_api.write(
                bucket=self.config.bucket,
                org=self.config.org,
                record=lines if isinstance(lines, str) else "\n".join(lines),
                write_precision=WritePrecision.S,  # type: ignore[arg-type]  # a str constant, typed as the class
            )
        except ApiException as exc:
            if exc.status in _REFUSED_STATUSES:
                self._note_reachable(True)
                raise
            self._note_reachable(False)
            raise StorageUnavailable(_error_message(exc)) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._note_reachable(False)
            raise StorageUnavailable(f"InfluxDB at {self.config.url} is not reachable: {exc}") from exc
        else:
            self._note_reachable(True)
        finally:
            if self._observe is not None:
                self._observe(time.perf_counter() - started)

    def _write_or_split(self, lines: Sequence[str]) -> WriteOutcome:
        """Write ``lines``; where InfluxDB refuses some, find them by halving (rewrites are idempotent)."""
        try:
            self._post(lines)
            return WriteOutcome(written=len(lines))
        except ApiException as exc:
            reason = _error_message(exc)
        dropped = _DROPPED.search(reason)
        if len(lines) == 1 or (dropped is not None and int(dropped.group(1)) >= len(lines)):
            log.warning("InfluxDB refused %d point(s): %s", len(lines), reason)
            return WriteOutcome(refused=[(line, reason) for line in lines])
        middle = len(lines) // 2
        outcome = self._write_or_split(lines[:middle])
        outcome.add(self._write_or_split(lines[middle:]))
        return outcome
