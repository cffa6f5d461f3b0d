"""A real Prometheus for tests: Debian's ``prometheus`` on a free loopback port, in a temporary directory.

Usage::

    with LocalPrometheus(tmp_path / "prom", [scrape_job("axis-exporter", "127.0.0.1:8080")],
                         rule_files=[ALERTS]) as prom:
        prom.wait_until('up{job="axis-exporter"}', lambda r: bool(r) and r[0]["value"][1] == "1")
        result = prom.query("sum(axis_exporter_pushes_total)")   # Prometheus' data.result list

Scrapes and rule evaluation run every ``scrape_interval`` (1 s by default). Results are returned as
Prometheus' HTTP API gives them: instant vectors as ``[{"metric": {...}, "value": [ts, "text"]}, ...]``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from exporter.processes import ChildProcess, ProcessFailed, free_port, wait_until

INSTALL_HINT = "install Debian's prometheus package: apt-get install prometheus"

Result = list[dict[str, Any]]


class PrometheusError(RuntimeError):
    """Prometheus could not start, or refused a query."""


def scrape_job(
    job_name: str, target: str, *, metrics_path: str = "/metrics", scheme: str = "http"
) -> dict[str, Any]:
    """A scrape_configs entry for one static target (``host:port``)."""
    return {
        "job_name": job_name,
        "metrics_path": metrics_path,
        "scheme": scheme,
        "static_configs": [{"targets": [target]}],
    }


def sample_value(result: Result) -> float | None:
    """The value of a one-sample instant vector; None when the vector is empty."""
    if not result:
        return None
    if len(result) != 1:
        raise PrometheusError(f"expected at most one sample, got {len(result)}: {result}")
    return float(result[0]["value"][1])


class LocalPrometheus:
    """Debian's prometheus on 127.0.0.1, config and TSDB under ``directory``; stopped by ``stop()``."""

    def __init__(
        self,
        directory: Path,
        scrape_configs: Sequence[Mapping[str, Any]],
        *,
        rule_files: Sequence[Path] = (),
        scrape_interval: str = "1s",
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self._config = {
            "global": {
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "evaluation_interval": scrape_interval,
            },
            "rule_files": [str(Path(path).resolve()) for path in rule_files],
            "scrape_configs": [dict(job) for job in scrape_configs],
        }
        self._process: ChildProcess | None = None
        self._session = requests.Session()

    @property
    def url(self) -> str:
        """Base URL of Prometheus' web UI and API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where Prometheus' own log goes."""
        return self.directory / "prometheus.log"

    def start(self, timeout: float = 30.0) -> LocalPrometheus:
        """Write the config, start Prometheus and wait until /-/ready answers 200."""
        binary = shutil.which("prometheus") or shutil.which("prometheus", path="/usr/bin:/usr/sbin")
        if binary is None:
            raise PrometheusError(f"prometheus not found: {INSTALL_HINT}")
        self.directory.mkdir(parents=True, exist_ok=True)
        config_path = self.directory / "prometheus.yml"
        config_path.write_text(json.dumps(self._config, indent=2), encoding="utf-8")  # JSON is YAML
        self._process = ChildProcess(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            self.log_path,
            cwd=self.directory,
        )
        try:
            self._process.wait_ready(
                lambda: self._session.get(f"{self.url}/-/ready", timeout=1).status_code == 200,
                timeout,
                interval=0.1,
            )
        except ProcessFailed as exc:
            self.stop()
            raise PrometheusError(f"{exc.reason}:\n{self.log()}") from None
        return self

    def stop(self) -> None:
        """Stop Prometheus (SIGTERM, then SIGKILL after 15 s)."""
        process, self._process = self._process, None
        self._session.close()
        if process is not None:
            process.stop()

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; raise PrometheusError on an error answer."""
        response = self._session.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {response.status_code} {body.get('error', body)}")
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> Result:
        """Instant query (now, or at unix time ``at``): the result list of the vector."""
        params = {"query": promql} if at is None else {"query": promql, "time": str(at)}
        data = self.api("query", **params)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{promql!r} gives a {data['resultType']}, not a vector")
        result: Result = data["result"]
        return result

    def query_range(self, promql: str, start: float, end: float, step: float) -> Result:
        """Range query: the result list of the matrix (``values`` instead of ``value``)."""
        data = self.api("query_range", query=promql, start=str(start), end=str(end), step=str(step))
        result: Result = data["result"]
        return result

    def wait_until(self, promql: str, check: Callable[[Result], bool], timeout: float = 20.0) -> Result:
        """Poll ``query(promql)`` until ``check`` accepts the result; TimeoutError with the last one."""
        last: list[Result] = []

        def reached() -> bool:
            last[:] = [self.query(promql)]
            return check(last[0])

        wait_until(
            reached, timeout, lambda: f"{promql!r} to reach the expected value; last: {last[0]}", interval=0.2
        )
        return last[0]

    def log(self) -> str:
        """Prometheus' log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
