"""The shipped alert rules: valid for promtool, unit-tested with ``promtool test rules``, well annotated."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from exporter.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "prometheus" / "alerts.yml"
RULE_TESTS = sorted((ROOT / "tests" / "prometheus").glob("*_test.yml"))


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool; fail (never skip) when it is not installed."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install Debian's `prometheus` package (apt-get install prometheus)")
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def _alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules_accepts_the_alerts() -> None:
    result = _promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alert_rules())} rules found" in result.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    assert len(RULE_TESTS) >= 2, "tests/prometheus/*_test.yml went missing"
    result = _promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_every_alert_is_tested_and_annotated() -> None:
    rules = _alert_rules()
    assert {rule["alert"] for rule in rules} >= {
        "AxisSensorNotPushing",
        "AxisExporterDown",
        "AxisExporterAbsent",
        "AxisExporterInfluxDBWritesFailing",
        "AxisExporterInfluxDBDown",
        "AxisExporterDeadLetters",
    }
    tested = "\n".join(path.read_text(encoding="utf-8") for path in RULE_TESTS)
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: needs a `for:`"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert len(rule["annotations"]["description"]) > 80, f"{name}: say what the operator should check"
        assert f"alertname: {name}\n" in tested, f"{name}: no promtool unit test"


def test_alerts_only_use_metrics_the_receiver_exposes() -> None:
    registry = CollectorRegistry()
    Metrics(registry, max_sensors=10)
    exposed = {sample.name for family in registry.collect() for sample in family.samples}
    # Series that only exist once a sensor pushed are declared but not yet sampled: add their names.
    exposed |= {family.name for family in registry.collect()}
    used = {name for rule in _alert_rules() for name in re.findall(r"axis_exporter_\w+", rule["expr"])}
    assert used, "the rules select no receiver metric"
    assert used <= exposed, f"alerts use metrics the receiver does not expose: {sorted(used - exposed)}"
