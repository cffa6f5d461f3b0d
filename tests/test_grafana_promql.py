"""Every PromQL expression of the dashboards and the Grafana alert rule: accepted by promtool and, against a
real Prometheus scraping a real receiver, returning series."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from exporter.localdb import free_port
from tests.conftest import ExporterFactory, ExporterProcess
from tests.support import payload

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
ALERTING = ROOT / "grafana" / "provisioning" / "alerting"
PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"

# What Grafana puts in place of its variables; the dashboard variables take their defaults.
RATE_INTERVAL = "10s"
SUBSTITUTIONS = {
    "$__rate_interval": RATE_INTERVAL,
    "$__interval": "5s",
    "$__range": "1m",
    "$job": "axis-exporter",
    "$instance": ".*",
}
LABEL_VALUES = re.compile(r"label_values\((?:(.+),\s*)?(\w+)\)")


@dataclass(frozen=True)
class Expression:
    """A PromQL expression and where it comes from."""

    where: str
    expr: str

    def substituted(self) -> str:
        """The expression as Grafana would send it with the variables' defaults."""
        text = self.expr
        for name, value in sorted(SUBSTITUTIONS.items(), key=lambda item: -len(item[0])):
            text = text.replace(name, value)
        assert "$" not in text, f"{self.where}: unsubstituted variable in {text}"
        return text


def collect() -> list[Expression]:
    """PromQL from dashboard targets, Prometheus variable queries and Grafana-managed alert rules."""
    found: list[Expression] = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                if "expr" in target:
                    found.append(
                        Expression(f"{path.name}: {panel['title']} {target['refId']}", target["expr"])
                    )
        for variable in dashboard["templating"]["list"]:
            query = variable.get("query")
            if variable["type"] == "query" and variable["datasource"]["type"] == "prometheus":
                match = LABEL_VALUES.fullmatch(query)
                assert match and match.group(1), f"{path.name}: ${variable['name']}: unexpected query {query}"
                found.append(Expression(f"{path.name}: variable {variable['name']}", match.group(1)))
    for path in sorted(ALERTING.glob("*.y*ml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8")).get("groups", []):
            for rule in group["rules"]:
                for query in rule["data"]:
                    if "expr" in query["model"]:
                        found.append(
                            Expression(
                                f"{path.name}: {rule['title']} {query['refId']}", query["model"]["expr"]
                            )
                        )
    return found


EXPRESSIONS = collect()


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool (installed by scripts/setup from Debian's prometheus package)."""
    binary = shutil.which("promtool")
    assert binary, "promtool not found: run ./scripts/setup (Debian package prometheus)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False)


def test_expressions_were_found() -> None:
    wheres = " ".join(e.where for e in EXPRESSIONS)
    assert len(EXPRESSIONS) >= 15
    assert "receiver-health.json" in wheres and "rules.yaml" in wheres


def test_promtool_accepts_every_expression(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "grafana-expressions",
                "rules": [
                    {"record": f"check:expression_{i}", "expr": e.substituted()}
                    for i, e in enumerate(EXPRESSIONS)
                ],
            }
        ]
    }
    rules_file = tmp_path / "expressions.yml"
    rules_file.write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = promtool("check", "rules", str(rules_file))
    if result.returncode != 0:
        index = {f"check:expression_{i}": e.where for i, e in enumerate(EXPRESSIONS)}
        raise AssertionError(f"promtool rejected an expression ({index}):\n{result.stdout}{result.stderr}")
    assert f"SUCCESS: {len(EXPRESSIONS)} rules found" in result.stdout


def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    rules_file = tmp_path / "broken.yml"
    rules_file.write_text(
        yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "r", "expr": "sum(("}]}]})
    )
    assert promtool("check", "rules", str(rules_file)).returncode != 0


def compose_prometheus_config(tmp_path: Path, target: str | None = None, interval: str | None = None) -> Path:
    """The repository's prometheus.yml with the rule file at its repository path (and test overrides)."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"], (
        "compose mounts prometheus/alerts.yml there"
    )
    config["rule_files"] = [str(ROOT / "prometheus" / "alerts.yml")]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["axis-exporter"]["static_configs"] == [{"targets": ["exporter:8080"]}]
    if target is not None:
        jobs["axis-exporter"]["static_configs"] = [{"targets": [target]}]
        config["scrape_configs"] = [jobs["axis-exporter"]]
    if interval is not None:
        config["global"] = {"scrape_interval": interval, "evaluation_interval": interval}
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_prometheus_config_is_valid_and_loads_the_alert_rules(tmp_path: Path) -> None:
    result = promtool("check", "config", str(compose_prometheus_config(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


# --- a real Prometheus scraping a real receiver -----------------------------------------------------
class Prometheus:
    """Debian's prometheus on a loopback port, with its data in a temporary directory."""

    def __init__(self, config: Path, data: Path, log: Path) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found: run ./scripts/setup (Debian package prometheus)"
        self.port = free_port()
        self.log = log
        with log.open("wb") as log_file:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={data}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            body: dict[str, Any] = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_ready(self, timeout: float = 60) -> None:
        """Until /-/ready answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text(errors="replace")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise AssertionError(
            f"prometheus not ready within {timeout} s:\n{self.log.read_text(errors='replace')}"
        )

    def stop(self) -> None:
        """Terminate and wait."""
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def scraped(exporter_server: ExporterFactory, tmp_path: Path) -> Iterator[tuple[Prometheus, ExporterProcess]]:
    """A receiver that took one push, scraped every second by Prometheus until rates have data."""
    server = exporter_server(workers=2)
    response = requests.post(f"{server.url}/push", json=payload("sample-3d-object-data"), timeout=30)
    assert response.status_code == 200, response.text
    config = compose_prometheus_config(tmp_path, target=f"127.0.0.1:{server.port}", interval="1s")
    prometheus = Prometheus(config, tmp_path / "prometheus-data", tmp_path / "prometheus.log")
    try:
        prometheus.wait_ready()
        deadline = time.monotonic() + 60
        # Enough scrapes after the push for rate() over the substituted $__rate_interval.
        while time.monotonic() < deadline:
            samples = prometheus.query('count_over_time(up{job="axis-exporter"}[1m])')
            if samples and float(samples[0]["value"][1]) >= 6:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"prometheus did not scrape the receiver:\n{prometheus.log.read_text()}")
        assert float(prometheus.query('up{job="axis-exporter"}')[0]["value"][1]) == 1
        yield prometheus, server
    finally:
        prometheus.stop()


def test_every_expression_returns_series_for_a_scraped_receiver(
    scraped: tuple[Prometheus, ExporterProcess],
) -> None:
    prometheus, _ = scraped
    empty = [e.where for e in EXPRESSIONS if not prometheus.query(e.substituted())]
    assert not empty, f"no series for: {empty}"


def test_sensor_panels_see_the_pushing_sensor_and_it_is_not_quiet(
    scraped: tuple[Prometheus, ExporterProcess],
) -> None:
    prometheus, _ = scraped
    by_where = {e.where: e for e in EXPRESSIONS}
    since = by_where["rules.yaml: Sensor stopped pushing SINCE"].substituted()
    threshold = by_where["rules.yaml: Sensor stopped pushing THRESHOLD"].substituted()
    (age,) = prometheus.query(since)
    (limit,) = prometheus.query(threshold)
    assert age["metric"] == limit["metric"] == {"sensor": "axis-accc8ef3d92e", "serial": "ACCC8EF3D92E"}
    assert 0 <= float(age["value"][1]) < 120
    # The sample push covers three minutes: threshold = max(3 x 180 s, 300 s).
    assert float(limit["value"][1]) == 540
    assert prometheus.query(f"({since}) > ({threshold})") == []
    quiet = by_where["receiver-health.json: Quiet sensors A"].substituted()
    assert [float(row["value"][1]) for row in prometheus.query(quiet)] == [0]
