"""Every PromQL expression of the dashboards and the Grafana alert rule: accepted by promtool and, against a
real Prometheus scraping a real receiver, returning series."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from tests.promserver import LocalPrometheus, sample_value, scrape_job
from tests.serveprocess import ExporterFactory, ExporterProcess
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
NEW_SERIAL = "ACCC8E0000AA"
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
    assert jobs["axis-exporter"]["static_configs"] == [{"targets": ["exporter:10464"]}]
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
@pytest.fixture
def scraped(
    exporter_server: ExporterFactory, tmp_path: Path
) -> Iterator[tuple[LocalPrometheus, ExporterProcess]]:
    """A receiver that took a data push and, from another sensor, only a test connection; scraped every
    second by Prometheus until rates have data."""
    server = exporter_server(workers=2)
    test_connection = payload("test-connection")
    test_connection["sensor"].update(name="new-door", serial=NEW_SERIAL)
    for document in (payload("sample-3d-object-data"), test_connection):
        response = requests.post(f"{server.url}/push", json=document, timeout=30)
        assert response.status_code == 200, response.text
    job = scrape_job("axis-exporter", f"127.0.0.1:{server.admin_port}")
    with LocalPrometheus(
        tmp_path / "prometheus", [job], rule_files=[ROOT / "prometheus" / "alerts.yml"]
    ) as prom:
        # Enough scrapes after the push for rate() over the substituted $__rate_interval.
        prom.wait_until(
            'count_over_time(up{job="axis-exporter"}[1m])',
            lambda result: bool(result) and float(result[0]["value"][1]) >= 6,
            timeout=60,
        )
        assert sample_value(prom.query('up{job="axis-exporter"}')) == 1
        yield prom, server


def test_every_expression_returns_series_for_a_scraped_receiver(
    scraped: tuple[LocalPrometheus, ExporterProcess],
) -> None:
    prometheus, _ = scraped
    empty = [e.where for e in EXPRESSIONS if not prometheus.query(e.substituted())]
    assert not empty, f"no series for: {empty}"


def test_sensor_panels_see_the_pushing_sensor_and_it_is_not_quiet(
    scraped: tuple[LocalPrometheus, ExporterProcess],
) -> None:
    prometheus, _ = scraped
    by_where = {e.where: e for e in EXPRESSIONS}
    since = by_where["rules.yaml: Sensor stopped pushing SINCE"].substituted()
    threshold = by_where["rules.yaml: Sensor stopped pushing THRESHOLD"].substituted()
    rows = prometheus.query(since)
    ages = {row["metric"]["serial"]: float(row["value"][1]) for row in rows}
    names = {row["metric"]["serial"]: row["metric"]["sensor"] for row in rows}
    assert names == {"ACCC8EF3D92E": "axis-accc8ef3d92e", NEW_SERIAL: "new-door"}, "each serial with its name"
    limits = {row["metric"]["serial"]: float(row["value"][1]) for row in prometheus.query(threshold)}
    assert set(ages) == set(limits) == {"ACCC8EF3D92E", NEW_SERIAL}
    assert all(0 <= age < 120 for age in ages.values()), ages
    # The sample push covers three minutes: threshold = max(3 x 180 s, 300 s).
    assert limits["ACCC8EF3D92E"] == 540
    # Only a test connection so far: no interval known, the longest one (15 min) counts.
    assert limits[NEW_SERIAL] == 3 * 900
    assert prometheus.query(f"({since}) > ({threshold})") == []
    quiet = by_where["receiver-health.json: Quiet sensors A"].substituted()
    assert [float(row["value"][1]) for row in prometheus.query(quiet)] == [0]
