"""HTTP(S) delivery of pushes the way the camera does it, plus a shared pushes-per-second cap."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import urllib3
from urllib3 import exceptions as urllib3_errors

from exporter import __version__

USER_AGENT = f"axis-exporter-simulate/{__version__}"
DETAIL_CHARS = 300


@dataclass(frozen=True)
class PushResult:
    """Outcome of one push: an HTTP status, or no answer at all (a connection error)."""

    status: int | None
    error: str | None = None
    detail: str = ""
    seconds: float = 0.0

    @property
    def acknowledged(self) -> bool:
        """Only a 200 makes a device forget data."""
        return self.status == 200


class PushTransport(Protocol):
    """Something that delivers a JSON body to the receiver."""

    def push(self, body: bytes) -> PushResult:
        """Send one push and report what happened."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def error_kind(exc: BaseException) -> str:
    """Stable short name for a failed delivery, used as a key in the summary."""
    kinds: tuple[tuple[type[BaseException], str], ...] = (
        (urllib3_errors.NameResolutionError, "dns"),
        (urllib3_errors.NewConnectionError, "connect"),
        (urllib3_errors.ConnectTimeoutError, "connect_timeout"),
        (urllib3_errors.SSLError, "tls"),
        (urllib3_errors.ReadTimeoutError, "read_timeout"),
        (urllib3_errors.ProtocolError, "connection_lost"),
    )
    for error_type, kind in kinds:
        if isinstance(exc, error_type):
            return kind
    return type(exc).__name__


class HttpTransport:
    """POSTs to one URL over a keep-alive pool; never retries by itself (the device logic decides)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        cacert: Path | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        pool_size: int = 4,
    ) -> None:
        """Prepare a pool; with `cacert`, the server must present a chain to that CA and a matching name."""
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"URL must start with http:// or https://: {url!r}")
        self.url = url
        self.headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=pool_size,
            # Like the camera: always verify; only the CA given is trusted, else the system store.
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(cacert) if cacert is not None else None,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=timeout),
        )

    def push(self, body: bytes) -> PushResult:
        """Send one push; connection problems become a result, not an exception."""
        started = time.monotonic()
        try:
            response = self._pool.request(
                "POST", self.url, body=body, headers=self.headers, redirect=False, retries=False
            )
        except (urllib3_errors.HTTPError, OSError) as exc:
            return PushResult(None, error_kind(exc), str(exc)[:DETAIL_CHARS], time.monotonic() - started)
        detail = response.data[:DETAIL_CHARS].decode("utf-8", "replace")
        return PushResult(response.status, None, detail, time.monotonic() - started)

    def close(self) -> None:
        """Close pooled connections."""
        self._pool.clear()


class RateLimiter:
    """Spaces requests from all threads at least 1/rate seconds apart (None = no cap)."""

    def __init__(self, per_second: float | None) -> None:
        """Cap at `per_second` pushes per second."""
        if per_second is not None and per_second <= 0:
            raise ValueError("rate must be positive")
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next_slot = 0.0
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> bool:
        """Block until this caller's slot; False if `stop` was set meanwhile."""
        if not self._interval:
            return not stop.is_set()
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._interval
        delay = slot - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        return not stop.is_set()
