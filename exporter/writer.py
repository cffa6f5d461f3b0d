"""The InfluxDB writer: synchronous, chunked writes that tell stored, refused and unavailable apart.

Writes go through influxdb-client's SYNCHRONOUS write API: it returns only once InfluxDB answered
(its default batching mode acknowledges nothing). Small pushes that arrive while another write of the
same worker is in flight are sent together in the next write (group commit); each request still waits
for the answer that covers its own lines. Large pushes are converted ahead in a helper thread while
InfluxDB stores the previous chunk.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
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
from exporter.logsafe import error_body_text, loggable

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


class Refused(Exception):
    """InfluxDB will never take (some of) these points; the message is InfluxDB's reason."""


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
    """One line saying why a write failed: InfluxDB's own error text, or the title of a proxy's page."""
    body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body or "")
    return f"InfluxDB answered {exc.status}: {loggable(error_body_text(body, exc.status, exc.reason), 300)}"


class _Pending:
    """A small push waiting to be written together with others (group commit)."""

    __slots__ = ("chunk", "error", "event", "outcome")

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        self.event = threading.Event()
        self.outcome: WriteOutcome | None = None
        self.error: StorageUnavailable | None = None


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
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._reachable: bool | None = None
        self._checked_at = 0.0
        self._group_lock = threading.Lock()
        self._group: list[_Pending] = []
        self._group_writing = False

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

    def write_chunks(self, chunks: Iterable[Chunk]) -> WriteOutcome:
        """Write chunks in order; raise StorageUnavailable if any could not be confirmed.

        A push of one small chunk may share its write with other pushes (group commit). Whoever makes the
        chunks decides how: a large push's come from a helper thread (``ahead.Ahead``) that makes the
        next one while this one is stored.
        """
        iterator = iter(chunks)
        first = next(iterator, None)
        if first is None:
            return WriteOutcome()
        second = next(iterator, None)
        if second is None and first.line_count < self.chunk_lines:
            return self._write_grouped(first)
        outcome = self._write_chunk(first)
        for chunk in itertools.chain((second,) if second is not None else (), iterator):
            outcome.add(self._write_chunk(chunk))
        return outcome

    def _write_chunk(self, chunk: Chunk) -> WriteOutcome:
        try:
            self._post(chunk.payload())
        except Refused as exc:
            return self._write_or_split(chunk.lines(), str(exc))
        return WriteOutcome(written=chunk.line_count + (chunk.last is not None))

    def _write_grouped(self, chunk: Chunk) -> WriteOutcome:
        """Write ``chunk`` with whatever other small pushes wait; the first to arrive writes for all."""
        entry = _Pending(chunk)
        with self._group_lock:
            self._group.append(entry)
            lead = not self._group_writing
            self._group_writing = True
        if not lead:
            entry.event.wait()
        if entry.outcome is None and entry.error is None:
            # This thread leads: it writes everything waiting (itself included), then hands over.
            try:
                batch = self._take_batch()
                self._write_batch(batch)
            finally:
                with self._group_lock:
                    if self._group:
                        self._group[0].event.set()  # its outcome is unset: it leads the next write
                    else:
                        self._group_writing = False
        if entry.error is not None:
            raise entry.error
        assert entry.outcome is not None
        return entry.outcome

    def _take_batch(self) -> list[_Pending]:
        """The waiting pushes, oldest first, up to about one chunk of lines."""
        batch: list[_Pending] = []
        lines = 0
        with self._group_lock:
            while self._group:
                size = self._group[0].chunk.line_count + 1
                if batch and lines + size > self.chunk_lines:
                    break
                batch.append(self._group.pop(0))
                lines += size
        return batch

    def _write_batch(self, batch: list[_Pending]) -> None:
        """One write for ``batch``; every entry gets its outcome (or error) and is woken up."""
        try:
            if len(batch) == 1:
                batch[0].outcome = self._write_chunk(batch[0].chunk)
            else:
                try:
                    self._post("\n".join(pending.chunk.payload() for pending in batch))
                except Refused:
                    # A push holds a point InfluxDB refuses: write push by push (rewrites are idempotent).
                    for pending in batch:
                        pending.outcome = self._write_chunk(pending.chunk)
                else:
                    for pending in batch:
                        chunk = pending.chunk
                        pending.outcome = WriteOutcome(written=chunk.line_count + (chunk.last is not None))
        except StorageUnavailable as exc:
            for pending in batch:
                if pending.outcome is None:
                    pending.error = exc
        except BaseException as exc:
            for pending in batch:
                if pending.outcome is None:
                    pending.error = StorageUnavailable(f"write failed: {exc!r}")
            raise
        finally:
            for pending in batch:
                pending.event.set()

    def _post(self, body: str) -> None:
        """POST ``body``; raise Refused (400/422) or StorageUnavailable (anything else but 2xx)."""
        started = time.perf_counter()
        try:
            self._write_api.write(
                bucket=self.config.bucket,
                org=self.config.org,
                record=body,
                write_precision=WritePrecision.S,  # type: ignore[arg-type]  # a str constant, typed as the class
            )
        except ApiException as exc:
            message = _error_message(exc)
            if exc.status in _REFUSED_STATUSES:
                self._note_reachable(True)
                raise Refused(message) from None
            self._note_reachable(False)
            raise StorageUnavailable(message) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._note_reachable(False)
            raise StorageUnavailable(
                f"InfluxDB at {self.config.shown_url} is not reachable: {loggable(exc, 300)}"
            ) from exc
        finally:
            if self._observe is not None:
                self._observe(time.perf_counter() - started)
        self._note_reachable(True)

    def _write_or_split(self, lines: Sequence[str], reason: str | None = None) -> WriteOutcome:
        """Write ``lines``; where InfluxDB refuses some, find them by halving (rewrites are idempotent).

        ``reason``: InfluxDB already refused these very lines with it (no need to post them again).
        """
        if reason is None:
            try:
                self._post("\n".join(lines))
                return WriteOutcome(written=len(lines))
            except Refused as exc:
                reason = str(exc)
        dropped = _DROPPED.search(reason)
        if len(lines) == 1 or (dropped is not None and int(dropped.group(1)) >= len(lines)):
            log.warning("InfluxDB refused %d point(s): %s", len(lines), loggable(reason, 400))
            return WriteOutcome(refused=[(line, reason) for line in lines])
        middle = len(lines) // 2
        outcome = self._write_or_split(lines[:middle])
        outcome.add(self._write_or_split(lines[middle:]))
        return outcome
