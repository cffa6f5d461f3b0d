"""InfluxQL over InfluxDB's ``/query`` endpoint: the status page's reads, and ``relabel``'s.

InfluxDB 2.x answers InfluxQL on ``/query`` for a bucket through its automatic DBRP mapping (database =
bucket name), with the same ``Authorization: Token`` header as writes; 1.x answers it natively. Both
also take InfluxQL ``DELETE`` there (2.x since 2.0: influxdata/influxdb PR #19549), which ``relabel``
uses. The status page only reads a day of counts and a week of pushes, so this is a small stdlib HTTP
client with a short timeout rather than a second client library. Errors come back as one line of text.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from exporter.config import InfluxConfig
from exporter.logsafe import error_body_text, loggable


class InfluxReadError(Exception):
    """A query that InfluxDB did not answer, or answered with an error; the text is one line."""


def quote_regex(value: str) -> str:
    """``value`` as a literal inside an InfluxQL regex ``/.../``."""
    return re.escape(value).replace("/", r"\/")


def rows_of(statement: dict[str, Any]) -> list[dict[str, Any]]:
    """One InfluxQL statement's result as rows: one dict per row, its series' tags included."""
    rows: list[dict[str, Any]] = []
    for series in statement.get("series", []):
        tags = series.get("tags") or {}
        for values in series.get("values", []):
            rows.append({**tags, **dict(zip(series["columns"], values, strict=True))})
    return rows


class InfluxReader:
    """InfluxQL queries against the configured bucket."""

    def __init__(self, config: InfluxConfig, timeout_seconds: float = 3.0) -> None:
        self.config = config
        self.timeout_seconds = timeout_seconds

    def query(self, statements: list[str]) -> list[list[dict[str, Any]]]:
        """Run ``statements`` in one request; per statement, one dict per row (tags included, unix time)."""
        return [rows_of(statement) for statement in self.results(statements)]

    def results(self, statements: list[str]) -> list[dict[str, Any]]:
        """Run ``statements`` in one request; InfluxDB's result of each (with ``series`` as it gives them)."""
        params = urllib.parse.urlencode({"db": self.config.bucket, "epoch": "s"})
        request = urllib.request.Request(
            f"{self.config.url.rstrip('/')}/query?{params}",
            data=urllib.parse.urlencode({"q": ";".join(statements)}).encode(),
            headers={"Authorization": f"Token {self.config.token}", "Accept": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                document = json.load(response)
        except urllib.error.HTTPError as exc:
            text = error_body_text(exc.read().decode("utf-8", "replace"), exc.code, exc.reason)
            raise InfluxReadError(
                f"InfluxDB at {self.config.shown_url} answered {exc.code} to a query: {loggable(text, 300)}"
                + (" (the token may not have read access to the bucket)" if exc.code in (401, 403) else "")
            ) from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise InfluxReadError(f"InfluxDB at {self.config.shown_url} did not answer: {reason}") from None
        results = document.get("results", []) if isinstance(document, dict) else []
        for statement in results:
            if "error" in statement:
                raise InfluxReadError(f"InfluxDB refused a query: {loggable(str(statement['error']), 300)}")
        return list(results)
